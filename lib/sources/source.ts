/**
 * What every kind of source (directory, http) has in common: the interface the pipeline drives,
 * the fault type, the sink a source writes a body into, and where things are under a source's
 * root. Sources run on the miss worker, which must not use libuv's threadpool (docs/design.md,
 * "The miss path").
 */
import { blobRel } from '../blob'

/** Whether a source is a grid cache (`G/h0/h1/md5`) or a store (`R/files/h0/h1/md5`, `R/md/`). */
export type SourceRole = 'cache' | 'store'

/** What a `get` found: the bytes went into the sink, or the source does not have the object. */
export type GetResult = 'ok' | 'absent'

/**
 * A source failed in a way worth logging and counting (anything but "not there"). `kind` is short
 * and stable (`timeout`, `http-500`, `md5`, `too-long`, `network:ECONNREFUSED`, ...): the log is
 * written once per source per kind, and `stats()` counts by kind.
 *
 * Internal to the sources and the pipeline, never seen by users: the pipeline counts it and tries
 * the next source, and a fetch no source could serve fails with an `AysfsError` `EIO`.
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
 * What identifies one version of an object at an HTTP source, from the response that delivered
 * it: `ETag`, else `Last-Modified`. A conditional request (`If-None-Match`, `If-Modified-Since`)
 * with them is answered 304 while the object is the same.
 */
export interface Validators {
  etag?: string
  lastModified?: string
}

/** Whether `v` can make a request conditional (an ETag or a Last-Modified). */
export function hasValidators(v: Validators | undefined): v is Validators {
  return v !== undefined && (v.etag !== undefined || v.lastModified !== undefined)
}

/** What a conditional request ({@link Source.revalidate}) found. */
export type RevalidateResult = 'unchanged' | 'changed' | 'absent'

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
  /** Told the validators of the response before its body, when the source has them (HTTP). */
  validators?(v: Validators): void
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
  /**
   * A conditional GET of `rel` with validators an earlier `get` reported: `unchanged` (304),
   * `changed` (the body is not read), `absent` (404). Rejects with a {@link SourceFault} like
   * `get`. Only sources that have validators (HTTP) implement it.
   */
  revalidate?(rel: string, v: Validators): Promise<RevalidateResult>
  /** Store the local file `file` (`size` bytes) at `rel`, atomically where the source allows. */
  put(rel: string, file: string, size: number): Promise<void>
  /** Release sockets; pending requests fail. */
  close(): void
  /**
   * Load now every module its requests can need (the miss worker calls it, through the
   * pipeline's `preload`, before it answers a miss); elsewhere they load at their first use.
   */
  preload?(): void
}

/** Where a blob is under a source's root: `h0/h1/md5` in a grid cache, `files/h0/h1/md5` in a
 * store (and `.bro` after it for the compressed copy a store may have). */
export function sourceBlobRel(role: SourceRole, md5: string, bro = false): string {
  const rel = `${blobRel(md5)}${bro ? '.bro' : ''}`
  return role === 'store' ? `files/${rel}` : rel
}

/** Where a store keeps the flist of service `id`: `md/<id>.flist` (and `.sig` after it). */
export function storeFlistRel(id: string): string {
  return `md/${id}.flist`
}

/** Where a store keeps the start-up list of service `id`: `md/<id>.startup` (and `.sig` after it). */
export function storeStartupRel(id: string): string {
  return `md/${id}.startup`
}

/** Collects a small body (an flist, a signature) in memory, at most `maxBytes`. */
export class BufferSink implements Sink {
  private chunks: Buffer[] | undefined = []
  private bytes = 0
  /** What the response that delivered the body said, when the source has validators. */
  received?: Validators
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

  validators(v: Validators): void {
    this.received = v
  }

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
