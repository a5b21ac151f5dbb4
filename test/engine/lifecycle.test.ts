// Mount lifecycle: errors, unmount under load, many cycles, crashes, signals, outside umount.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { Engine } from '../../lib/engine'
import { packageRoot } from '../../lib/package-root'
import { clearMounts, fixtureFetcher, mountEngine, mountsBelow, processCounts, tmpdir } from '../helpers/mount'
import { md5, tableFor, type GenEntry } from '../helpers/tree'

const hello = Buffer.from('hello\n')
const entries: GenEntry[] = [
  { path: '/hello', kind: 'file', perms: 0o644, size: hello.length, md5: md5(hello), mtime: 1_700_000_000 },
  { path: '/slow', kind: 'file', perms: 0o644, size: 10, md5: 'ffffffffffffffffffffffffffffffff', mtime: 1_700_000_000 },
]
const table = tableFor(entries)

function setup(t: Test) {
  const dir = tmpdir(t)
  const blobs = path.join(dir, 'blobs')
  fs.mkdirSync(blobs)
  fs.writeFileSync(path.join(blobs, md5(hello)), hello)
  const cacheDir = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  return { dir, blobs, cacheDir, mnt }
}

// A node process using the compiled engine (npm test builds dist/ first).
function childScript(dir: string, body: string): string {
  const file = path.join(dir, 'child.js')
  fs.writeFileSync(
    file,
    `const { Engine } = require(${JSON.stringify(path.join(packageRoot(), 'dist/lib/engine.js'))})\n` +
      `const fs = require('fs')\n` +
      `const table = Buffer.from(${JSON.stringify(table.toString('base64'))}, 'base64')\n` +
      body,
  )
  return file
}

function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  return new Promise((resolve) => {
    const tick = (): void => {
      if (cond()) resolve(true)
      else if (Date.now() > end) resolve(false)
      else setTimeout(tick, 25)
    }
    tick()
  })
}

t.test('bad mountpoints are clear, coded errors', async (t) => {
  const { dir, cacheDir, mnt } = setup(t)
  const fetcher = fixtureFetcher({ cacheDir, mode: 'reject' })
  fs.writeFileSync(path.join(dir, 'file'), '')
  await t.rejects(Engine.mount({ mountpoint: path.join(dir, 'file'), cacheDir, table, fetcher }), { code: 'ENOTDIR', message: /not a directory/ })
  await t.rejects(Engine.mount({ mountpoint: path.join(dir, 'missing'), cacheDir, table, fetcher }), { code: 'ENOENT' })
  await t.rejects(Engine.mount({ mountpoint: mnt, cacheDir, table: Buffer.from('nonsense'), fetcher }), { code: 'EINVAL' })
  await mountEngine(t, { mountpoint: mnt, cacheDir, table, fetcher })
  await t.rejects(Engine.mount({ mountpoint: mnt, cacheDir, table, fetcher }), { code: 'EBUSY', message: /already mounted/ })
})

t.test('several mounts in one process, and an outside umount', async (t) => {
  const { cacheDir, blobs, dir } = setup(t)
  const fetcher = fixtureFetcher({ cacheDir, mode: 'copy', sourceDir: blobs })
  let exited = 0
  const mounts = await Promise.all(
    [1, 2, 3].map((i) => mountEngine(t, { mountpoint: path.join(dir, `m${i}`), cacheDir, table, fetcher, onExit: () => exited++ })),
  )
  for (const m of mounts) t.equal(fs.readFileSync(path.join(m.mountpoint, 'hello'), 'utf8'), 'hello\n')
  execFileSync('umount', [mounts[1]!.mountpoint])
  t.ok(await waitFor(() => !mounts[1]!.mounted, 3000), 'the engine noticed the outside umount')
  t.equal(exited, 1, 'onExit ran once')
  t.equal(fs.readFileSync(path.join(mounts[2]!.mountpoint, 'hello'), 'utf8'), 'hello\n', 'the others still serve')
})

t.test('unmount returns within a second while a file is held open and a read waits on a miss', async (t) => {
  const { cacheDir, blobs, mnt } = setup(t)
  const engine = await Engine.mount({ mountpoint: mnt, cacheDir, table, fetcher: fixtureFetcher({ cacheDir, mode: 'never', sourceDir: blobs }) })
  t.teardown(() => engine.unmount())
  // Another process holds a file open and a third waits on a miss that never settles.
  const holder = spawn('sh', ['-c', `exec 3<${mnt}/hello; echo ready; exec sleep 30`], { stdio: ['ignore', 'pipe', 'ignore'] })
  const waiter = spawn('cat', [path.join(mnt, 'slow')], { stdio: 'ignore' })
  const waiterExit = new Promise((resolve) => waiter.on('exit', resolve))
  t.teardown(() => {
    holder.kill('SIGKILL')
    waiter.kill('SIGKILL')
  })
  await new Promise((resolve) => holder.stdout.once('data', resolve))
  t.ok(await waitFor(() => engine.stats().parked === 1, 3000), 'the reader is parked on its miss')
  const start = Date.now()
  await engine.unmount()
  const took = Date.now() - start
  t.ok(took < 1000, `unmount took ${took} ms`)
  t.same(mountsBelow(mnt), [], 'nothing left mounted')
  const code = await waiterExit
  t.not(code, 0, 'the waiting reader failed instead of hanging')
})

/**
 * This process's fds and threads once they stop going down: threads of an engine just unmounted
 * (the miss worker's, libuv's) may take a moment to end. Settled: the same counts three polls in
 * a row (at most `ms`).
 */
async function settledCounts(ms = 5000): Promise<{ fds: number; threads: number }> {
  const end = Date.now() + ms
  let last = processCounts()
  let same = 0
  while (same < 3 && Date.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 25))
    const now = processCounts()
    same = now.fds === last.fds && now.threads === last.threads ? same + 1 : 0
    last = now
  }
  return last
}

// A leak of one fd or thread per cycle shows after any number of cycles; 50 catch one that
// happens every few cycles too.
const CYCLES = 50

t.test(`${CYCLES} mount/unmount cycles leave no fds or threads behind`, async (t) => {
  const { cacheDir, blobs, mnt } = setup(t)
  const fetcher = fixtureFetcher({ cacheDir, mode: 'copy', sourceDir: blobs })
  const cycle = async (): Promise<void> => {
    const engine = await Engine.mount({ mountpoint: mnt, cacheDir, table, fetcher })
    try {
      fs.readFileSync(path.join(mnt, 'hello'))
    } finally {
      await engine.unmount()
    }
  }
  for (let i = 0; i < 3; i++) await cycle() // warm-up: loads the addon, creates the cache
  const before = await settledCounts()
  for (let i = 0; i < CYCLES; i++) await cycle()
  // Earlier tests' child pipes may still close meanwhile: never more, maybe fewer.
  await waitFor(() => {
    const now = processCounts()
    return now.fds <= before.fds && now.threads <= before.threads
  }, 5000)
  const after = await settledCounts()
  t.ok(after.fds <= before.fds, `fds back to ${before.fds} (${after.fds})`)
  t.equal(after.threads, before.threads, `threads back to ${before.threads}`)
  t.same(mountsBelow(mnt), [])
})

t.test('a mount left by a SIGKILLed process is cleared by the next mount', async (t) => {
  const { dir, cacheDir, blobs, mnt } = setup(t)
  const script = childScript(
    dir,
    `Engine.mount({ mountpoint: ${JSON.stringify(mnt)}, cacheDir: ${JSON.stringify(cacheDir)}, table,
       fetcher: { module: ${JSON.stringify(require.resolve('../fixtures/fetcher.js'))}, data: { cacheDir: ${JSON.stringify(cacheDir)}, mode: 'copy', sourceDir: ${JSON.stringify(blobs)} } } })
     .then(() => console.log('mounted'))\n`,
  )
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => child.kill('SIGKILL'))
  await new Promise((resolve) => child.stdout.once('data', resolve))
  child.kill('SIGKILL')
  await new Promise((resolve) => child.on('exit', resolve))
  t.throws(() => fs.statSync(mnt), { code: 'ENOTCONN' }, 'the dead process left a broken mount')
  const engine = await mountEngine(t, { mountpoint: mnt, cacheDir, table, fetcher: fixtureFetcher({ cacheDir, mode: 'copy', sourceDir: blobs }) })
  t.equal(fs.readFileSync(path.join(mnt, 'hello'), 'utf8'), 'hello\n', 'mounting again at the same path works')
  t.equal(mountsBelow(mnt).length, 1, 'one mount, not a stack')
  await engine.unmount()
})

t.test('signals and exit unmount; a host with its own handlers keeps them', async (t) => {
  const { dir, cacheDir, mnt } = setup(t)
  const mountCall = `Engine.mount({ mountpoint: ${JSON.stringify(mnt)}, cacheDir: ${JSON.stringify(cacheDir)}, table,
       fetcher: { module: ${JSON.stringify(require.resolve('../fixtures/fetcher.js'))}, data: { cacheDir: ${JSON.stringify(cacheDir)}, mode: 'reject' } } })`
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    const script = childScript(dir, `${mountCall}.then(() => console.log('mounted'))\n`)
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] })
    t.teardown(() => child.kill('SIGKILL'))
    await new Promise((resolve) => child.stdout.once('data', resolve))
    t.equal(mountsBelow(mnt).length, 1, `mounted before ${signal}`)
    child.kill(signal)
    const [, sig] = await new Promise<[number | null, string | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])))
    t.equal(sig, signal, `the process still dies of ${signal}, as Node would`)
    t.same(mountsBelow(mnt), [], `${signal} unmounted`)
  }

  const host = childScript(
    dir,
    `process.on('SIGTERM', () => { console.log('host handler ' + fs.readdirSync(${JSON.stringify(mnt)}).join(',')); process.exit(0) })\n` +
      `${mountCall}.then(() => console.log('mounted'))\n`,
  )
  const out = spawnSync(process.execPath, ['-e', `
    const { spawn } = require('child_process')
    const c = spawn(process.execPath, [${JSON.stringify(host)}], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    c.stdout.on('data', (d) => { out += d; if (out.includes('mounted')) c.kill('SIGTERM') })
    c.on('exit', (code) => { console.log(JSON.stringify({ code, out })) })
  `], { encoding: 'utf8', timeout: 20_000 })
  const result = JSON.parse(out.stdout.trim().split('\n').pop()!) as { code: number; out: string }
  t.equal(result.code, 0, 'the host handled SIGTERM itself')
  t.match(result.out, /host handler hello,slow/, 'the host handler ran, with the mount still there')
  t.same(mountsBelow(mnt), [], 'and its process.exit unmounted')

  const idle = childScript(dir, `${mountCall}.then((e) => e.unmount()).then(() => console.log('done'))\n`)
  const r = spawnSync(process.execPath, [idle], { encoding: 'utf8', timeout: 15_000 })
  t.equal(r.status, 0, 'an unmounted engine keeps nothing alive: the process ends by itself')
  t.match(r.stdout, /done/)
  clearMounts(mnt)
})
