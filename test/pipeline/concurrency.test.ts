// Single flight (one download per blob however many ask) and back-pressure (max_downloads).
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { cleanTmp } from '../../lib/local-cache'
import { createFetcher, type Pipeline } from '../../lib/pipeline'
import { startFaultServer, type FaultServer } from '../helpers/faults'
import { makeConfig, memLog, randomBytes, writeBlob } from '../helpers/store'
import { tmpdir } from '../helpers/tmp'
import { until } from '../helpers/wait'

async function faultServer(t: Test, store: string, delayMs: number): Promise<FaultServer> {
  const s = await startFaultServer({ store, delayMs })
  t.teardown(() => s.close())
  return s
}

function fetcher(t: Test, cfg: Parameters<typeof makeConfig>[0]): Pipeline {
  const f = createFetcher({ config: makeConfig(cfg), log: memLog() })
  t.teardown(() => f.close())
  return f
}

t.test('single flight: 50 concurrent fetches of one blob, 1 download', async (t) => {
  const store = tmpdir(t)
  const blob = writeBlob(store, randomBytes(200_000, 40))
  const srv = await faultServer(t, store, 200)
  const cache = tmpdir(t)
  const f = fetcher(t, { cache, stores: [srv.base('slow')] })
  const all = Array.from({ length: 50 }, () => f.fetch(blob.md5, blob.size))
  t.equal(f.stats().merged, 49)
  await Promise.all(all)
  t.equal(srv.count((r) => r.rel.endsWith(blob.md5)), 1, 'one request at the server')
  t.same(fs.readFileSync(path.join(cache, blob.md5[0], blob.md5[1], blob.md5)), blob.data)
  t.match(f.stats(), { fetches: 50, merged: 49, served: 1 })
})

t.test('single flight also shares a failure', async (t) => {
  const store = tmpdir(t)
  const blob = writeBlob(store, 'x')
  const srv = await faultServer(t, store, 100)
  // No backoff (lib/health.ts): this is about what one blob's failure leaves behind.
  const f = createFetcher({ config: makeConfig({ cache: tmpdir(t), stores: [srv.base('e500')] }), log: memLog(), backoff: { baseMs: 0 } })
  t.teardown(() => f.close())
  const results = await Promise.allSettled(Array.from({ length: 5 }, () => f.fetch(blob.md5, blob.size)))
  t.ok(results.every((r) => r.status === 'rejected' && (r.reason as { code: string }).code === 'EIO'))
  t.equal(srv.count(), 1)
  // Nothing is remembered: a later fetch tries again.
  await f.fetch(blob.md5, blob.size).catch(() => {})
  t.equal(srv.count(), 2)
})

t.test('max_downloads: never more requests at once than allowed', async (t) => {
  const store = tmpdir(t)
  const blobs = Array.from({ length: 12 }, (_, i) => writeBlob(store, randomBytes(5000, 50 + i)))
  const srv = await faultServer(t, store, 150)
  const cache = tmpdir(t)
  const f = fetcher(t, { cache, stores: [srv.base('slow')], maxDownloads: 3 })
  const all = Promise.all(blobs.map((b) => f.fetch(b.md5, b.size)))
  // The first three reached the server (which answers each after 150 ms); the rest wait.
  t.ok(await until(() => srv.active === 3, 10_000, 5), 'three requests at the server')
  t.match(f.stats().downloads, { active: 3, queued: 9, max: 3 })
  await all
  t.equal(srv.maxActive, 3, 'at most 3 requests at the server at once')
  t.equal(srv.count(), 12)
  t.match(f.stats().downloads, { active: 0, queued: 0 })
  for (const b of blobs) t.ok(f.has(b.md5, b.size))
})

t.test('a blob that appears in the local cache while queued is not downloaded', async (t) => {
  const store = tmpdir(t)
  const slowOne = writeBlob(store, randomBytes(1000, 60))
  const other = writeBlob(store, randomBytes(1000, 61))
  const srv = await faultServer(t, store, 200)
  const cache = tmpdir(t)
  const f = fetcher(t, { cache, stores: [srv.base('slow')], maxDownloads: 1 })
  const first = f.fetch(slowOne.md5, slowOne.size)
  const second = f.fetch(other.md5, other.size)
  // Another process puts it in place meanwhile.
  writeBlob(cache, other.data, { layout: 'cache' })
  await Promise.all([first, second])
  t.equal(srv.count(), 1)
  t.equal(f.stats().alreadyCached, 1)
})

t.test('absent: a miss the caller just found missing does not look in the cache again, unless it waited for a slot', async (t) => {
  const store = tmpdir(t)
  const a = writeBlob(store, randomBytes(1000, 62))
  const b = writeBlob(store, randomBytes(1000, 63))
  const c = writeBlob(store, randomBytes(1000, 64))
  const srv = await faultServer(t, store, 200)
  const cache = tmpdir(t)
  const f = fetcher(t, { cache, stores: [srv.base('slow')], maxDownloads: 1 })
  // In the cache already, but the caller says it just found it absent (a race it lost): fetched
  // again, and the same bytes put in place.
  writeBlob(cache, a.data, { layout: 'cache' })
  await f.fetch(a.md5, a.size, undefined, { absent: true })
  t.equal(srv.count(), 1, 'downloaded: no lstat before it')
  t.equal(f.stats().alreadyCached, 0)
  t.same(fs.readFileSync(path.join(cache, a.md5[0]!, a.md5[1]!, a.md5)), a.data)
  // Found absent by a read that looked before the download it now follows put it in place:
  // looked for after all (a download of it settled lately), not fetched again.
  await f.fetch(a.md5, a.size, undefined, { absent: true })
  t.equal(srv.count(), 1, 'a blob this fetcher just downloaded is looked for')
  t.equal(f.stats().alreadyCached, 1)
  // Queued behind another download: looked for once it has a slot.
  const first = f.fetch(c.md5, c.size, undefined, { absent: true })
  const second = f.fetch(b.md5, b.size, undefined, { absent: true })
  writeBlob(cache, b.data, { layout: 'cache' })
  await Promise.all([first, second])
  t.equal(srv.count(), 2, 'the queued one was not downloaded')
  t.equal(f.stats().alreadyCached, 2)
})

t.test('temp files of dead writers are cleaned at start; live ones are not', async (t) => {
  const cache = tmpdir(t)
  const tmp = path.join(cache, 'tmp')
  fs.mkdirSync(tmp)
  const old = new Date(Date.now() - 3600_000)
  const dead = path.join(tmp, '999999999.1234.0.1.0123456789abcdef0123456789abcdef')
  const mine = path.join(tmp, `${process.pid}.${fs.readFileSync('/proc/self/stat', 'latin1').split(') ')[1].split(' ')[19]}.0.1.x`)
  const fresh = path.join(tmp, '999999998.1234.0.1.y')
  for (const f of [dead, mine, fresh]) fs.writeFileSync(f, 'partial')
  fs.utimesSync(dead, old, old)
  fs.utimesSync(mine, old, old)
  const f = createFetcher({ config: makeConfig({ cache }), log: memLog() })
  t.teardown(() => f.close())
  t.same(fs.readdirSync(tmp).sort(), [path.basename(mine), path.basename(fresh)].sort(), 'the dead one is gone')
  t.equal(cleanTmp(tmp, Date.now() + 2 * 86400_000), 2, 'anything a day old goes')
})

t.test('local cache failures are EIO of the cache, never blamed on a source', async (t) => {
  const store = tmpdir(t)
  const blob = writeBlob(store, randomBytes(1000, 62))
  const cache = tmpdir(t)
  const f = fetcher(t, { cache, stores: [store] })
  // The tmp dir removed under a running fetcher: made again.
  fs.rmSync(path.join(cache, 'tmp'), { recursive: true })
  await f.fetch(blob.md5, blob.size)
  t.ok(f.has(blob.md5, blob.size))
  // The tmp dir replaced by a file: nothing can be written.
  const other = writeBlob(store, randomBytes(1000, 63))
  fs.rmSync(path.join(cache, 'tmp'), { recursive: true })
  fs.writeFileSync(path.join(cache, 'tmp'), 'not a directory')
  await t.rejects(f.fetch(other.md5, other.size), { code: 'EIO', message: /^local cache / })
  t.match(f.stats().sources[0], { hits: 1, errors: 0 })
})

t.test('a full disk after the readers got their bytes: evict, retry, and they are answered once', async (t) => {
  // The cache on a 1 MiB tmpfs (a real ENOSPC): each blob is handed out checked (onVerified)
  // before it is written; the third does not fit until the pipeline evicts.
  const store = tmpdir(t)
  const blobs = [0, 1, 2].map((i) => writeBlob(store, randomBytes(400_000, 70 + i)))
  const cache = path.join(tmpdir(t), 'cache')
  fs.mkdirSync(cache)
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', cache])
  t.teardown(() => execFileSync('umount', ['-l', cache]))
  const f = fetcher(t, { cache, stores: [store] })
  for (const b of blobs) {
    const handed: Buffer[] = []
    await f.fetch(b.md5, b.size, (data) => handed.push(Buffer.from(data)))
    t.equal(handed.length, 1, `${b.md5}: handed out once`)
    t.ok(handed[0]!.equals(b.data), `${b.md5}: the right bytes`)
    t.ok(fs.readFileSync(path.join(cache, b.md5[0]!, b.md5[1]!, b.md5)).equals(b.data), `${b.md5}: in the cache`)
  }
  const s = f.stats()
  t.ok(s.cache.evicted > 0, `evicted to make room (${s.cache.evicted})`)
  t.match(s, { served: 3, failed: 0, noSpace: 0 })
  t.match(s.sources[0], { hits: 3, errors: 0 }, 'the store is not blamed for the disk')
})
