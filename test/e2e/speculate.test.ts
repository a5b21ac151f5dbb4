// Speculative fetching behind demand misses (lib/pipeline/speculate.ts), on real mounts against
// an HTTP store of the test's own that counts, delays and holds requests: the requests are
// counted at the server, never timed.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { makeFiles, startStore, waves, writeTree } from '../helpers/counting-store'
import { cacheBlobs, config, errorOf, md5, mountHere, readAsync, until } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'

type Pipeline = { speculation: { enabled: boolean; started: number; landed: number; used: number; failed: number; yielded: number; active: number; bytes: number; unusedBytes: number }; downloads: { active: number } }

function pipelineOf(m: { stats(): { pipeline?: unknown } }): Pipeline | undefined {
  return m.stats().pipeline as Pipeline | undefined
}

const N = 40

t.test('a cold read of a directory of small files, one after the other, waits on far fewer round trips than files', async (t) => {
  const dir = tmpdir(t)
  const list = makeFiles(Array.from({ length: N }, (_, i) => `pkg/m${String(i).padStart(2, '0')}.js`), () => 2000, 1)
  writeTree(path.join(dir, 'store'), list)
  // Every answer 30 ms late: the reader's next request overlaps the guesses still running.
  const srv = await startStore(t, path.join(dir, 'store'), 30)
  const mnt = path.join(dir, 'mnt')
  const m = await mountHere(t, mnt, config(path.join(dir, 'cache'), [srv.url], { speculate: true, timeout: '60s' }))
  for (const f of list) t.ok((await readAsync(path.join(mnt, f.rel))).equals(f.data), f.rel)
  t.ok(await until(() => pipelineOf(m)?.downloads.active === 0, 20_000), 'every download settled')
  const requests = srv.log.length
  t.equal(requests, N, 'each blob requested once (a read of a blob being guessed joins that download)')
  const w = waves(srv.log)
  t.ok(w <= N / 4, `the reader waited through ${w} round trips for ${N} files`)
  // Keep-alive: the guesses ran on a bounded pool of connections, reused.
  t.ok(srv.maxInFlight > 1 && srv.maxInFlight <= 16, `${srv.maxInFlight} requests at once`)
  t.ok(srv.connections <= srv.maxInFlight + 1, `${srv.connections} connections for ${requests} requests (the flist's included)`)
  const st = pipelineOf(m)!.speculation
  t.equal(st.enabled, true)
  t.ok(st.started >= N / 2, `the other files of the directory were guessed (${st.started})`)
  t.equal(st.failed, 0)
  // Reads of guesses that landed first are seen by their atime, to the clock's tick: at least some.
  t.ok(await until(() => pipelineOf(m)!.speculation.used >= 1, 10_000), 'guesses were used')
})

t.test('speculate = false: one request per read, one round trip after the other', async (t) => {
  const dir = tmpdir(t)
  const list = makeFiles(Array.from({ length: 12 }, (_, i) => `pkg/m${i}.js`), () => 2000, 2)
  writeTree(path.join(dir, 'store'), list)
  const srv = await startStore(t, path.join(dir, 'store'))
  const mnt = path.join(dir, 'mnt')
  const m = await mountHere(t, mnt, config(path.join(dir, 'cache'), [srv.url], { speculate: false }))
  const order: string[] = []
  for (const f of list.slice(0, 6)) {
    t.ok((await readAsync(path.join(mnt, f.rel))).equals(f.data))
    order.push(f.md5)
  }
  t.ok(await until(() => pipelineOf(m)?.downloads.active === 0, 20_000))
  t.same(srv.log.map((x) => x.md5), order, 'exactly the blobs read, in order')
  t.equal(waves(srv.log), 6)
  t.equal(srv.maxInFlight, 1)
  t.match(pipelineOf(m)!.speculation, { enabled: false, started: 0 })
  t.equal(cacheBlobs(path.join(dir, 'cache')).length, 6, 'nothing else in the local cache')
})

t.test('a miss never waits behind a guess: it takes the slot of one the server holds', async (t) => {
  const dir = tmpdir(t)
  const pkg = makeFiles(Array.from({ length: 6 }, (_, i) => `pkg/m${i}.js`), (i) => 1000 + i, 3)
  const other = makeFiles(['other/x.bin'], () => 3000, 4)
  writeTree(path.join(dir, 'store'), [...pkg, ...other])
  const srv = await startStore(t, path.join(dir, 'store'))
  for (const f of pkg.slice(1)) srv.hold.add(f.md5) // every guess hangs (no answer, no timeout soon)
  const mnt = path.join(dir, 'mnt')
  // One slot, which the guesses may fill alone: only a miss that takes it back gets through.
  const m = await mountHere(t, mnt, config(path.join(dir, 'cache'), [srv.url], { speculate: true, max_downloads: 1, timeout: '60s' }))
  t.ok((await readAsync(path.join(mnt, pkg[0]!.rel))).equals(pkg[0]!.data))
  t.ok(await until(() => srv.held >= 1 && pipelineOf(m)?.speculation.active === 1, 20_000), 'a guess holds the only slot')
  const x = readAsync(path.join(mnt, other[0]!.rel))
  t.ok(await until(() => srv.log.some((e) => e.md5 === other[0]!.md5 && e.end >= 0), 20_000), 'the miss reached the server and was answered while the guess hung')
  t.ok((await x).equals(other[0]!.data))
  t.equal(pipelineOf(m)!.speculation.yielded, 1, 'the guess gave its slot to the miss')
  const guessed = srv.log.find((e) => srv.hold.has(e.md5))!.md5
  t.equal(srv.log.find((e) => e.md5 === guessed)!.end, -1, 'and still runs (its request held, not cut)')
  // A miss of the blob being guessed joins that download: one request, answered when released.
  const file = pkg.find((f) => f.md5 === guessed)!
  const y = readAsync(path.join(mnt, file.rel))
  t.ok(await until(() => pipelineOf(m)?.speculation.used === 1, 20_000), 'the read joined the guess')
  srv.release()
  t.ok((await y).equals(file.data))
  t.equal(srv.log.filter((e) => e.md5 === guessed).length, 1, 'one request for it')
})

t.test('a guess is checked like a miss: wrong bytes are never kept, and a read of them fails', async (t) => {
  const dir = tmpdir(t)
  const list = makeFiles(Array.from({ length: 5 }, (_, i) => `pkg/m${i}.js`), (i) => 1000 + i, 5)
  const bad = list[3]!
  writeTree(path.join(dir, 'store'), list, new Set([bad.md5]))
  const srv = await startStore(t, path.join(dir, 'store'))
  const mnt = path.join(dir, 'mnt')
  const cache = path.join(dir, 'cache')
  const m = await mountHere(t, mnt, config(cache, [srv.url], { speculate: true }))
  t.ok((await readAsync(path.join(mnt, list[0]!.rel))).equals(list[0]!.data))
  t.ok(await until(() => pipelineOf(m)?.speculation.started === 4 && pipelineOf(m)?.speculation.active === 0, 20_000))
  const st = pipelineOf(m)!.speculation
  t.equal(st.failed, 1, 'the wrong guess failed')
  t.equal(st.landed, 3)
  const kept = new Set(cacheBlobs(cache).map((b) => b.md5))
  t.notOk(kept.has(bad.md5), 'not in the local cache')
  t.equal(kept.size, 4)
  for (const b of cacheBlobs(cache)) t.equal(md5(fs.readFileSync(b.file)), b.md5, `${b.name} holds its own bytes`)
  const err = await errorOf(() => readAsync(path.join(mnt, bad.rel)))
  t.equal(err?.code, 'EIO', 'a read of the bad blob fails: the store has no good copy')
})

t.test('a reload hands the miss worker the new tree to guess from', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const first = makeFiles(['a/x.js'], () => 100, 9)
  writeTree(store, first)
  const srv = await startStore(t, store)
  const mnt = path.join(dir, 'mnt')
  const m = await mountHere(t, mnt, config(path.join(dir, 'cache'), [srv.url], { speculate: true }))
  const added = makeFiles(Array.from({ length: 5 }, (_, i) => `b/m${i}.js`), () => 700, 10)
  writeTree(store, [...first, ...added])
  await m.reload()
  t.ok((await readAsync(path.join(mnt, added[0]!.rel))).equals(added[0]!.data))
  t.ok(await until(() => pipelineOf(m)?.speculation.landed === 4, 20_000), 'the new directory guessed')
  t.equal(srv.log.length, 5)
})
