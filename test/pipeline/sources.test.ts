// The sources on their own: directory (and file://) and http(s), get and put.
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as https from 'node:https'
import type * as net from 'node:net'
import * as path from 'node:path'
import { createSource } from '../../lib/pipeline'
import { DirSource } from '../../lib/sources/dir'
import { HttpSource, Watchdog } from '../../lib/sources/http'
import { BlobWriter, BufferSink, MEMORY_BLOB_MAX, SourceFault } from '../../lib/sources/source'
import type { SourceConfig } from '../../lib/config'
import { startFaultServer, type FaultServer } from '../helpers/faults'
import { md5hex, randomBytes, writeBlob } from '../helpers/store'
import { tmpdir } from '../helpers/tmp'

function cfg(url: string, extra: Partial<SourceConfig> = {}): SourceConfig {
  return { url, headers: {}, push: true, key: 'store[0]', ...extra }
}

async function faultServer(t: Test, store: string): Promise<FaultServer> {
  const s = await startFaultServer({ store })
  t.teardown(() => s.close())
  return s
}

function http(t: Test, c: SourceConfig, role: 'cache' | 'store' = 'store', timeoutMs = 1000): HttpSource {
  const s = new HttpSource(c, role, { timeoutMs })
  t.teardown(() => s.close())
  return s
}

async function getBuffer(src: { get: DirSource['get'] }, rel: string, max = 1 << 20): Promise<Buffer | 'absent'> {
  const sink = new BufferSink(max)
  const r = await src.get(rel, sink)
  return r === 'absent' ? r : sink.data()
}

t.test('directory source: plain path and file:// URL', async (t) => {
  const root = tmpdir(t)
  const blob = writeBlob(root, randomBytes(3 << 20, 80))
  const rel = `files/${blob.md5[0]}/${blob.md5[1]}/${blob.md5}`
  for (const url of [root, `file://${root}`]) {
    const src = createSource(cfg(url), 'store', { timeoutMs: 1000 })
    t.type(src, DirSource)
    t.same(await getBuffer(src, rel, 4 << 20), blob.data)
    t.equal(await getBuffer(src, 'files/0/0/nothing'), 'absent')
    t.equal(await getBuffer(src, `${rel}/below-a-file`), 'absent', 'ENOTDIR is absent too')
    await t.rejects(src.get('files', new BufferSink(10)), { name: 'SourceFault', kind: 'not-a-file' })
  }
  const src = new DirSource(cfg(root), 'store')
  const dir = tmpdir(t)
  const w = new BlobWriter(blob.md5, blob.size - 1, path.join(dir, 'x'))
  await t.rejects(src.get(rel, w), { name: 'SourceFault', kind: 'too-long', message: /expected/ })
  w.abort()
  t.same(fs.readdirSync(dir), [], 'aborted writer leaves nothing')
})

t.test('directory source: atomic put', async (t) => {
  const root = tmpdir(t)
  const src = new DirSource(cfg(root, { key: 'cache[0]' }), 'cache')
  t.equal(src.push, true)
  const file = path.join(tmpdir(t), 'blob')
  const data = randomBytes(10 << 20, 81)
  fs.writeFileSync(file, data)
  const md5 = md5hex(data)
  await src.put(`${md5[0]}/${md5[1]}/${md5}`, file, data.length)
  t.same(fs.readFileSync(path.join(root, md5[0], md5[1], md5)), data)
  t.same(fs.readdirSync(path.join(root, md5[0], md5[1])), [md5])
  await t.rejects(src.put('a/b/c', file, data.length + 1), { name: 'SourceFault', kind: 'too-short' })
  t.same(fs.readdirSync(path.join(root, 'a', 'b')), [], 'no temp file after a failed put')
  t.equal(new DirSource(cfg(root), 'store').push, false, 'stores are never pushed to')
})

t.test('http source: headers, token file, PUT', async (t) => {
  const root = tmpdir(t)
  const blob = writeBlob(root, 'some content')
  const srv = await faultServer(t, root)
  const tokenFile = path.join(tmpdir(t), 'token')
  fs.writeFileSync(tokenFile, 'first\n')
  const src = http(t, cfg(srv.base('good'), { headers: { 'X-Custom': 'yes', Authorization: 'Basic overridden' }, tokenFile }))
  const rel = `files/${blob.md5[0]}/${blob.md5[1]}/${blob.md5}`
  t.same(await getBuffer(src, rel), blob.data)
  t.match(srv.requests[0].headers, { 'x-custom': 'yes', authorization: 'Bearer first', 'accept-encoding': 'identity', 'user-agent': 'aysfs-native' })
  fs.writeFileSync(tokenFile, 'second\n')
  const later = new Date(Date.now() + 5000)
  fs.utimesSync(tokenFile, later, later)
  await new Promise((r) => setTimeout(r, 1100))
  await getBuffer(src, rel)
  t.equal(srv.requests[1].authorization, 'Bearer second', 'the token file is re-read when it changes')

  const file = path.join(tmpdir(t), 'up')
  fs.writeFileSync(file, randomBytes(700_000, 82))
  await src.put('up/loaded', file, 700_000)
  t.same(fs.readFileSync(path.join(root, 'up', 'loaded')), fs.readFileSync(file))
  t.match(srv.requests.at(-1), { method: 'PUT', headers: { 'content-length': '700000', authorization: 'Bearer second' } })
  await t.rejects(http(t, cfg(srv.base('e500'))).put('x', file, 700_000), { name: 'SourceFault', kind: 'http-500' })

  fs.rmSync(tokenFile)
  await new Promise((r) => setTimeout(r, 1100))
  await t.rejects(getBuffer(src, rel), { name: 'SourceFault', kind: 'token' })
  t.throws(() => new HttpSource(cfg(srv.url, { tokenFile }), 'store', { timeoutMs: 1000 }), { name: 'SourceFault', kind: 'token' }, 'a missing token file fails at start')
})

t.test('http source: Content-Length that cannot be right is refused before the body', async (t) => {
  const root = tmpdir(t)
  const blob = writeBlob(root, randomBytes(1000, 83))
  const srv = await faultServer(t, root)
  const src = http(t, cfg(srv.base('good')))
  const dir = tmpdir(t)
  const w = new BlobWriter(blob.md5, 999, path.join(dir, 'x'))
  await t.rejects(src.get(`files/${blob.md5[0]}/${blob.md5[1]}/${blob.md5}`, w), { name: 'SourceFault', kind: 'too-long', message: /Content-Length 1000, expected 999/ })
  w.abort()
  await t.rejects(getBuffer(src, `files/${blob.md5[0]}/${blob.md5[1]}/${blob.md5}`, 10), { name: 'SourceFault', kind: 'too-long' })
})

t.test('https with a private CA from `ca`', async (t) => {
  const dir = tmpdir(t)
  const key = path.join(dir, 'key.pem')
  const cert = path.join(dir, 'cert.pem')
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' })
  } catch {
    t.comment('skipped: no openssl to make a certificate')
    return
  }
  const srv = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (_req, res) => res.end('tls ok'))
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => srv.close(() => resolve())))
  const port = (srv.address() as net.AddressInfo).port
  for (const host of ['127.0.0.1', 'localhost']) {
    const trusted = http(t, cfg(`https://${host}:${port}`, { ca: cert }))
    t.same(await getBuffer(trusted, 'x'), Buffer.from('tls ok'), `trusted via ca, ${host}`)
  }
  const untrusted = http(t, cfg(`https://127.0.0.1:${port}`))
  await t.rejects(getBuffer(untrusted, 'x'), { name: 'SourceFault', kind: /^(tls|net):/ })
  t.throws(() => new HttpSource(cfg(`https://127.0.0.1:${port}`, { ca: path.join(dir, 'nope.pem') }), 'store', { timeoutMs: 1000 }), { code: 'EINVAL', key: 'store[0].ca' })
})

t.test('proxy environment: used for other hosts, never for loopback', async (t) => {
  const root = tmpdir(t)
  const blob = writeBlob(root, 'through the proxy')
  const proxy = await faultServer(t, root)
  const saved = { HTTP_PROXY: process.env.HTTP_PROXY, http_proxy: process.env.http_proxy, NO_PROXY: process.env.NO_PROXY, no_proxy: process.env.no_proxy }
  t.teardown(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })
  for (const k of Object.keys(saved)) delete process.env[k]
  process.env.HTTP_PROXY = proxy.url
  // A name that never resolves: only the proxy can answer, and the traffic stays on 127.0.0.1.
  const viaProxy = http(t, cfg('http://store.invalid/good'))
  const rel = `files/${blob.md5[0]}/${blob.md5[1]}/${blob.md5}`
  t.same(await getBuffer(viaProxy, rel), blob.data)
  t.equal(proxy.requests[0].target, `http://store.invalid/good/${rel}`, 'absolute-form request to the proxy')
  // Loopback is not proxied: with the proxy set to a dead port, a local server still answers.
  const local = await faultServer(t, root)
  process.env.HTTP_PROXY = 'http://127.0.0.1:9'
  t.same(await getBuffer(http(t, cfg(local.base('good'))), rel), blob.data)
  t.same(await getBuffer(http(t, cfg(local.base('good').replace('127.0.0.1', 'localhost'))), rel), blob.data)
  // NO_PROXY is honoured (by axios' proxy-from-env).
  process.env.HTTP_PROXY = proxy.url
  process.env.NO_PROXY = 'store.invalid'
  await t.rejects(getBuffer(http(t, cfg('http://store.invalid/good')), rel), { name: 'SourceFault', kind: /^net:/ })
})

t.test('http source: a query string in the root URL stays at the end', async (t) => {
  const root = tmpdir(t)
  const blob = writeBlob(root, 'query')
  const srv = await faultServer(t, root)
  const src = http(t, cfg(`${srv.base('good')}/?sig=abc`))
  const rel = `files/${blob.md5[0]}/${blob.md5[1]}/${blob.md5}`
  t.same(await getBuffer(src, rel), blob.data)
  t.equal(srv.requests[0].target, `/good/${rel}?sig=abc`)
  t.equal(src.url, `${srv.base('good')}/?***`, 'the query is redacted in messages')
})

t.test('createSource: URL kinds', async (t) => {
  t.type(createSource(cfg('/abs'), 'store', { timeoutMs: 1000 }), DirSource)
  const h = createSource(cfg('http://127.0.0.1:1/x'), 'cache', { timeoutMs: 1000 })
  t.type(h, HttpSource)
  h.close()
  t.throws(() => createSource(cfg('ftp://x/y'), 'store', { timeoutMs: 1000 }), { code: 'EINVAL', key: 'store[0].url' })
})

t.test('watchdog: fires after the timeout for a silent transfer, not for a steady one', async (t) => {
  let fired = 0
  const start = Date.now()
  const silent = new Watchdog(400, () => (fired = Date.now() - start))
  const steady = new Watchdog(400, () => t.fail('steady transfer cut'))
  const feed = setInterval(() => (steady.bytes += 100), 50) // 2000 B/s
  await new Promise((r) => setTimeout(r, 1000))
  clearInterval(feed)
  silent.stop()
  steady.stop()
  // Timers run on the event loop's clock, which lags Date.now() by up to 1 ms: 399 is on time
  // (CI measured it once).
  t.ok(fired >= 399 && fired < 550, `fired after ${fired} ms`)
  t.type(new SourceFault('x', 'y'), Error)
})

t.test('BlobWriter: small blobs in memory, large ones streamed, both put in place by the committer', async (t) => {
  const root = tmpdir(t)
  const tmp = path.join(root, 'tmp')
  fs.mkdirSync(tmp)
  for (const size of [0, 1, 70_000, MEMORY_BLOB_MAX, MEMORY_BLOB_MAX + 1, 3 << 20]) {
    const data = randomBytes(size, 90)
    const md5 = md5hex(data)
    const w = new BlobWriter(md5, size, path.join(tmp, `w.${size}`))
    for (let off = 0; off < size; off += 65_536) w.write(data.subarray(off, off + 65_536))
    t.equal(fs.existsSync(path.join(tmp, `w.${size}`)), size > MEMORY_BLOB_MAX, `${size} bytes: a temp file while it arrives only above MEMORY_BLOB_MAX`)
    w.end()
    t.equal(w.verifiedBytes()?.equals(data) ?? false, size <= MEMORY_BLOB_MAX, `${size} bytes: the checked bytes are at hand only in memory`)
    const dest = path.join(root, md5[0]!, md5[1]!, md5)
    await w.commit(dest)
    t.ok(fs.readFileSync(dest).equals(data), `${size} bytes: in place, directories made`)
    w.abort()
    t.ok(fs.existsSync(dest), 'abort after commit leaves the blob')
  }
  t.same(fs.readdirSync(tmp), [], 'no temp file left')
})

t.test('BlobWriter: commit failures are fs errors and leave no temp file; a removed temp dir is made again', async (t) => {
  const root = tmpdir(t)
  const tmp = path.join(root, 'tmp')
  const data = randomBytes(5000, 91)
  const md5 = md5hex(data)
  const early = new BlobWriter(md5, data.length, path.join(tmp, 'early'))
  await t.rejects(early.commit(path.join(root, 'x')), /commit before a successful end/)

  // The temp directory does not exist (yet): the committer makes it.
  const w = new BlobWriter(md5, data.length, path.join(tmp, 'one'))
  w.write(data)
  w.end()
  await w.commit(path.join(root, 'ok', md5))
  t.ok(fs.readFileSync(path.join(root, 'ok', md5)).equals(data), 'committed into a temp dir made on the way')

  // The blob's directory cannot be made: a file stands where it should be.
  fs.writeFileSync(path.join(root, 'blocker'), '')
  const bad = new BlobWriter(md5, data.length, path.join(tmp, 'two'))
  bad.write(data)
  bad.end()
  await t.rejects(bad.commit(path.join(root, 'blocker', 'sub', md5)), { code: 'ENOTDIR', syscall: 'rename', message: /^ENOTDIR: not a directory, rename '/ })
  t.same(fs.readdirSync(tmp), [], 'the temp file went with the failure')

  // Wrong bytes are never committed.
  const wrong = new BlobWriter(md5, data.length, path.join(tmp, 'three'))
  wrong.write(Buffer.alloc(data.length))
  t.throws(() => wrong.end(), { name: 'SourceFault', kind: 'md5' })
  t.equal(wrong.verifiedBytes(), undefined, 'no checked bytes to hand out')
  await t.rejects(wrong.commit(path.join(root, 'never')), /commit before a successful end/)
  t.notOk(fs.existsSync(path.join(root, 'never')))
})

t.test('http source: a redirect to another host gets no credentials', async (t) => {
  const blob = randomBytes(3000, 92)
  const md5 = md5hex(blob)
  const seen: { url: string; host: string; authorization?: string; custom?: string }[] = []
  const srv = (await import('node:http')).createServer((req, res) => {
    seen.push({ url: req.url ?? '', host: req.headers.host ?? '', authorization: req.headers.authorization, custom: req.headers['x-custom'] as string | undefined })
    if (req.url?.startsWith('/a/')) {
      res.writeHead(302, { Location: `http://localhost:${(srv.address() as net.AddressInfo).port}/b/${req.url.slice(3)}`, 'Content-Length': '0' })
      return res.end()
    }
    res.writeHead(200, { 'Content-Length': String(blob.length) })
    res.end(blob)
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => srv.close())
  const port = (srv.address() as net.AddressInfo).port
  const src = http(t, cfg(`http://us:pw@127.0.0.1:${port}/a`, { headers: { 'X-Custom': 'kept', Authorization: 'Bearer header' } }))
  const w = new BlobWriter(md5, blob.length, path.join(tmpdir(t), 'x'))
  t.equal(await src.get(`files/${md5[0]}/${md5[1]}/${md5}`, w), 'ok')
  t.same(
    seen.map((s) => [s.host.split(':')[0], s.authorization, s.custom]),
    [
      ['127.0.0.1', `Basic ${Buffer.from('us:pw').toString('base64')}`, 'kept'],
      ['localhost', undefined, 'kept'],
    ],
    'Basic auth (over the configured Authorization header, as axios sends it) to the origin only',
  )
  w.abort()
})
