// The package as users get it: `npm pack`, then install the tarball into a fresh project.
//  1. With --ignore-scripts on a PATH with only node and npm (no compiler, cmake, make,
//     pkg-config): the shipped prebuild loads (never a build/ directory: the tarball has none)
//     and a real mount serves reads through the installed package.
//  2. A tarball without prebuilds/ (a platform we ship none for): the install script compiles
//     the addon with cmake-js, and that build mounts and reads.
//  3. The same with no compiler on PATH: the install fails naming the Debian packages to install.
//  4. `aysfs-native rebuild` (lib/rebuild.ts): with no compiler it names the packages and builds
//     nothing (in 1); with one, in the package compiled in 2 with a prebuild put back beside it,
//     it runs cmake-js (incremental: 2 compiled from nothing already) and build/Release is loaded
//     before the prebuild. Three compiles from nothing cost minutes: the pack's prebuild and the
//     install script's build are the two that matter.
// The pack runs in a copy of the source tree: prepack rebuilds build/ and moves the addon into
// prebuilds/, which must not happen under the working tree other tests load from.
import { spawn, spawnSync, type SpawnSyncOptions } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { packageRoot } from '../../lib/package-root'
import { clearMounts, mountsBelow, tmpdir } from '../helpers/mount'
import { md5, tableFor } from '../helpers/tree'
import { floorViolations } from '../helpers/elf'

const root = packageRoot()
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: string; version: string; main: string }
const installScript = require(path.join(root, 'scripts', 'install.js')) as { missingPackages(env: NodeJS.ProcessEnv): string[] }
const FIXTURE_FETCHER = path.join(root, 'test', 'fixtures', 'fetcher.js')
const prebuildName = `prebuilds/linux-${os.arch()}/${pkg.name}.glibc.node`

interface Result {
  status: number | null
  stdout: string
  stderr: string
}

function run(cmd: string, args: string[], opts: SpawnSyncOptions & { timeout: number }): Result {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts })
  if (r.error) return { status: null, stdout: String(r.stdout ?? ''), stderr: `${r.error.message}\n${String(r.stderr ?? '')}` }
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) }
}

function tail(r: Result): string {
  return `exit ${r.status}\n${(r.stdout + r.stderr).slice(-3000)}`
}

/**
 * An environment with nothing of this process's npm or tap state (NODE_OPTIONS carries tap's
 * TypeScript loader): PATH as given, plus what reaching the registry may need.
 */
function cleanEnv(PATH: string): NodeJS.ProcessEnv {
  // Compiles (prepack's prebuild, the install script, rebuild()) use every CPU: cmake-js runs
  // `cmake --build` without -j, and make alone compiles one file at a time.
  const env: NodeJS.ProcessEnv = { PATH, HOME: os.homedir(), LANG: 'C.UTF-8', CMAKE_BUILD_PARALLEL_LEVEL: String(os.cpus().length) }
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(TMPDIR|SSL_CERT_\w+|NODE_EXTRA_CA_CERTS|https?_proxy|no_proxy|npm_config_(registry|cache|userconfig))$/i.test(k)) env[k] = v
  }
  return env
}

function which(name: string): string {
  const r = run('sh', ['-c', `command -v ${name}`], { timeout: 10_000 })
  return fs.realpathSync(r.stdout.trim())
}

const work = tmpdir(t, 'aysfs-package-')
const fullPath = process.env.PATH ?? '/usr/bin:/bin'

// A bin directory with node, npm and the shell npm runs scripts with: no compiler, cmake, make,
// pkg-config or node-gyp.
const bare = path.join(work, 'bin')
fs.mkdirSync(bare)
fs.symlinkSync(which('sh'), path.join(bare, 'sh'))
fs.symlinkSync(fs.realpathSync(process.execPath), path.join(bare, 'node'))
fs.symlinkSync(which('npm'), path.join(bare, 'npm'))
fs.symlinkSync(which('npx'), path.join(bare, 'npx'))

// The tree to mount: one file fetched on a miss, one already in the cache.
const hello = Buffer.from('hello from the installed package\n')
const world = Buffer.from('a cached blob\n')
const table = tableFor([
  { path: '/dir', kind: 'dir', perms: 0o755, size: 0, md5: '', mtime: 1_700_000_000 },
  { path: '/hello', kind: 'file', perms: 0o644, size: hello.length, md5: md5(hello), mtime: 1_700_000_000 },
  { path: '/dir/world', kind: 'file', perms: 0o644, size: world.length, md5: md5(world), mtime: 1_700_000_000 },
])

// Run inside a consumer project: mounts with the installed package's engine, reads, unmounts,
// and reports which .node file the process mapped.
const CHECK = `'use strict'
const fs = require('fs')
const path = require('path')
const data = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
const pkgDir = path.dirname(require.resolve('${pkg.name}/package.json'))
const out = { pkgDir }
;(async () => {
  out.resolved = require(require.resolve('node-gyp-build', { paths: [pkgDir] })).path(pkgDir)
  if (fs.existsSync(path.join(pkgDir, data.main))) out.exports = Object.keys(require('${pkg.name}'))
  // The low-level engine is not an exported subpath: reach it by file.
  const { Engine } = require(path.join(pkgDir, 'dist', 'lib', 'engine.js'))
  const engine = await Engine.mount({
    mountpoint: data.mnt,
    cacheDir: data.cache,
    table: Buffer.from(data.table, 'base64'),
    fetcher: { module: data.fetcher, data: { cacheDir: data.cache, mode: 'copy', sourceDir: data.blobs } },
  })
  try {
    out.listing = fs.readdirSync(data.mnt).sort()
    out.hello = fs.readFileSync(path.join(data.mnt, 'hello'), 'utf8')
    out.world = fs.readFileSync(path.join(data.mnt, 'dir', 'world'), 'utf8')
    out.stats = engine.stats()
  } finally {
    await engine.unmount()
  }
  out.stillMounted = fs.readFileSync('/proc/self/mounts', 'utf8').split('\\n').some((l) => l.split(' ')[1] === data.mnt)
  const maps = fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').map((l) => l.split(/\\s+/)[5])
  out.addons = [...new Set(maps.filter((f) => f && f.endsWith('.node')))]
  process.stdout.write(JSON.stringify(out))
})().catch((err) => {
  console.error(err && err.stack ? err.stack : err)
  process.exit(1)
})
`

interface CheckOutput {
  pkgDir: string
  resolved: string
  exports?: string[]
  listing: string[]
  hello: string
  world: string
  stats: { misses: number; missCalls: number; hits: number }
  stillMounted: boolean
  addons: string[]
}

/** A fresh project with one dependency, the tarball. */
function consumer(name: string): string {
  const dir = path.join(work, name)
  fs.mkdirSync(dir)
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, version: '1.0.0', private: true }))
  return dir
}

/** Mounts through the package installed in `project`, with PATH as given. */
function mountAndRead(project: string, PATH: string): CheckOutput | Result {
  const base = path.join(project, 'mount-check')
  const blobs = path.join(base, 'blobs')
  const cache = path.join(base, 'cache')
  const mnt = path.join(base, 'mnt')
  for (const d of [blobs, path.join(cache, md5(world)[0]!, md5(world)[1]!), mnt]) fs.mkdirSync(d, { recursive: true })
  fs.writeFileSync(path.join(blobs, md5(hello)), hello)
  fs.writeFileSync(path.join(cache, md5(world)[0]!, md5(world)[1]!, md5(world)), world)
  const dataFile = path.join(base, 'data.json')
  fs.writeFileSync(
    dataFile,
    JSON.stringify({ main: pkg.main, mnt, cache, blobs, fetcher: FIXTURE_FETCHER, table: table.toString('base64') }),
  )
  fs.writeFileSync(path.join(project, 'check.js'), CHECK)
  const r = run(path.join(bare, 'node'), [path.join(project, 'check.js'), dataFile], {
    cwd: project,
    env: cleanEnv(PATH),
    timeout: 60_000,
    killSignal: 'SIGKILL',
  })
  if (r.status !== 0) return r
  return JSON.parse(r.stdout) as CheckOutput
}

function checkMount(t: Test, out: CheckOutput | Result, from: string): void {
  if ('status' in out) {
    t.fail(`the mount check ran: ${tail(out)}`)
    return
  }
  t.same(out.listing, ['dir', 'hello'], 'the tree is listed')
  t.equal(out.hello, hello.toString(), 'a missing blob was fetched by the miss worker and read')
  t.equal(out.world, world.toString(), 'a cached blob was read')
  t.ok(out.stats.missCalls >= 1 && out.stats.hits >= 1, `one miss, cached hits (${JSON.stringify(out.stats)})`)
  t.equal(out.stillMounted, false, 'unmounted')
  const pkgDir = fs.realpathSync(out.pkgDir)
  t.same(out.addons, [path.join(pkgDir, from)], `the process mapped ${from} and no other addon`)
  t.equal(fs.realpathSync(out.resolved), path.join(pkgDir, from), `node-gyp-build resolves ${from}`)
  if (fs.existsSync(path.join(out.pkgDir, pkg.main))) t.ok(out.exports && out.exports.length > 0, `require('${pkg.name}') loads`)
}

// ---- pack (once for the file) ----

const src = path.join(work, 'src')
const SKIP = new Set(['node_modules', 'build', 'dist', 'prebuilds', '.git', '.tap', '.scratch'])
fs.mkdirSync(src)
for (const entry of fs.readdirSync(root)) {
  if (SKIP.has(entry) || entry.endsWith('.tgz')) continue
  fs.cpSync(path.join(root, entry), path.join(src, entry), { recursive: true })
}
fs.symlinkSync(path.join(root, 'node_modules'), path.join(src, 'node_modules'))
const packed = path.join(work, 'packed')
fs.mkdirSync(packed)
const pack = run('npm', ['pack', '--pack-destination', packed], { cwd: src, env: cleanEnv(fullPath), timeout: 300_000 })
const tarball = path.join(packed, `${pkg.name}-${pkg.version}.tgz`)

t.test('npm pack ships the prebuild, the compiled JS and the sources to compile from', async (t) => {
  t.equal(pack.status, 0, `npm pack: ${pack.status === 0 ? 'ok' : tail(pack)}`)
  t.ok(fs.existsSync(tarball), 'the tarball exists')
  const list = run('tar', ['-tzf', tarball], { timeout: 60_000 })
    .stdout.split('\n')
    .filter(Boolean)
    .map((p) => p.replace(/^package\//, ''))
  for (const file of [
    'package.json',
    prebuildName,
    'dist/lib/engine.js',
    'dist/lib/miss-worker.js',
    'dist/lib/native.js',
    'dist/lib/rebuild.js',
    'dist/lib/engine.d.ts',
    'dist/binding.d.ts',
    'binding.d.ts',
    'CMakeLists.txt',
    'native/addon.cc',
    'scripts/install.js',
  ]) {
    t.ok(list.includes(file), `ships ${file}`)
  }
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
  const install = run(
    path.join(bare, 'npm'),
    ['install', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', tarball],
    { cwd: project, env: cleanEnv(bare), timeout: 300_000 },
  )
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

/** `rebuild()` of the package installed in `project`, with PATH as given. */
function rebuild(project: string, PATH: string): Result {
  const installed = path.join(project, 'node_modules', pkg.name)
  return run(path.join(bare, 'node'), ['-e', `require(${JSON.stringify(path.join(installed, 'dist', 'lib', 'rebuild.js'))}).rebuild().then((code) => { process.exitCode = code })`], {
    cwd: project,
    env: cleanEnv(PATH),
    timeout: 300_000,
  })
}

t.test('with no prebuild for the platform, the install script compiles the addon', async (t) => {
  if (!fs.existsSync(tarball)) return t.fail('no tarball')
  // The same tarball without prebuilds/.
  const repack = path.join(work, 'repack')
  fs.mkdirSync(repack)
  t.equal(run('tar', ['-xzf', tarball, '-C', repack], { timeout: 60_000 }).status, 0, 'the tarball extracts')
  fs.rmSync(path.join(repack, 'package', 'prebuilds'), { recursive: true, force: true })
  const bareTarball = path.join(packed, `${pkg.name}-${pkg.version}-noprebuild.tgz`)
  t.equal(run('tar', ['-czf', bareTarball, '-C', repack, 'package'], { timeout: 60_000 }).status, 0, 'repacked without prebuilds/')

  t.test('no compiler: the install fails and names the packages', async (t) => {
    const project = consumer('nocompiler')
    const install = run(
      path.join(bare, 'npm'),
      ['install', '--prefer-offline', '--foreground-scripts', '--no-audit', '--no-fund', bareTarball],
      { cwd: project, env: cleanEnv(bare), timeout: 300_000 },
    )
    t.not(install.status, 0, 'npm install fails')
    const output = install.stdout + install.stderr
    t.match(output, /no prebuilt addon for linux-\w+; compiling from source/, 'says why it compiles')
    t.match(output, /apt-get install (libfuse3-dev )?(libbrotli-dev )?cmake g\+\+ make pkg-config/, `names the missing packages:\n${tail(install)}`)
  })

  t.test('with a compiler: it compiles, loads from build/Release and mounts', async (t) => {
    const project = consumer('compiled')
    const install = run(
      path.join(bare, 'npm'),
      ['install', '--prefer-offline', '--foreground-scripts', '--no-audit', '--no-fund', bareTarball],
      { cwd: project, env: cleanEnv(fullPath), timeout: 300_000 },
    )
    t.equal(install.status, 0, `npm install: ${install.status === 0 ? 'ok' : tail(install)}`)
    t.match(install.stdout + install.stderr, /no prebuilt addon for linux-\w+; compiling from source/, 'the install script compiled')
    const installed = path.join(project, 'node_modules', pkg.name)
    t.notOk(fs.existsSync(path.join(installed, 'prebuilds')), 'no prebuilds/')
    const built = path.join('build', 'Release', 'aysfs_native.node')
    t.ok(fs.existsSync(path.join(installed, built)), `${built} was compiled`)
    // Loading needs no compiler: run the check on the bare PATH.
    checkMount(t, mountAndRead(project, bare), built)

    // `aysfs-native rebuild` with a compiler, next to a prebuild (the one the tarball ships):
    // it compiles build/Release, which is loaded before the prebuild.
    fs.cpSync(path.join(work, 'extract', 'package', 'prebuilds'), path.join(installed, 'prebuilds'), { recursive: true })
    const rebuilt = rebuild(project, fullPath)
    t.equal(rebuilt.status, 0, `rebuild() with a compiler: ${rebuilt.status === 0 ? 'ok' : tail(rebuilt)}`)
    const resolved = run(path.join(bare, 'node'), ['-p', `require('node-gyp-build').path(${JSON.stringify(installed)})`], {
      cwd: project,
      env: cleanEnv(bare),
      timeout: 30_000,
    })
    t.equal(resolved.stdout.trim(), path.join(installed, 'build', 'Release', 'aysfs_native.node'), 'the rebuilt addon is loaded before the prebuild')
  })
})
