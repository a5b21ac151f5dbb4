// The package on a platform we ship no prebuild for: a tarball without prebuilds/, installed
// into fresh projects, where the install script (scripts/install.js) compiles the addon.
//  1. The tarball is `npm pack --ignore-scripts` of the source tree with the dist/ that
//     `npm run build:ts` made (npm test builds it first) copied in: what a real pack ships, less
//     prebuilds/, without compiling (install-prebuilt.test.ts makes the real one, side by side
//     with this file). Checked: the compiled JS of every lib/ source and nothing older, no binary.
//  2. With no compiler on PATH, the install fails naming the Debian packages to install.
//  3. With one, the install script compiles the addon with cmake-js, and that build loads from
//     build/Release and mounts and reads.
//  4. `aysfs-native rebuild` (lib/rebuild.ts) with a compiler, in the package compiled in 3 with
//     a prebuild put beside it: it runs cmake-js (incremental: 3 compiled from nothing already)
//     and build/Release is loaded before the prebuild.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { builtName, checkMount, cleanEnv, fullPath, packageWork, pkg, prebuildName, root, run, SHIPPED, sourceCopy, tail, tarList } from '../helpers/package'

const { work, bare, consumer, install: installTarball, mountAndRead, rebuild } = packageWork(t)

// ---- pack without prebuilds/ (once for the file) ----

const src = sourceCopy(work)
fs.cpSync(path.join(root, 'dist'), path.join(src, 'dist'), { recursive: true })
const packed = path.join(work, 'packed')
fs.mkdirSync(packed)
// No lifecycle scripts: prepack and prepare would rebuild dist/ (the same as the copy) and compile the prebuild.
const pack = run('npm', ['pack', '--ignore-scripts', '--pack-destination', packed], { cwd: src, env: cleanEnv(fullPath), timeout: 120_000 })
const tarball = path.join(packed, `${pkg.name}-${pkg.version}.tgz`)

/** Files below `dir` (relative to it) whose names end in `ext`. */
function filesBelow(dir: string, ext: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith(ext)).sort()
}

t.test('npm pack --ignore-scripts with dist/ copied in ships what a real pack does, less prebuilds/', async (t) => {
  t.equal(pack.status, 0, `npm pack --ignore-scripts: ${pack.status === 0 ? 'ok' : tail(pack)}`)
  t.ok(fs.existsSync(tarball), 'the tarball exists')
  const list = tarList(tarball)
  for (const file of SHIPPED) t.ok(list.includes(file), `ships ${file}`)
  t.same(list.filter((p) => p.endsWith('.node') || p.startsWith('prebuilds/')), [], 'no prebuilds/ and no binary')
  t.same(list.filter((p) => /^(build|test|node_modules|lib|\.ci)\//.test(p)), [], 'no build/, tests, TypeScript sources or CI files')
  // The dist/ copied in is the one `npm run build:ts` makes from these sources, as prepare would.
  const sources = filesBelow(path.join(root, 'lib'), '.ts').filter((f) => !f.endsWith('.d.ts'))
  t.same(
    list.filter((p) => p.startsWith('dist/lib/') && p.endsWith('.js')).sort(),
    sources.map((f) => `dist/lib/${f.replace(/\.ts$/, '.js')}`).sort(),
    'the compiled JS of every lib/ source and of nothing else',
  )
  const stale = sources.filter((f) => {
    const js = path.join(root, 'dist', 'lib', f.replace(/\.ts$/, '.js'))
    return !fs.existsSync(js) || fs.statSync(path.join(root, 'lib', f)).mtimeMs > fs.statSync(js).mtimeMs + 1000
  })
  t.same(stale, [], 'dist/lib/ is no older than lib/ (else run `npm run build:ts`)')
})

t.test('with no prebuild for the platform, the install script compiles the addon', async (t) => {
  if (!fs.existsSync(tarball)) return t.fail('no tarball')

  t.test('no compiler: the install fails and names the packages', async (t) => {
    const project = consumer('nocompiler')
    const install = installTarball(project, tarball, bare)
    t.not(install.status, 0, 'npm install fails')
    const output = install.stdout + install.stderr
    t.match(output, /no prebuilt addon for linux-\w+; compiling from source/, 'says why it compiles')
    t.match(output, /apt-get install (libfuse3-dev )?(libbrotli-dev )?cmake g\+\+ make pkg-config/, `names the missing packages:\n${tail(install)}`)
  })

  t.test('with a compiler: it compiles, loads from build/Release and mounts', async (t) => {
    const project = consumer('compiled')
    const install = installTarball(project, tarball, fullPath)
    t.equal(install.status, 0, `npm install: ${install.status === 0 ? 'ok' : tail(install)}`)
    t.match(install.stdout + install.stderr, /no prebuilt addon for linux-\w+; compiling from source/, 'the install script compiled')
    const installed = path.join(project, 'node_modules', pkg.name)
    t.notOk(fs.existsSync(path.join(installed, 'prebuilds')), 'no prebuilds/')
    t.ok(fs.existsSync(path.join(installed, builtName)), `${builtName} was compiled`)
    // Loading needs no compiler: run the check on the bare PATH.
    checkMount(t, mountAndRead(project, bare), builtName)

    // `aysfs-native rebuild` with a compiler, next to a prebuild (this tree's own build, where
    // node-gyp-build looks for the prebuild): it compiles build/Release, which is loaded before
    // the prebuild.
    const own = path.join(root, builtName)
    t.ok(fs.existsSync(own), `this tree's ${builtName} exists to stand in for the prebuild (else run \`npx cmake-js compile\`)`)
    fs.mkdirSync(path.dirname(path.join(installed, prebuildName)), { recursive: true })
    fs.copyFileSync(own, path.join(installed, prebuildName))
    const rebuilt = rebuild(project, fullPath)
    t.equal(rebuilt.status, 0, `rebuild() with a compiler: ${rebuilt.status === 0 ? 'ok' : tail(rebuilt)}`)
    const resolved = run(path.join(bare, 'node'), ['-p', `require('node-gyp-build').path(${JSON.stringify(installed)})`], {
      cwd: project,
      env: cleanEnv(bare),
      timeout: 30_000,
    })
    t.equal(resolved.stdout.trim(), path.join(installed, builtName), 'the rebuilt addon is loaded before the prebuild')
  })
})
