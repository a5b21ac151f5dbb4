// The soak's files, made on the fly from their index: size and bytes are a pure function of
// (seed, index), so the readers check every byte they read without a manifest, and the store is
// rebuilt identically from a seed.
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'

/** Files per directory of the soak tree (`/d<k>/f<i>`). */
export const PER_DIR = 500

function mix(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d)
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b)
  return (x ^ (x >>> 16)) >>> 0
}

/**
 * Size of file `i`: mostly small (0–8 KiB), 3% medium (8–64 KiB), 0.1% large (1–1.5 MiB, read
 * with splice by the engine), a few empty. About 6 KiB on average.
 */
export function sizeOf(seed: number, i: number): number {
  const r = mix(seed * 0x9e3779b1 + i)
  const kind = r % 1000
  const v = mix(r)
  if (kind < 1) return (1 << 20) + (v % (1 << 19))
  if (kind < 31) return 8192 + (v % (56 * 1024))
  if (kind < 39) return 0
  return v % 8192
}

/** The bytes of file `i` (xorshift32 keyed by seed and index). */
export function contentOf(seed: number, i: number): Buffer {
  const size = sizeOf(seed, i)
  const words = new Uint32Array(Math.ceil(size / 4) || 1)
  let x = mix(seed ^ mix(i + 1)) || 1
  for (let k = 0; k < words.length; k++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    words[k] = x >>> 0
  }
  return Buffer.from(words.buffer, 0, size)
}

export function pathOf(i: number): string {
  return `/d${Math.floor(i / PER_DIR)}/f${i}`
}

export function dirCount(files: number): number {
  return Math.ceil(files / PER_DIR)
}

/** Writes a store of `files` files (`R/files/…`, `R/md/<id>.flist` under `prefix`); returns its bytes. */
export function writeSoakStore(root: string, id: string, prefix: string, seed: number, files: number): { bytes: number } {
  const lines: string[] = []
  let bytes = 0
  const made = new Set<string>()
  for (let i = 0; i < files; i++) {
    const data = contentOf(seed, i)
    const md5 = crypto.createHash('md5').update(data).digest('hex')
    const dir = path.join(root, 'files', md5[0]!, md5[1]!)
    if (!made.has(dir)) {
      fs.mkdirSync(dir, { recursive: true })
      made.add(dir)
    }
    fs.writeFileSync(path.join(dir, md5), data)
    bytes += data.length
    lines.push(`${prefix}${pathOf(i)}|${md5}|${data.length}\n`)
  }
  fs.mkdirSync(path.join(root, 'md'), { recursive: true })
  fs.writeFileSync(path.join(root, 'md', `${id}.flist`), lines.join(''))
  return { bytes }
}
