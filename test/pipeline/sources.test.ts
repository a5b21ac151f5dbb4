// The sources on their own: directory (and file://) and http(s), get and put.
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as nodeHttp from 'node:http'
import * as https from 'node:https'
import * as net from 'node:net'
import * as path from 'node:path'
import { createSource } from '../../lib/sources'
import { DirSource } from '../../lib/sources/dir'
import { HttpSource, Watchdog, type Ticker } from '../../lib/sources/http'
import { BlobWriter, MEMORY_BLOB_MAX } from '../../lib/local-cache/blob-writer'
import { BufferSink, SourceFault } from '../../lib/sources/source'
import type { SourceConfig } from '../../lib/config'
import { startFaultServer, type FaultServer } from '../helpers/faults'
import { md5hex, randomBytes, writeBlob } from '../helpers/store'
import { tmpdir } from '../helpers/tmp'
import { until } from '../helpers/wait'

function cfg(url: string, extra: Partial<SourceConfig> = {}): SourceConfig {
  return { url, headers: {}, push: true, key: 'store[0]', ...extra }
}

async function faultServer(t: Test, store: string): Promise<FaultServer> {
  const s = await startFaultServer({ store })
  t.teardown(() => s.close())
  return s
}

function http(t: Test, c: SourceConfig, role: 'cache' | 'store' = 'store', timeoutMs = 1000, now?: () => number): HttpSource {
  const s = new HttpSource(c, role, { timeoutMs, now })
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
  await t.rejects(src.put('a/b/c', file, data.length + 1), { name: 'SourceFault', kind: 'not-a-file', message: /not a regular file of 10485761 bytes/ })
  t.notOk(fs.existsSync(path.join(root, 'a')), 'a source of the wrong size is refused before anything is made')
  // A rename that fails (a directory has the blob's name) leaves no temp file.
  fs.mkdirSync(path.join(root, 'a', 'b', 'c', 'd'), { recursive: true })
  await t.rejects(src.put('a/b/c', file, data.length), { name: 'SourceFault', kind: /^io:E(ISDIR|NOTEMPTY)$/ })
  t.same(fs.readdirSync(path.join(root, 'a', 'b')), ['c'], 'no temp file after a failed put')
  t.equal(new DirSource(cfg(root), 'store').push, false, 'stores are never pushed to')
})

t.test('http source: headers, token file, PUT', async (t) => {
  const root = tmpdir(t)
  const blob = writeBlob(root, 'some content')
  const srv = await faultServer(t, root)
  const tokenFile = path.join(tmpdir(t), 'token')
  fs.writeFileSync(tokenFile, 'first\n')
  // The token file is looked at again at most once a second: by this clock, moved by hand.
  let clock = Date.now()
  const src = http(t, cfg(srv.base('good'), { headers: { 'X-Custom': 'yes', Authorization: 'Basic overridden' }, tokenFile }), 'store', 1000, () => clock)
  const rel = `files/${blob.md5[0]}/${blob.md5[1]}/${blob.md5}`
  t.same(await getBuffer(src, rel), blob.data)
  t.match(srv.requests[0].headers, { 'x-custom': 'yes', authorization: 'Bearer first', 'accept-encoding': 'identity', 'user-agent': 'aysfs-native' })
  fs.writeFileSync(tokenFile, 'second\n')
  const later = new Date(Date.now() + 5000)
  fs.utimesSync(tokenFile, later, later)
  await getBuffer(src, rel)
  t.equal(srv.requests[1].authorization, 'Bearer first', 'within a second of the last look, the token is not read again')
  clock += 1100
  await getBuffer(src, rel)
  t.equal(srv.requests[2].authorization, 'Bearer second', 'the token file is re-read when it changes')

  const file = path.join(tmpdir(t), 'up')
  fs.writeFileSync(file, randomBytes(700_000, 82))
  await src.put('up/loaded', file, 700_000)
  t.same(fs.readFileSync(path.join(root, 'up', 'loaded')), fs.readFileSync(file))
  t.match(srv.requests.at(-1), { method: 'PUT', headers: { 'content-length': '700000', authorization: 'Bearer second' } })
  await t.rejects(http(t, cfg(srv.base('e500'))).put('x', file, 700_000), { name: 'SourceFault', kind: 'http-500' })

  fs.rmSync(tokenFile)
  clock += 1100
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

t.test('http source: direct GETs on keep-alive connections; one that ends early is a fault, not a hang', async (t) => {
  const data = Buffer.from('0123456789')
  const head = `HTTP/1.1 200 OK\r\nContent-Length: ${data.length}\r\n\r\n`
  const big = randomBytes(3 << 20, 95)
  let mode: 'ok' | 'close' | 'half' | 'big' = 'ok'
  let connections = 0
  const srv = net.createServer((sock) => {
    connections++
    sock.on('error', () => {})
    sock.on('data', () => {
      if (mode === 'ok') sock.write(head + data.toString())
      else if (mode === 'big') sock.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`), big]))
      else if (mode === 'close') sock.end()
      else sock.end(head + data.subarray(0, 5).toString())
    })
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => srv.close())
  const src = http(t, cfg(`http://127.0.0.1:${(srv.address() as net.AddressInfo).port}/store`))
  for (let i = 0; i < 10; i++) t.same(await getBuffer(src, `files/x${i}`), data, `GET ${i}`)
  t.equal(connections, 1, 'one connection for ten GETs in a row')
  mode = 'close'
  await t.rejects(getBuffer(src, 'files/y'), { name: 'SourceFault', kind: 'net:ECONNRESET' }, 'closed before the response')
  mode = 'half'
  await t.rejects(getBuffer(src, 'files/z'), { name: 'SourceFault', kind: 'truncated' }, 'closed mid-body')
  mode = 'ok'
  t.same(await getBuffer(src, 'files/w'), data, 'and a new connection after them')
  // A body far larger than what a response keeps before it is read, sent at once.
  mode = 'big'
  const sink = new BufferSink(big.length)
  await src.get('files/big2', sink)
  t.ok(sink.data().equals(big), 'a 3 MiB body sent at once: every byte, in order')
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
  // The watchdogs' ticks, driven by hand: `elapsed` is the time they have seen. (Their own timer,
  // setInterval, cuts real transfers in test/pipeline/faults.test.ts: `stall`, `silent`.)
  const ticks = new Set<() => void>()
  let every = 0
  const ticker: Ticker = (ms, tick) => {
    every = ms
    ticks.add(tick)
    return () => ticks.delete(tick)
  }
  let elapsed = 0
  let fired = 0
  const silent = new Watchdog(400, () => (fired = elapsed), ticker)
  const steady = new Watchdog(400, () => t.fail('steady transfer cut'), ticker)
  t.equal(every, 50, 'eight samples a window')
  while (elapsed < 1000) {
    elapsed += every
    steady.bytes += 100 // 2000 B/s
    for (const tick of [...ticks]) tick()
  }
  t.equal(ticks.size, 1, 'the silent one stopped itself; the steady one still runs')
  silent.stop()
  steady.stop()
  t.equal(ticks.size, 0, 'stop() ends the ticks')
  t.ok(fired >= 400 && fired <= 450, `fired after ${fired} ms: between the timeout and 9/8 of it`)
  t.type(new SourceFault('x', 'y'), Error)
})

t.test('watchdog on the shared interval: silent transfers fail after the timeout, a steady one runs on', async (t) => {
  const timeoutMs = 200
  const quiet: number[] = []
  const start = Date.now()
  const dogs = Array.from({ length: 3 }, () => new Watchdog(timeoutMs, () => quiet.push(Date.now() - start)))
  const steady = new Watchdog(timeoutMs, () => t.fail('a steady transfer was cut'))
  const feed = setInterval(() => (steady.bytes += 1024), 10)
  t.teardown(() => clearInterval(feed))
  t.ok(await until(() => quiet.length === 3, 5000), 'the silent ones failed')
  clearInterval(feed)
  steady.stop()
  for (const d of dogs) d.stop()
  t.ok(
    quiet.every((ms) => ms >= timeoutMs && ms < timeoutMs * 1.25 + 100),
    `after ${quiet.join(', ')} ms (timeout ${timeoutMs} ms)`,
  )
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

/** A certificate for 127.0.0.1 and localhost, or undefined when there is no openssl. */
function certificate(dir: string): { key: string; cert: string } | undefined {
  const key = path.join(dir, 'key.pem')
  const cert = path.join(dir, 'cert.pem')
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' })
  } catch {
    return undefined
  }
  return { key, cert }
}

/** A request a capture server saw. */
interface Seen {
  /** `http://127.0.0.1:1234`: where it went (for a proxy: the absolute URL's origin). */
  origin: string
  path: string
  headers: nodeHttp.IncomingHttpHeaders
}

/**
 * A server on loopback that records every request and answers it with `answer` (a redirect, or
 * the blob). With `tls`, the same port speaks HTTP and HTTPS (told apart by the first byte), so
 * that a redirect can change the scheme alone.
 */
async function captureServer(
  t: Test,
  seen: Seen[],
  answer: (path: string, origin: URL) => { location: string } | { body: Buffer },
  tls?: { key: string; cert: string },
): Promise<number> {
  const handle = (scheme: string) => (req: nodeHttp.IncomingMessage, res: nodeHttp.ServerResponse) => {
    // Absolute form: a request to us as a proxy.
    const target = /^https?:\/\//.test(req.url ?? '') ? new URL(req.url!) : new URL(req.url ?? '/', `${scheme}://${req.headers.host}`)
    seen.push({ origin: target.origin, path: target.pathname, headers: req.headers })
    const a = answer(target.pathname, target)
    if ('location' in a) {
      res.writeHead(302, { Location: a.location, 'Content-Length': '0' })
      res.end()
    } else {
      res.writeHead(200, { 'Content-Length': String(a.body.length) })
      res.end(a.body)
    }
  }
  const plain = nodeHttp.createServer(handle('http'))
  const secure = tls && https.createServer({ key: fs.readFileSync(tls.key), cert: fs.readFileSync(tls.cert) }, handle('https'))
  const sockets = new Set<net.Socket>()
  const srv = net.createServer((sock) => {
    sockets.add(sock)
    sock.on('close', () => sockets.delete(sock))
    sock.once('data', (first: Buffer) => {
      sock.pause()
      sock.unshift(first)
      // 0x16: a TLS handshake record.
      ;(secure && first[0] === 0x16 ? secure : plain).emit('connection', sock)
      process.nextTick(() => sock.resume())
    })
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    srv.close()
  })
  return (srv.address() as net.AddressInfo).port
}

/** The configured secrets of the redirect tests, by header name (lower case) and value. */
const SECRETS = { 'x-api-key': 'key-1', cookie: 'session=s3cret', 'private-token': 'pt-2' }

/** Which secrets a request carried: the configured headers, and the Authorization it had. */
function secretsOf(s: Seen): string[] {
  const found = Object.entries(SECRETS)
    .filter(([k, v]) => s.headers[k] === v)
    .map(([k]) => k)
  return s.headers.authorization === undefined ? found : [...found, s.headers.authorization]
}

t.test('http source: configured headers, the token and user:password go to the origin only, on every redirect', async (t) => {
  const dir = tmpdir(t)
  const blob = randomBytes(3000, 92)
  const md5 = md5hex(blob)
  const rel = `files/${md5[0]}/${md5[1]}/${md5}`
  const tls = certificate(dir)
  const seen: Seen[] = []
  let origin = 0
  let other = 0
  // On both servers: /<kind>/<rel> redirects as its name says; /final/<rel> serves the blob.
  const answer = (p: string): { location: string } | { body: Buffer } => {
    const [, kind, ...rest] = p.split('/')
    const tail = rest.join('/')
    switch (kind) {
      case 'same': return { location: `/final/${tail}` }
      case 'samefull': return { location: `http://127.0.0.1:${origin}/final/${tail}` }
      case 'port': return { location: `http://127.0.0.1:${other}/final/${tail}` }
      case 'host': return { location: `http://localhost:${origin}/final/${tail}` }
      case 'scheme': return { location: `https://127.0.0.1:${origin}/final/${tail}` }
      case 'back': return { location: `http://127.0.0.1:${other}/bounce/${tail}` }
      case 'bounce': return { location: `http://127.0.0.1:${origin}/final/${tail}` }
      default: return { body: blob }
    }
  }
  origin = await captureServer(t, seen, answer, tls)
  other = await captureServer(t, seen, answer)
  const tokenFile = path.join(dir, 'token')
  fs.writeFileSync(tokenFile, 'tok-3\n')
  const headers = { 'X-Api-Key': SECRETS['x-api-key'], Cookie: SECRETS.cookie, 'Private-Token': SECRETS['private-token'] }
  const basic = `Basic ${Buffer.from('us:pw').toString('base64')}`
  const sources = [
    { name: 'headers + token_file', url: (kind: string) => `http://127.0.0.1:${origin}/${kind}`, extra: { tokenFile }, auth: 'Bearer tok-3' },
    { name: 'headers + user:password', url: (kind: string) => `http://us:pw@127.0.0.1:${origin}/${kind}`, extra: {}, auth: basic },
  ]
  const all = (auth: string) => [...Object.keys(SECRETS), auth]
  for (const s of sources) {
    const get = async (kind: string): Promise<Seen[]> => {
      seen.length = 0
      const src = http(t, cfg(s.url(kind), { headers, ...s.extra, ...(tls ? { ca: tls.cert } : {}) }))
      t.same(await getBuffer(src, rel), blob, `${s.name}, ${kind}: the blob`)
      return [...seen]
    }
    const o = `http://127.0.0.1:${origin}`
    const x = `http://127.0.0.1:${other}`
    for (const kind of ['same', 'samefull']) {
      const r = await get(kind)
      t.same(r.map((q) => [q.origin, secretsOf(q)]), [[o, all(s.auth)], [o, all(s.auth)]], `${s.name}: a redirect within the origin keeps them all`)
    }
    let r = await get('port')
    t.same(r.map((q) => [q.origin, secretsOf(q)]), [[o, all(s.auth)], [x, []]], `${s.name}: another port gets none`)
    r = await get('host')
    t.same(r.map((q) => [q.origin, secretsOf(q)]), [[o, all(s.auth)], [`http://localhost:${origin}`, []]], `${s.name}: another host gets none`)
    r = await get('back')
    t.same(r.map((q) => [q.origin, secretsOf(q)]), [[o, all(s.auth)], [x, []], [o, []]], `${s.name}: none again once the chain has left the origin`)
    if (tls) {
      r = await get('scheme')
      t.same(r.map((q) => [q.origin, secretsOf(q)]), [[o, all(s.auth)], [`https://127.0.0.1:${origin}`, []]], `${s.name}: another scheme (http to https, same host and port) gets none`)
    } else t.comment('no openssl: the scheme change is not tried')
  }
})

t.test('http source: the proxied client (axios) strips them the same way', async (t) => {
  const dir = tmpdir(t)
  const blob = randomBytes(2000, 93)
  const md5 = md5hex(blob)
  const rel = `files/${md5[0]}/${md5[1]}/${md5}`
  const saved = { HTTP_PROXY: process.env.HTTP_PROXY, http_proxy: process.env.http_proxy, NO_PROXY: process.env.NO_PROXY, no_proxy: process.env.no_proxy }
  t.teardown(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })
  for (const k of Object.keys(saved)) delete process.env[k]
  // The proxy answers everything itself, by the absolute URL it is asked for: names that never
  // resolve, so nothing leaves loopback. origin.test:8000 is the source.
  const seen: Seen[] = []
  const proxy = await captureServer(t, seen, (p, u) => {
    const [, kind, ...rest] = p.split('/')
    const tail = rest.join('/')
    if (u.host !== 'origin.test:8000' && kind !== 'final' && kind !== 'bounce') return { body: Buffer.from('wrong') }
    switch (kind) {
      case 'same': return { location: `/final/${tail}` }
      case 'port': return { location: `http://origin.test:8001/final/${tail}` }
      case 'host': return { location: `http://other.test:8000/final/${tail}` }
      case 'back': return { location: `http://other.test:8000/bounce/${tail}` }
      case 'bounce': return { location: `http://origin.test:8000/final/${tail}` }
      default: return { body: blob }
    }
  })
  process.env.HTTP_PROXY = `http://127.0.0.1:${proxy}`
  const tokenFile = path.join(dir, 'token')
  fs.writeFileSync(tokenFile, 'tok-4\n')
  const headers = { 'X-Api-Key': SECRETS['x-api-key'], Cookie: SECRETS.cookie, 'Private-Token': SECRETS['private-token'] }
  const basic = `Basic ${Buffer.from('us:pw').toString('base64')}`
  const o = 'http://origin.test:8000'
  for (const s of [
    { name: 'token_file', url: (k: string) => `${o}/${k}`, extra: { tokenFile }, auth: 'Bearer tok-4' },
    { name: 'user:password', url: (k: string) => `http://us:pw@origin.test:8000/${k}`, extra: {}, auth: basic },
  ]) {
    const all = [...Object.keys(SECRETS), s.auth]
    const get = async (kind: string): Promise<[string, string[]][]> => {
      seen.length = 0
      const src = http(t, cfg(s.url(kind), { headers, ...s.extra }))
      t.same(await getBuffer(src, rel), blob, `${s.name}, ${kind}: the blob, through the proxy`)
      return seen.map((q) => [q.origin, secretsOf(q)])
    }
    t.same(await get('same'), [[o, all], [o, all]], `${s.name}: a redirect within the origin keeps them all`)
    t.same(await get('port'), [[o, all], ['http://origin.test:8001', []]], `${s.name}: another port gets none`)
    t.same(await get('host'), [[o, all], ['http://other.test:8000', []]], `${s.name}: another host gets none`)
    t.same(await get('back'), [[o, all], ['http://other.test:8000', []], [o, []]], `${s.name}: none again once the chain has left the origin`)
  }

  // A direct GET (loopback) redirected to a host a proxy variable applies to: that hop goes
  // through axios (without the proxy: the source is loopback), and gets nothing either.
  // elsewhere.test resolves to 127.0.0.1 by the source's own lookup.
  const direct: Seen[] = []
  let far = 0
  const near = await captureServer(t, direct, (p) => (p.startsWith('/a/') ? { location: `http://elsewhere.test:${far}/final/${p.slice(3)}` } : { body: blob }))
  far = await captureServer(t, direct, () => ({ body: blob }))
  const lookup = ((host: string, opts: unknown, cb?: (...a: unknown[]) => void) => {
    const done = (typeof opts === 'function' ? opts : cb) as (...a: unknown[]) => void
    const all = typeof opts === 'object' && opts !== null && (opts as { all?: boolean }).all
    if (host !== 'elsewhere.test') return done(Object.assign(new Error(`no ${host}`), { code: 'ENOTFOUND' }))
    return all ? done(null, [{ address: '127.0.0.1', family: 4 }]) : done(null, '127.0.0.1', 4)
  }) as never
  const src = new HttpSource(cfg(`http://127.0.0.1:${near}/a`, { headers, tokenFile }), 'store', { timeoutMs: 1000, lookup })
  t.teardown(() => src.close())
  t.same(await getBuffer(src, rel), blob)
  t.same(
    direct.map((q) => [q.origin, secretsOf(q)]),
    [
      [`http://127.0.0.1:${near}`, [...Object.keys(SECRETS), 'Bearer tok-4']],
      [`http://elsewhere.test:${far}`, []],
    ],
    'the origin gets them, the hop made by axios none',
  )
})
