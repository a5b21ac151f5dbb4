// The backstop of parked reads is a stall detector: a read waits as long as its download moves,
// and fails with EIO (the download ended too) only when the download made no progress for the
// window (docs/hardening.md, "The backstop of parked reads").
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { Cancel } from '../../lib/cancel'
import type { FetchOptions } from '../../lib/fetcher'
import { createFetcher } from '../../lib/pipeline'
import { startFaultServer } from '../helpers/faults'
import { config, errorOf, files, mountHere, until, writeStore } from '../helpers/hardening'
import { fixtureFetcher, mountEngine, tmpdir, type FixtureData } from '../helpers/mount'
import { makeConfig, memLog, randomBytes, writeBlob } from '../helpers/store'
import { md5, tableFor, type GenEntry } from '../helpers/tree'

/** `cat` in a child process: exit code, bytes, stderr, and how long it took. */
function catFile(file: string): Promise<{ code: number | null; out: Buffer; err: string; ms: number }> {
  const start = Date.now()
  return new Promise((resolve) => {
    const child = spawn('cat', [file])
    const out: Buffer[] = []
    let err = ''
    child.stdout.on('data', (d: Buffer) => out.push(d))
    child.stderr.on('data', (d: Buffer) => (err += d))
    child.on('close', (code) => resolve({ code, out: Buffer.concat(out), err, ms: Date.now() - start }))
  })
}

t.test('a slow but healthy download outlasts the old backstop: its first reader gets every byte', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  // 2.5 MiB at 256 KiB/s: about 10 s. The old backstop, timeout × (sources + 1) × 2 + 5 s, gave
  // up at 7 s with this timeout and one store.
  const [file] = files(1, 2.5 * 2 ** 20, 61)
  writeStore(store, [file!])
  const srv = await startFaultServer({ store, trickleBps: 256 * 1024 })
  t.teardown(() => srv.close())
  const mnt = path.join(dir, 'mnt')
  const m = await mountHere(t, mnt, config(path.join(dir, 'cache'), [srv.base('trickle')], { timeout: '500ms' }))
  // The flist itself came through the trickle too (small: fast enough).
  const r = await catFile(path.join(mnt, file!.path))
  t.equal(r.code, 0, `the first reader succeeded (${r.err.trim() || 'no error'})`)
  t.ok(r.out.equals(file!.data), 'with every byte right')
  t.ok(r.ms > 7000, `after ${r.ms} ms: longer than the old backstop (7000 ms)`)
  const e = m.stats().engine
  t.equal(e.missTimeouts, 0, 'the backstop never fired')
  t.equal(e.errors, 0)
})

t.test('a store that stalls mid-body: EIO within the window, and its connection is closed', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const [file] = files(1, 300_000, 62)
  writeStore(store, [file!])
  const srv = await startFaultServer({ store })
  t.teardown(() => srv.close())
  // The flist from a store that has no blobs, the blob from the one that stalls.
  const flists = path.join(dir, 'flists')
  writeStore(flists, [file!])
  fs.rmSync(path.join(flists, 'files'), { recursive: true })
  const mnt = path.join(dir, 'mnt')
  const m = await mountHere(t, mnt, config(path.join(dir, 'cache'), [flists, srv.base('stall')], { timeout: '500ms' }))
  const r = await catFile(path.join(mnt, file!.path))
  t.not(r.code, 0, 'the read failed')
  t.match(r.err, /Input\/output error/, 'with EIO')
  // Window: 2 × 500 ms + 1 s. The speed floor ends the stalled transfer first (at most
  // 9/8 × timeout after its last byte), which fails the fetch: no source left.
  t.ok(r.ms < 2000 + 1500, `after ${r.ms} ms (window 2000 ms)`)
  t.ok(await until(() => srv.active === 0, 3000), 'the stalled connection was closed')
  t.equal(m.stats().engine.missTimeouts, 0, 'the pipeline ended it before the backstop had to')
})

function entry(p: string, content: Buffer): GenEntry {
  return { path: p, kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000 }
}

async function engineWith(t: Test, data: Omit<FixtureData, 'cacheDir' | 'sourceDir'>, stallTimeoutMs: number) {
  const dir = tmpdir(t)
  const content = randomBytes(200_000, 63)
  fs.mkdirSync(path.join(dir, 'blobs'))
  fs.writeFileSync(path.join(dir, 'blobs', md5(content)), content)
  const cacheDir = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor([entry('/a.bin', content)]),
    fetcher: fixtureFetcher({ cacheDir, sourceDir: path.join(dir, 'blobs'), ...data }),
    stallTimeoutMs,
  })
  return { dir, mnt, engine, content }
}

t.test('a fetch that reports progress outlasts the window as long as it moves', async (t) => {
  const { mnt, engine, content } = await engineWith(t, { mode: 'progress', delayMs: 3000, progressEveryMs: 100 }, 1000)
  const r = await catFile(path.join(mnt, 'a.bin'))
  t.equal(r.code, 0, `the reader succeeded (${r.err.trim() || 'no error'})`)
  t.ok(r.out.equals(content), 'with the right bytes')
  t.ok(r.ms >= 2900, `after ${r.ms} ms: three times the window`)
  t.equal(engine.stats().missTimeouts, 0)
})

t.test('a fetch that never progresses: EIO after the window, and the fetch is aborted', async (t) => {
  const probe = tmpdir(t)
  const abortsFile = path.join(probe, 'aborts')
  const { mnt, engine, content } = await engineWith(t, { mode: 'never', abortsFile }, 1000)
  const r = await catFile(path.join(mnt, 'a.bin'))
  t.not(r.code, 0, 'the read failed')
  t.match(r.err, /Input\/output error/, 'with EIO')
  t.ok(r.ms >= 900 && r.ms < 5000, `after ${r.ms} ms (window 1000 ms)`)
  t.ok(
    await until(() => fs.existsSync(abortsFile) && fs.readFileSync(abortsFile, 'utf8').includes(md5(content)), 3000),
    "the fetch's signal aborted",
  )
  const s = engine.stats()
  t.equal(s.missTimeouts, 1, 'counted as a backstop timeout')
  t.equal(s.fetching, 0, 'nothing left in flight')
  t.equal(s.parked, 0)
})

/** A caller that may give up: through an `AbortSignal`, or the cheaper `cancel` the miss worker passes. */
function giver(kind: 'signal' | 'cancel'): { abort(): void; options: FetchOptions } {
  if (kind === 'cancel') {
    const c = new Cancel()
    return { abort: () => c.abort(new Error('gave up')), options: { cancel: c } }
  }
  const a = new AbortController()
  return { abort: () => a.abort(), options: { signal: a.signal } }
}

for (const kind of ['signal', 'cancel'] as const) {
  t.test(`the pipeline ends an abandoned download (${kind}): slot freed, queue left, connection dropped`, async (t) => {
    const dir = tmpdir(t)
    const store = path.join(dir, 'store')
    const slow = writeBlob(store, randomBytes(200_000, 64)) // 20 s at 10 kB/s
    const queued = writeBlob(store, randomBytes(3000, 65))
    const small = writeBlob(store, randomBytes(2000, 66))
    const srv = await startFaultServer({ store, trickleBps: 10_000 })
    t.teardown(() => srv.close())
    const cache = path.join(dir, 'cache')
    const f = createFetcher({ config: makeConfig({ cache, stores: [srv.base('trickle')], timeoutMs: 30_000, maxDownloads: 1 }), log: memLog(), fsync: false })
    t.teardown(() => f.close())

    const a = giver(kind)
    let aMoved = 0
    const pa = errorOf(() => f.fetch(slow.md5, slow.size, undefined, { ...a.options, onProgress: () => aMoved++ }))
    t.ok(await until(() => aMoved > 0, 3000), 'bytes arriving are progress')

    const b = giver(kind)
    let bMoved = 0
    const pb = errorOf(() => f.fetch(queued.md5, queued.size, undefined, { ...b.options, onProgress: () => bMoved++ }))
    t.same(f.stats().downloads, { active: 1, queued: 1, max: 1 }, 'the second waits for the slot')
    t.ok(await until(() => bMoved > 0, 3000), 'a queued fetch moves while the downloads move')
    b.abort()
    t.equal((await pb)?.code, 'EIO', 'an abandoned queued fetch rejects at once')
    t.equal(f.stats().downloads.queued, 0, 'and leaves the queue')

    // A caller that merged into a download keeps it when the other gives up.
    const c1 = giver(kind)
    const c2 = giver(kind)
    const p1 = errorOf(() => f.fetch(small.md5, small.size, undefined, c1.options))
    const p2 = f.fetch(small.md5, small.size, undefined, c2.options)
    c1.abort()
    t.equal((await p1)?.code, 'EIO', 'the caller that gave up is answered at once')

    const start = Date.now()
    a.abort()
    t.equal((await pa)?.code, 'EIO', 'the abandoned download rejects at once')
    t.ok(Date.now() - start < 1000, 'without waiting for its source')
    await p2
    t.ok(fs.existsSync(path.join(cache, small.md5[0]!, small.md5[1]!, small.md5)), 'the slot went to the next download, which completed for the caller that stayed')
    t.ok(await until(() => srv.active === 0, 3000), "the abandoned download's connection was dropped at its next chunk")
    t.notOk(fs.existsSync(path.join(cache, slow.md5[0]!, slow.md5[1]!, slow.md5)), 'nothing of it in the cache')
    t.ok(await until(() => fs.readdirSync(path.join(cache, 'tmp')).length === 0, 3000), 'and no temp file left')
    t.notOk(fs.existsSync(path.join(cache, queued.md5[0]!, queued.md5[1]!, queued.md5)), 'the abandoned queued fetch never started')
    const st = f.stats().sources[0]!
    t.equal(st.errors, 0, 'abandoning is not blamed on the source')
  })
}

t.test('a source timeout of weeks mounts: the backstop is capped at what the engine takes', async (t) => {
  // 2 × 1000 h + 1 s is more than 2^32 - 1 ms; the engine refuses a stallTimeoutMs that large
  // (a TypeError), so mount() caps it (it used to wrap around, to about 7 h for 600 h).
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const [f] = files(1, 1000, 91)
  writeStore(store, [f!])
  const m = await mountHere(t, path.join(dir, 'mnt'), config(path.join(dir, 'cache'), [store], { timeout: '1000h' }))
  t.ok(fs.readFileSync(path.join(m.mountpoint, f!.path)).equals(f!.data), 'reads right')
})
