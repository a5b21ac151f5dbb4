// The package as users get it from the registry: `npm pack` with its lifecycle scripts (prepack
// builds the prebuild, prepare dist/), then the tarball installed into a fresh project.
//  1. The tarball ships the prebuild (stripped, needing nothing above the symbol floor), the
//     compiled JS and the sources to compile from; no build/, tests or TypeScript sources.
//  2. Installed with --ignore-scripts on a PATH with only node and npm (no compiler, cmake, make,
//     pkg-config): the shipped prebuild loads (never a build/ directory: the tarball has none), a
//     real mount serves reads through the installed package, `npx aysfs-native --version` and the
//     demo run from it, and `aysfs-native rebuild` (lib/rebuild.ts) names the packages and builds
//     nothing.
// The pack's prebuild is a compile from nothing (about half a minute); the install script's
// compile runs beside it, in install-source.test.ts. The pack runs in a copy of the source tree:
// prepack rebuilds build/ and moves the addon into prebuilds/, which must not happen under the
// working tree other tests load from.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { clearMounts, mountsBelow } from '../helpers/tmp'
import { floorViolations } from '../helpers/elf'
import { checkMount, cleanEnv, fullPath, packageWork, pkg, prebuildName, root, run, SHIPPED, sourceCopy, tail, tarList } from '../helpers/package'

const installScript = require(path.join(root, 'scripts', 'install.js')) as { missingPackages(env: NodeJS.ProcessEnv): string[] }
const { work, bare, consumer, install: installTarball, mountAndRead, rebuild } = packageWork(t)

// ---- pack (once for the file) ----

const src = sourceCopy(work)
const packed = path.join(work, 'packed')
fs.mkdirSync(packed)
const pack = run('npm', ['pack', '--pack-destination', packed], { cwd: src, env: cleanEnv(fullPath), timeout: 300_000 })
const tarball = path.join(packed, `${pkg.name}-${pkg.version}.tgz`)

t.test('npm pack ships the prebuild, the compiled JS and the sources to compile from', async (t) => {
  t.equal(pack.status, 0, `npm pack: ${pack.status === 0 ? 'ok' : tail(pack)}`)
  t.ok(fs.existsSync(tarball), 'the tarball exists')
  const list = tarList(tarball)
  for (const file of [...SHIPPED, prebuildName]) t.ok(list.includes(file), `ships ${file}`)
  t.same(list.filter((p) => p.endsWith('.node')), [prebuildName], 'the only binary is the prebuild')
  t.same(list.filter((p) => /^(build|test|node_modules|lib|\.ci)\//.test(p)), [], 'no build/, tests, TypeScript sources or CI files')

  const extract = path.join(work, 'extract')
  fs.mkdirSync(extract)
  t.equal(run('tar', ['-xzf', tarball, '-C', extract], { timeout: 60_000 }).status, 0, 'the tarball extracts')
  const prebuild = path.join(extract, 'package', prebuildName)
  const sections = run('readelf', ['-S', '-W', prebuild], { timeout: 10_000 }).stdout
  t.match(sections, /\.dynsym/, 'readelf reads the prebuild')
  t.notMatch(sections, /\.symtab/, 'the prebuild is stripped')
  t.same(floorViolations(prebuild), [], 'the prebuild needs nothing newer than glibc 2.34 / libfuse 3.10')
})

t.test('installed with --ignore-scripts and no compiler, the prebuild loads and mounts', async (t) => {
  if (!fs.existsSync(tarball)) return t.fail('no tarball')
  t.same(
    installScript.missingPackages(cleanEnv(bare)).filter((p) => ['cmake', 'g++', 'make', 'pkg-config'].includes(p)),
    ['cmake', 'g++', 'make', 'pkg-config'],
    'on this PATH no compile could happen',
  )
  const project = consumer('prebuilt')
  const install = installTarball(project, tarball, bare, { scripts: false })
  t.equal(install.status, 0, `npm install: ${install.status === 0 ? 'ok' : tail(install)}`)
  const installed = path.join(project, 'node_modules', pkg.name)
  t.notOk(fs.existsSync(path.join(installed, 'build')), 'no build/ directory')
  t.ok(fs.existsSync(path.join(installed, prebuildName)), 'the prebuild is installed')

  checkMount(t, mountAndRead(project, bare), prebuildName)

  // The command as a node runs it: --version, then the demo, mounted from the installed
  // package with its prebuild, read from another process, and unmounted on Ctrl-C.
  const version = run(path.join(bare, 'npx'), ['--offline', pkg.name, '--version'], { cwd: project, env: cleanEnv(bare), timeout: 60_000 })
  t.equal(version.status, 0, `npx ${pkg.name} --version: ${tail(version)}`)
  t.equal(version.stdout.trim(), pkg.version, 'prints the version')
  const demoMnt = path.join(work, 'demo-mnt')
  fs.mkdirSync(demoMnt, { recursive: true })
  const demo = spawn(path.join(bare, 'node'), [path.join(installed, 'dist', 'lib', 'cli.js'), 'demo', '--mount', demoMnt], {
    cwd: project,
    env: cleanEnv(bare),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  t.teardown(() => {
    demo.kill('SIGKILL')
    clearMounts(demoMnt)
  })
  const exited = new Promise<number | null>((resolve) => demo.on('exit', (code) => resolve(code)))
  let said = ''
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the demo did not come up: ${said}`)), 60_000)
    demo.stdout.on('data', (d: Buffer) => {
      said += d
      if (said.includes('Ctrl-C')) {
        clearTimeout(timer)
        resolve()
      }
    })
    demo.stderr.on('data', (d: Buffer) => (said += d))
  })
  t.match(said, /mounted at/, 'the demo says where it is mounted')
  const readme = run('cat', [path.join(demoMnt, 'README.md')], { timeout: 30_000 })
  t.equal(readme.status, 0, 'a file of the demo reads from another process')
  t.ok(String(readme.stdout).length > 0, 'with content')
  demo.kill('SIGINT')
  t.equal(await exited, 0, 'Ctrl-C unmounts and exits 0')
  t.same(mountsBelow(demoMnt), [], 'nothing left mounted')

  // `aysfs-native rebuild` (lib/rebuild.ts) without a compiler names the packages.
  const refused = rebuild(project, bare)
  t.equal(refused.status, 1, 'rebuild() without a compiler resolves 1')
  t.match(refused.stderr, /apt-get install (libfuse3-dev )?(libbrotli-dev )?cmake g\+\+ make pkg-config/, 'and names the packages')
  t.notOk(fs.existsSync(path.join(installed, 'build')), 'and builds nothing')
})
