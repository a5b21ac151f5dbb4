// `.bro` bodies are decompressed as they arrive, by the addon's streaming decoder on the miss
// worker, and the output goes straight to the blob's temp file: memory per download is the
// decoder's window and a few buffers, whatever the blob's size (the whole-body decode this
// replaces took a mount to 1 GiB RSS with four 200 MiB bodies). Corrupt, truncated and
// expanding streams still fail as `bro-corrupt` / `bro-too-long`.
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { pipeline } from 'node:stream/promises'
import * as zlib from 'node:zlib'
import t from 'tap'
import { loadBinding } from '../../lib/native'
import { BlobWriter } from '../../lib/local-cache/blob-writer'
import { BroSink } from '../../lib/sources/bro'
import { PREFIX, SERVICE, config, mountChild } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'
import { startNginx } from '../helpers/nginx'
import { md5hex, randomBytes } from '../helpers/store'

const MiB = 1 << 20
/** The big blob: 160 MiB, well past anything a download may hold in memory. */
const BIG = 160 * MiB

/** 4 MiB of log-like text, made once (the chunks repeat it at shifting offsets: a window of
 * 16 MiB finds the repeats, so the `.bro` is small and the decoder's window is full). */
let textPool: Buffer | undefined

/** One MiB of that text, from an offset that depends on `i` (so chunks differ). */
function textChunk(i: number): Buffer {
  if (!textPool) {
    const lines: string[] = []
    let x = 2654435761
    for (let len = 0; len < 4 * MiB; ) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0
      const line = `2026-11-26T01:${String(x % 60).padStart(2, '0')}:00Z node-${x % 97} GET /files/${(x >>> 8).toString(16)} ${200 + (x % 5)} ${x % 100_000}\n`
      lines.push(line)
      len += line.length
    }
    textPool = Buffer.from(lines.join(''))
  }
  const off = (i * 104_729) % (textPool.length - MiB)
  return textPool.subarray(off, off + MiB)
}

/** Writes `R/files/h0/h1/<md5>.bro` of BIG bytes of text (never held whole here); returns its MD5. */
async function writeBigBro(store: string): Promise<string> {
  const hash = crypto.createHash('md5')
  const tmp = path.join(store, 'big.bro')
  let i = 0
  const source = async function* () {
    for (; i < BIG / MiB; i++) {
      const chunk = textChunk(i)
      hash.update(chunk)
      yield chunk
    }
  }
  const params = { [zlib.constants.BROTLI_PARAM_QUALITY]: 4, [zlib.constants.BROTLI_PARAM_LGWIN]: 24, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: BIG }
  await pipeline(source(), zlib.createBrotliCompress({ params }), fs.createWriteStream(tmp))
  const md5 = hash.digest('hex')
  const dir = path.join(store, 'files', md5[0]!, md5[1]!)
  fs.mkdirSync(dir, { recursive: true })
  fs.renameSync(tmp, path.join(dir, `${md5}.bro`))
  fs.mkdirSync(path.join(store, 'md'), { recursive: true })
  fs.writeFileSync(path.join(store, 'md', `${SERVICE}.flist`), `${PREFIX}/big|${md5}|${BIG}\n`)
  return md5
}

async function md5OfFile(file: string): Promise<string> {
  const hash = crypto.createHash('md5')
  await pipeline(fs.createReadStream(file, { highWaterMark: MiB }), hash)
  return hash.digest('hex')
}

t.test(`a ${BIG / MiB} MiB .bro blob through a mount: the mounting process grows by far less than the blob`, async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  fs.mkdirSync(store)
  const md5 = await writeBigBro(store)
  const bro = fs.statSync(path.join(store, 'files', md5[0]!, md5[1]!, `${md5}.bro`)).size
  t.comment(`${BIG / MiB} MiB of text as a ${(bro / MiB).toFixed(1)} MiB .bro (window 16 MiB)`)
  const n = await startNginx({ store })
  t.teardown(() => n.stop())
  const mnt = path.join(dir, 'mnt')
  const child = await mountChild(t, { mountpoint: mnt, config: config(path.join(dir, 'cache'), [`${n.url}/store`], { timeout: '10s' }) })
  const before = child.usage()
  t.equal(await md5OfFile(path.join(mnt, 'big')), md5, 'the file reads right')
  const after = child.usage()
  t.same(
    n.requests().map((r) => `${r.uri.replace(/^.*\//, '')} ${r.status}`).filter((r) => r.startsWith(md5)),
    [`${md5} 404`, `${md5}.bro 200`],
    'it came from the .bro',
  )
  const growth = (after.hwm - before.hwm) / MiB
  t.comment(`mounting process: VmHWM ${(before.hwm / MiB).toFixed(0)} -> ${(after.hwm / MiB).toFixed(0)} MiB (+${growth.toFixed(1)} MiB)`)
  // The decoder holds at most 28 MiB (16 MiB window here); the rest is buffers and garbage the
  // collector has not taken yet. The whole-body decode grew by more than the blob.
  t.ok(growth < 64, `peak RSS grew by ${growth.toFixed(1)} MiB for a ${BIG / MiB} MiB blob (bound: 64 MiB)`)
  const blob = path.join(dir, 'cache', md5[0]!, md5[1]!, md5)
  t.equal(fs.statSync(blob).size, BIG, 'the blob is in the local cache')
})

t.test('the decoder: its memory is bounded by the window; large-window streams are refused', async (t) => {
  const { BrotliDecoder } = loadBinding()
  t.equal(BrotliDecoder.maxMemory, 28 * MiB)
  const data = Buffer.concat(Array.from({ length: 24 }, (_, i) => textChunk(i)))
  const out = Buffer.alloc(256 * 1024)
  const decode = (comp: Buffer): { bytes: number; peak: number; md5: string } => {
    const d = new BrotliDecoder()
    const hash = crypto.createHash('md5')
    let bytes = 0
    try {
      for (let off = 0; off < comp.length; off += 65_536) {
        d.push(comp.subarray(off, off + 65_536))
        for (let k; (k = d.pull(out)) > 0; bytes += k) hash.update(out.subarray(0, k))
      }
      t.ok(d.finished(), 'the stream ended')
      return { bytes, peak: d.peakMemory(), md5: hash.digest('hex') }
    } finally {
      d.close()
    }
  }
  for (const lgwin of [16, 22, 24]) {
    const comp = zlib.brotliCompressSync(data, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 5, [zlib.constants.BROTLI_PARAM_LGWIN]: lgwin } })
    const r = decode(comp)
    t.equal(r.md5, md5hex(data), `window 2^${lgwin}: decodes right`)
    t.ok(r.peak <= (1 << lgwin) * 1.5 + 3 * MiB, `window 2^${lgwin}: held at most ${(r.peak / MiB).toFixed(2)} MiB`)
  }
  const large = zlib.brotliCompressSync(data, {
    params: { [zlib.constants.BROTLI_PARAM_LARGE_WINDOW]: 1, [zlib.constants.BROTLI_PARAM_LGWIN]: 30, [zlib.constants.BROTLI_PARAM_QUALITY]: 5 },
  })
  const d = new BrotliDecoder()
  d.push(large)
  t.throws(() => d.pull(out), { code: 'bro-corrupt' }, 'a large-window stream (a 1 GiB window) is corrupt here')
  t.throws(() => d.pull(out), { code: 'bro-corrupt' }, 'and stays failed')
  d.close()
  t.equal(new BrotliDecoder().pull(Buffer.alloc(0)), 0, 'a zero-size pull is harmless')
})

t.test('BroSink: corrupt, truncated, trailing, empty and expanding streams fail; the right one passes in pieces', async (t) => {
  const dir = tmpdir(t)
  const data = Buffer.concat([textChunk(7), randomBytes(300_000, 331), textChunk(8)])
  const md5 = md5hex(data)
  const comp = zlib.brotliCompressSync(data, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 9 } })
  let seq = 0
  const run = (body: Buffer, size = data.length, chunk = 4096): Error | undefined => {
    const w = new BlobWriter(md5, size, path.join(dir, `w${++seq}`))
    const sink = new BroSink(w)
    try {
      for (let off = 0; off < body.length; off += chunk) sink.write(body.subarray(off, off + chunk))
      sink.end()
      return undefined
    } catch (err) {
      return err as Error
    } finally {
      sink.abort()
      w.abort()
    }
  }
  t.equal(run(comp), undefined, 'the right stream, 4 KiB at a time')
  t.equal(run(comp, data.length, comp.length), undefined, 'the right stream in one chunk')
  t.match(run(Buffer.from('this is not brotli at all, not even close')), { name: 'SourceFault', kind: 'bro-corrupt' }, 'garbage')
  t.match(run(comp.subarray(0, comp.length - 100)), { name: 'SourceFault', kind: 'bro-corrupt', message: /ends before the brotli stream does/ }, 'truncated')
  t.match(run(Buffer.concat([comp, Buffer.from('more')])), { name: 'SourceFault', kind: 'bro-corrupt', message: /bytes follow the end/ }, 'trailing bytes')
  t.match(run(Buffer.alloc(0)), { name: 'SourceFault', kind: 'bro-corrupt' }, 'an empty body')
  t.match(run(comp, data.length - 1), { name: 'SourceFault', kind: 'bro-too-long' }, 'one byte more than the flist says')
  t.match(run(comp, data.length + 1), { name: 'SourceFault', kind: 'too-short' }, 'one byte less')
  const other = zlib.brotliCompressSync(Buffer.alloc(data.length, 1), { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 5 } })
  t.match(run(other), { name: 'SourceFault', kind: 'md5' }, 'other content of the right size')
  // A bomb: 256 MiB of zeros in a few hundred bytes, for a 100,000-byte blob.
  const bomb = zlib.brotliCompressSync(Buffer.alloc(256 * MiB), { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 5 } })
  const start = Date.now()
  t.match(run(bomb, 100_000), { name: 'SourceFault', kind: 'bro-too-long' }, `a ${bomb.length}-byte bomb stops at size + 1`)
  t.ok(Date.now() - start < 2000, `in ${Date.now() - start} ms`)
  t.same(fs.readdirSync(dir), [], 'no temp file left')
})
