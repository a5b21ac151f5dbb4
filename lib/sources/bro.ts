/**
 * The sink of a `.bro` body: decompresses it as it arrives and hands the output to the blob's
 * writer, which checks it. Memory per download stays bounded whatever the blob's size, and a
 * brotli bomb or a corrupt stream is a fault of the source.
 */
import type { Cancel } from '../cancel'
import { createBrotliDecoder, type NativeBrotliDecoder } from '../engine'
import type { BlobWriter } from '../local-cache/blob-writer'
import { SourceFault, type Sink } from './source'

/** Upper bound on the compressed size of a `.bro` of `size` bytes (brotli adds a few bytes per
 * 16 MiB meta-block for incompressible data; this is generous). */
function broMaxBytes(size: number): number {
  return size + Math.floor(size / 256) + 4096
}

/** The most a decoder may hold whatever the blob: `BrotliDecoder.maxMemory` (native/brotli.h). */
export const BRO_MAX_MEMORY = 28 << 20
/** What a decoder's Huffman tables, context maps and state may take besides its ring buffer
 * (under 3 MiB for any stream: 256 trees of each kind at most), with room to spare. */
const BRO_TABLES = 4 << 20
/** What the decoders of one pipeline may hold between them ({@link BroBudget}). */
export const BRO_BUDGET = 64 << 20

/**
 * The most the decoder of a `.bro` of a `size`-byte blob may hold. Its ring buffer never needs to
 * be larger than the output (brotli sizes it to the next power of two of what the stream says it
 * will write, up to the window), and while it grows the old one is held with the new (1.5x);
 * doubled here for room, plus the tables: 4.1 MiB for a blob of up to 64 KiB, 6 MiB for 1 MiB,
 * 12 MiB for 4 MiB, {@link BRO_MAX_MEMORY} from 12 MiB up. The decoder enforces it (a stream that
 * claims more, say a 16 MiB window's worth for a small blob, is `bro-corrupt`), and the pipeline
 * reserves it from its budget before the request ({@link BroBudget}).
 */
export function broMemoryBound(size: number): number {
  let ring = 64 * 1024
  while (ring < size && ring < BRO_MAX_MEMORY) ring *= 2
  return Math.min(BRO_MAX_MEMORY, 2 * ring + BRO_TABLES)
}

/**
 * The decoders' memory budget of one pipeline: every `.bro` download reserves its bound
 * ({@link broMemoryBound}) before its request and gives it back when it ends, so the decoders of
 * a node hold at most `bytes` between them (64 MiB: two streams with the largest window, or about
 * fifteen small blobs, at once), whatever `max_downloads` is. Downloads that do not fit wait their
 * turn in the order they asked, holding their download slot; a demand download (one a read
 * waits for) goes before every guess, and guesses together reserve at most half the budget, so
 * a read's `.bro` never waits behind a guess's (half the budget is more than any one bound).
 */
export class BroBudget {
  /** Bytes reserved now, all downloads, and guesses. */
  used = 0
  guessUsed = 0
  /** Reservations now, and the most at once (stats and tests). */
  active = 0
  maxActive = 0
  /** Downloads that had to wait for their turn. */
  waited = 0
  private readonly queue: { bytes: number; demand: () => boolean; grant: (guess: boolean) => void }[] = []

  constructor(readonly bytes: number) {}

  get queued(): number {
    return this.queue.length
  }

  /**
   * Reserves `bytes` (clamped to the budget) for one decoder; resolves with the function that
   * gives them back (call it once). `demand` says, when its turn is judged, whether a read waits
   * for this download (a guess a read joined becomes one). Rejects with `signal`'s reason, and
   * leaves the queue, if it aborts first.
   */
  acquire(bytes: number, demand: () => boolean, signal?: Cancel): Promise<() => void> {
    const want = Math.min(bytes, this.bytes)
    if (signal?.aborted) return Promise.reject(signal.reason as Error)
    return new Promise((resolve, reject) => {
      const w = {
        bytes: want,
        demand,
        grant: (guess: boolean) => {
          forget?.()
          resolve(this.releaser(want, guess))
        },
      }
      const forget = signal?.onAbort(() => {
        const i = this.queue.indexOf(w)
        if (i < 0) return
        this.queue.splice(i, 1)
        reject(signal.reason as Error)
        this.pump() // a waiter behind it may fit now
      })
      this.queue.push(w)
      if (!this.pump(w)) this.waited++
    })
  }

  private releaser(bytes: number, guess: boolean): () => void {
    let done = false
    return () => {
      if (done) return
      done = true
      this.used -= bytes
      if (guess) this.guessUsed -= bytes
      this.active--
      this.pump()
    }
  }

  /**
   * Grants what fits, in order: the first demand waiter (none behind it goes first), else the
   * first guess while guesses stay within half the budget. Returns whether `w` was granted.
   */
  private pump(w?: unknown): boolean {
    let granted = false
    for (;;) {
      const i = this.queue.findIndex((q) => q.demand())
      const demand = i >= 0
      const at = demand ? i : 0
      const next = this.queue[at]
      if (next === undefined) return granted
      const fits = this.used + next.bytes <= this.bytes && (demand || this.guessUsed + next.bytes <= this.bytes / 2)
      if (!fits) return granted
      this.queue.splice(at, 1)
      this.used += next.bytes
      if (!demand) this.guessUsed += next.bytes
      this.active++
      this.maxActive = Math.max(this.maxActive, this.active)
      if (next === w) granted = true
      next.grant(!demand)
    }
  }
}

/** Bytes of decompressed output handed on at a time. */
const BRO_PIECE = 256 * 1024
/** This thread's piece buffer, shared by its BroSinks: each piece is copied by the BlobWriter
 * before `write` returns, and nothing here yields in between. */
let broPiece: Buffer | undefined

/**
 * Decompresses a `.bro` body as it arrives, with the addon's streaming decoder (synchronous, on
 * this thread; never the async zlib, which runs on the threadpool), and hands the output in
 * pieces of at most 256 KiB straight to the inner writer, which checks size and MD5 (and streams
 * blobs over 1 MiB to their temp file). Memory per download is the decoder's (its window, at most
 * {@link broMemoryBound} of the blob's size), one compressed chunk and the shared piece, whatever
 * the blob's size.
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
      this.decoder ??= createBrotliDecoder(broMemoryBound(this.inner.size))
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
    if ((err as NodeJS.ErrnoException).code === 'bro-corrupt') return new SourceFault('bro-corrupt', `.bro of blob ${this.inner.md5} (${this.inner.size} bytes) does not decompress: ${err.message}`, err)
    return err // the inner writer's (a local write failure): the pipeline tells it apart
  }
}

