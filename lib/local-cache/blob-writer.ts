/**
 * The sink a source writes a blob into: it hashes and counts the bytes as they arrive, and puts
 * the blob in the local cache (through the committer) only once they are exactly what the flist
 * says. Runs on the miss worker: sync fs, in-thread crypto.
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import { SourceFault, type Sink } from '../sources/source'
import { writeAll } from '../temp-file'
import { finishBlob, writeBlob } from './committer'

/** Blobs up to this size are collected in memory and written to their temp file in one go. */
export const MEMORY_BLOB_MAX = 1 << 20

/** A failure of the local cache itself (disk full, permissions): no source can help, and none is
 * blamed for it. */
export class LocalFailure extends Error {}

/**
 * Hashes and counts a blob as it arrives; `commit` puts it in place only after `end` saw exactly
 * `size` bytes with the right MD5. A blob of up to {@link MEMORY_BLOB_MAX} bytes is collected in
 * memory and the committer creates, writes, fsyncs and renames its temp file; a larger one is
 * written to its temp file (created exclusively, at once) as it arrives, closed, and the
 * committer fsyncs and renames it. An aborted writer leaves nothing behind.
 */
export class BlobWriter implements Sink {
  readonly exactBytes: number
  readonly maxBytes: number
  /** Set when writing the temp file failed, whatever a source made of the exception: the local
   * cache's failure, not the source's. */
  failure?: LocalFailure
  private readonly hash = crypto.createHash('md5')
  private fd: number | undefined
  private buf: Buffer | undefined
  private bytes = 0
  private ended = false
  private verified = false
  private done = false

  constructor(
    readonly md5: string,
    readonly size: number,
    readonly tmpPath: string,
    private readonly sync = true,
  ) {
    this.exactBytes = size
    this.maxBytes = size
    if (size <= MEMORY_BLOB_MAX) this.buf = Buffer.allocUnsafe(size)
    // Private, like everything in the local cache (the mode only ever loses bits to the umask).
    else this.fd = fs.openSync(tmpPath, 'wx', 0o600)
  }

  /** Hash and keep a chunk; the writer copies it, so the caller may reuse its buffer. */
  write(chunk: Buffer): void {
    if (this.done || this.ended) throw this.localFailure(new Error('BlobWriter: write after end'))
    if (this.bytes + chunk.length > this.size) {
      throw new SourceFault('too-long', `more than the expected ${this.size} bytes`)
    }
    this.hash.update(chunk)
    if (this.buf) chunk.copy(this.buf, this.bytes)
    else {
      try {
        writeAll(this.fd!, chunk)
      } catch (err) {
        throw this.localFailure(err)
      }
    }
    this.bytes += chunk.length
  }

  private localFailure(err: unknown): LocalFailure {
    this.failure = new LocalFailure(`writing ${this.tmpPath}: ${(err as Error).message}`, { cause: err })
    return this.failure
  }

  end(): void {
    if (this.done) throw new Error('BlobWriter: end after abort')
    this.ended = true
    if (this.bytes !== this.size) {
      throw new SourceFault('too-short', `${this.bytes} bytes, expected ${this.size}`)
    }
    const got = this.hash.digest('hex')
    if (got !== this.md5) throw new SourceFault('md5', `content has MD5 ${got}`)
    this.verified = true
  }

  /** After a successful `end()`, a blob kept in memory: its checked bytes (else undefined). */
  verifiedBytes(): Buffer | undefined {
    return this.verified && !this.done ? this.buf : undefined
  }

  /**
   * Put the blob at `dest` (its directories are made): written, fsynced (after a crash the name
   * never points at an empty or partial file) and renamed, on the committer's threads. Only
   * after `end()`. Rejects with a Node-style fs error (`code`, `syscall`, `path`); the temp file
   * is gone either way.
   */
  commit(dest: string): Promise<void> {
    if (this.done || !this.verified) return Promise.reject(new Error('BlobWriter: commit before a successful end'))
    this.done = true
    const buf = this.buf
    const fd = this.fd
    this.buf = undefined
    this.fd = undefined
    if (buf) return writeBlob(this.tmpPath, dest, buf, this.sync)
    // Closed here, by the thread that opened it (Node tracks a worker's fds), then handed over.
    try {
      fs.closeSync(fd!)
    } catch (err) {
      try {
        fs.unlinkSync(this.tmpPath)
      } catch {
        // already gone
      }
      return Promise.reject(err as Error)
    }
    return finishBlob(this.tmpPath, dest, this.sync)
  }

  /** Drop the blob (and its temp file); safe to call more than once and after commit. */
  abort(): void {
    if (this.done) return
    this.done = true
    this.buf = undefined
    if (this.fd === undefined) return
    try {
      fs.closeSync(this.fd)
    } catch {
      // already gone
    }
    this.fd = undefined
    try {
      fs.unlinkSync(this.tmpPath)
    } catch {
      // already gone
    }
  }
}
