// Hostile servers: redirect loops, bodies longer than the flist says (endless ones too),
// Content-Encoding bombs, brotli bombs, one byte a second. Each fails in bounded time and
// memory, nothing of it reaches the cache, and the next source serves the right bytes.
import * as fs from 'node:fs'
import * as http from 'node:http'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { createFetcher, type Pipeline } from '../../lib/pipeline'
import { MAX_REDIRECTS } from '../../lib/sources/http'
import { startFaultServer, type FaultMode, type FaultServer } from '../helpers/faults'
import { config, errorOf, files, mountHere, writeStore } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'
import { makeConfig, memLog, randomBytes, writeBlob, type StoredBlob } from '../helpers/store'

const TIMEOUT = 1000

function fetcher(t: Test, cache: string, stores: string[]): Pipeline {
  const f = createFetcher({ config: makeConfig({ cache, stores, timeoutMs: TIMEOUT }), log: memLog(), backoff: { baseMs: 0 } })
  t.teardown(() => f.close())
  return f
}

function get(url: string): Promise<void> {
  return new Promise((resolve) => http.get(url, (res) => res.resume().on('end', resolve)).on('error', () => resolve()))
}

/** Fetch through one hostile store: how it failed, how long it took, what RSS it cost. */
async function attempt(t: Test, srv: FaultServer, mode: FaultMode, blob: StoredBlob): Promise<{ kind: string; ms: number; rssMiB: number; requests: number; cache: string }> {
  const cache = tmpdir(t)
  const f = fetcher(t, cache, [srv.base(mode)])
  const before = srv.count()
  const rss0 = process.memoryUsage().rss
  let peak = rss0
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5)
  const start = Date.now()
  const err = await errorOf(() => f.fetch(blob.md5, blob.size))
  const ms = Date.now() - start
  clearInterval(sampler)
  t.equal(err?.code, 'EIO', `${mode}: EIO`)
  t.notOk(fs.existsSync(path.join(cache, blob.md5[0]!, blob.md5[1]!, blob.md5)), `${mode}: nothing cached`)
  t.same(fs.readdirSync(path.join(cache, 'tmp')), [], `${mode}: no temp file left`)
  const kinds = Object.keys(f.stats().sources[0]!.errorKinds)
  return { kind: kinds.join(','), ms, rssMiB: (peak - rss0) / 2 ** 20, requests: srv.count() - before, cache }
}

t.test('each hostile server alone: bounded in time and memory', async (t) => {
  const store = tmpdir(t)
  const blob = writeBlob(store, randomBytes(100_000, 51))
  const srv = await startFaultServer({ store })
  t.teardown(() => srv.close())
  // Make the bombs once, before measuring (the server builds them in this process).
  await get(`${srv.base('cebomb')}/files/${blob.md5[0]}/${blob.md5[1]}/${blob.md5}`)
  await get(`${srv.base('bomb')}/files/${blob.md5[0]}/${blob.md5[1]}/${blob.md5}.bro`)

  const loop = await attempt(t, srv, 'loop', blob)
  t.equal(loop.kind, 'redirects')
  t.ok(loop.requests <= MAX_REDIRECTS + 1, `a redirect loop: ${loop.requests} requests (1 + at most ${MAX_REDIRECTS} hops)`)

  for (const mode of ['long', 'longcl', 'endless'] as const) {
    const r = await attempt(t, srv, mode, blob)
    t.equal(r.kind, 'too-long', `${mode}: cut as too long`)
    t.ok(r.ms < 1000, `${mode}: in ${r.ms} ms`)
    t.ok(r.rssMiB < 32, `${mode}: ${r.rssMiB.toFixed(1)} MiB`)
  }

  // 64 MiB of zeros as a gzip Content-Encoding, cut to the blob's length: never decoded, so it
  // is 100,000 bytes of the wrong content, not 64 MiB.
  const ce = await attempt(t, srv, 'cebomb', blob)
  t.equal(ce.kind, 'md5', 'a Content-Encoding bomb is never decoded: wrong content, not too long')
  t.ok(ce.rssMiB < 32, `cebomb: ${ce.rssMiB.toFixed(1)} MiB`)

  // A .bro that expands to 64 MiB: decompression stops at size + 1.
  const bro = await attempt(t, srv, 'bomb', blob)
  t.equal(bro.kind, 'bro-too-long')
  t.ok(bro.rssMiB < 32, `brotli bomb: ${bro.rssMiB.toFixed(1)} MiB`)

  // One byte a second: the speed floor (1 KiB/s over `timeout`) fails it after the timeout.
  const drip = await attempt(t, srv, 'drip', blob)
  t.equal(drip.kind, 'timeout')
  t.ok(drip.ms >= TIMEOUT && drip.ms < TIMEOUT * 1.25 + 200, `one byte a second: failed after ${drip.ms} ms (timeout ${TIMEOUT} ms)`)
})

t.test('hostile servers in front of a good store: the right bytes, from the good one', async (t) => {
  const store = tmpdir(t)
  const blob = writeBlob(store, randomBytes(60_000, 52))
  const srv = await startFaultServer({ store })
  t.teardown(() => srv.close())
  const cache = tmpdir(t)
  const f = fetcher(t, cache, ['loop', 'endless', 'cebomb', 'bomb', 'drip'].map((m) => srv.base(m as FaultMode)).concat(srv.base('good')))
  const start = Date.now()
  await f.fetch(blob.md5, blob.size)
  t.ok(Date.now() - start < 6 * TIMEOUT + 1000, `served in ${Date.now() - start} ms`)
  t.ok(fs.readFileSync(path.join(cache, blob.md5[0]!, blob.md5[1]!, blob.md5)).equals(blob.data))
})

t.test('through a mount: a store of random faults in front of a good one, every byte right', async (t) => {
  const dir = tmpdir(t)
  const list = files(150, (i) => 500 + ((i * 7919) % 60_000), 53)
  const store = path.join(dir, 'store')
  writeStore(store, list)
  const srv = await startFaultServer({ store, random: { rate: 0.5, seed: 7 }, keepRequests: false })
  t.teardown(() => srv.close())
  const m = await mountHere(t, path.join(dir, 'mnt'), config(path.join(dir, 'cache'), [srv.base('random'), srv.base('good')]), {})
  const wrong: string[] = []
  let next = 0
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < list.length) {
        const f = list[next++]!
        if (!(await fs.promises.readFile(path.join(m.mountpoint, f.path))).equals(f.data)) wrong.push(f.path)
      }
    }),
  )
  t.same(wrong, [], `${list.length} files, every byte right`)
  t.ok(Object.keys(srv.randomServed).length > 3, `faults served: ${JSON.stringify(srv.randomServed)}`)
  t.equal(m.stats().engine.errors, 0, 'no read failed')
})
