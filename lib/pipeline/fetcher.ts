/**
 * The pipeline's fetcher: merges concurrent fetches of a blob into one download and walks the
 * sources for it. A miss goes local cache (the blob may have appeared meanwhile) → grid caches in
 * config order → stores in config order, each store plain then `.bro`; the bytes are MD5- and
 * size-checked as they arrive and put in the local cache (lib/local-cache/) only once checked. A
 * source that fails or serves wrong bytes is skipped for the next one; when none is left the
 * fetch rejects with an `AysfsError` coded `EIO`. What else the pipeline does has a file of its
 * own: pushes to grid caches (pushes.ts), flists (flists.ts), per-source counters
 * (source-stats.ts), the download's slot, sink and abandonment (download.ts).
 *
 * It runs on the miss worker (docs/design.md, "The miss path"): sync fs, in-thread crypto, the
 * addon's brotli decoder and committer threads, host names through lib/sources/resolve.ts.
 * Nothing in it needs libuv's threadpool or the main thread.
 */
import { EMPTY_MD5, isMd5 } from '../blob'
import type { Config } from '../config'
import { AysfsError } from '../errors'
import type { CancelSignal, ChunkedFile, Fetcher, FetchOptions } from '../fetcher'
import { SourceHealth, isHealthFault, type Admission } from '../health'
import { LocalCache, isNoSpace, type QuotaStats } from '../local-cache'
import { createLogger, stderrLogger, type Logger, type LogOptions } from '../log'
import { createSource } from '../sources'
import { BRO_BUDGET, BroBudget, BroSink, broMemoryBound } from '../sources/bro'
import type { LookupFunction } from '../sources/resolve'
import { CONTENT_FAULTS, SourceFault, sourceBlobRel, type Source } from '../sources/source'
import { ChunkedReads, type ChunkStats } from './chunked'
import { Abandoned, Download, MeteredSink, Slots, unlessAborted } from './download'
import { fetchFlist, fetchStartup, type FlistContext, type FlistResult, type RefusedOffers, type StartupResult, type ValidateFlist, type ValidateStartup } from './flists'
import type { LocalityData } from './locality'
import { PushQueue } from './pushes'
import { FAR_AFTER_MS, FAR_MS, Speculator, speculationOff, startupOff, type GuessOutcome, type SpeculationOptions, type SpeculationStats, type StartupStats } from './speculate'
import type { StartupSet } from './startup'
import { SourceCounters, asFault, type SourceStats } from './source-stats'

/** A download that finds the disk full while other fetches pin blobs waits this many times, at
 * most, for one of them to settle before it gives up. */
const MAX_ROOM_WAITS = 16
/** Evictions in a row before a download that still finds the disk full waits or gives up. */
const MAX_EVICTIONS = 2
/** Downloads settled lately that a miss found absent still looks for in the cache (see `recent`). */
const RECENT_MAX = 4096
/** Downloads waiting for a slot or for room hear of the others' progress at most this often. */
const WAITERS_EVERY_MS = 100

/** What `stats()` returns: plain JSON. */
export interface FetcherStats {
  /** Calls to `fetch()`. */
  fetches: number
  /** Calls that joined a download already in flight for the same blob (single flight). */
  merged: number
  /**
   * Downloads a read had to start itself: its miss found neither the blob in the local cache nor
   * a download or guess of it in flight to join. Each is a round trip (at least) the reader
   * waited on; a guess that lands first, or that a miss joins, is not counted.
   */
  started: number
  /** Downloads that ended with the blob in the local cache. */
  served: number
  /** Downloads that ended in EIO. */
  failed: number
  /** Misses that found the blob already in the local cache when they looked. */
  alreadyCached: number
  /** Zero-size blobs created without a source. */
  empty: number
  /** Downloads that failed because the local cache's disk was full, even after evicting. */
  noSpace: number
  /**
   * Fetches refused because the blob can never fit in the local cache (larger than
   * `main.cache_size`, or than its file system with everything evictable gone): nothing is
   * evicted for them, and their reads fail with EIO.
   */
  tooLarge: number
  /** The local cache: quota, usage, evictions. */
  cache: QuotaStats
  downloads: { active: number; queued: number; max: number }
  /**
   * The `.bro` decoders' memory budget (lib/sources/bro.ts `BroBudget`): `budget` and `reserved`
   * bytes, decoders `active` now, `queued` downloads waiting for their turn, and how many `waited`.
   */
  decoders: { budget: number; reserved: number; active: number; queued: number; waited: number }
  pushes: { active: number; queued: number; dropped: number }
  flists: { fetched: number; kept: number }
  /** Grid caches in order, then stores in order. */
  sources: SourceStats[]
  /** Guesses fetched behind the misses (`main.speculate`; lib/pipeline/speculate.ts). */
  speculation: SpeculationStats
  /** The recorded start-up set fetched behind the misses (`main.startup`; lib/pipeline/startup.ts). */
  startup: StartupStats
  /** Reads of chunked files (lib/pipeline/chunked.ts). */
  chunks: ChunkStats
}

/** What `createFetcher` takes: structured-cloneable (but `log`), so it can cross to a worker. */
export interface FetcherData {
  config: Config
  /** Default: warnings and errors to stderr. Cannot cross a worker boundary: omit it there. */
  log?: Logger
  /** A logger to make (on the miss worker, where `log` cannot be passed); `log` wins. */
  logging?: LogOptions
  /** Uploads to grid caches at once; default `min(4, max_downloads)`. */
  pushConcurrency?: number
  /** fsync blobs before renaming them in; default true (tests may turn it off). */
  fsync?: boolean
  /** Host name resolution for HTTP sources; default `../sources/resolve`. */
  lookup?: LookupFunction
  /** Backoff of failing sources (lib/health.ts); `baseMs: 0` retries at once (tests). */
  backoff?: { baseMs?: number; maxMs?: number }
  /** The mount's tree, for speculation (lib/pipeline/locality.ts); none: no speculation. */
  locality?: LocalityData
  /** The start-up set to fetch at once (lib/pipeline/startup.ts), when `main.startup`. */
  startup?: StartupSet
  /** Bounds of speculation; default {@link SPECULATION_DEFAULTS} (tests set them). */
  speculation?: SpeculationOptions
}

/** How a try of one source ended: the blob is in the cache, the source does not have it, or it failed. */
type Outcome = 'ok' | 'absent' | SourceFault

/** The health verdict of a try: `undefined` when it ended for a reason of ours (the local disk). */
function verdict(outcome: Outcome | undefined): boolean | undefined {
  if (outcome === undefined) return undefined
  return outcome === 'ok' || outcome === 'absent' || !isHealthFault(outcome.kind)
}

/** An `AbortSignal` seen as a {@link CancelSignal}. */
function cancelOf(signal: AbortSignal): CancelSignal {
  return {
    get aborted() {
      return signal.aborted
    },
    get reason() {
      return signal.reason as unknown
    },
    onAbort(fn) {
      signal.addEventListener('abort', fn, { once: true })
      return () => signal.removeEventListener('abort', fn)
    },
  }
}

/** The fetcher. Everything it does on the fetch path is sync fs, sockets and timers. */
export class Pipeline implements Fetcher {
  readonly cache: LocalCache
  /** Grid caches in order, then stores in order. */
  readonly sources: readonly Source[]
  private readonly config: Config
  private readonly log: Logger
  private readonly slots: Slots
  /** What the `.bro` decoders may hold between them (lib/sources/bro.ts). */
  private readonly broBudget = new BroBudget(BRO_BUDGET)
  private readonly inflight = new Map<string, Download>()
  /**
   * Blobs whose downloads settled lately (the last {@link RECENT_MAX} at most): a miss of one of
   * them looks in the cache even when its caller just found it absent there (the read path looked
   * before the commit's rename; the download has settled since).
   */
  private readonly recent = new Set<string>()
  /** Downloads waiting for a slot or for room: they move when any download moves. */
  private readonly waiting = new Set<Download>()
  private waitersToldAt = 0
  private readonly counters = { fetches: 0, merged: 0, started: 0, served: 0, failed: 0, alreadyCached: 0, empty: 0, noSpace: 0, tooLarge: 0 }
  private readonly flistTally = { fetched: 0, kept: 0 }
  private readonly perSource: SourceCounters
  private readonly pushes: PushQueue
  private readonly health: SourceHealth
  /** Guesses behind the misses: from a tree (`main.speculate`) and a start-up set (`main.startup`). */
  private speculator?: Speculator
  private readonly speculation?: SpeculationOptions
  /** Guesses running, oldest first, by their key in `inflight`: a miss may cancel the newest. */
  private readonly guesses = new Map<Download, string>()
  /**
   * The last demand downloads' times from request to last checked byte, in ms: the cousins of a
   * miss are guessed only when at least 3 were measured and the fastest of them took
   * {@link FAR_MS} or more (the round trip is the floor of each; a loaded CPU or a new
   * connection only adds to some); before, when none took less and one took {@link FAR_AFTER_MS}
   * or more.
   */
  private readonly demandMs = new Float64Array(8)
  private demandCount = 0

  /** The sources are far enough for a miss's cousins to pay (see {@link demandMs}). */
  private far(): boolean {
    if (this.demandCount === 0) return false
    const n = Math.min(this.demandCount, this.demandMs.length)
    let min = Infinity
    let max = 0
    for (let i = 0; i < n; i++) {
      min = Math.min(min, this.demandMs[i]!)
      max = Math.max(max, this.demandMs[i]!)
    }
    return min >= FAR_MS && (this.demandCount >= 3 || max >= FAR_AFTER_MS)
  }
  /**
   * No download started by a miss but `self` has readers waiting: one reader, as in a program's
   * start-up, which reads what a file's content names next. Readers at once (the benchmark's
   * tree read, 8 of them) read in an order of their own, which directory locality follows
   * better. (A download whose readers have their bytes is still in flight while it commits: it
   * does not count, or a start-up's next miss would find the last one there.)
   */
  private oneReader(self: Download): boolean {
    for (const d of this.inflight.values()) if (d !== self && d.forRead && !d.answered) return false
    return true
  }
  private closed = false
  /** The full-disk message is logged once a minute at most, with the count of the others. */
  private noSpaceLog = { at: 0, suppressed: 0 }
  /** Blobs whose "can never fit" line was logged: once per blob (then debug). */
  private tooLargeLogged = new Set<string>()
  private readonly chunked: ChunkedReads

  constructor(data: FetcherData) {
    if (data === null || typeof data !== 'object' || typeof data.config?.main?.cache !== 'string') {
      throw new TypeError('createFetcher: data.config must be a checked Config')
    }
    const config = data.config
    this.config = config
    this.log = data.log ?? (data.logging ? createLogger(data.logging) : stderrLogger)
    // The cache directory is checked first, before any source exists: refused (an AysfsError
    // naming it) if another user owns it or may write in it.
    this.cache = new LocalCache({ dir: config.main.cache, quota: config.main.cacheSize, log: this.log, fsync: data.fsync })
    const opts = { timeoutMs: config.main.timeoutMs, lookup: data.lookup }
    try {
      this.sources = [...config.caches.map((c) => createSource(c, 'cache', opts)), ...config.stores.map((s) => createSource(s, 'store', opts))]
    } catch (err) {
      void this.cache.close()
      throw err
    }
    this.slots = new Slots(Math.max(1, config.main.maxDownloads))
    this.health = new SourceHealth({
      ...data.backoff,
      onChange: (key, up, failures, delayMs) => {
        const src = this.sources.find((x) => x.key === key)
        const fields = { source: key, url: src?.url }
        if (up) this.log.info(fields, `${key} (${src?.url}) answers again after ${failures} failures in a row`)
        // info: the failure itself was already logged as a warning, once per kind.
        else this.log.info(fields, `${key} (${src?.url}) failed: backed off (first retry in ${(delayMs / 1000).toFixed(1)} s, then longer, up to a minute, while it keeps failing)`)
      },
    })
    this.perSource = new SourceCounters(this.sources, this.health, this.log)
    this.pushes = new PushQueue(Math.max(1, data.pushConcurrency ?? Math.min(4, config.main.maxDownloads)), this.perSource)
    this.speculation = data.speculation
    this.chunked = new ChunkedReads({
      cache: this.cache,
      sources: this.sources,
      log: this.log,
      fetch: (md5, size, onVerified, options) => this.fetch(md5, size, onVerified, options),
      has: (md5, size) => this.has(md5, size),
    })
    if (data.locality) this.setLocality(data.locality)
    if (data.startup) this.setStartup(data.startup)
  }

  /** The tree to guess from (at the start, and after a reload); nothing when `main.speculate` is off. */
  setLocality(data: LocalityData): void {
    if (this.config.main.speculate && !this.closed) this.speculate().setLocality(data)
  }

  /** The start-up set to fetch (at the start, and with a new tree); nothing when `main.startup` is off. */
  setStartup(set: StartupSet): void {
    if (this.config.main.startup && !this.closed) this.speculate().setStartup(set)
  }

  private speculate(): Speculator {
    this.speculator ??= new Speculator(
      {
        canStart: () => !this.closed && this.slots.active < this.slots.max && this.slots.queued === 0,
        start: (md5, size, startup) => this.guess(md5, size, startup),
        path: (md5) => this.cache.path(md5),
      },
      { ...this.speculation, slots: this.slots.max },
    )
    return this.speculator
  }

  /** See {@link Fetcher.preload}: each source's HTTP client (the logger is made at start). */
  preload(): void {
    for (const s of this.sources) s.preload?.()
  }

  /** See {@link Fetcher.fetchRange}: the chunks of a chunked file that cover a read. */
  fetchRange(md5: string, size: number, index: string, off: number, len: number, options?: FetchOptions): Promise<ChunkedFile | undefined> {
    if (!isMd5(md5) || !isMd5(index)) return Promise.reject(new TypeError('md5 and index must be strings of 32 hex digits'))
    return this.chunked.fetchRange(md5.toLowerCase(), size, index, off, len, options)
  }

  /** Where the blob lives (or will) in the local cache. */
  path(md5: string): string {
    return this.cache.path(md5)
  }

  /** Whether the local cache holds the blob with the right size. */
  has(md5: string, size: number): boolean {
    return this.cache.has(md5, size)
  }

  /**
   * Make sure `<cache>/<h0>/<h1>/<md5>` holds the blob: at once if it is there, else from the
   * first source that serves verified content. Concurrent calls for one blob share one download;
   * at most `max_downloads` run at once, the rest queue. Rejects with `AysfsError` `EIO` when no
   * source can serve it (or the local cache cannot be written), a `TypeError` for bad arguments.
   */
  fetch(md5: string, size: number, onVerified?: (data: Buffer) => void, options: FetchOptions = {}): Promise<void> {
    if (!isMd5(md5)) return Promise.reject(new TypeError('md5 must be a string of 32 hex digits'))
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      return Promise.reject(new TypeError('size must be a non-negative integer'))
    }
    this.counters.fetches++
    const hash = md5.toLowerCase()
    const key = `${hash}:${size}`
    let dl = this.inflight.get(key)
    if (dl) {
      this.counters.merged++
      this.log.debug({ md5: hash, size }, `blob ${hash} (${size} bytes): miss, joins the download in flight${dl.speculative ? ' (a guess)' : ''}`)
      if (dl.speculative) {
        // A miss of a blob being guessed: the guess paid off, and is no longer one.
        dl.speculative = false
        this.guesses.delete(dl)
        if (!dl.startup) this.speculator?.claimed(size)
      }
      if (onVerified && !dl.onVerified) {
        if (dl.checked) {
          // Checked already: now, and never again (a later try of another source finds it set).
          dl.onVerified = () => undefined
          onVerified(dl.checked)
        } else {
          dl.onVerified = onVerified
        }
      }
    } else {
      this.log.debug({ md5: hash, size }, `blob ${hash} (${size} bytes): miss, fetching`)
      dl = this.start(hash, size, key, onVerified, false, false, options.absent === true)
      this.speculator?.demand(hash, this.far(), this.oneReader(dl))
    }
    return this.join(dl, key, options)
  }

  /** A new download of the blob, in `inflight` until it settles. */
  private start(md5: string, size: number, key: string, onVerified: ((data: Buffer) => void) | undefined, speculative = false, startup = false, absent = false): Download {
    const d = new Download()
    d.absent = absent
    d.onVerified = onVerified
    d.speculative = speculative
    d.forRead = !speculative
    d.startup = startup
    // Pinned until the event-loop turn after it settled (LocalCache.releaseSoon).
    this.cache.pin(md5)
    d.promise = this.download(md5, size, d).finally(() => {
      if (this.recent.size >= RECENT_MAX) this.recent.clear()
      this.recent.add(md5)
      if (this.inflight.get(key) === d) this.inflight.delete(key)
      this.guesses.delete(d)
      d.checked = undefined
      this.cache.releaseSoon(md5)
    })
    this.inflight.set(key, d)
    return d
  }

  /**
   * A guess of the speculator (or a blob of the start-up set): a download like a miss's, in a slot
   * nobody waits for, that a miss may join (then it counts as used) or take the slot of. Undefined
   * when the blob is cached or in flight already, or no slot is free.
   */
  private guess(md5: string, size: number, startup: boolean): Promise<GuessOutcome> | undefined {
    const key = `${md5}:${size}`
    if (this.closed || this.inflight.has(key) || this.cache.has(md5, size)) return undefined
    if (!this.slots.tryAcquire()) return undefined
    const d = this.start(md5, size, key, undefined, true, startup)
    this.guesses.set(d, key)
    return d.promise.then(
      () => (d.speculative ? 'landed' : 'used'),
      () => (d.speculative ? 'failed' : 'used'),
    )
  }

  /**
   * A miss found every slot taken: the newest guess that holds one gives it up. It runs on outside
   * the slots (its bytes are not thrown away, its connection not cut), so downloads at once stay
   * under `max_downloads` plus the guesses' own bound.
   */
  private preempt(): void {
    let newest: Download | undefined
    for (const d of this.guesses.keys()) if (!d.slotless) newest = d
    if (!newest) return
    newest.slotless = true
    this.slots.release()
    if (!newest.startup) this.speculator?.yielded()
  }

  /** One caller's wait for a download: see {@link FetchOptions}. */
  private join(dl: Download, key: string, options: FetchOptions): Promise<void> {
    const { onProgress } = options
    dl.callers++
    if (onProgress) dl.listeners.add(onProgress)
    let left = false
    const leave = (): void => {
      if (left) return
      left = true
      dl.callers--
      if (onProgress) dl.listeners.delete(onProgress)
    }
    // `signal` is read only when there is no `cancel` (the miss worker makes it on demand).
    const signal = options.cancel ?? (options.signal && cancelOf(options.signal))
    if (!signal) return dl.promise.finally(leave)
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        leave()
        if (dl.callers === 0 && !dl.signal.aborted) {
          // Nobody waits any more: end it, and let a new fetch of the blob start afresh.
          if (this.inflight.get(key) === dl) this.inflight.delete(key)
          dl.abort.abort(new Abandoned(`blob ${key.slice(0, 32)}: abandoned by every caller`))
        }
        reject(new AysfsError('EIO', `blob ${key.slice(0, 32)}: abandoned (${(signal.reason as Error | undefined)?.message ?? 'aborted'})`))
      }
      if (signal.aborted) return onAbort()
      const forget = signal.onAbort(onAbort)
      dl.promise.then(
        () => {
          forget()
          leave()
          resolve()
        },
        (err: unknown) => {
          forget()
          leave()
          reject(err as Error)
        },
      )
    })
  }

  /** `dl` moved: its callers hear of it, and so do the downloads waiting for a slot or room. */
  private moved(dl: Download): void {
    dl.moved()
    if (this.waiting.size === 0) return
    const now = Date.now()
    if (now - this.waitersToldAt < WAITERS_EVERY_MS) return
    this.waitersToldAt = now
    for (const w of this.waiting) if (w !== dl) w.moved()
  }

  /** Waits for `p` as a download that is not moving by itself (see {@link FetchOptions.onProgress}). */
  private async waitFor<T>(dl: Download, p: Promise<T>): Promise<T> {
    this.waiting.add(dl)
    try {
      return await p
    } finally {
      this.waiting.delete(dl)
    }
  }

  /** The one download of a blob: an empty one is made, else a slot, then the sources. */
  private async download(md5: string, size: number, dl: Download): Promise<void> {
    if (size === 0) return this.putEmpty(md5)
    // Whether the cache is to be looked at (again): not for a miss that was just found absent
    // and gets a slot at once, unless a download of it settled lately; always after a wait for a
    // slot (it may have landed meanwhile).
    let look = !dl.absent || this.recent.has(md5)
    // A guess holds its slot already; a miss that finds none free cancels the newest guess.
    if (!dl.speculative) {
      if (this.slots.active >= this.slots.max) this.preempt()
      // A free slot is taken at once (no promise); else the download waits for one.
      if (!this.slots.takeFree()) {
        look = true
        try {
          await this.waitFor(dl, this.slots.acquire(dl.signal))
        } catch (err) {
          this.counters.failed++
          throw err
        }
      }
    }
    try {
      if (this.closed) throw new AysfsError('EIO', `blob ${md5}: the fetcher is closed`)
      if (look && this.cache.has(md5, size)) {
        this.counters.alreadyCached++
        return
      }
      // Larger than the quota or the whole disk: downloading it would evict every blob and fail.
      const never = this.cache.neverFits(size)
      if (never !== undefined) throw this.tooLarge(md5, size, never)
      if (dl.forRead) this.counters.started++
      await this.walkSources(md5, size, dl)
    } catch (err) {
      this.counters.failed++
      throw err
    } finally {
      if (!dl.slotless) this.slots.release()
      this.speculator?.pump()
    }
  }

  /** A zero-size blob needs no source: its MD5 is known, and it is made in place. */
  private async putEmpty(md5: string): Promise<void> {
    if (md5 !== EMPTY_MD5) {
      this.counters.failed++
      throw new AysfsError('EIO', `blob ${md5}: size 0, but ${EMPTY_MD5} is the MD5 of empty content`)
    }
    if (this.cache.has(md5, 0)) {
      this.counters.alreadyCached++
      return
    }
    const w = this.cache.writer(md5, 0)
    try {
      w.end()
      await this.cache.commit(w)
    } finally {
      w.abort()
    }
    this.counters.empty++
  }

  /**
   * Tries the sources in order until one puts the blob in the cache. The waiting readers are
   * answered from the first checked copy, before it is in the cache, and the download is counted
   * as served then (so a reader that has its bytes sees them counted); if that copy then never
   * makes it into the cache, the count is taken back. Grid caches that missed the blob get it
   * pushed once it is in.
   */
  private async walkSources(md5: string, size: number, dl: Download): Promise<void> {
    const { signal } = dl
    const tried: string[] = []
    const missed: Source[] = []
    let answered = false
    for (const src of this.sources) {
      if (this.closed) break
      if (signal.aborted) throw signal.reason as Error
      this.moved(dl) // on to the next source
      // An admission that comes after the abort is settled with no verdict (it may be a probe
      // other misses wait for).
      const admission =
        this.health.admitNow(src.key) ??
        (await unlessAborted(this.health.admit(src.key, this.config.main.timeoutMs), signal, (late) => {
          if (late) this.health.settle(src.key, undefined, late)
        }))
      if (!admission) {
        tried.push(`${src.key}: backed off`)
        this.log.debug({ md5, source: src.key }, `blob ${md5}: ${src.key} skipped (backed off)`)
        continue
      }
      this.moved(dl)
      // Set when this source's checked bytes answered the readers: its verdict and the count
      // are given then, not when the try ends.
      let answeredHere = false
      const answer = (data: Buffer): void => {
        if (answered || signal.aborted) return // answered already
        if (!dl.onVerified) {
          // Nobody to give them to yet; a miss that joins a guess before it settles gets them.
          if (dl.speculative) dl.checked = data
          return
        }
        answered = answeredHere = dl.answered = true
        this.health.settle(src.key, true, admission)
        this.counters.served++
        dl.onVerified(data)
      }
      let outcome: Outcome | undefined
      try {
        // Abandoned mid-try: the slot is freed now; the try ends at the source's next chunk (the
        // sink refuses it) or by the source's own timeout, and its outcome is dropped.
        outcome = await unlessAborted(this.tryWithRoom(src, md5, size, answer, dl), signal)
      } finally {
        this.endTry(src, admission, outcome, answeredHere)
      }
      if (outcome === 'ok') {
        this.log.debug({ md5, size, source: src.key, url: src.url }, `blob ${md5}: served by ${src.key} (${src.url})${missed.length > 0 ? `; pushing it to ${missed.map((m) => m.key).join(', ')}` : ''}`)
        this.pushes.add(missed, md5, size, this.cache.path(md5))
        return
      }
      tried.push(`${src.key}: ${outcome === 'absent' ? 'not found' : outcome.kind}`)
      this.log.debug({ md5, source: src.key, url: src.url }, `blob ${md5}: ${src.key} (${src.url}) ${outcome === 'absent' ? 'does not have it' : `failed: ${outcome.kind}`}`)
      if (src.push && (outcome === 'absent' || CONTENT_FAULTS.has(outcome.kind))) missed.push(src)
    }
    throw new AysfsError('EIO', `blob ${md5} (${size} bytes): no source could serve it (${tried.length > 0 ? tried.join(', ') : 'no sources'})`)
  }

  /**
   * A try of `src` ended with `outcome` (undefined: it threw). The source gets its health verdict
   * and a blob now in the cache counts as served, unless both were done when its bytes answered
   * the readers; then a try that did not end with the blob in the cache takes its count back.
   */
  private endTry(src: Source, admission: Admission, outcome: Outcome | undefined, answeredHere: boolean): void {
    if (answeredHere) {
      if (outcome !== 'ok') this.counters.served--
      return
    }
    this.health.settle(src.key, verdict(outcome), admission)
    if (outcome === 'ok') this.counters.served++
  }

  /**
   * {@link trySource}, again while the local cache's disk is full and room can be made: evict
   * least recently used blobs ({@link MAX_EVICTIONS} times in a row at most); when nothing more
   * can go but other fetches pin blobs that will be let go, wait for one ({@link MAX_ROOM_WAITS}
   * times at most) and evict again. A blob that can never fit fails at once; so does a full disk
   * nothing can be freed on: EIO and one clear log line.
   */
  private async tryWithRoom(src: Source, md5: string, size: number, answer: (data: Buffer) => void, dl: Download): Promise<Outcome> {
    let evictions = 0
    let waits = 0
    for (;;) {
      let full: unknown
      try {
        return await this.trySource(src, md5, size, answer, dl)
      } catch (err) {
        if (!isNoSpace(err)) throw err
        full = err
      }
      if (evictions < MAX_EVICTIONS) {
        evictions++
        const room = this.cache.makeRoom(size)
        if (room.never !== undefined) throw this.tooLarge(md5, size, room.never, full)
        if (room.evicted > 0 || room.room) continue
      }
      // Nothing can go now, but other fetches pin their blobs until the turn after they settle
      // (readers are answered before the blob is written, so a single reader has several in
      // flight): wait for one of them to let go, then evict again.
      if (this.cache.othersPinned() && waits < MAX_ROOM_WAITS) {
        waits++
        await this.waitFor(dl, this.cache.nextRelease())
        evictions = 0
        continue
      }
      throw this.noSpace(md5, size, full)
    }
  }

  /**
   * One source, plain then (a store) `.bro`: its bytes checked as they arrive, the readers
   * answered from a checked copy kept in memory, then the blob put in the cache. Resolves with
   * how the source answered; rejects only for a failure of ours (the cache's `EIO`) or an
   * abandoned download.
   */
  private async trySource(src: Source, md5: string, size: number, answer: (data: Buffer) => void, dl: Download): Promise<Outcome> {
    const st = this.perSource.of(src)
    const variants = src.role === 'store' ? [false, true] : [false]
    for (const bro of variants) {
      // A decoder's memory is reserved before its request, and given back when the try ends.
      const giveBack = bro ? await this.waitFor(dl, this.broBudget.acquire(broMemoryBound(size), () => !dl.speculative, dl.signal)) : undefined
      const writer = this.cache.writer(md5, size)
      const broSink = bro ? new BroSink(writer) : undefined
      let hit = false
      try {
        const sink = new MeteredSink(broSink ?? writer, dl, (d) => this.moved(d))
        const asked = performance.now()
        if ((await src.get(sourceBlobRel(src.role, md5, bro), sink)) === 'absent') continue
        // How far the sources are: a moving average of the demand downloads' request times.
        if (!dl.speculative) this.demandMs[this.demandCount++ % this.demandMs.length] = performance.now() - asked
        if (dl.signal.aborted) throw new Abandoned('the download was abandoned')
        // Checked bytes: the source's hit counts before the readers get them.
        st.hits++
        st.bytes += size
        hit = true
        const checked = writer.verifiedBytes()
        if (checked) {
          answer(checked)
          // What its content names (a package.json, byte code, JavaScript): after the readers have
          // it. Not for a blob of the start-up set, which lists what is read next: naming on from
          // its blobs (in the cache, they name what they ask for at once) guessed 0.5-1.8x the
          // Node start-up's needed bytes after its set, against 0.04-0.12x.
          this.speculator?.verified(md5, checked, this.far() && !dl.startup, !dl.speculative, this.oneReader(dl))
        }
        await this.cache.commit(writer)
        return 'ok'
      } catch (err) {
        if (hit) {
          // The cache could not keep what the source served: not a hit after all.
          st.hits--
          st.bytes -= size
        }
        if (err instanceof Abandoned) throw err
        const local = this.cache.failureOf(err, writer)
        if (local) throw local
        const fault = asFault(err)
        this.perSource.fault(src, fault)
        return fault
      } finally {
        broSink?.abort() // its decoder's memory goes now, not when it is collected
        writer.abort()
        giveBack?.()
      }
    }
    st.misses++
    return 'absent'
  }

  private noSpace(md5: string, size: number, cause: unknown): AysfsError {
    this.counters.noSpace++
    const msg = `local cache ${this.cache.dir}: disk full (ENOSPC), no room for blob ${md5} (${size} bytes) even after evicting every blob not in use; reads of it fail with EIO until space is freed`
    const now = Date.now()
    if (now - this.noSpaceLog.at >= 60_000) {
      const more = this.noSpaceLog.suppressed > 0 ? ` (and ${this.noSpaceLog.suppressed} other blobs since the last message)` : ''
      this.log.error({ cache: this.cache.dir, md5, size, kind: 'ENOSPC' }, msg + more)
      this.noSpaceLog = { at: now, suppressed: 0 }
    } else {
      this.noSpaceLog.suppressed++
    }
    return new AysfsError('EIO', msg, { cause })
  }

  /** A blob that can never be in the local cache: EIO, and one error line per blob. */
  private tooLarge(md5: string, size: number, why: string, cause?: unknown): AysfsError {
    this.counters.tooLarge++
    const msg = `local cache ${this.cache.dir}: blob ${md5} (${size} bytes) can never fit: ${why}; reads of it fail with EIO, and no other blob was evicted for it`
    if (this.tooLargeLogged.has(md5)) this.log.debug({ cache: this.cache.dir, md5, size }, msg)
    else {
      if (this.tooLargeLogged.size >= 10_000) this.tooLargeLogged.clear()
      this.tooLargeLogged.add(md5)
      this.log.error({ cache: this.cache.dir, md5, size, kind: 'too-large' }, msg)
    }
    return new AysfsError('EIO', msg, cause === undefined ? {} : { cause })
  }

  /** Resolves once no push is queued or running (a CLI waits for this before it exits). */
  drain(): Promise<void> {
    return this.pushes.drain()
  }

  /** The flist of service `id`, from the first store that has it, or the copy kept in the local
   * cache: see lib/pipeline/flists.ts. */
  fetchFlist<T>(id: string, validate: ValidateFlist<T>, opts: { signature?: boolean; refused?: RefusedOffers } = {}): Promise<FlistResult<T>> {
    return fetchFlist(this.flistContext(), id, validate, opts)
  }

  /** The start-up list of service `id` from where its flist came (`from`: a store's key, or
   * `kept`): see lib/pipeline/flists.ts. */
  fetchStartup<T>(id: string, from: string, validate: ValidateStartup<T>, opts: { signature?: boolean } = {}): Promise<StartupResult<T>> {
    return fetchStartup(this.flistContext(), id, from, validate, opts)
  }

  private flistContext(): FlistContext {
    return {
      stores: this.sources.filter((s) => s.role === 'store'),
      maxFlistSize: this.config.main.maxFlistSize,
      cache: this.cache,
      counters: this.perSource,
      log: this.log,
      tally: this.flistTally,
    }
  }

  /** The stores, in order (a refresh asks them whether a flist changed: lib/refresh.ts). */
  stores(): readonly Source[] {
    return this.sources.filter((s) => s.role === 'store')
  }

  stats(): FetcherStats {
    const c = this.counters
    return {
      fetches: c.fetches,
      merged: c.merged,
      started: c.started,
      served: c.served,
      failed: c.failed,
      alreadyCached: c.alreadyCached,
      empty: c.empty,
      noSpace: c.noSpace,
      tooLarge: c.tooLarge,
      cache: this.cache.stats(),
      downloads: { active: this.slots.active, queued: this.slots.queued, max: this.slots.max },
      decoders: { budget: this.broBudget.bytes, reserved: this.broBudget.used, active: this.broBudget.active, queued: this.broBudget.queued, waited: this.broBudget.waited },
      pushes: this.pushes.stats(),
      flists: { fetched: this.flistTally.fetched, kept: this.flistTally.kept },
      sources: this.perSource.stats(),
      speculation: this.speculator?.stats() ?? speculationOff(),
      startup: this.speculator && this.config.main.startup ? this.speculator.startupStats() : startupOff(this.config.main.startup),
      chunks: this.chunked.stats(),
    }
  }

  /**
   * Stop: new fetches and queued pushes are refused; running pushes get up to `timeout` to end,
   * blobs already handed to the committer about a second to be in place; then every connection is
   * closed (downloads still running fail with EIO). Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.speculator?.close()
    await Promise.all([this.cache.close(), this.pushes.close(this.config.main.timeoutMs)])
    for (const s of this.sources) s.close()
  }
}
