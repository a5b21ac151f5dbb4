/**
 * The sink of a `.bro` body: decompresses it as it arrives and hands the output to the blob's
 * writer, which checks it. Memory per download stays bounded whatever the blob's size, and a
 * brotli bomb or a corrupt stream is a fault of the source.
 */
import { createBrotliDecoder, type NativeBrotliDecoder } from '../engine'
import type { BlobWriter } from '../local-cache/blob-writer'
import { SourceFault, type Sink } from './source'

/** Upper bound on the compressed size of a `.bro` of `size` bytes (brotli adds a few bytes per
 * 16 MiB meta-block for incompressible data; this is generous). */
function broMaxBytes(size: number): number {
  return size + Math.floor(size / 256) + 4096
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
      this.decoder ??= createBrotliDecoder()
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

