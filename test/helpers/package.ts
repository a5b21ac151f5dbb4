// The package as users install it, for test/artifact/install-prebuilt.test.ts and
// install-source.test.ts: a copy of the source tree to pack, a PATH with node and npm only (no
// compiler), a fresh consumer project per install, and a real mount through the installed
// package's engine run in a child process of that project.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { packageRoot } from '../../lib/package-root'
import { tmpdir } from './tmp'
import { md5, tableFor } from './tree'

type Test = { teardown(fn: () => unknown): void }
/** The assertions of a tap test that checkMount() makes (helpers do not import tap). */
type Asserts = {
  fail(message: string): unknown
  same(found: unknown, wanted: unknown, message: string): unknown
  equal(found: unknown, wanted: unknown, message: string): unknown
  ok(value: unknown, message: string): unknown
}

/** This package's root (the worktree the tests run from). */
export const root = packageRoot()

/** The fields of package.json the tests use. */
export const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: string; version: string; main: string }

/** Where prebuildify puts this platform's prebuild, and where node-gyp-build looks for it. */
export const prebuildName = `prebuilds/linux-${os.arch()}/${pkg.name}.glibc.node`

/** What a compile of the addon produces, where node-gyp-build looks first. */
export const builtName = path.join('build', 'Release', 'aysfs_native.node')

/** Files every tarball ships besides the prebuild: the compiled JS and what a compile needs. */
export const SHIPPED = [
  'package.json',
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
]

/** The PATH this process has: with the compiler, cmake, make and pkg-config. */
export const fullPath = process.env.PATH ?? '/usr/bin:/bin'

const FIXTURE_FETCHER = path.join(root, 'test', 'fixtures', 'fetcher.js')

/** What a child process did. */
export interface Result {
  status: number | null
  stdout: string
  stderr: string
}

/** Runs `cmd` to its end; a spawn error or a timeout comes back as status null. */
export function run(cmd: string, args: string[], opts: SpawnSyncOptions & { timeout: number }): Result {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts })
  if (r.error) return { status: null, stdout: String(r.stdout ?? ''), stderr: `${r.error.message}\n${String(r.stderr ?? '')}` }
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) }
}

/** The exit status and the end of the output, for an assertion's message. */
export function tail(r: Result): string {
  return `exit ${r.status}\n${(r.stdout + r.stderr).slice(-3000)}`
}

/**
 * An environment with nothing of this process's npm or tap state (NODE_OPTIONS carries tap's
 * TypeScript loader): PATH as given, plus what reaching the registry may need.
 */
export function cleanEnv(PATH: string): NodeJS.ProcessEnv {
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

/** The paths in `tarball`, without npm's `package/` prefix. */
export function tarList(tarball: string): string[] {
  return run('tar', ['-tzf', tarball], { timeout: 60_000 })
    .stdout.split('\n')
    .filter(Boolean)
    .map((p) => p.replace(/^package\//, ''))
}

/**
 * A copy of the source tree in `work`/src to pack, without what a build makes (build/, dist/,
 * prebuilds/) and with node_modules linked. Packing with its lifecycle scripts rebuilds build/
 * and moves the addon into prebuilds/, which must not happen under the working tree other tests
 * load from.
 */
export function sourceCopy(work: string): string {
  const src = path.join(work, 'src')
  const SKIP = new Set(['node_modules', 'build', 'dist', 'prebuilds', '.git', '.tap', '.scratch'])
  fs.mkdirSync(src)
  for (const entry of fs.readdirSync(root)) {
    if (SKIP.has(entry) || entry.endsWith('.tgz')) continue
    fs.cpSync(path.join(root, entry), path.join(src, entry), { recursive: true })
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(src, 'node_modules'))
  return src
}

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

/** What CHECK reports. */
export interface CheckOutput {
  pkgDir: string
  resolved: string
  exports?: string[]
  listing: string[]
  hello: string
  world: string
  stats: { misses: number; missCalls: number; hits: number; pushedFiles: number }
  stillMounted: boolean
  addons: string[]
}

/** A test file's working directory and what it runs there. */
export interface PackageWork {
  /** A temp directory of the file's own, cleared of mounts and removed in teardown. */
  work: string
  /** A bin directory with node, npm, npx and sh: no compiler, cmake, make, pkg-config or node-gyp. */
  bare: string
  /** A fresh project in `work` with no dependencies yet. */
  consumer(name: string): string
  /**
   * `npm install TARBALL` in `project` with PATH as given: with the install script
   * (`--foreground-scripts`, its output kept), or without (`scripts: false`, `--ignore-scripts`).
   */
  install(project: string, tarball: string, PATH: string, opts?: { scripts?: boolean }): Result
  /** Mounts through the package installed in `project`, with PATH as given; the child's result when it failed. */
  mountAndRead(project: string, PATH: string): CheckOutput | Result
  /** `rebuild()` (lib/rebuild.ts) of the package installed in `project`, with PATH as given. */
  rebuild(project: string, PATH: string): Result
}

/** A temp directory for a test file, with the bare PATH set up in it. */
export function packageWork(t: Test): PackageWork {
  const work = tmpdir(t, 'aysfs-package-')
  const bare = path.join(work, 'bin')
  fs.mkdirSync(bare)
  fs.symlinkSync(which('sh'), path.join(bare, 'sh'))
  fs.symlinkSync(fs.realpathSync(process.execPath), path.join(bare, 'node'))
  fs.symlinkSync(which('npm'), path.join(bare, 'npm'))
  fs.symlinkSync(which('npx'), path.join(bare, 'npx'))

  function consumer(name: string): string {
    const dir = path.join(work, name)
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, version: '1.0.0', private: true }))
    return dir
  }

  function install(project: string, tarball: string, PATH: string, opts: { scripts?: boolean } = {}): Result {
    const scripts = opts.scripts === false ? ['--ignore-scripts'] : ['--foreground-scripts']
    return run(path.join(bare, 'npm'), ['install', ...scripts, '--prefer-offline', '--no-audit', '--no-fund', tarball], {
      cwd: project,
      env: cleanEnv(PATH),
      timeout: 300_000,
    })
  }

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

  function rebuild(project: string, PATH: string): Result {
    const installed = path.join(project, 'node_modules', pkg.name)
    const script = `require(${JSON.stringify(path.join(installed, 'dist', 'lib', 'rebuild.js'))}).rebuild().then((code) => { process.exitCode = code })`
    return run(path.join(bare, 'node'), ['-e', script], { cwd: project, env: cleanEnv(PATH), timeout: 300_000 })
  }

  return { work, bare, consumer, install, mountAndRead, rebuild }
}

/** Checks what mountAndRead() reported: the tree read through a mount, with `from` the only addon. */
export function checkMount(t: Asserts, out: CheckOutput | Result, from: string): void {
  if ('status' in out) {
    t.fail(`the mount check ran: ${tail(out)}`)
    return
  }
  t.same(out.listing, ['dir', 'hello'], 'the tree is listed')
  t.equal(out.hello, hello.toString(), 'a missing blob was fetched by the miss worker and read')
  t.equal(out.world, world.toString(), 'a cached blob was read')
  // The cached blob is served from the cache either way: by a READ answered from its cache file
  // (a hit), or with no READ at all when the small-file push its LOOKUP queued (`pushFiles`)
  // reached the page cache first. Which comes first is a race between the reader and the pusher.
  const fromCache = out.stats.hits >= 1 || out.stats.pushedFiles >= world.length
  t.ok(out.stats.missCalls >= 1 && fromCache, `one miss, the cached blob a hit or pushed whole (${JSON.stringify(out.stats)})`)
  t.equal(out.stillMounted, false, 'unmounted')
  const pkgDir = fs.realpathSync(out.pkgDir)
  t.same(out.addons, [path.join(pkgDir, from)], `the process mapped ${from} and no other addon`)
  t.equal(fs.realpathSync(out.resolved), path.join(pkgDir, from), `node-gyp-build resolves ${from}`)
  if (fs.existsSync(path.join(out.pkgDir, pkg.main))) t.ok(out.exports && out.exports.length > 0, `require('${pkg.name}') loads`)
}
