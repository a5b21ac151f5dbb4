/**
 * One download in flight and what it moves through: a slot among `max_downloads`, the sink that
 * meters its bytes (and refuses them once every caller gave up), and the wait that ends at once
 * when it is abandoned.
 */
import { Cancel } from '../cancel'
import type { FetchOptions } from '../fetcher'
import type { Sink } from '../sources/source'

export { Cancel }


/** Counting semaphore: at most `max` downloads, the rest wait in FIFO order. */
export class Slots {
  active = 0
  private readonly waiting: (() => void)[] = []
  constructor(readonly max: number) {}
  get queued(): number {
    return this.waiting.length
  }
  /** Resolves with a slot; rejects with `signal`'s reason, and leaves the queue, if it aborts first. */
  acquire(signal?: Cancel): Promise<void> {
    if (this.active < this.max) {
      this.active++
      return Promise.resolve()
    }
    return new Promise((resolve, reject) => {
      const take = (): void => {
        forget?.()
        resolve()
      }
      const forget = signal?.onAbort(() => {
        const i = this.waiting.indexOf(take)
        if (i >= 0) this.waiting.splice(i, 1)
        reject(signal.reason as Error)
      })
      this.waiting.push(take)
    })
  }
  /** Takes a slot if one is free now (what {@link acquire} does at once then). */
  takeFree(): boolean {
    if (this.active >= this.max) return false
    this.active++
    return true
  }
  /** Takes a slot only if one is free and nobody waits for one (a guess: lib/pipeline/speculate.ts). */
  tryAcquire(): boolean {
    if (this.active >= this.max || this.waiting.length > 0) return false
    this.active++
    return true
  }
  release(): void {
    const next = this.waiting.shift()
    if (next) next() // the slot passes straight to the next waiter
    else this.active--
  }
}

/** A download ended because every caller gave up on it (see `FetchOptions.signal`, lib/fetcher.ts). */
export class Abandoned extends Error {}

/** One download in flight, shared by every caller that asked for its blob meanwhile. */
export class Download {
  readonly abort = new Cancel()
  /** Callers still waiting for it; when the last one gives up, it is aborted. */
  callers = 0
  readonly listeners = new Set<() => void>()
  promise!: Promise<void>
  /** Gets the checked bytes before they are in the cache (the first caller's `onVerified`). */
  onVerified?: (data: Buffer) => void
  /** A guess (lib/pipeline/speculate.ts) that no miss has joined yet: it may be cancelled. */
  speculative = false
  /** Started for a read (a miss), not as a guess that a read joined later. */
  forRead = false
  /** Its readers have their checked bytes (the blob may still be on its way into the cache). */
  answered = false
  /** The guess is a blob of the start-up set (counted apart from the guesses of locality). */
  startup = false
  /** A guess that gave its slot to a miss (and runs on outside the slots). */
  slotless = false
  /** Its first caller found the blob missing from the cache just now ({@link FetchOptions.absent}). */
  absent = false
  /** A guess's checked bytes, kept until it settles for a miss that joins it meanwhile. */
  checked?: Buffer

  get signal(): Cancel {
    return this.abort
  }

  moved(): void {
    for (const l of this.listeners) l()
  }
}

/** `p`, unless `signal` aborts first: then a rejection with its reason at once, `p` going on
 * (`late` gets its outcome, which is otherwise dropped). */
export function unlessAborted<T>(p: Promise<T>, signal: Cancel, late?: (value: T) => void): Promise<T> {
  if (signal.aborted) {
    p.then(late, () => undefined)
    return Promise.reject(signal.reason as Error)
  }
  return new Promise<T>((resolve, reject) => {
    let done = false
    const forget = signal.onAbort(() => {
      done = true
      reject(signal.reason as Error)
    })
    p.then(
      (value) => {
        forget()
        if (done) late?.(value)
        else resolve(value)
      },
      (err: unknown) => {
        forget()
        if (!done) reject(err as Error)
      },
    )
  })
}

/**
 * Hands a source's bytes on to the blob's sink and tells the download it moved; once the
 * download was abandoned it refuses them, so a source that is still sending stops reading and
 * lets go of its connection (sources stop at a sink's throw).
 */
export class MeteredSink implements Sink {
  constructor(
    private readonly inner: Sink,
    private readonly dl: Download,
    private readonly moved: (dl: Download) => void,
  ) {}

  get exactBytes(): number | undefined {
    return this.inner.exactBytes
  }

  get maxBytes(): number {
    return this.inner.maxBytes
  }

  write(chunk: Buffer): void {
    if (this.dl.signal.aborted) throw new Abandoned('the download was abandoned')
    this.moved(this.dl)
    this.inner.write(chunk)
  }

  end(): void {
    this.inner.end()
  }
}
