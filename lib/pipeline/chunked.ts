/**
 * Ranges of chunked files: a read of a file the flist stores as chunks too fetches its chunk index
 * (local cache, then the sources in order; checked, then kept in the local cache like a blob) and
 * then only the chunks that cover the read, each an ordinary blob fetched by the pipeline (so
 * merged with any other fetch of it, checked against its own MD5, the next source tried when one
 * serves wrong bytes, pushed to grid caches, counted by the quota and evicted like any blob).
 * A sequential reader gets the next chunks fetched behind its read. Once every chunk of a file
 * is cached, the file is put together into its whole blob (checked against the flist's MD5 of
 * the file, read a slice at a time so other misses go on meanwhile). An index that fails its
 * checks is not used: the file is fetched whole, and that is logged once per index.
 */
import fs from 'node:fs'
import { checkChunkIndex, chunksCovering, MAX_CHUNKS, type ChunkIndex } from '../chunks'
import type { ChunkedFile, FetchOptions } from '../fetcher'
import type { LocalCache } from '../local-cache'
import type { Logger } from '../log'
import { BufferSink, sourceBlobRel, type Source } from '../sources/source'

/** Largest index read: {@link MAX_CHUNKS} lines of the longest valid form. */
const MAX_INDEX_BYTES = MAX_CHUNKS * 43
/** Chunks fetched ahead of a sequential reader, after the ones its read needs. */
const READ_AHEAD = 2
/** Bytes put together between two turns of the event loop (other misses run in between). */
const ASSEMBLE_SLICE = 8 << 20
const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants

/** The counters of chunked reads (`pipeline.chunks` in the status document). */
export interface ChunkStats {
  /** Chunk indexes checked and used (once per index and fetcher). */
  indexes: number
  /** Indexes that failed their checks (or no source had): their files were fetched whole. */
  badIndexes: number
  /** Chunk fetches asked of the pipeline for reads (each merged with any other of the same chunk). */
  chunkFetches: number
  /** Chunk fetches asked ahead of sequential readers. */
  readAhead: number
  /** Files whose chunks were all cached, put together into their whole blob (MD5-checked). */
  assembled: number
}

/** What {@link ChunkedReads} needs of the pipeline. */
export interface ChunkPipeline {
  readonly cache: LocalCache
  readonly sources: readonly Source[]
  readonly log: Logger
  fetch(md5: string, size: number, onVerified?: (data: Buffer) => void, options?: FetchOptions): Promise<void>
  has(md5: string, size: number): boolean
}

/** The chunked reads of one pipeline. */
export class ChunkedReads {
  private readonly p: ChunkPipeline
  /** Checked indexes by index MD5 and file size (undefined: unusable, fetch whole), for the
   * fetcher's life. The size is part of the key: an index checked for one size says nothing of
   * another entry naming it with another size. */
  private readonly indexes = new Map<string, Promise<ChunkIndex | undefined>>()
  private readonly logged = new Set<string>()
  private readonly counters: ChunkStats = { indexes: 0, badIndexes: 0, chunkFetches: 0, readAhead: 0, assembled: 0 }
  /** Files being put together now. */
  private readonly assembling = new Map<string, Promise<void>>()
  /** Per file: the chunks known to be cached (looked at once, then added to as fetches end). */
  private readonly present = new Map<string, Set<number>>()

  constructor(p: ChunkPipeline) {
    this.p = p
  }

  /** See {@link Fetcher.fetchRange}. */
  async fetchRange(md5: string, size: number, indexMd5: string, off: number, len: number, options: FetchOptions = {}): Promise<ChunkedFile | undefined> {
    const index = await this.index(md5, size, indexMd5.toLowerCase())
    if (index === undefined) return undefined
    const { first, last } = chunksCovering(index, Math.min(off, size - 1), len)
    let present = this.present.get(md5)
    if (!present) {
      present = new Set()
      for (let i = 0; i < index.chunks.length; i++) if (this.p.has(index.chunks[i]!.md5, index.chunks[i]!.size)) present.add(i)
      this.present.set(md5, present)
    }
    const landed = (i: number): void => {
      present.add(i)
      if (present.size === index.chunks.length) void this.assemble(md5, size, index)
    }
    const needed: Promise<void>[] = []
    for (let i = first; i <= last; i++) {
      const c = index.chunks[i]!
      this.counters.chunkFetches++
      needed.push(this.p.fetch(c.md5, c.size, undefined, options).then(() => landed(i)))
    }
    await Promise.all(needed)
    // The whole file asked for (prefetch): done once it is put together too.
    if (off === 0 && len >= size) await this.assembling.get(md5)
    // A reader that reached this chunk from the one before (it is cached) reads on: fetch the next
    // chunks behind it, once its own are in (ahead of them they would share its bandwidth).
    const sequential = first === 0 ? off === 0 : this.p.has(index.chunks[first - 1]!.md5, index.chunks[first - 1]!.size)
    if (sequential) {
      for (let i = last + 1; i <= Math.min(index.chunks.length - 1, last + READ_AHEAD); i++) {
        const c = index.chunks[i]!
        if (this.p.has(c.md5, c.size)) continue
        this.counters.readAhead++
        this.p.fetch(c.md5, c.size).then(
          () => landed(i),
          () => undefined, // counted and logged by the pipeline
        )
      }
    }
    return { chunkSize: index.chunkSize, chunks: index.chunks.map((c) => c.md5) }
  }

  /**
   * When every chunk of file `md5` is cached and the cache can hold it: its whole blob, from the
   * chunks in order, checked against the file's MD5 and put in place like any blob. Best effort:
   * a chunk evicted meanwhile, a full disk or content that does not make the file's MD5 (logged)
   * leave the chunks serving reads as before.
   */
  private assemble(md5: string, size: number, index: ChunkIndex): Promise<void> {
    if (this.assembling.has(md5) || this.p.has(md5, size) || this.p.cache.neverFits(size) !== undefined) return Promise.resolve()
    const p = this.putTogether(md5, size, index).finally(() => this.assembling.delete(md5))
    this.assembling.set(md5, p)
    return p
  }

  private async putTogether(md5: string, size: number, index: ChunkIndex): Promise<void> {
    const w = this.p.cache.writer(md5, size)
    const buf = Buffer.allocUnsafe(1 << 20)
    try {
      let sinceYield = 0
      for (const c of index.chunks) {
        let fd: number
        try {
          fd = fs.openSync(this.p.cache.path(c.md5), O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
        } catch {
          this.present.get(md5)?.delete(index.chunks.indexOf(c)) // evicted meanwhile: fetched again later
          return
        }
        try {
          const st = fs.fstatSync(fd)
          if (!st.isFile() || st.size !== c.size) return
          for (let off = 0; off < c.size; ) {
            const n = fs.readSync(fd, buf, 0, Math.min(buf.length, c.size - off), off)
            if (n === 0) return
            w.write(buf.subarray(0, n))
            off += n
            sinceYield += n
            if (sinceYield >= ASSEMBLE_SLICE) {
              sinceYield = 0
              await new Promise((resolve) => setImmediate(resolve))
            }
          }
        } finally {
          fs.closeSync(fd)
        }
      }
      w.end() // the whole file's MD5, as the flist names it
      await this.p.cache.commit(w)
      this.counters.assembled++
    } catch (err) {
      this.p.log.warn({ md5, err: (err as Error).message }, `blob ${md5}: its chunks were not put together into the whole file: ${(err as Error).message}`)
    } finally {
      w.abort()
    }
  }

  stats(): ChunkStats {
    return { ...this.counters }
  }

  /** The checked index of file `md5`, or undefined (fetch it whole). */
  private index(md5: string, size: number, indexMd5: string): Promise<ChunkIndex | undefined> {
    const key = `${indexMd5}:${size}`
    let p = this.indexes.get(key)
    if (!p) {
      p = this.loadIndex(md5, size, indexMd5)
      this.indexes.set(key, p)
      // An index no source had now may be there later: only a verdict on its bytes is kept.
      p.then((idx) => {
        if (idx === undefined && !this.logged.has(indexMd5)) this.indexes.delete(key)
      }, () => this.indexes.delete(key))
    }
    return p
  }

  private unusable(md5: string, indexMd5: string, why: string): undefined {
    this.counters.badIndexes++
    if (!this.logged.has(indexMd5)) {
      this.logged.add(indexMd5)
      this.p.log.warn({ md5, index: indexMd5 }, `chunk index ${indexMd5} of blob ${md5}: ${why}; the file is fetched whole`)
    }
    return undefined
  }

  private async loadIndex(md5: string, size: number, indexMd5: string): Promise<ChunkIndex | undefined> {
    const local = this.readLocal(indexMd5)
    if (local !== undefined) {
      const r = checkChunkIndex(local, indexMd5, size)
      if (!('problem' in r)) {
        this.counters.indexes++
        return r
      }
      // A cached blob is checked before it is kept: bytes that fail now are the index's own fault.
      if (!r.problem.startsWith('its MD5')) return this.unusable(md5, indexMd5, r.problem)
    }
    const tried: string[] = []
    for (const src of this.p.sources) {
      const sink = new BufferSink(MAX_INDEX_BYTES, `chunk index ${indexMd5}`)
      let data: Buffer
      try {
        if ((await src.get(sourceBlobRel(src.role, indexMd5), sink)) === 'absent') {
          tried.push(`${src.key}: not found`)
          continue
        }
        data = sink.data()
      } catch (err) {
        tried.push(`${src.key}: ${(err as Error).message}`)
        continue
      }
      const r = checkChunkIndex(data, indexMd5, size)
      if ('problem' in r) {
        // Wrong bytes at this source: the next one may have the right ones.
        if (r.problem.startsWith('its MD5')) {
          tried.push(`${src.key}: ${r.problem}`)
          continue
        }
        return this.unusable(md5, indexMd5, r.problem)
      }
      await this.keep(indexMd5, data)
      this.counters.indexes++
      return r
    }
    this.counters.badIndexes++
    this.p.log.debug({ md5, index: indexMd5 }, `chunk index ${indexMd5} of blob ${md5}: no source has it (${tried.join(', ')}); the file is fetched whole`)
    return undefined
  }

  /** The index from the local cache (never through a link, a regular file, bounded), if there. */
  private readLocal(indexMd5: string): Buffer | undefined {
    let fd: number
    try {
      fd = fs.openSync(this.p.cache.path(indexMd5), O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
    } catch {
      return undefined
    }
    try {
      const st = fs.fstatSync(fd)
      if (!st.isFile() || st.size > MAX_INDEX_BYTES) return undefined
      const buf = Buffer.allocUnsafe(st.size)
      let n = 0
      while (n < st.size) {
        const r = fs.readSync(fd, buf, n, st.size - n, n)
        if (r === 0) return undefined
        n += r
      }
      return buf
    } catch {
      return undefined
    } finally {
      fs.closeSync(fd)
    }
  }

  /** Keeps a checked index in the local cache, like a blob (a remount reads it with no network). */
  private async keep(indexMd5: string, data: Buffer): Promise<void> {
    const w = this.p.cache.writer(indexMd5, data.length)
    try {
      w.write(data)
      w.end()
      await this.p.cache.commit(w)
    } catch (err) {
      this.p.log.debug({ index: indexMd5, err: (err as Error).message }, `chunk index ${indexMd5}: not kept in the local cache`)
    } finally {
      w.abort()
    }
  }
}
