// The pipeline against a real nginx: store fetches, .bro, grid-cache pushes, offline, flists.
import t, { type Test } from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { createFetcher, type Pipeline } from '../../lib/pipeline'
import { AysfsError } from '../../lib/errors'
import { until } from '../helpers/hardening'
import { startNginx, type Nginx } from '../helpers/nginx'
import { makeConfig, makeStore, memLog, randomBytes, writeBlob } from '../helpers/store'
import { tmpdir } from '../helpers/tmp'

async function nginx(t: Test, opts: Parameters<typeof startNginx>[0] = {}): Promise<Nginx> {
  const n = await startNginx(opts)
  t.teardown(() => n.stop())
  return n
}

function fetcher(t: Test, cfg: Parameters<typeof makeConfig>[0]): { f: Pipeline; log: ReturnType<typeof memLog> } {
  const log = memLog()
  const f = createFetcher({ config: makeConfig(cfg), log })
  t.teardown(() => f.close())
  return { f, log }
}

function cached(cache: string, md5: string): Buffer {
  return fs.readFileSync(path.join(cache, md5[0], md5[1], md5))
}

t.test('fetch a blob from a store', async (t) => {
  const n = await nginx(t)
  const blob = writeBlob(n.dirs.store, randomBytes(300_000, 1))
  const cache = tmpdir(t)
  const { f } = fetcher(t, { cache, stores: [`${n.url}/store`] })
  await f.fetch(blob.md5, blob.size)
  t.same(cached(cache, blob.md5), blob.data)
  t.ok(f.has(blob.md5, blob.size))
  const st = f.stats()
  t.equal(st.served, 1)
  t.match(st.sources[0], { key: 'store[0]', role: 'store', hits: 1, misses: 0, errors: 0, bytes: blob.size })
  t.same(fs.readdirSync(path.join(cache, 'tmp')), [], 'no temp file left')
  // A second fetch is answered by the local cache: no request.
  const before = n.requests().length
  await f.fetch(blob.md5, blob.size)
  t.equal(n.requests().length, before)
  t.equal(f.stats().alreadyCached, 1)
})

t.test('upper-case md5 and a zero-size blob', async (t) => {
  const n = await nginx(t)
  const blob = writeBlob(n.dirs.store, 'hello world\n')
  const cache = tmpdir(t)
  const { f } = fetcher(t, { cache, stores: [`${n.url}/store`] })
  await f.fetch(blob.md5.toUpperCase(), blob.size)
  t.same(cached(cache, blob.md5), blob.data)
  await f.fetch('d41d8cd98f00b204e9800998ecf8427e', 0)
  t.equal(cached(cache, 'd41d8cd98f00b204e9800998ecf8427e').length, 0)
  t.equal(f.stats().empty, 1)
  t.equal(n.requests().length, 1, 'the empty blob needed no source')
  await t.rejects(f.fetch('0123456789abcdef0123456789abcdef', 0), { code: 'EIO' })
  await t.rejects(f.fetch('xyz', 1), new TypeError('md5 must be a string of 32 hex digits'))
  await t.rejects(f.fetch(blob.md5, -1), new TypeError('size must be a non-negative integer'))
  await t.rejects(f.fetch(blob.md5, 1.5), new TypeError('size must be a non-negative integer'))
})

t.test('.bro variant when there is no plain blob', async (t) => {
  const n = await nginx(t)
  const data = Buffer.concat([randomBytes(5000, 2), Buffer.alloc(200_000, 0x20)])
  const blob = writeBlob(n.dirs.store, data, { variant: 'bro' })
  const cache = tmpdir(t)
  const { f } = fetcher(t, { cache, stores: [`${n.url}/store`] })
  await f.fetch(blob.md5, blob.size)
  t.same(cached(cache, blob.md5), data)
  const uris = n.requests().map((r) => `${r.uri} ${r.status}`)
  const rel = `/store/files/${blob.md5[0]}/${blob.md5[1]}/${blob.md5}`
  t.same(uris, [`${rel} 404`, `${rel}.bro 200`], 'plain first, then .bro')
  t.match(f.stats().sources[0], { hits: 1, misses: 0, errors: 0 })
})

t.test('a bad .bro is rejected and the next store serves', async (t) => {
  const n = await nginx(t)
  const good = tmpdir(t)
  const blob = writeBlob(good, randomBytes(10_000, 3))
  // In the first store, a .bro of other content.
  const bad = path.join(n.dirs.store, 'files', blob.md5[0], blob.md5[1])
  fs.mkdirSync(bad, { recursive: true })
  fs.writeFileSync(path.join(bad, `${blob.md5}.bro`), require('node:zlib').brotliCompressSync(randomBytes(10_000, 4)))
  const cache = tmpdir(t)
  const { f } = fetcher(t, { cache, stores: [`${n.url}/store`, good] })
  await f.fetch(blob.md5, blob.size)
  t.same(cached(cache, blob.md5), blob.data)
  const st = f.stats()
  t.match(st.sources[0], { hits: 0, errors: 1, errorKinds: { md5: 1 } })
  t.match(st.sources[1], { hits: 1 })
})

t.test('push to a grid cache, exactly once; a second node then reads the grid cache only', async (t) => {
  const n = await nginx(t)
  const blobs = [writeBlob(n.dirs.store, randomBytes(70_000, 5)), writeBlob(n.dirs.store, randomBytes(1000, 6), { variant: 'bro' })]
  const cacheA = tmpdir(t)
  const a = fetcher(t, { cache: cacheA, caches: [`${n.url}/cache`], stores: [`${n.url}/store`] })
  await Promise.all([...blobs, ...blobs].map((b) => a.f.fetch(b.md5, b.size)))
  await a.f.drain()
  for (const b of blobs) {
    const rel = path.join(b.md5[0], b.md5[1], b.md5)
    t.same(fs.readFileSync(path.join(n.dirs.cache, rel)), b.data, 'the pushed file is the plain content')
    const puts = () => n.requests().filter((r) => r.method === 'PUT' && r.uri === `/cache/${rel}`)
    // nginx writes its access log after the response has gone out: wait for the line.
    await until(() => puts().length > 0, 5000, 10)
    t.same(puts().map((r) => r.status), [201], 'one PUT per blob')
  }
  t.match(a.f.stats().sources, [
    { key: 'cache[0]', misses: 2, hits: 0, pushes: 2, pushErrors: 0 },
    { key: 'store[0]', hits: 2 },
  ])
  t.same(fs.readdirSync(n.dirs.cache).filter((x) => x.startsWith('.')), [], 'no temp files in the grid cache')

  const before = n.requests().length
  const cacheB = tmpdir(t)
  const b = fetcher(t, { cache: cacheB, caches: [`${n.url}/cache`], stores: [`${n.url}/store`] })
  for (const blob of blobs) await b.f.fetch(blob.md5, blob.size)
  await b.f.drain()
  for (const blob of blobs) t.same(cached(cacheB, blob.md5), blob.data)
  const later = n.requests().slice(before)
  t.equal(later.length, 2)
  t.ok(later.every((r) => r.method === 'GET' && r.uri.startsWith('/cache/') && r.status === 200), 'nothing from the store, no push')
  t.match(b.f.stats().sources, [{ hits: 2, pushes: 0 }, { hits: 0, misses: 0 }])
})

t.test('push: not to a cache with push = false, and to a directory cache atomically', async (t) => {
  const n = await nginx(t)
  const blob = writeBlob(n.dirs.store, randomBytes(3000, 7))
  const dirCache = tmpdir(t)
  const cache = tmpdir(t)
  const { f } = fetcher(t, {
    cache,
    caches: [{ url: `${n.url}/cache`, push: false }, `file://${dirCache}`],
    stores: [`${n.url}/store`],
  })
  await f.fetch(blob.md5, blob.size)
  await f.drain()
  t.equal(n.requests().filter((r) => r.method === 'PUT').length, 0)
  t.same(fs.readFileSync(path.join(dirCache, blob.md5[0], blob.md5[1], blob.md5)), blob.data)
  t.same(fs.readdirSync(path.join(dirCache, blob.md5[0], blob.md5[1])), [blob.md5], 'only the blob, no temp file')
  t.match(f.stats().sources, [{ pushes: 0 }, { pushes: 1, misses: 1 }, { hits: 1 }])
})

t.test('a later grid cache that has it: the earlier one gets the push', async (t) => {
  const n = await nginx(t)
  const dirCache = tmpdir(t)
  const blob = writeBlob(dirCache, randomBytes(2000, 8), { layout: 'cache' })
  const cache = tmpdir(t)
  const { f } = fetcher(t, { cache, caches: [`${n.url}/cache`, dirCache], stores: [`${n.url}/store`] })
  await f.fetch(blob.md5, blob.size)
  await f.drain()
  t.same(fs.readFileSync(path.join(n.dirs.cache, blob.md5[0], blob.md5[1], blob.md5)), blob.data)
  t.notOk(n.requests().some((r) => r.uri.startsWith('/store/')), 'no store touched')
})

t.test('push failures are counted and logged once, and never delay the fetch', async (t) => {
  const n = await nginx(t)
  const blobs = [writeBlob(n.dirs.store, 'one'), writeBlob(n.dirs.store, 'two')]
  const cache = tmpdir(t)
  // /store/ answers GET but not PUT (405).
  const { f, log } = fetcher(t, { cache, caches: [`${n.url}/store/nothing-here`], stores: [`${n.url}/store`] })
  for (const b of blobs) await f.fetch(b.md5, b.size)
  await f.drain()
  t.match(f.stats().sources[0], { pushes: 0, pushErrors: 2 })
  t.equal(log.lines.filter((l) => l.level === 'warn' && /push failed/.test(l.msg)).length, 1)
})

t.test('offline: EIO within timeout × sources + 1 s, nothing in the cache', async (t) => {
  const n = await nginx(t)
  const blob = writeBlob(n.dirs.store, 'offline')
  await n.stop()
  const cache = tmpdir(t)
  const { f } = fetcher(t, { cache, caches: [`${n.url}/cache`], stores: [`${n.url}/store`, `http://localhost:${n.port}/x`], timeoutMs: 1000 })
  const start = Date.now()
  const err = await f.fetch(blob.md5, blob.size).then(() => undefined, (e: unknown) => e)
  const took = Date.now() - start
  t.type(err, AysfsError)
  t.equal((err as AysfsError).code, 'EIO')
  t.match((err as Error).message, /no source could serve it \(cache\[0\]: net:ECONNREFUSED, store\[0\]: net:ECONNREFUSED, store\[1\]: net:ECONNREFUSED\)/)
  t.ok(took < 3 * 1000 + 1000, `took ${took} ms`)
  t.notOk(f.has(blob.md5, blob.size))
  t.equal(f.stats().failed, 1)
})

t.test('flists: from the first store that has one, kept; the kept copy when offline', async (t) => {
  const n = await nginx(t)
  const store2 = tmpdir(t)
  const made = makeStore(store2, { '/opt/a': 'aaa', '/opt/b': 'bbbb' }, { id: 'svc' })
  fs.mkdirSync(path.join(n.dirs.store, 'md'))
  fs.writeFileSync(path.join(n.dirs.store, 'md', 'svc.flist'), made.flist)
  fs.writeFileSync(path.join(n.dirs.store, 'md', 'svc.flist.sig'), 'SIG')
  const cache = tmpdir(t)
  const { f, log } = fetcher(t, { cache, stores: [`${n.url}/nothing`, `${n.url}/store`, store2] })
  const parse = (data: Buffer, sig?: Buffer) => ({ lines: data.toString().split('\n').filter(Boolean).length, sig: sig?.toString() })
  const r = await f.fetchFlist('svc', parse, { signature: true })
  t.match(r, { value: { lines: 2, sig: 'SIG' }, source: 'store[1]', kept: false })
  t.equal(fs.readFileSync(path.join(cache, 'md', 'svc.flist'), 'utf8'), made.flist)
  t.equal(fs.readFileSync(path.join(cache, 'md', 'svc.flist.sig'), 'utf8'), 'SIG')

  // Not anywhere: ENOENT, even with a kept copy of something else.
  await t.rejects(f.fetchFlist('nope', parse), { code: 'ENOENT', message: /flist nope: not found in any store/ })

  // An invalid flist from a store: the validator's error, nothing kept.
  await t.rejects(
    f.fetchFlist('svc', () => {
      throw new AysfsError('EINVAL', 'bad line 1')
    }),
    { code: 'EINVAL', message: 'bad line 1' },
  )

  // Too big for max_flist_size: a failure of that store; the next one serves.
  const small = fetcher(t, { cache, stores: [`${n.url}/store`, store2], maxFlistSize: 5 })
  const big = await small.f.fetchFlist('svc', parse)
  t.match(big, { source: 'kept', kept: true }, 'every store failed: the kept copy')
  t.match(small.f.stats().sources, [{ errors: 1, errorKinds: { 'too-long': 1 } }, { errors: 1, errorKinds: { 'too-long': 1 } }])

  // Offline: the kept copy, with a warning.
  await n.stop()
  const off = fetcher(t, { cache, stores: [`${n.url}/store`] })
  const kept = await off.f.fetchFlist('svc', parse, { signature: true })
  t.match(kept, { value: { lines: 2, sig: 'SIG' }, source: 'kept', kept: true })
  t.ok(off.log.lines.some((l) => l.level === 'warn' && /no store answered .*using the copy kept in/.test(l.msg)))
  t.equal(off.f.stats().flists.kept, 1)
  await t.rejects(off.f.fetchFlist('other', parse), { code: 'EIO', message: /flist other: no store answered \(store\[0\]: net:ECONNREFUSED\), and no copy is kept/ })
})

t.test('bearer token from token_file, or from headers', async (t) => {
  const n = await nginx(t)
  const blob = writeBlob(n.dirs.store, 'secret content')
  const dir = tmpdir(t)
  const tokenFile = path.join(dir, 'token')
  fs.writeFileSync(tokenFile, `${n.token}\n`)
  const cache = tmpdir(t)
  const noToken = fetcher(t, { cache, stores: [`${n.url}/auth`] })
  await t.rejects(noToken.f.fetch(blob.md5, blob.size), { code: 'EIO', message: /store\[0\]: http-401/ })
  const withToken = fetcher(t, { cache, stores: [{ url: `${n.url}/auth`, tokenFile }] })
  await withToken.f.fetch(blob.md5, blob.size)
  t.same(cached(cache, blob.md5), blob.data)
  const withHeader = fetcher(t, { cache: tmpdir(t), stores: [{ url: `${n.url}/auth`, headers: { Authorization: `Bearer ${n.token}` } }] })
  await withHeader.f.fetch(blob.md5, blob.size)
  t.pass('headers from the config are sent')
})
