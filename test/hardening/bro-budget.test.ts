// Memory of `.bro` downloads (docs/hardening.md, "Memory per download"): each decoder may hold
// at most a bound that follows the blob's size (a small blob's stream cannot claim a 16 MiB
// window's worth), and the decoders of a pipeline hold at most 64 MiB between them whatever
// `max_downloads` is: downloads that do not fit wait their turn, a read's before any guess's.
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import * as path from 'node:path'
import * as zlib from 'node:zlib'
import t, { type Test } from 'tap'
import { Cancel } from '../../lib/cancel'
import { createBrotliDecoder } from '../../lib/engine'
import { BlobWriter } from '../../lib/local-cache/blob-writer'
import { createFetcher } from '../../lib/pipeline'
import { BRO_BUDGET, BRO_MAX_MEMORY, BroBudget, BroSink, broMemoryBound } from '../../lib/sources/bro'
import { makeConfig, md5hex, memLog, randomBytes } from '../helpers/store'
import { formatStatus } from '../../lib/status'
import { tmpdir } from '../helpers/tmp'
import { until } from '../helpers/wait'

const MiB = 1 << 20

/** `n` bytes of log-like text (compressible, with repeats far apart). */
function text(n: number, seed: number): Buffer {
  const lines: string[] = []
  let x = seed * 2654435761 + 1
  let len = 0
  while (len < n) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    const line = `2026-12-02T15:${String(x % 60).padStart(2, '0')}:00Z node-${x % 97} GET /files/${(x >>> 8).toString(16)} ${200 + (x % 5)}\n`
    lines.push(line)
    len += line.length
  }
  return Buffer.from(lines.join('')).subarray(0, n)
}

function compress(data: Buffer, lgwin: number, quality = 5): Buffer {
  return zlib.brotliCompressSync(data, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: quality, [zlib.constants.BROTLI_PARAM_LGWIN]: lgwin, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length } })
}

/** Decodes `comp` 64 KiB at a time with a decoder bounded for `size`: its MD5 and the most it held. */
function decode(comp: Buffer, size: number): { md5: string; peak: number } {
  const d = createBrotliDecoder(broMemoryBound(size))
  const out = Buffer.alloc(256 * 1024)
  const hash = crypto.createHash('md5')
  try {
    for (let off = 0; off < comp.length; off += 65_536) {
      d.push(comp.subarray(off, off + 65_536))
      for (let k; (k = d.pull(out)) > 0; ) hash.update(out.subarray(0, k))
    }
    if (!d.finished()) throw new Error('the stream did not end')
    return { md5: hash.digest('hex'), peak: d.peakMemory() }
  } finally {
    d.close()
  }
}

t.test('the bound per blob size: what it allows, and every honest stream decodes within it', async (t) => {
  t.equal(broMemoryBound(1), 4 * MiB + 128 * 1024, 'a small blob: its tables and a 64 KiB ring, doubled')
  t.equal(broMemoryBound(MiB), 6 * MiB)
  t.equal(broMemoryBound(4 * MiB), 12 * MiB)
  t.equal(broMemoryBound(12 * MiB), BRO_MAX_MEMORY, 'from 12 MiB up: the most any stream may hold')
  t.equal(broMemoryBound(2 ** 40), BRO_MAX_MEMORY)
  for (const size of [1, 1000, 65_536, 65_537, 300_000, MiB, MiB + 1, 3 * MiB + 5, 9 * MiB]) {
    const data = size > 4096 ? Buffer.concat([text(size - (size >> 2), size), randomBytes(size >> 2, size)]) : randomBytes(size, size)
    for (const lgwin of [16, 22, 24]) {
      const r = decode(compress(data, lgwin), size)
      t.equal(r.md5, md5hex(data), `${size} bytes, window 2^${lgwin}: decoded (held ${(r.peak / MiB).toFixed(2)} of ${(broMemoryBound(size) / MiB).toFixed(2)} MiB)`)
    }
    if (size <= 300_000) t.equal(decode(compress(data, 24, 11), size).md5, md5hex(data), `${size} bytes at quality 11, window 2^24`)
  }
})

t.test("a small blob's .bro that claims a large window's worth fails at once, holding no more than its bound", async (t) => {
  const dir = tmpdir(t)
  // A stream made by hand: window 2^24, then a meta-block that says it holds 16 MiB of stored
  // bytes (not last, 6 nibbles of MLEN-1 = 0xffffff, uncompressed): the decoder sizes its ring
  // buffer for 16 MiB before it writes a byte, for a blob the flist says is 10,000 bytes.
  const body = Buffer.concat([Buffer.from([0xcf, 0xff, 0xff, 0xff]), Buffer.alloc(4000, 0x61)])
  const w = new BlobWriter('0'.repeat(32), 10_000, path.join(dir, 'w'))
  const sink = new BroSink(w)
  let err: unknown
  try {
    sink.write(body)
  } catch (e) {
    err = e
  } finally {
    sink.abort()
    w.abort()
  }
  t.match(err, { name: 'SourceFault', kind: 'bro-corrupt', message: new RegExp(`blob ${'0'.repeat(32)} \\(10000 bytes\\).*needs more than ${broMemoryBound(10_000)} bytes`) }, 'refused as corrupt, naming the blob')
  const d = createBrotliDecoder(broMemoryBound(10_000))
  d.push(body)
  t.throws(() => d.pull(Buffer.alloc(65_536)), { code: 'bro-corrupt' })
  t.ok(d.peakMemory() <= broMemoryBound(10_000), `the decoder held ${d.peakMemory()} bytes at most`)
  d.close()
  // The same stream is a fine one for a blob of 16 MiB (its bytes are what they are).
  const big = createBrotliDecoder(broMemoryBound(16 * MiB))
  big.push(body)
  t.equal(big.pull(Buffer.alloc(65_536)), 4000, 'a blob that large may hold a 16 MiB ring buffer')
  big.close()
  t.throws(() => createBrotliDecoder(0), TypeError)
  t.throws(() => createBrotliDecoder(BRO_MAX_MEMORY + 1), TypeError)
})

t.test('BroBudget: in order, a read before any guess, guesses within half, an abort leaves the queue', async (t) => {
  const b = new BroBudget(64)
  const granted: string[] = []
  const tick = () => new Promise((resolve) => setImmediate(resolve))
  const ask = (name: string, bytes: number, demand: () => boolean, signal?: Cancel) => {
    const p = b.acquire(bytes, demand, signal)
    p.then(
      () => granted.push(name),
      () => undefined,
    )
    return p
  }
  const yes = () => true
  const no = () => false
  const r1 = await ask('d1', 28, yes)
  const r2 = await ask('d2', 28, yes)
  t.match(b, { used: 56, active: 2 })
  const d3 = ask('d3', 28, yes)
  let joined = false
  const g1 = ask('g1', 20, () => joined)
  const g2 = ask('g2', 4, no)
  const d4 = ask('d4', 8, yes)
  await tick()
  t.same(granted, ['d1', 'd2'])
  t.equal(b.queued, 4, 'd3 waits for room; d4 would fit but waits behind it; the guesses behind both')
  r1()
  await tick()
  t.same(granted, ['d1', 'd2', 'd3', 'd4'], 'the reads first, in order')
  joined = true // a read joined g1: it goes as a read now
  r2()
  await tick()
  t.same(granted.slice(4), ['g1', 'g2'], 'then g1 (a read now), then the guess g2')
  t.match(b, { used: 60, guessUsed: 4 })
  for (const p of [d3, d4, g1]) (await p)()
  t.match(b, { used: 4, guessUsed: 4 })
  // Guesses hold at most half the budget: g3 waits though there is room; a read does not.
  const g3 = ask('g3', 30, no)
  await tick()
  t.equal(b.queued, 1, 'a guess past half the budget waits')
  const d5 = await ask('d5', 28, yes)
  t.equal(b.queued, 1, 'a read passes it (there is room for it)')
  const cancel = new Cancel()
  const g4 = ask('g4', 1, no, cancel)
  await tick()
  t.equal(b.queued, 2)
  cancel.abort(new Error('abandoned'))
  await t.rejects(g4, /abandoned/, 'an abort rejects')
  t.equal(b.queued, 1, 'and leaves the queue')
  ;(await g2)()
  await tick()
  t.ok(granted.includes('g3'), 'g3 in once the guesses hold little enough')
  t.notOk(granted.includes('g4'))
  ;(await g3)()
  d5()
  t.match(b, { used: 0, guessUsed: 0, active: 0, queued: 0 })
})

/** A store over HTTP that has only `.bro` variants and holds their answers until released. */
async function broStore(t: Test, root: string) {
  const held: (() => void)[] = []
  const s = { url: '', held: 0, maxHeld: 0, release: () => held.splice(0).forEach((h) => h()) }
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/^\/+/, '')
    let data: Buffer
    try {
      data = fs.readFileSync(path.join(root, rel))
    } catch {
      res.writeHead(404).end()
      return
    }
    s.held++
    s.maxHeld = Math.max(s.maxHeld, s.held)
    held.push(() => {
      s.held--
      res.writeHead(200, { 'Content-Length': data.length }).end(data)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  s.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.teardown(() => {
    s.release()
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return s
}

t.test(`six large .bro blobs asked for at once: two decoders at a time (${BRO_BUDGET / MiB} MiB), every blob in`, async (t) => {
  const store = tmpdir(t)
  const size = 13 * MiB
  const blobs = Array.from({ length: 6 }, (_, i) => {
    const data = text(size, 100 + i)
    const md5 = md5hex(data)
    const file = path.join(store, 'files', md5[0]!, md5[1]!, `${md5}.bro`)
    fs.mkdirSync(path.dirname(file), { recursive: true })
    fs.writeFileSync(file, compress(data, 24, 1))
    return md5
  })
  const srv = await broStore(t, store)
  const f = createFetcher({ config: makeConfig({ cache: tmpdir(t), stores: [srv.url], maxDownloads: 6, timeoutMs: 60_000 }), log: memLog() })
  t.teardown(() => f.close())
  let settled = 0
  const all = Promise.all(blobs.map((md5) => f.fetch(md5, size).finally(() => settled++)))
  t.ok(await until(() => srv.held === 2 && f.stats().decoders.queued === 4, 20_000), `two .bro requests at the server, four waiting: ${JSON.stringify(f.stats().decoders)}`)
  t.match(f.stats().downloads, { active: 6 }, 'each holds its download slot while it waits')
  t.match(f.stats().decoders, { budget: BRO_BUDGET, reserved: 2 * BRO_MAX_MEMORY, active: 2 })
  const shown = formatStatus({ version: 1, mountpoint: '/mnt', engine: { ops: {} } as never, pipeline: f.stats() })
  t.match(shown, /\.bro decoders +2 active, holding 56\.0 MiB of 64\.0 MiB; 4 queued, \d+ waited\n/, '`status` shows them')
  // Each answer let go as soon as its request is in: the next two come once two decoders end.
  for (let i = 0; i < 100 && settled < blobs.length; i++) {
    srv.release()
    await until(() => srv.held > 0 || settled === blobs.length, 20_000, 5)
  }
  await all
  t.equal(srv.maxHeld, 2, 'never more than two at once')
  t.match(f.stats().decoders, { reserved: 0, active: 0, queued: 0, waited: 4 })
  for (const md5 of blobs) t.ok(f.has(md5, size), `${md5} in the local cache`)
})
