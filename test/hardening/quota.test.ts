// The cache quota (main.cache_size): LRU by the blobs' atimes, pins, and through real mounts:
// never a failed read or a wrong byte while evicting, and the accounting and the order kept
// across a remount. What a pass costs (under a second for 100,000 blobs) is a row of the
// benchmark (`npm run bench -- --only quota`, bench/quota.ts), not a timed assertion here.
import { execFileSync } from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { CacheQuota, GRACE_MS, LOW_WATER, freeBytes } from '../../lib/local-cache/quota'
import { cacheBlobs, config, files, mountHere, until, writeStore, type File } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'
import { memLog } from '../helpers/store'
import { fsClockPast, fsNow } from '../helpers/wait'

/** Writes blob files straight into a cache directory (as if fetched `ageS` ago). */
function fillCache(cache: string, n: number, size: (i: number) => number, ageS = 3600): string[] {
  const names: string[] = []
  const past = Date.now() / 1000 - ageS
  for (let i = 0; i < n; i++) {
    const name = crypto.createHash('md5').update(`blob ${i}`).digest('hex')
    const dir = path.join(cache, name[0]!, name[1]!)
    if (i < 300 || !fs.existsSync(dir)) fs.mkdirSync(dir, { recursive: true })
    const file = path.join(dir, name)
    fs.writeFileSync(file, Buffer.alloc(size(i), i & 0xff))
    names.push(name)
    // atime: arrival order (older first); mtime: the arrival. The utimes arms it (ctime = now).
    fs.utimesSync(file, past + i / 1000, past)
  }
  return names
}

function quota(cache: string, limit: number): CacheQuota {
  const q = new CacheQuota(cache, limit, memLog())
  q.graceMs = 0
  fs.mkdirSync(path.join(cache, 'tmp'), { recursive: true })
  let n = 0
  q.trashName = (label) => path.join(cache, 'tmp', `${process.pid}.0.${n++}.${label}`)
  return q
}

// 5,000 blobs spread over all 256 directories: what a pass counts and takes, not how fast (the
// benchmark's row times 100,000).
t.test('a pass counts every blob, and one over the quota evicts the oldest down to the low-water mark', async (t) => {
  const cache = tmpdir(t)
  const names = fillCache(cache, 5_000, (i) => 100 + (i % 2000))
  const q = quota(cache, 0)
  const scan = q.passSync()
  t.equal(scan.blobs, 5_000)
  t.equal(scan.evicted, 0, 'no quota: nothing evicted')
  t.equal(q.stats().used, scan.before, 'accounting: bytes on disk')
  t.equal(scan.before, cacheBlobs(cache).reduce((n, b) => n + b.bytes, 0), 'the bytes the blobs take on disk')

  // Just over the quota, as a pass finds it in use: down to the low-water mark.
  q.limit = Math.floor(scan.before * 0.99)
  const r = q.passSync()
  t.ok(r.after <= q.limit * LOW_WATER, 'down to the low-water mark')
  t.ok(r.after > q.limit * LOW_WATER - 4096 * 2, 'and not much further')
  t.ok(r.evicted > 250, `${r.evicted} blobs evicted`)
  // The oldest went, in order: the first r.evicted names are gone, the rest are there.
  const gone = names.filter((n) => !fs.existsSync(path.join(cache, n[0]!, n[1]!, n)))
  t.same(gone, names.slice(0, gone.length), 'least recently used first')
  t.equal(gone.length, r.evicted)
  t.ok(await until(() => q.pendingFrees === 0, 30_000), 'moved victims are freed in the background')
  t.same(fs.readdirSync(path.join(cache, 'tmp')), [], 'nothing left in tmp/')
})

t.test('reads decide the order: read blobs are kept, re-armed at each pass', async (t) => {
  const cache = tmpdir(t)
  const names = fillCache(cache, 10, () => 8192)
  const file = (i: number) => path.join(cache, names[i]![0]!, names[i]![1]!, names[i]!)
  const q = quota(cache, 0)
  // Blobs 0..4 are read (the oldest by arrival): an armed blob's atime moves to now.
  for (let i = 0; i < 5; i++) fs.readFileSync(file(i))
  const before = fs.statSync(file(0)).atimeMs
  t.ok(before > Date.now() - 60_000, 'the read moved the atime')
  q.passSync() // re-arms 0..4
  const armed = fs.statSync(file(0))
  t.ok(armed.atimeMs <= armed.ctimeMs, 'the pass re-armed it: atime not after ctime, so the next read is recorded (relatime)')
  // The read below stamps a time past the armed atime only once the file system's clock is past it.
  t.ok(await fsClockPast(cache, armed.atimeMs), 'the clock moved on')
  fs.readFileSync(file(0))
  t.ok(fs.statSync(file(0)).atimeMs > armed.atimeMs, 'a read after the pass moves it again (re-armed; relatime alone would not)')

  q.limit = Math.ceil((5 * 8192) / LOW_WATER) + 4096 // room for about five
  const r = q.passSync()
  t.equal(r.evicted, 5)
  t.same(
    names.map((_, i) => fs.existsSync(file(i))),
    [true, true, true, true, true, false, false, false, false, false],
    'the five never read went, whatever their arrival',
  )
})

t.test('pinned and fresh blobs are never taken by a pass', async (t) => {
  const cache = tmpdir(t)
  const names = fillCache(cache, 6, () => 4096)
  const q = quota(cache, 4096) // room for one
  q.pin(names[0]!)
  let r = q.passSync()
  t.ok(fs.existsSync(path.join(cache, names[0]![0]!, names[0]![1]!, names[0]!)), 'pinned: kept')
  t.equal(r.after, 4096, 'everything else went')
  q.unpin(names[0]!)
  r = q.passSync()
  t.equal(r.blobs, 1)

  // Grace: blobs that arrived less than graceMs ago stay (another process may serve them now).
  const cache2 = tmpdir(t)
  fillCache(cache2, 4, () => 4096, 0)
  const q2 = quota(cache2, 8192) // room for one below the low-water mark
  q2.graceMs = 60_000
  t.equal(q2.passSync().evicted, 0, 'all just arrived: none taken')
  q2.graceMs = 0
  t.equal(q2.passSync().evicted, 3, 'without the grace: all but one')
})

t.test('the disk is full: makeRoomSync frees what is needed, pins hold; a blob that can never fit evicts nothing', async (t) => {
  // A 2 MiB file system of our own, so that its free space is ours to reason about: 512 KiB of
  // another program's, and 20 blobs of 64 KiB (one pinned); about 256 KiB free.
  const cache = path.join(tmpdir(t), 'cache')
  fs.mkdirSync(cache)
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m,mode=0700', 'tmpfs', cache])
  t.teardown(() => execFileSync('umount', ['-l', cache]))
  fs.writeFileSync(path.join(cache, 'ballast'), Buffer.alloc(512 * 1024, 1))
  const names = fillCache(cache, 20, () => 65536)
  const q = quota(cache, 0)
  q.pin(names[0]!)
  const free = freeBytes(cache)
  t.ok(free > 0 && free % 4096 === 0, `${free} bytes free`)

  // More than the free space plus every blob (but less than the file system): nothing goes.
  let r = q.makeRoomSync(free + 20 * 65536 + 65536)
  t.match(r, { evicted: 0, bytes: 0, room: false, never: new RegExp(`^the file system of the cache has ${free} bytes free .*every cached blob and download in flight takes ${20 * 65536} more`) })
  t.equal(cacheBlobs(cache).length, 20, 'no blob evicted')
  // More than the whole file system: nothing goes either.
  r = q.makeRoomSync(Number.MAX_SAFE_INTEGER / 2)
  t.match(r, { evicted: 0, room: false, never: /^it is larger than the whole file system of the cache \(2097152 bytes/ })
  t.equal(cacheBlobs(cache).length, 20, 'no blob evicted')

  // Room only once every unpinned blob is gone (the 64 KiB slack included): all 19 go, the
  // pinned one stays.
  r = q.makeRoomSync(free + 19 * 65536 - 65536)
  t.match(r, { evicted: 19, bytes: 19 * 65536, room: true })
  t.equal(r.never, undefined)
  t.same(cacheBlobs(cache).map((b) => b.name), [names[0]], 'every blob but the pinned one')
  t.equal(q.stats().noSpace, 3)
})

t.test('neverFits: larger than cache_size, or than the file system', async (t) => {
  const cache = tmpdir(t)
  const q = quota(cache, 16 << 20)
  t.equal(q.neverFits(16 << 20), undefined, 'the quota itself fits')
  t.match(q.neverFits((16 << 20) + 1), /^it is larger than main\.cache_size \(16777216 bytes, 16\.0 MiB\)$/)
  q.limit = 0
  t.equal(q.neverFits(40 << 20), undefined, 'no quota: only the disk bounds it')
  t.match(q.neverFits(Number.MAX_SAFE_INTEGER / 2), /^it is larger than the whole file system of the cache \(\d+ bytes/)
})

/** Reads every file through the mount and returns those whose bytes differ. */
async function readAll(mnt: string, list: File[], concurrency = 8): Promise<string[]> {
  const wrong: string[] = []
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < list.length) {
        const f = list[next++]!
        // O_DIRECT: past the kernel's page cache of the mount, to the engine and its cache files.
        const fh = await fs.promises.open(path.join(mnt, f.path), fs.constants.O_RDONLY | fs.constants.O_DIRECT)
        const got = await fh.readFile().finally(() => fh.close())
        if (!got.equals(f.data)) wrong.push(f.path)
      }
    }),
  )
  return wrong
}

t.test('through a mount: reads racing evictions never fail and never see a wrong byte', async (t) => {
  const dir = tmpdir(t)
  const list = files(80, (i) => 16_384 + i * 512, 7)
  writeStore(path.join(dir, 'store'), list)
  const cache = path.join(dir, 'cache')
  const limit = 512 * 1024 // a fifth of the data
  const m = await mountHere(t, path.join(dir, 'mnt'), config(cache, [path.join(dir, 'store')], { cache_size: limit }))
  // Rounds of reads in random order while passes evict (they leave blobs younger than 2 s
  // alone), until half the files were evicted at least once (at most 30 s); O_DIRECT reads, so
  // each one reaches the engine and its cache files.
  const order = () => [...list].sort(() => Math.random() - 0.5)
  const end = Date.now() + 30_000
  let wrong: string[] = []
  let rounds = 0
  while (rounds < 3 || ((m.stats().pipeline?.cache.evicted ?? 0) < list.length / 2 && Date.now() < end)) {
    wrong = wrong.concat(await readAll(m.mountpoint, order(), 16))
    rounds++
  }
  t.same(wrong, [], `${rounds} rounds of ${list.length} reads: every byte right`)
  const stats = m.stats()
  t.equal(stats.engine.errors, 0, 'no read failed')
  t.ok((stats.pipeline?.cache.evicted ?? 0) > 0, `evictions happened (${stats.pipeline?.cache.evicted})`)
  // Passes come back while over the quota; once the grace of the newest blobs has passed, the
  // cache is within it.
  const onDisk = () => cacheBlobs(cache).reduce((n, b) => n + b.bytes, 0)
  t.ok(await until(() => onDisk() <= limit, 10_000), `within the quota (${onDisk()} <= ${limit})`)
  t.same(cacheBlobs(cache).filter((b) => b.md5 !== b.name), [], 'every cached blob is what its name says')
})

t.test('through a remount: the accounting and the LRU order survive', async (t) => {
  const dir = tmpdir(t)
  const list = files(40, 32_768, 8)
  writeStore(path.join(dir, 'store'), list)
  const cache = path.join(dir, 'cache')
  const limit = 20 * 36_864 // about 20 blobs with their blocks
  const cfg = config(cache, [path.join(dir, 'store')], { cache_size: limit })
  const first = await mountHere(t, path.join(dir, 'mnt'), cfg)
  // Session 1: files 0..29 in order, their atimes apart: each read waits until the file system's
  // clock is more than a millisecond past the time of the read before (re-arming moves an atime
  // back by one).
  for (const f of list.slice(0, 30)) {
    t.ok(fs.readFileSync(path.join(first.mountpoint, f.path)).equals(f.data))
    await fsClockPast(dir, fsNow(dir) + 1)
  }
  const onDisk = () => cacheBlobs(cache).reduce((n, b) => n + b.bytes, 0)
  t.ok(await until(() => onDisk() <= limit, 10_000), 'session 1 within the quota')
  await first.unmount()

  // Session 1's order as the cache recorded it: the blobs by atime. (A pass that re-arms a blob
  // read within one tick of the coarse clock behind ctime sets its atime just under the new
  // ctime, in the pass's scan order: LRU is to the granularity of the passes, so two reads a
  // millisecond apart may come out either way. What must survive the remount is this order.)
  const order1 = cacheBlobs(cache)
    .map((b) => ({ name: b.name, atime: fs.statSync(b.file).atimeMs }))
    .sort((a, b) => a.atime - b.atime)
    .map((b) => b.name)
  const kept1 = new Set(order1)
  const second = await mountHere(t, path.join(dir, 'mnt'), cfg)
  // Past the grace period (GRACE_MS) of session 1's last blobs, which passes measure from a blob's
  // mtime (its arrival) by Date.now(): often so already, session 1 having waited for its own
  // passes. Not faked by moving their mtimes back: utimes sets the ctime, which arms the atime
  // again, and the engine's page-cache pushes of the directory's small files then read them,
  // making session 1's blobs the most recent.
  const arrived = Math.max(...cacheBlobs(cache).map((b) => fs.statSync(b.file).mtimeMs))
  t.ok(await until(() => Date.now() - arrived >= GRACE_MS, GRACE_MS + 5000, 10), 'session 1 arrived more than the grace period ago')
  // Session 2: ten new files. Its first pass counts what is on disk (not zero) ...
  for (const f of list.slice(30)) t.ok(fs.readFileSync(path.join(second.mountpoint, f.path)).equals(f.data))
  t.ok(await until(() => (second.stats().pipeline?.cache.passes ?? 0) > 0, 5000))
  t.ok((second.stats().pipeline?.cache.used ?? 0) > limit / 2, `session 2 counted the cache it found (${second.stats().pipeline?.cache.used} bytes)`)
  t.ok(await until(() => onDisk() <= limit, 10_000), 'session 2 within the quota')
  // ... and the blobs it evicted are session 1's least recently read, in order.
  const kept2 = new Set(cacheBlobs(cache).map((b) => b.name))
  const s1 = list.slice(0, 30).map((f) => f.md5).filter((h) => kept1.has(h))
  t.comment(`session 1 blobs left after session 2, in session 1's read order: ${s1.map((h) => (kept2.has(h) ? 1 : 0)).join('')}`)
  const survivors = order1.map((h) => kept2.has(h))
  t.comment(`the same in the order of their atimes at the end of session 1: ${survivors.map((x) => (x ? 1 : 0)).join('')}`)
  const firstKept = survivors.indexOf(true)
  t.ok(firstKept > 0, 'some of session 1 went')
  t.same(survivors.slice(firstKept), survivors.slice(firstKept).map(() => true), 'the oldest went first: the survivors are the most recent')
})
