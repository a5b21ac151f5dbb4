// The `.bro` decoder's speed: the addon's streaming decoder (native/brotli.cc, what the pipeline
// uses: 64 KiB of compressed input at a time, as HTTP delivers it, 256 KiB of output at a time)
// against the whole-body `zlib.brotliDecompressSync` it replaced, on the same body.
//
//   node dist/bench/bro.js [MiB] [runs]     default 64 MiB of log-like text, 5 runs
//
// `npm run bench` runs it as the `bro` workload. Decoding only: no MD5, no disk.
import * as zlib from 'node:zlib'
import { loadBinding } from '../lib/native'

const MiB = 1 << 20

/** `size` bytes of log-like text: compressible about 5:1 at quality 5, as text blobs are. */
export function textBody(size: number): Buffer {
  const out = Buffer.allocUnsafe(size)
  let x = 2654435761
  let off = 0
  while (off < size) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    const y = (Math.imul(x, 2246822519) + 3266489917) >>> 0
    off += out.write(`2026-11-26T01:${String(x % 60).padStart(2, '0')}:${String(y % 60).padStart(2, '0')}Z node-${x % 97} GET /files/${y.toString(16)}/${(x >>> 4).toString(36)} ${200 + (y % 5)} ${x % 100_000} ${(y >>> 3) % 1000}ms\n`, off)
  }
  return out
}

export interface BroTimes {
  /** Decompressed bytes per second of each run. */
  stream: number[]
  sync: number[]
  /** The compressed body's size. */
  compressed: number
  /** The most the streaming decoder held at once. */
  peakMemory: number
}

/** Decodes a `.bro` of `size` bytes of text `runs` times each way (alternating). */
export function measureBro(size: number, runs: number): BroTimes {
  const data = textBody(size)
  // Node's own defaults but the quality: window 4 MiB.
  const body = zlib.brotliCompressSync(data, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 5, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: size } })
  const { BrotliDecoder } = loadBinding()
  const piece = Buffer.allocUnsafe(256 * 1024)
  const times: BroTimes = { stream: [], sync: [], compressed: body.length, peakMemory: 0 }
  for (let r = 0; r < runs; r++) {
    let t0 = process.hrtime.bigint()
    const out = zlib.brotliDecompressSync(body, { maxOutputLength: size + 1 })
    times.sync.push(size / (Number(process.hrtime.bigint() - t0) / 1e9))
    if (out.length !== size) throw new Error('brotliDecompressSync: wrong size')

    t0 = process.hrtime.bigint()
    const d = new BrotliDecoder()
    let bytes = 0
    for (let off = 0; off < body.length; off += 65_536) {
      d.push(body.subarray(off, off + 65_536))
      for (let n; (n = d.pull(piece)) > 0; ) bytes += n
    }
    times.stream.push(size / (Number(process.hrtime.bigint() - t0) / 1e9))
    if (bytes !== size || !d.finished()) throw new Error('BrotliDecoder: wrong size')
    times.peakMemory = Math.max(times.peakMemory, d.peakMemory())
    d.close()
  }
  return times
}

if (require.main === module) {
  const size = Number(process.argv[2] ?? 64) * MiB
  const runs = Number(process.argv[3] ?? 5)
  const t = measureBro(size, runs)
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!
  const mbs = (x: number): string => `${(x / 1e6).toFixed(0)} MB/s`
  process.stdout.write(
    `${size / MiB} MiB of text, .bro ${(t.compressed / MiB).toFixed(1)} MiB, ${runs} runs (median)\n` +
      `  streaming decoder     ${mbs(median(t.stream))}  (runs: ${t.stream.map(mbs).join(', ')}; held at most ${(t.peakMemory / MiB).toFixed(1)} MiB)\n` +
      `  brotliDecompressSync  ${mbs(median(t.sync))}  (runs: ${t.sync.map(mbs).join(', ')}; holds the whole output)\n`,
  )
}
