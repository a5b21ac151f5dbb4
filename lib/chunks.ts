/**
 * Chunk indexes: a large file also stored as pieces of one size (the last one shorter), each an
 * ordinary blob named by its MD5, listed in a small text blob (the index, `md5|size` a line, in
 * file order) that the file's flist line names (`chunks=<md5 of the index>`). This module holds
 * the rules both sides share: the bounds, how publish cuts and lists chunks, and the check a node
 * makes of an index before it trusts it (else the file is fetched whole).
 */
import crypto from 'node:crypto'
import { parseSize } from './config'
import { AysfsError } from './errors'

/** `publish --chunk-size` default: 4 MiB. */
export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
/** Smallest chunk size (publish and nodes): 256 KiB. Smaller would make the index and the
 * number of requests grow faster than reads gain. */
export const MIN_CHUNK_SIZE = 256 * 1024
/** Largest chunk size (publish and nodes): 64 MiB. Larger would bring back the wait chunks avoid. */
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024
/**
 * Most chunks a node accepts in one index: 262,144 (1 TiB at 4 MiB, 64 GiB at 256 KiB). Bounds
 * the index (at most ~12 MiB of text) and what a node keeps in memory for one file.
 */
export const MAX_CHUNKS = 256 * 1024
/** Longest line of a valid index: 32 hex digits, `|`, 8 digits (64 MiB), CR LF. */
const MAX_LINE = 32 + 1 + 8 + 2

/** One chunk of a file: its MD5 (lower-case hex) and size. */
export interface Chunk {
  md5: string
  size: number
}

/** A chunk index a node checked: every chunk but the last is `chunkSize` bytes. */
export interface ChunkIndex {
  /** The size of every chunk but the last. */
  chunkSize: number
  chunks: Chunk[]
}

/**
 * A chunk size given to publish, checked against the bounds.
 * @param flag how the user gave it, for the message (`--chunk-size`).
 * @throws AysfsError `EUSAGE` naming `flag` when it is not an integer from
 *   {@link MIN_CHUNK_SIZE} to {@link MAX_CHUNK_SIZE}.
 */
export function checkChunkSize(size: number, flag = '--chunk-size'): number {
  if (!Number.isSafeInteger(size) || size < MIN_CHUNK_SIZE || size > MAX_CHUNK_SIZE) {
    throw new AysfsError('EUSAGE', `${flag} ${String(size)}: the chunk size must be from 256KiB (${MIN_CHUNK_SIZE}) to 64MiB (${MAX_CHUNK_SIZE}) bytes`)
  }
  return size
}

/**
 * `--chunk-size <size>` from the command line: bytes, or with a unit (`4MiB`, `512KiB`), checked
 * against the bounds.
 * @throws AysfsError `EUSAGE` naming the flag.
 */
export function parseChunkSize(v: string, flag = '--chunk-size'): number {
  let n: number
  try {
    n = parseSize(v, flag)
  } catch {
    throw new AysfsError('EUSAGE', `${flag} ${JSON.stringify(v)}: expected a size like 4MiB, 512KiB or a number of bytes`)
  }
  return checkChunkSize(n, flag)
}

/**
 * Cuts a stream of bytes into chunks of `chunkSize` and hashes each, whatever the sizes of the
 * pieces it is fed (publish reads a file 1 MiB at a time; chunk sizes need not be a multiple).
 */
export class ChunkHasher {
  private readonly chunkSize: number
  private hash = crypto.createHash('md5')
  private have = 0
  readonly chunks: Chunk[] = []

  constructor(chunkSize: number) {
    this.chunkSize = chunkSize
  }

  /** Hash `data`, the next bytes of the file. */
  update(data: Buffer): void {
    let off = 0
    while (off < data.length) {
      const n = Math.min(this.chunkSize - this.have, data.length - off)
      this.hash.update(data.subarray(off, off + n))
      this.have += n
      off += n
      if (this.have === this.chunkSize) this.cut()
    }
  }

  /** The chunks of everything fed, the last one (shorter) included. */
  finish(): Chunk[] {
    if (this.have > 0) this.cut()
    return this.chunks
  }

  private cut(): void {
    this.chunks.push({ md5: this.hash.digest('hex'), size: this.have })
    this.hash = crypto.createHash('md5')
    this.have = 0
  }
}

/** The bytes of an index listing `chunks`: `md5|size` and LF a chunk, in order. */
export function formatChunkIndex(chunks: readonly Chunk[]): Buffer {
  return Buffer.from(chunks.map((c) => `${c.md5}|${c.size}\n`).join(''), 'latin1')
}

/**
 * Checks the index `data` a flist names (`chunks=<md5>`) for a file of `fileSize` bytes, and reads
 * it. Returns the index, or what is wrong with it (the node then fetches the file whole):
 * its MD5 is not `md5`; a line is not `md5|size` (32 hex digits, a decimal size; LF or CR LF;
 * the last line's end may be missing); more than {@link MAX_CHUNKS} chunks; a chunk size (that
 * of the first chunk) outside {@link MIN_CHUNK_SIZE} to {@link MAX_CHUNK_SIZE}; a chunk but the
 * last not of that size, or the last empty or larger; sizes that do not sum to `fileSize`.
 */
export function checkChunkIndex(data: Buffer, md5: string, fileSize: number): ChunkIndex | { problem: string } {
  const got = crypto.createHash('md5').update(data).digest('hex')
  if (got !== md5.toLowerCase()) return { problem: `its MD5 is ${got}, not ${md5}` }
  if (data.length > MAX_CHUNKS * MAX_LINE) return { problem: `${data.length} bytes: more than an index of ${MAX_CHUNKS} chunks can be` }
  const chunks: Chunk[] = []
  let pos = 0
  let line = 0
  while (pos < data.length) {
    let nl = data.indexOf(10, pos)
    if (nl < 0) nl = data.length
    let end = nl
    if (end > pos && data[end - 1] === 13) end--
    line++
    const text = data.toString('latin1', pos, end)
    const m = /^([0-9a-fA-F]{32})\|(\d{1,8})$/.exec(text)
    if (!m) return { problem: `line ${line} is not md5|size` }
    if (chunks.length >= MAX_CHUNKS) return { problem: `more than ${MAX_CHUNKS} chunks` }
    chunks.push({ md5: m[1]!.toLowerCase(), size: Number(m[2]) })
    pos = nl + 1
  }
  if (chunks.length === 0) return { problem: 'it lists no chunks' }
  const chunkSize = chunks[0]!.size
  // One chunk (the whole file) may be smaller than the smallest chunk size.
  if (chunkSize > MAX_CHUNK_SIZE || (chunks.length > 1 && chunkSize < MIN_CHUNK_SIZE)) {
    return { problem: `a chunk size of ${chunkSize} bytes: expected ${MIN_CHUNK_SIZE} to ${MAX_CHUNK_SIZE}` }
  }
  let sum = 0
  for (let i = 0; i < chunks.length; i++) {
    const s = chunks[i]!.size
    const last = i === chunks.length - 1
    if (last ? s === 0 || s > chunkSize : s !== chunkSize) return { problem: `chunk ${i + 1} has ${s} bytes: every chunk but the last must have ${chunkSize}, the last 1 to ${chunkSize}` }
    sum += s
  }
  if (sum !== fileSize) return { problem: `its chunks sum to ${sum} bytes, the file has ${fileSize}` }
  return { chunkSize, chunks }
}

/** The chunks (first and last index, inclusive) that hold the bytes `[offset, offset + length)`. */
export function chunksCovering(index: ChunkIndex, offset: number, length: number): { first: number; last: number } {
  const n = index.chunks.length
  const first = Math.min(n - 1, Math.floor(offset / index.chunkSize))
  const last = Math.min(n - 1, Math.floor((offset + Math.max(length, 1) - 1) / index.chunkSize))
  return { first, last }
}
