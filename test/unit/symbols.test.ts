// The symbol floor: the addon built here (build/Release) and, when present, the prebuild must
// load on glibc >= 2.34 and libfuse >= 3.10 with any Node >= 20 (docs/packaging.md).
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { packageRoot } from '../../lib/package-root'
import { dynamicInfo, floorViolations, objdumpFor } from '../helpers/elf'

const root = packageRoot()

function nodeFiles(dir: string): string[] {
  try {
    return fs
      .readdirSync(dir)
      .filter((name) => name.endsWith('.node'))
      .map((name) => path.join(dir, name))
  } catch {
    return []
  }
}

const built = nodeFiles(path.join(root, 'build', 'Release'))
const prebuildDirs = fs.existsSync(path.join(root, 'prebuilds')) ? fs.readdirSync(path.join(root, 'prebuilds')) : []
// Every prebuild present (a release checkout may hold other architectures' too).
const prebuilt = prebuildDirs.flatMap((dir) => nodeFiles(path.join(root, 'prebuilds', dir)))

t.test('the checker sees what it is meant to catch', async (t) => {
  // The node binary links the system libstdc++: exactly what the addon must not do.
  const node = fs.realpathSync(process.execPath)
  const info = dynamicInfo(node)
  t.ok(info.symbols.length > 100, 'objdump -T lists the undefined symbols')
  const violations = floorViolations(node)
  t.ok(violations.includes('links libstdc++.so.6'), 'a dynamic libstdc++ is flagged')
  t.ok(violations.some((v) => /@GLIBCXX_/.test(v)), 'GLIBCXX symbols are flagged')
})

t.test('an addon is built here', async (t) => {
  const own = [...built, ...nodeFiles(path.join(root, 'prebuilds', `linux-${os.arch()}`))]
  t.ok(own.length > 0, `build/Release or prebuilds/linux-${os.arch()} holds a .node (npm ci compiles one)`)
})

for (const file of [...built, ...prebuilt]) {
  const skip = objdumpFor(file) ? false : 'no objdump for its architecture here (e.g. binutils-aarch64-linux-gnu)'
  t.test(`${path.relative(root, file)} needs nothing newer than glibc 2.34 / libfuse 3.10`, { skip }, async (t) => {
    const info = dynamicInfo(file)
    t.ok(info.needed.includes('libfuse3.so.3'), 'links libfuse3.so.3')
    t.ok(
      info.symbols.some((s) => s.name === 'fuse_session_loop_mt_32' && s.version === 'FUSE_3.2'),
      'the session loop is fuse_session_loop_mt_32@FUSE_3.2 (FUSE_USE_VERSION 310)',
    )
    t.ok(info.symbols.some((s) => /^napi_/.test(s.name)), 'uses Node-API')
    t.same(floorViolations(file), [], 'no symbol or library above the floor')
    // The .bro decoder is libbrotli linked in statically, its symbols hidden: nodes need no
    // libbrotli, and node's own brotli cannot be interposed on ours (nor ours on node's).
    t.same(info.needed.filter((lib) => /brotli/i.test(lib)), [], 'needs no libbrotli')
    const table = execFileSync(objdumpFor(file)!, ['-T', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
    const brotli = table.split('\n').filter((line) => /\bBrotli\w*$/.test(line))
    t.same(brotli, [], 'neither exports nor imports a Brotli symbol')
  })
}
