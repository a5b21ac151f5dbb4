// Every fault of the fault server, alone (EIO within the bound, nothing cached) and in front of a
// good store (the right bytes from the next source). Never a wrong byte in the cache.
import t, { type Test } from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { createFetcher, type Pipeline } from '../../lib/pipeline'
import { startFaultServer, type FaultMode, type FaultServer } from '../helpers/faults'
import { makeConfig, memLog, randomBytes, writeBlob, type StoredBlob } from '../helpers/store'
import { tmpdir } from '../helpers/tmp'

const TIMEOUT = 1000

/** The fault kind each mode must be counted as (on the store it is configured as). */
const FAULTS: [FaultMode, RegExp][] = [
  ['e500', /^http-500$/],
  ['e401', /^http-401$/],
  ['wrong', /^md5$/],
  ['truncated', /^(truncated|net:ECONNRESET)$/],
  ['stall', /^timeout$/],
  ['silent', /^timeout$/],
  ['reset', /^net:ECONNRESET$/],
  ['trickle', /^timeout$/],
  ['loop', /^redirects$/],
  ['long', /^too-long$/],
  ['longcl', /^too-long$/],
  ['endless', /^too-long$/],
  ['bomb', /^bro-too-long$/],
]

async function faultServer(t: Test, store: string, opts: Parameters<typeof startFaultServer>[0] = {}): Promise<FaultServer> {
  const s = await startFaultServer({ store, ...opts })
  t.teardown(() => s.close())
  return s
}

function fetcher(t: Test, cache: string, stores: string[], caches: string[] = []): Pipeline {
  const f = createFetcher({ config: makeConfig({ cache, stores, caches, timeoutMs: TIMEOUT }), log: memLog() })
  t.teardown(() => f.close())
  return f
}

function assertNoWrongBytes(t: Test, cache: string, blob: StoredBlob, expectPresent: boolean): void {
  const file = path.join(cache, blob.md5[0], blob.md5[1], blob.md5)
  if (expectPresent) t.same(fs.readFileSync(file), blob.data, 'the right bytes')
  else t.notOk(fs.existsSync(file), 'nothing cached')
  t.same(fs.readdirSync(path.join(cache, 'tmp')), [], 'no temp file left')
}

t.test('each fault alone: EIO within timeout + 1 s', async (t) => {
  const storeDir = tmpdir(t)
  const blob = writeBlob(storeDir, randomBytes(100_000, 11))
  const srv = await faultServer(t, storeDir)
  for (const [mode, kind] of FAULTS) {
    await t.test(mode, async (t) => {
      const cache = tmpdir(t)
      const f = fetcher(t, cache, [srv.base(mode)])
      const start = Date.now()
      const err = await f.fetch(blob.md5, blob.size).then(() => undefined, (e: unknown) => e)
      const took = Date.now() - start
      t.match(err, { code: 'EIO', message: /no source could serve it/ })
      t.ok(took < TIMEOUT + 1000, `failed in ${took} ms`)
      const st = f.stats().sources[0]
      t.equal(st.errors, 1, 'one error counted')
      t.match(Object.keys(st.errorKinds), [kind])
      t.equal(st.hits, 0)
      assertNoWrongBytes(t, cache, blob, false)
    })
  }
})

t.test('each fault in front of a good store: the right bytes from the next one', async (t) => {
  const storeDir = tmpdir(t)
  const blob = writeBlob(storeDir, randomBytes(100_000, 12))
  const srv = await faultServer(t, storeDir)
  for (const [mode] of FAULTS) {
    await t.test(mode, async (t) => {
      const cache = tmpdir(t)
      const f = fetcher(t, cache, [srv.base(mode), srv.base('good')])
      const start = Date.now()
      await f.fetch(blob.md5, blob.size)
      const took = Date.now() - start
      t.ok(took < 2 * TIMEOUT + 1000, `served in ${took} ms`)
      assertNoWrongBytes(t, cache, blob, true)
      t.match(f.stats().sources, [{ hits: 0, errors: 1 }, { hits: 1, errors: 0 }])
    })
  }
})

t.test('faults as grid caches: the store serves, the cache that served wrong bytes gets a push', async (t) => {
  const storeDir = tmpdir(t)
  const blob = writeBlob(storeDir, randomBytes(5000, 13))
  writeBlob(storeDir, blob.data, { layout: 'cache' }) // what the `wrong` cache mangles
  const srv = await faultServer(t, storeDir)
  const cache = tmpdir(t)
  const putTarget = tmpdir(t)
  const f = fetcher(t, cache, [storeDir], [srv.base('e500'), srv.base('wrong'), `file://${putTarget}`])
  await f.fetch(blob.md5, blob.size)
  await f.drain()
  assertNoWrongBytes(t, cache, blob, true)
  const st = f.stats().sources
  t.match(st, [
    { key: 'cache[0]', errors: 1, pushes: 0, pushErrors: 0 },
    { key: 'cache[1]', errors: 1, errorKinds: { md5: 1 } },
    { key: 'cache[2]', misses: 1, pushes: 1 },
    { key: 'store[0]', hits: 1 },
  ])
  t.equal(srv.count((r) => r.method === 'PUT' && r.mode === 'e500'), 0, 'no push to a cache that is failing')
  t.equal(srv.count((r) => r.method === 'PUT' && r.mode === 'wrong'), 1, 'a push to the cache with wrong content')
})

t.test('a faulty store is logged once per kind, counted every time', async (t) => {
  const storeDir = tmpdir(t)
  const blobs = [1, 2, 3].map((i) => writeBlob(storeDir, randomBytes(2000, 20 + i)))
  const srv = await faultServer(t, storeDir)
  const log = memLog()
  // No backoff (lib/health.ts; test/hardening covers it): every fetch meets the fault.
  const f = createFetcher({ config: makeConfig({ cache: tmpdir(t), stores: [srv.base('e500'), srv.base('good')], timeoutMs: TIMEOUT }), log, backoff: { baseMs: 0 } })
  t.teardown(() => f.close())
  for (const b of blobs) await f.fetch(b.md5, b.size)
  t.match(f.stats().sources[0], { errors: 3, errorKinds: { 'http-500': 3 }, lastError: /HTTP 500/ })
  const warns = log.lines.filter((l) => l.level === 'warn')
  t.equal(warns.length, 1)
  t.match(warns[0], { obj: { source: 'store[0]', kind: 'http-500' }, msg: /store\[0\].*HTTP 500/ })
})

t.test('a slow but steady source (over 1 KiB/s) is not cut, however long it takes', async (t) => {
  const storeDir = tmpdir(t)
  const blob = writeBlob(storeDir, randomBytes(4000, 30))
  const srv = await faultServer(t, storeDir, { trickleBps: 2000 })
  const cache = tmpdir(t)
  const f = fetcher(t, cache, [srv.base('trickle')])
  const start = Date.now()
  await f.fetch(blob.md5, blob.size)
  t.ok(Date.now() - start > TIMEOUT, 'took longer than the timeout')
  assertNoWrongBytes(t, cache, blob, true)
})

t.test('redirects are followed; user:password in the URL is sent as Basic auth', async (t) => {
  const storeDir = tmpdir(t)
  const blob = writeBlob(storeDir, randomBytes(3000, 31))
  const srv = await faultServer(t, storeDir)
  const cache = tmpdir(t)
  const f = fetcher(t, cache, [srv.base('redirect').replace('http://', 'http://us%40er:pa%3Ass@')])
  await f.fetch(blob.md5, blob.size)
  assertNoWrongBytes(t, cache, blob, true)
  t.same(
    srv.requests.map((r) => r.mode),
    ['redirect', 'good'],
  )
  t.equal(srv.requests[0].authorization, `Basic ${Buffer.from('us@er:pa:ss').toString('base64')}`)
  t.equal(f.stats().sources[0].url, srv.base('redirect').replace('http://', 'http://***@'), 'no credentials in stats')
})
