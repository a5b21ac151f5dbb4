/**
 * What every kind of source (directory, http) has in common: the interface the pipeline drives,
 * the fault type, and the sinks that check bytes as they arrive.
 *
 * Everything here is synchronous fs, in-thread crypto, the addon's brotli decoder and its own
 * committer threads: it runs on the miss worker, which must not use libuv's threadpool
 * (docs/design.md, "The miss path").
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { getSystemErrorMap } from 'node:util'
import { loadBinding } from '../native'

/** Whether a source is a grid cache (`G/h0/h1/md5`) or a store (`R/files/h0/h1/md5`, `R/md/`). */
export type SourceRole = 'cache' | 'store'

/** What a `get` found: the bytes went into the sink, or the source does not have the object. */
export type GetResult = 'ok' | 'absent'

/**
 * A source failed in a way worth logging and counting (anything but "not there"). `kind` is short
 * and stable (`timeout`, `http-500`, `md5`, `too-long`, `network:ECONNREFUSED`, ...): the log is
 * written once per source per kind, and `stats()` counts by kind.
 */
export class SourceFault extends Error {
  readonly kind: string
  constructor(kind: string, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'SourceFault'
    this.kind = kind
  }
}

/**
 * Faults that mean "this source holds wrong content" rather than "this source is unwell"
 * (`not-a-file`: a directory source holds a FIFO, a device, a symlink or a directory where the
 * file should be).
 */
export const CONTENT_FAULTS: ReadonlySet<string> = new Set(['md5', 'too-long', 'too-short', 'bro-corrupt', 'bro-too-long', 'not-a-file'])

/**
 * Where a source writes a body. `write` throws a {@link SourceFault} when the body is already
 * wrong (longer than allowed); the source must then stop reading and rethrow it. `end` checks
 * what arrived and throws likewise.
 */
export interface Sink {
  /** Exactly this many bytes are expected (a Content-Length or file size that differs is a fault). */
  readonly exactBytes?: number
  /** At most this many bytes are accepted. */
  readonly maxBytes: number
  write(chunk: Buffer): void
  end(): void
}

/** One place blobs and flists come from: a directory (or file:// URL) or an http(s) URL. */
export interface Source {
  /** The config key, `cache[0]` or `store[1]`, for messages and stats. */
  readonly key: string
  readonly role: SourceRole
  /** The URL without credentials, for messages and stats. */
  readonly url: string
  /** A grid cache the pipeline may push blobs to. */
  readonly push: boolean
  /**
   * Read the object at `rel` (a `/`-separated path under the root, e.g. `files/a/b/ab…`) into
   * `sink`. Resolves `'absent'` when the source does not have it (404, ENOENT); rejects with a
   * {@link SourceFault} for anything else, never hangs past the source's timeout.
   */
  get(rel: string, sink: Sink): Promise<GetResult>
  /** Store the local file `file` (`size` bytes) at `rel`, atomically where the source allows. */
  put(rel: string, file: string, size: number): Promise<void>
  /** Release sockets; pending requests fail. */
  close(): void
}

/** Store and cache layouts: `h0/h1/md5` under the root (caches) or under `files/` (stores). */
export function blobRel(role: SourceRole, md5: string, bro = false): string {
  const rel = `${md5[0]}/${md5[1]}/${md5}${bro ? '.bro' : ''}`
  return role === 'store' ? `files/${rel}` : rel
}

/** `<cache>/<h0>/<h1>/<md5>`: where the local cache (and the native side) keeps a blob. */
export function cachePath(cacheDir: string, md5: string): string {
  return path.join(cacheDir, md5[0], md5[1], md5)
}

/** Write all of `buf` to `fd` (writeSync may write less than asked). */
export function writeAllSync(fd: number, buf: Buffer): void {
  let off = 0
  while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off)
}

/** Blobs up to this size are collected in memory and written to their temp file in one go. */
export const MEMORY_BLOB_MAX = 1 << 20

type NativeCommitter = InstanceType<ReturnType<typeof loadBinding>['Committer']>

/**
 * This thread's committer (made on first use): the addon's native threads that create, write,
 * fsync and rename finished blobs, and copy blobs into directory grid caches, so this thread only
 * downloads and hashes.
 */
let committer: NativeCommitter | undefined
/** A queued job: how to settle it, and how to name a failure (Node's fs error shape). */
interface QueuedJob {
  resolve: () => void
  reject: (err: Error) => void
  /** The file a failed step is about (`where`: a push's own report of it). */
  file: (step: string | null, where: string | null) => string
}
const commits = new Map<number, QueuedJob>()
let nextToken = 0

function commitDone(token: number, errno: number, step: string | null, where: string | null): void {
  const job = commits.get(token)
  if (!job) return
  commits.delete(token)
  if (errno === 0) {
    job.resolve()
    return
  }
  // The shape of Node's own fs errors: `ENOSPC: no space left on device, write '/path'`.
  const [code, text] = getSystemErrorMap().get(-errno) ?? ['EIO', `errno ${errno}`]
  const file = job.file(step, where)
  job.reject(Object.assign(new Error(`${code}: ${text}, ${step} '${file}'`), { code, errno: -errno, syscall: step, path: file }))
}

/** Queues a job on this thread's committer; `cleanup` runs when it could not be queued. */
function queueJob(describe: QueuedJob['file'], start: (c: NativeCommitter, token: number) => boolean, cleanup: () => void, what: string): Promise<void> {
  committer ??= new (loadBinding().Committer)(commitDone)
  const token = (nextToken = (nextToken + 1) >>> 0)
  return new Promise<void>((resolve, reject) => {
    commits.set(token, { resolve, reject, file: describe })
    let queued = false
    try {
      queued = start(committer!, token)
      if (!queued) reject(Object.assign(new Error(`EBADF: the committer no longer takes jobs (this thread is ending), '${what}'`), { code: 'EBADF', path: what }))
    } catch (err) {
      reject(err as Error)
    } finally {
      if (!queued) {
        commits.delete(token)
        cleanup()
      }
    }
  })
}

function commitJob(tmp: string, dest: string, start: (c: NativeCommitter, token: number) => boolean): Promise<void> {
  const unlinkTmp = () => {
    try {
      fs.unlinkSync(tmp)
    } catch {
      // never made (a blob in memory) or already gone
    }
  }
  return queueJob((step) => (step === 'rename' || step === 'mkdir' ? dest : tmp), start, unlinkTmp, tmp)
}

/**
 * Copies the local-cache blob `src` (`size` bytes) to `root/rel` in a directory grid cache, on
 * the committer's threads, relative to directory fds: nothing below `root` is followed (see
 * `Committer.push` in binding.d.ts). Rejects with a Node-style fs error (`code`, `syscall` = the
 * step, `path`): `ELOOP` when a symlink was found in the grid cache or in the source's place,
 * step `source` with `EINVAL` when `src` is not a regular file of `size` bytes.
 */
export function pushToDir(root: string, rel: string, src: string, size: number, sync: boolean): Promise<void> {
  const describe = (step: string | null, where: string | null): string => (step === 'source' ? src : where ? path.join(root, where) : root)
  return queueJob(describe, (c, token) => c.push(token, root, rel, src, size, sync), () => {}, path.join(root, rel))
}

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
    if (this.done || this.ended) throw new Error('BlobWriter: write after end')
    if (this.bytes + chunk.length > this.size) {
      throw new SourceFault('too-long', `more than the expected ${this.size} bytes`)
    }
    this.hash.update(chunk)
    if (this.buf) chunk.copy(this.buf, this.bytes)
    else writeAllSync(this.fd!, chunk)
    this.bytes += chunk.length
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
    if (buf) return commitJob(this.tmpPath, dest, (c, token) => c.write(token, this.tmpPath, dest, buf, this.sync))
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
    return commitJob(this.tmpPath, dest, (c, token) => c.finish(token, this.tmpPath, dest, this.sync))
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

/** Upper bound on the compressed size of a `.bro` of `size` bytes (brotli adds a few bytes per
 * 16 MiB meta-block for incompressible data; this is generous). */
export function broMaxBytes(size: number): number {
  return size + Math.floor(size / 256) + 4096
}

/** Bytes of decompressed output handed on at a time. */
const BRO_PIECE = 256 * 1024
/** This thread's piece buffer, shared by its BroSinks: each piece is copied by the BlobWriter
 * before `write` returns, and nothing here yields in between. */
let broPiece: Buffer | undefined

type NativeBrotliDecoder = InstanceType<ReturnType<typeof loadBinding>['BrotliDecoder']>

/**
 * Decompresses a `.bro` body as it arrives, with the addon's streaming decoder (synchronous, on
 * this thread; never the async zlib, which runs on the threadpool), and hands the output in
 * pieces of at most 256 KiB straight to the inner writer, which checks size and MD5 (and streams
 * blobs over 1 MiB to their temp file). Memory per download is the decoder's (its window: at most
 * `BrotliDecoder.maxMemory`), one compressed chunk and the shared piece, whatever the blob's size.
 * Decoding stops at `size + 1` output bytes: a brotli bomb fails as `bro-too-long`; a corrupt or
 * truncated stream as `bro-corrupt`. {@link abort} (or the end) frees the decoder at once.
 */
export class BroSink implements Sink {
  readonly maxBytes: number
  private decoder: NativeBrotliDecoder | undefined
  private bytesIn = 0
  private bytesOut = 0
  private done = false

  constructor(private readonly inner: BlobWriter) {
    this.maxBytes = broMaxBytes(inner.size)
  }

  write(chunk: Buffer): void {
    if (this.done) throw new Error('BroSink: write after end or abort')
    if (this.bytesIn + chunk.length > this.maxBytes) {
      this.abort()
      throw new SourceFault('too-long', `.bro body over ${this.maxBytes} bytes for a ${this.inner.size}-byte blob`)
    }
    this.bytesIn += chunk.length
    try {
      this.decoder ??= new (loadBinding().BrotliDecoder)()
      this.decoder.push(chunk)
      this.drain(this.decoder)
    } catch (err) {
      this.abort()
      throw this.fault(err)
    }
  }

  end(): void {
    if (this.done) throw new Error('BroSink: end after abort')
    try {
      if (this.decoder === undefined) throw new SourceFault('bro-corrupt', '.bro body is empty')
      this.drain(this.decoder)
      if (!this.decoder.finished()) throw new SourceFault('bro-corrupt', '.bro does not decompress: the body ends before the brotli stream does')
    } catch (err) {
      this.abort()
      throw this.fault(err)
    }
    this.close()
    this.inner.end()
  }

  /** Frees the decoder (the inner writer is the caller's to abort); safe to call more than once. */
  abort(): void {
    this.close()
  }

  private close(): void {
    this.done = true
    this.decoder?.close()
    this.decoder = undefined
  }

  /** Hands on what the input pushed so far decodes to, stopping at `size + 1` bytes. */
  private drain(decoder: NativeBrotliDecoder): void {
    const piece = (broPiece ??= Buffer.allocUnsafe(BRO_PIECE))
    for (;;) {
      const room = this.inner.size + 1 - this.bytesOut
      const n = decoder.pull(room < piece.length ? piece.subarray(0, room) : piece)
      if (n === 0) return
      this.bytesOut += n
      if (this.bytesOut > this.inner.size) {
        throw new SourceFault('bro-too-long', `.bro expands past the expected ${this.inner.size} bytes`)
      }
      this.inner.write(piece.subarray(0, n))
    }
  }

  private fault(err: unknown): Error {
    if (err instanceof SourceFault || !(err instanceof Error)) return err as Error
    if ((err as NodeJS.ErrnoException).code === 'bro-corrupt') return new SourceFault('bro-corrupt', `.bro does not decompress: ${err.message}`, err)
    return err // the inner writer's (a local write failure): the pipeline tells it apart
  }
}

/** Collects a small body (an flist, a signature) in memory, at most `maxBytes`. */
export class BufferSink implements Sink {
  private chunks: Buffer[] | undefined = []
  private bytes = 0
  constructor(
    readonly maxBytes: number,
    private readonly what = 'body',
  ) {}

  write(chunk: Buffer): void {
    if (this.bytes + chunk.length > this.maxBytes) {
      throw new SourceFault('too-long', `${this.what} is larger than ${this.maxBytes} bytes`)
    }
    if (this.chunks === undefined) throw new Error('BufferSink: write after data()')
    this.chunks.push(chunk)
    this.bytes += chunk.length
  }

  end(): void {}

  /**
   * The bytes received. Once only: the sink lets go of them, since a finished response's
   * listeners may keep it reachable as long as the keep-alive socket lives (for a big flist,
   * that was its whole text kept for the life of the mount).
   */
  data(): Buffer {
    if (this.chunks === undefined) throw new Error('BufferSink: data() taken already')
    const out = Buffer.concat(this.chunks, this.bytes)
    this.chunks = undefined
    return out
  }
}
