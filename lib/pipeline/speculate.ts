/**
 * Speculative fetching behind demand misses (`main.speculate`): a miss names the blobs beside
 * it (./locality.ts), and they are fetched with the download slots demand leaves free, so that
 * the program finds them in the local cache when it asks.
 *
 * The rules that keep a guess from costing a reader anything:
 * - **Demand first.** A guess starts only while a slot is free and no demand download waits for
 *   one, and at most `maxDownloads` guesses run at once. A demand miss that finds every slot
 *   taken takes the slot of the newest guess, which runs on outside the slots (the pipeline does
 *   that: `preempt`; cancelling it instead threw away its bytes and its connection, and the
 *   program often asked for that very blob next: the tree read of the benchmark took 2.6x as
 *   long). A miss of a blob being guessed joins that download and stops it being a guess.
 * - **Bounded in bytes.** Guessed bytes not seen read yet (in flight, or in the cache and never
 *   read) stay under `maxBytes`; a guess that would pass it waits until reads pay some back. So
 *   a mount never wastes more than `maxBytes` on guesses, however wrong they are.
 * - **Checked like any blob.** A guess is a download of the pipeline like a miss's: MD5- and
 *   size-checked as it arrives, committed to the local cache only once checked, the next source
 *   tried when one serves wrong bytes. Only blobs the flists name are ever guessed.
 *
 * Whether a guess was read: the pipeline sees a miss that joins a guess in flight; a guess that
 * landed first is read by the native side without JavaScript, and the only trace is the blob's
 * atime (a first read moves it past the mtime, under `relatime` as under `strictatime`). Landed
 * guesses are looked at (one `stat` each) when the counters are read and when the byte budget is
 * full. On a `noatime` cache file system those reads go unseen: the budget then bounds all
 * guessed bytes.
 */
import * as fs from 'node:fs'
import { LocalityIndex, type LocalityData, type Range } from './locality'

/** Defaults of {@link SpeculationOptions}. */
export const SPECULATION_DEFAULTS = {
  maxBytes: 64 << 20,
  /**
   * Guessed bytes downloading at once: a miss's bytes share the link with them, and on a link of
   * 100 Mbit/s 512 KiB pass in 42 ms, about the round trip they save. Without this bound 12
   * guesses of up to 512 KiB each queued misses behind them (the Python start-up's requests took
   * 56 ms at the median instead of 43).
   */
  maxInFlightBytes: 512 << 10,
  /** Of `max_downloads`; at least 1. */
  downloadsShare: 0.75,
} as const

/** Landed guesses kept for the atime check; the oldest beyond are written off as unread. */
const MAX_LANDED = 65_536
/** Landed guesses looked at per check. */
const CHECK_PER_CALL = 256
/** Queued ranges kept; the oldest beyond are dropped (the program has moved on). */
const MAX_RANGES = 256
/** Ranges taken once are remembered this many at most (then forgotten all at once). */
const MAX_TAKEN = 100_000

/** Bounds of speculation (tests set them; mounts take the defaults). */
export interface SpeculationOptions {
  /** Guessed bytes not seen read yet, at most. Default 64 MiB. */
  maxBytes?: number
  /** Guesses downloading at once, at most. Default three quarters of `max_downloads`. */
  maxDownloads?: number
  /** Guessed bytes downloading at once, at most (one guess always may). Default 512 KiB. */
  maxInFlightBytes?: number
}

/** How a guess ended. `used`: a miss joined it before it ended. */
export type GuessOutcome = 'landed' | 'used' | 'failed'

/** What the speculator asks of the pipeline. */
export interface SpeculationHost {
  /** A slot is free and no demand download waits for one. */
  canStart(): boolean
  /** Starts a guess of the blob; undefined when it is cached or in flight already. */
  start(md5: string, size: number): Promise<GuessOutcome> | undefined
  /** Where the blob lives in the local cache. */
  path(md5: string): string
}

/** The `speculation` part of the pipeline's counters. */
export interface SpeculationStats {
  /** `main.speculate`, and a tree to guess from. */
  enabled: boolean
  /** Guesses started. */
  started: number
  /** Guesses that put their blob in the local cache. */
  landed: number
  /** Guessed blobs later read: a miss joined the download, or the cached blob's atime moved. */
  used: number
  /** Guesses that gave their slot to a demand miss (and ran on outside the slots). */
  yielded: number
  /** Guesses no source could serve (wrong bytes, errors). */
  failed: number
  /** Bytes of guessed blobs (landed, or joined by a miss). */
  bytes: number
  /** Of those, bytes of the ones read. */
  usedBytes: number
  /** Bytes of landed guesses not seen read (yet): the waste so far. */
  unusedBytes: number
  /** Guesses downloading now. */
  active: number
  /** Blobs waiting in the queue (some will be skipped: cached or in flight by then). */
  queued: number
  /** The bounds in force. */
  maxBytes: number
  maxDownloads: number
  maxInFlightBytes: number
}

/** A landed guess not seen read yet. */
interface Landed {
  md5: string
  size: number
}

/** The queue of guesses, their bounds and counters. Runs on the miss worker. */
export class Speculator {
  private index: LocalityIndex
  readonly maxBytes: number
  readonly maxDownloads: number
  readonly maxInFlightBytes: number
  /** Bytes of the guesses downloading now. */
  private inFlightBytes = 0
  /** Ranges to guess from, the newest last: the program's latest directory goes first. */
  private readonly ranges: Range[] = []
  private readonly taken = new Set<number>()
  private active = 0
  /** Guessed bytes not seen read: in flight, or landed and unread. */
  private outstanding = 0
  private readonly landedList: Landed[] = []
  private checkAt = 0
  private closed = false
  private readonly c = { started: 0, landed: 0, used: 0, yielded: 0, failed: 0, bytes: 0, usedBytes: 0 }

  constructor(
    data: LocalityData,
    private readonly host: SpeculationHost,
    opts: SpeculationOptions & { slots: number },
  ) {
    this.index = new LocalityIndex(data)
    this.maxBytes = opts.maxBytes ?? SPECULATION_DEFAULTS.maxBytes
    this.maxInFlightBytes = opts.maxInFlightBytes ?? SPECULATION_DEFAULTS.maxInFlightBytes
    this.maxDownloads = Math.max(1, Math.min(opts.slots, opts.maxDownloads ?? Math.floor(opts.slots * SPECULATION_DEFAULTS.downloadsShare)))
  }

  /** A new tree to guess from (a reload): what was queued from the old one is dropped. */
  setLocality(data: LocalityData): void {
    this.index = new LocalityIndex(data)
    this.ranges.length = 0
    this.taken.clear()
  }

  /** A demand miss of `md5` started a download: queue its neighbours, and start what fits. */
  demand(md5: string): void {
    if (this.closed) return
    for (const { key, range } of this.index.neighbours(md5)) {
      if (this.taken.has(key) || range.from >= range.to) continue
      if (this.taken.size >= MAX_TAKEN) this.taken.clear()
      this.taken.add(key)
      this.ranges.push({ ...range })
      if (this.ranges.length > MAX_RANGES) this.ranges.shift()
    }
    this.pump()
  }

  /** A miss joined the guess of a blob of `size` bytes while it ran: it was worth it. */
  claimed(size: number): void {
    this.c.used++
    this.c.usedBytes += size
    this.c.bytes += size
    this.outstanding -= size
  }

  /** A guess gave its slot to a demand miss. */
  yielded(): void {
    this.c.yielded++
  }

  /** Starts guesses while a slot, the concurrency bound and the byte budget allow. */
  pump(): void {
    while (!this.closed && this.active < this.maxDownloads && this.ranges.length > 0 && this.host.canStart()) {
      const r = this.ranges[this.ranges.length - 1]!
      if (r.from >= r.to) {
        this.ranges.pop()
        continue
      }
      const size = this.index.sizeOf(r.from)
      if (this.active > 0 && this.inFlightBytes + size > this.maxInFlightBytes) return
      if (this.outstanding + size > this.maxBytes) {
        // Full: see whether reads paid some back (at most every 100 ms), else wait for them.
        if (!this.check(true) || this.outstanding + size > this.maxBytes) return
      }
      const md5 = this.index.md5Of(r.from)
      r.from++
      const p = this.host.start(md5, size)
      if (!p) continue
      this.active++
      this.inFlightBytes += size
      this.outstanding += size
      this.c.started++
      p.then((outcome) => this.ended(md5, size, outcome))
    }
  }

  private ended(md5: string, size: number, outcome: GuessOutcome): void {
    this.active--
    this.inFlightBytes -= size
    if (outcome === 'landed') {
      this.c.landed++
      this.c.bytes += size
      this.landedList.push({ md5, size })
      if (this.landedList.length > MAX_LANDED) this.landedList.shift() // written off: stays outstanding
    } else if (outcome !== 'used') {
      // Nothing landed: its bytes go back to the budget (what crossed the wire is not counted).
      this.outstanding -= size
      this.c.failed++
    }
    this.pump()
  }

  /**
   * Looks at landed guesses for reads (their atime moved past their mtime); read ones pay their
   * bytes back. `throttled`: at most every 100 ms. Returns whether it looked.
   */
  private check(throttled: boolean): boolean {
    const now = Date.now()
    if (throttled && now - this.checkAt < 100) return false
    this.checkAt = now
    // The oldest first; those still unread go to the back of the line.
    const looked = this.landedList.splice(0, CHECK_PER_CALL)
    const unread: Landed[] = []
    for (const l of looked) {
      let st: fs.Stats | undefined
      try {
        st = fs.statSync(this.host.path(l.md5), { throwIfNoEntry: false })
      } catch {
        st = undefined
      }
      if (st === undefined) continue // evicted unread: written off, stays outstanding
      if (st.atimeMs > st.mtimeMs) {
        this.c.used++
        this.c.usedBytes += l.size
        this.outstanding -= l.size
      } else {
        unread.push(l)
      }
    }
    for (const l of unread) this.landedList.push(l)
    return true
  }

  stats(): SpeculationStats {
    const before = this.outstanding
    this.check(false)
    if (this.outstanding < before) this.pump() // reads paid some of the budget back
    let queued = 0
    for (const r of this.ranges) queued += r.to - r.from
    const c = this.c
    return {
      enabled: true,
      started: c.started,
      landed: c.landed,
      used: c.used,
      yielded: c.yielded,
      failed: c.failed,
      bytes: c.bytes,
      usedBytes: c.usedBytes,
      unusedBytes: c.bytes - c.usedBytes,
      active: this.active,
      queued,
      maxBytes: this.maxBytes,
      maxDownloads: this.maxDownloads,
      maxInFlightBytes: this.maxInFlightBytes,
    }
  }

  /** Queued guesses are dropped; running ones end with the pipeline. */
  close(): void {
    this.closed = true
    this.ranges.length = 0
  }
}

/** The counters when speculation is off. */
export function speculationOff(): SpeculationStats {
  return { enabled: false, started: 0, landed: 0, used: 0, yielded: 0, failed: 0, bytes: 0, usedBytes: 0, unusedBytes: 0, active: 0, queued: 0, maxBytes: 0, maxDownloads: 0, maxInFlightBytes: 0 }
}
