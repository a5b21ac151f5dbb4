/**
 * The content pipeline: puts verified blobs in the local cache (spec §2, §3).
 *
 * A miss goes local cache (the blob may have appeared meanwhile) → grid caches in config order →
 * stores in config order, each store plain then `.bro`. Bytes are MD5- and size-checked as they
 * arrive, written to `<cache>/tmp/`, fsynced, and only then renamed to `<cache>/<h0>/<h1>/<md5>`
 * (the writing, fsync and rename run on the addon's committer threads: `BlobWriter`).
 * A source that fails or serves wrong bytes is skipped for the next one; when none is left the
 * fetch rejects with an `AysfsError` coded `EIO`. A blob that came from a store (or a later grid
 * cache) is pushed, after the fetch resolved, to each writable grid cache that missed it.
 *
 * This module is the engine's fetcher module (docs/design.md, "The miss path"): it runs on the
 * miss worker, so it uses sync fs only, in-thread crypto, the addon's brotli decoder and committer
 * threads, and resolves host names with
 * `./sources/resolve`. Nothing in it needs libuv's threadpool or the main thread.
 */
import { createLogger, type LogOptions } from './log'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { threadId } from 'node:worker_threads'
import { AysfsError } from './errors'
import { isServiceId, SERVICE_ID_RULE } from './paths'
import { acquireQuota, isNoSpace, releaseQuota, type CacheQuota, type QuotaStats } from './cache'
import { CACHE_FILE_MODE, makeCacheSubdir, octalMode, prepareCacheDir } from './cache-dir'
import { SourceHealth, isHealthFault, type HealthState } from './health'
import { redactUrl, type Config, type SourceConfig } from './config'
import { DirSource, dirRoot } from './sources/dir'
import { HttpSource } from './sources/http'
import type { LookupFunction } from './sources/resolve'
import {
  BlobWriter,
  BroSink,
  BufferSink,
  CONTENT_FAULTS,
  SourceFault,
  blobRel,
  cachePath,
  writeAllSync,
  type Sink,
  type Source,
  type SourceRole,
} from './sources/source'

export { cachePath } from './sources/source'
export type { Source, SourceRole } from './sources/source'

/** The MD5 of nothing: a zero-size blob never needs a source. */
export const EMPTY_MD5 = 'd41d8cd98f00b204e9800998ecf8427e'
/** Largest `.flist.sig` accepted. */
const MAX_SIG_SIZE = 64 * 1024
/** A download that finds the disk full while other fetches pin blobs waits this many times, at
 * most, for one of them to settle before it gives up. */
const MAX_ROOM_WAITS = 16
/** Pushes waiting beyond this are dropped (and counted): a push is an optimisation. */
const PUSH_QUEUE_MAX = 10_000
/** Temp files of dead processes younger than this are left alone (another pid namespace may
 * share the cache; its pids look dead from here). */
const TMP_GRACE_MS = 60_000
/** Temp files older than this go whatever their owner. */
const TMP_MAX_AGE_MS = 24 * 3600_000
/** Downloads waiting for a slot or for room hear of the others' progress at most this often. */
export const WAITERS_EVERY_MS = 100

/** A pino-compatible logger; `createFetcher` writes warnings to stderr without one. */
export interface Log {
  debug(obj: object, msg?: string): void
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

/** What a caller of {@link Fetcher.fetch} may say besides the blob. */
export interface FetchOptions {
  /**
   * The caller gives up when this aborts: its promise rejects at once (`EIO`). The download goes
   * on while another caller of the same blob still waits for it; once the last one gave up it
   * ends: its download slot (or its place in the queue) is freed at once, a source that is still
   * sending has its next chunk refused (and drops the connection), no further source is tried,
   * and nothing is put in the cache.
   */
  signal?: AbortSignal
  /**
   * Called whenever the download moves: bytes arrive from a source, or it moves on to the next
   * source; while it waits for a download slot or for room in the cache, whenever another
   * download moves (at most every {@link WAITERS_EVERY_MS}). Called per chunk: keep it cheap.
   */
  onProgress?: () => void
}

/** The fetcher module contract of docs/design.md. */
export interface Fetcher {
  /**
   * Put a verified copy of the blob at `<cache>/<h0>/<h1>/<md5>`; reject (`EIO`) if no source can.
   * `onVerified`, when given, may be called once with the blob's checked bytes before they are in
   * the cache (the engine answers its waiting readers from them); the promise still settles
   * only once the blob is in place.
   */
  fetch(md5: string, size: number, onVerified?: (data: Buffer) => void, options?: FetchOptions): Promise<void>
  /** Counters for `status` (JSON-serialisable). */
  stats(): FetcherStats
  close(): Promise<void>
}

/** Counters of one source (a grid cache or a store). */
export interface SourceStats {
  /** `cache[0]`, `store[1]`: the config key. */
  key: string
  role: SourceRole
  /** The URL without credentials or query. */
  url: string
  /** Blobs this source served (verified). */
  hits: number
  /** Blobs it did not have (404 / no such file), plain and `.bro` both. */
  misses: number
  /** Failures: anything but a hit or a miss (timeouts, HTTP errors, wrong content, ...). */
  errors: number
  /** Failures by kind (`timeout`, `http-500`, `md5`, `net:ECONNREFUSED`, ...). */
  errorKinds: Record<string, number>
  /** The last failure's message. */
  lastError?: string
  /** Bytes of verified content this source served. */
  bytes: number
  /** Blobs pushed to this grid cache. */
  pushes: number
  /** Pushes to it that failed. */
  pushErrors: number
  /** Its backoff: consecutive failures, when it is tried again, misses that skipped it. */
  backoff: HealthState
}

/** What `stats()` returns: plain JSON. */
export interface FetcherStats {
  /** Calls to `fetch()`. */
  fetches: number
  /** Calls that joined a download already in flight for the same blob (single flight). */
  merged: number
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
  pushes: { active: number; queued: number; dropped: number }
  flists: { fetched: number; kept: number }
  /** Grid caches in order, then stores in order. */
  sources: SourceStats[]
}

/** What {@link Pipeline.fetchFlist} found. */
export interface FlistResult<T> {
  /** What `validate` returned. */
  value: T
  /** The flist's exact bytes. */
  data: Buffer
  /** The detached signature, when asked for and present. */
  signature?: Buffer
  /** `store[0]`… or `kept` for the copy in `<cache>/md/`. */
  source: string
  /** True when no store answered and the kept copy was used. */
  kept: boolean
}

/** What `createFetcher` takes: structured-cloneable (but `log`), so it can cross to a worker. */
export interface FetcherData {
  config: Config
  /** Default: warnings and errors to stderr. Cannot cross a worker boundary: omit it there. */
  log?: Log
  /** A logger to make (on the miss worker, where `log` cannot be passed); `log` wins. */
  logging?: LogOptions
  /** Uploads to grid caches at once; default `min(4, max_downloads)`. */
  pushConcurrency?: number
  /** fsync blobs before renaming them in; default true (tests may turn it off). */
  fsync?: boolean
  /** Host name resolution for HTTP sources; default `./sources/resolve`. */
  lookup?: LookupFunction
  /** Backoff of failing sources (lib/health.ts); `baseMs: 0` retries at once (tests). */
  backoff?: { baseMs?: number; maxMs?: number }
}

const stderrLog: Log = {
  debug() {},
  info() {},
  warn(obj, msg) {
    process.stderr.write(`aysfs-native: warning: ${msg ?? JSON.stringify(obj)}\n`)
  },
  error(obj, msg) {
    process.stderr.write(`aysfs-native: error: ${msg ?? JSON.stringify(obj)}\n`)
  },
}

/** Make the source a config entry names: a directory/file:// or an http(s) URL. */
export function createSource(cfg: SourceConfig, role: SourceRole, opts: { timeoutMs: number; lookup?: LookupFunction }): Source {
  if (dirRoot(cfg.url) !== undefined) return new DirSource(cfg, role)
  if (/^https?:\/\//i.test(cfg.url)) return new HttpSource(cfg, role, opts)
  throw new AysfsError('EINVAL', `${cfg.key}.url: not http(s)://, file:// or an absolute path: ${redactUrl(cfg.url)}`, { key: `${cfg.key}.url` })
}

/** The real fetcher: see the module comment. The engine loads this module on its miss worker. */
export function createFetcher(data: FetcherData): Pipeline {
  return new Pipeline(data)
}

/** Start time of this process (clock ticks since boot, /proc), the same in every thread. */
function procStart(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

const MY_START = procStart(process.pid) ?? '0'

/**
 * This kernel boot and pid namespace, as 8 hex digits: a temp file named with the same tag was
 * written by a process whose pid and start time we can look up here, so whether it is alive is
 * certain. Without it (another host sharing the cache, another container), only age tells.
 */
function pidSpaceTag(): string {
  let id = ''
  try {
    id += fs.readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim()
    id += fs.readlinkSync('/proc/self/ns/pid')
  } catch {
    return '00000000'
  }
  return crypto.createHash('md5').update(id).digest('hex').slice(0, 8)
}

const MY_SPACE = pidSpaceTag()

/**
 * Remove temp files in `<cache>/tmp` whose writer is gone: the pid in the name is not running, or
 * runs with another start time (pid reused). Returns how many were removed.
 */
export function cleanTmp(tmpDir: string, now = Date.now()): number {
  let removed = 0
  let names: string[]
  try {
    names = fs.readdirSync(tmpDir)
  } catch {
    return 0
  }
  for (const name of names) {
    const file = path.join(tmpDir, name)
    let st: fs.Stats
    try {
      st = fs.lstatSync(file)
    } catch {
      continue
    }
    const age = now - st.mtimeMs
    // <pid>.<start>.[<space>.]...: see tmpName.
    const m = /^(\d+)\.(\d+)\.(?:([0-9a-f]{8})\.)?/.exec(name)
    let dead = age > TMP_MAX_AGE_MS
    // In our pid space the lookup is certain: a SIGKILLed writer's file goes at once. From
    // elsewhere, the pid we see may be another process: wait for the grace period.
    if (!dead && m && (m[3] === MY_SPACE || age > TMP_GRACE_MS)) {
      const pid = Number(m[1])
      const start = pid === process.pid ? MY_START : procStart(pid)
      dead = start !== m[2]
    }
    if (!dead) continue
    try {
      fs.rmSync(file, { force: true, recursive: st.isDirectory() })
      removed++
    } catch {
      // someone else cleaned it
    }
  }
  return removed
}

/** Opens for reading without moving the atime (the cache quota's LRU clock, lib/cache.ts) when
 * the file system and our rights allow it (O_NOATIME: the owner or root). */
function openNoAtime(file: string): number {
  try {
    return fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOATIME)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err
    return fs.openSync(file, 'r')
  }
}

/** MD5 and size of a file, read with readSync (without moving its atime: `verify` must not
 * reorder the cache's LRU). */
export function hashFileSync(file: string): { md5: string; size: number } {
  const hash = crypto.createHash('md5')
  const fd = openNoAtime(file)
  try {
    const buf = Buffer.allocUnsafe(1024 * 1024)
    let size = 0
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null)
      if (n === 0) break
      hash.update(buf.subarray(0, n))
      size += n
    }
    return { md5: hash.digest('hex'), size }
  } finally {
    fs.closeSync(fd)
  }
}

/** Every file named like a blob under `<cache>/<h0>/<h1>/`, for `verify`. */
export function* cachedBlobs(cacheDir: string): Generator<{ md5: string; file: string }> {
  const hex = /^[0-9a-f]$/
  const list = (dir: string) => {
    try {
      return fs.readdirSync(dir).sort()
    } catch {
      return []
    }
  }
  for (const h0 of list(cacheDir)) {
    if (!hex.test(h0)) continue
    for (const h1 of list(path.join(cacheDir, h0))) {
      if (!hex.test(h1)) continue
      for (const name of list(path.join(cacheDir, h0, h1))) {
        if (/^[0-9a-f]{32}$/.test(name) && name[0] === h0 && name[1] === h1) {
          yield { md5: name, file: path.join(cacheDir, h0, h1, name) }
        }
      }
    }
  }
}

/**
 * Re-hash one cached blob (for `verify`). A blob whose content does not match its name is moved
 * to `<cache>/bad/<md5>.<ms>` (kept for inspection, never served again) when `moveAside` is set.
 */
export function checkCachedBlob(cacheDir: string, md5: string, opts: { moveAside?: boolean } = {}): 'ok' | 'missing' | 'bad' {
  const file = cachePath(cacheDir, md5)
  let got: { md5: string; size: number }
  try {
    got = hashFileSync(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing'
    throw err
  }
  if (got.md5 === md5) return 'ok'
  if (opts.moveAside) {
    const bad = path.join(cacheDir, 'bad')
    makeCacheSubdir(bad)
    const to = path.join(bad, `${md5}.${Date.now()}`)
    fs.renameSync(file, to)
    privateFile(to)
  }
  return 'bad'
}

/** Sets a file we just put in the cache to 0600, through a descriptor (never following a link). */
function privateFile(file: string): void {
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  } catch {
    return // a link or gone: nothing to read through it
  }
  try {
    fs.fchmodSync(fd, CACHE_FILE_MODE)
  } finally {
    fs.closeSync(fd)
  }
}

/** Counting semaphore: at most `max` downloads, the rest wait in FIFO order. */
class Slots {
  active = 0
  private readonly waiting: (() => void)[] = []
  constructor(readonly max: number) {}
  get queued(): number {
    return this.waiting.length
  }
  /** Resolves with a slot; rejects with `signal`'s reason, and leaves the queue, if it aborts first. */
  acquire(signal?: AbortSignal): Promise<void> {
    if (this.active < this.max) {
      this.active++
      return Promise.resolve()
    }
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.waiting.indexOf(take)
        if (i >= 0) this.waiting.splice(i, 1)
        reject(signal!.reason as Error)
      }
      const take = (): void => {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      }
      this.waiting.push(take)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }
  release(): void {
    const next = this.waiting.shift()
    if (next) next() // the slot passes straight to the next waiter
    else this.active--
  }
}

/** A download ended because every caller gave up on it (see {@link FetchOptions.signal}). */
class Abandoned extends Error {}

/** One download in flight, shared by every caller that asked for its blob meanwhile. */
class Download {
  readonly abort = new AbortController()
  /** Callers still waiting for it; when the last one gives up, it is aborted. */
  callers = 0
  readonly listeners = new Set<() => void>()
  promise!: Promise<void>

  get signal(): AbortSignal {
    return this.abort.signal
  }

  moved(): void {
    for (const l of this.listeners) l()
  }
}

/** `p`, unless `signal` aborts first: then a rejection with its reason at once, `p` going on
 * (`late` gets its outcome, which is otherwise dropped). */
function unlessAborted<T>(p: Promise<T>, signal: AbortSignal, late?: (value: T) => void): Promise<T> {
  if (signal.aborted) {
    p.then(late, () => undefined)
    return Promise.reject(signal.reason as Error)
  }
  return new Promise<T>((resolve, reject) => {
    let done = false
    const onAbort = (): void => {
      done = true
      reject(signal.reason as Error)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (value) => {
        signal.removeEventListener('abort', onAbort)
        if (done) late?.(value)
        else resolve(value)
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort)
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
class MeteredSink implements Sink {
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

interface PushJob {
  target: Source
  md5: string
  size: number
  file: string
}

type Outcome = 'ok' | 'absent' | SourceFault

/** A failure of the local cache itself (disk full, permissions): no source can help. */
class LocalFailure extends Error {}

/** Lets writes fail as {@link LocalFailure} so a source never gets blamed for our disk. */
class LocalBlobWriter extends BlobWriter {
  /** Set when a write to the temp file failed, whatever a source made of the exception. */
  failure?: LocalFailure

  override write(chunk: Buffer): void {
    try {
      super.write(chunk)
    } catch (err) {
      if (err instanceof SourceFault) throw err
      this.failure = new LocalFailure(`writing ${this.tmpPath}: ${(err as Error).message}`, { cause: err })
      throw this.failure
    }
  }
}

/** The fetcher. Everything it does on the fetch path is sync fs, sockets and timers. */
export class Pipeline implements Fetcher {
  readonly cacheDir: string
  readonly tmpDir: string
  /** Grid caches in order, then stores in order. */
  readonly sources: readonly Source[]
  private readonly config: Config
  private readonly log: Log
  private readonly fsync: boolean
  private readonly slots: Slots
  private readonly inflight = new Map<string, Download>()
  /** Downloads waiting for a slot or for room: they move when any download moves. */
  private readonly waiting = new Set<Download>()
  private waitersToldAt = 0
  private readonly counters = { fetches: 0, merged: 0, served: 0, failed: 0, alreadyCached: 0, empty: 0, noSpace: 0, tooLarge: 0, flistsFetched: 0, flistsKept: 0, pushDropped: 0 }
  private readonly perSource = new Map<Source, SourceStats>()
  private readonly logged = new Set<string>()
  private readonly pushQueue: PushJob[] = []
  private readonly pushConcurrency: number
  private pushActive = 0
  private pushPumpScheduled = false
  private idleWaiters: (() => void)[] = []
  /** Resolved when a fetch has settled and its blob is no longer pinned (room may be made). */
  private unpinWaiters: (() => void)[] = []
  /** Fetches that settled whose blob is still pinned (until the next event-loop turn). */
  private unpinsDue = 0
  private seq = 0
  private closed = false
  private readonly quota: CacheQuota
  private readonly health: SourceHealth
  /** The full-disk message is logged once a minute at most, with the count of the others. */
  private noSpaceLog = { at: 0, suppressed: 0 }
  /** Blobs whose "can never fit" line was logged: once per blob (then debug). */
  private tooLargeLogged = new Set<string>()

  constructor(data: FetcherData) {
    if (data === null || typeof data !== 'object' || typeof data.config?.main?.cache !== 'string') {
      throw new TypeError('createFetcher: data.config must be a checked Config')
    }
    const config = data.config
    this.config = config
    this.log = data.log ?? (data.logging ? createLogger(data.logging) : stderrLog)
    this.fsync = data.fsync ?? true
    this.cacheDir = config.main.cache
    this.tmpDir = path.join(this.cacheDir, 'tmp')
    // Refused here (an AysfsError naming the directory) if another user owns it or may write in
    // it; made or set 0700 otherwise. Every user of a cache makes a pipeline first, and this is
    // the first thing a pipeline does (before any source exists).
    const made = prepareCacheDir(this.cacheDir)
    if (made.previousMode !== undefined) {
      const was = octalMode(made.previousMode)
      this.log.info({ cache: this.cacheDir, mode: was }, `local cache ${this.cacheDir}: mode ${was} set to 0700 (only the user that mounts may read what is cached)`)
    }
    this.slots = new Slots(Math.max(1, config.main.maxDownloads))
    this.pushConcurrency = Math.max(1, data.pushConcurrency ?? Math.min(4, config.main.maxDownloads))
    const opts = { timeoutMs: config.main.timeoutMs, lookup: data.lookup }
    this.sources = [
      ...config.caches.map((c) => createSource(c, 'cache', opts)),
      ...config.stores.map((s) => createSource(s, 'store', opts)),
    ]
    for (const s of this.sources) {
      this.perSource.set(s, { key: s.key, role: s.role, url: s.url, hits: 0, misses: 0, errors: 0, errorKinds: {}, bytes: 0, pushes: 0, pushErrors: 0, backoff: { failures: 0, skipped: 0 } })
    }
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
    try {
      makeCacheSubdir(this.tmpDir)
    } catch (err) {
      throw new AysfsError('EIO', `local cache ${this.cacheDir}: ${(err as Error).message}`, { key: 'main.cache', cause: err })
    }
    cleanTmp(this.tmpDir)
    this.quota = acquireQuota(this.cacheDir, config.main.cacheSize, this.log)
    this.quota.trashName ??= (label) => this.tmpName(label)
  }

  /** Where the blob lives (or will) in the local cache. */
  path(md5: string): string {
    return cachePath(this.cacheDir, md5.toLowerCase())
  }

  /** Whether the local cache holds the blob with the right size (content is trusted: only
   * checked content is ever renamed in). */
  has(md5: string, size: number): boolean {
    return present(this.path(md5), size)
  }

  /**
   * Make sure `<cache>/<h0>/<h1>/<md5>` holds the blob: at once if it is there, else from the
   * first source that serves verified content. Concurrent calls for one blob share one download;
   * at most `max_downloads` run at once, the rest queue. Rejects with `AysfsError` `EIO` when no
   * source can serve it (or the local cache cannot be written), a `TypeError` for bad arguments.
   */
  fetch(md5: string, size: number, onVerified?: (data: Buffer) => void, options: FetchOptions = {}): Promise<void> {
    if (typeof md5 !== 'string' || !/^[0-9a-fA-F]{32}$/.test(md5)) {
      return Promise.reject(new TypeError('md5 must be a string of 32 hex digits'))
    }
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      return Promise.reject(new TypeError('size must be a non-negative integer'))
    }
    this.counters.fetches++
    const hash = md5.toLowerCase()
    const key = `${hash}:${size}`
    let dl = this.inflight.get(key)
    if (dl) {
      this.counters.merged++
    } else {
      const d = (dl = new Download())
      // Pinned until the event-loop turn after it settled: by then whoever waited for it (the
      // engine's parked reads) has been answered from the file (lib/cache.ts).
      this.quota.pin(hash)
      this.quota.start()
      d.promise = this.download(hash, size, onVerified, d).finally(() => {
        if (this.inflight.get(key) === d) this.inflight.delete(key)
        this.unpinsDue++
        setImmediate(() => {
          this.unpinsDue--
          this.quota.unpin(hash)
          const waiters = this.unpinWaiters
          this.unpinWaiters = []
          for (const w of waiters) w()
        })
      })
      this.inflight.set(key, d)
    }
    return this.join(dl, key, options)
  }

  /** One caller's wait for a download: see {@link FetchOptions}. */
  private join(dl: Download, key: string, { signal, onProgress }: FetchOptions): Promise<void> {
    dl.callers++
    if (onProgress) dl.listeners.add(onProgress)
    let left = false
    const leave = (): void => {
      if (left) return
      left = true
      dl.callers--
      if (onProgress) dl.listeners.delete(onProgress)
    }
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
      signal.addEventListener('abort', onAbort, { once: true })
      dl.promise.then(resolve, reject).finally(() => {
        signal.removeEventListener('abort', onAbort)
        leave()
      })
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

  private tmpName(md5: string): string {
    // <pid>.<start>.<space>.: lets cleanTmp tell a dead writer's file from a live one.
    return path.join(this.tmpDir, `${process.pid}.${MY_START}.${MY_SPACE}.${threadId}.${++this.seq}.${md5}`)
  }

  private async download(md5: string, size: number, onVerified: ((data: Buffer) => void) | undefined, dl: Download): Promise<void> {
    const dest = cachePath(this.cacheDir, md5)
    if (size === 0) {
      if (md5 !== EMPTY_MD5) {
        this.counters.failed++
        throw new AysfsError('EIO', `blob ${md5}: size 0, but ${EMPTY_MD5} is the MD5 of empty content`)
      }
      if (present(dest, 0)) {
        this.counters.alreadyCached++
        return
      }
      const w = this.local(() => this.newWriter(md5, 0))
      try {
        w.end()
        await this.localAsync(w.commit(dest))
      } finally {
        w.abort()
      }
      this.counters.empty++
      return
    }
    const signal = dl.signal
    try {
      await this.waitFor(dl, this.slots.acquire(signal))
    } catch (err) {
      this.counters.failed++
      throw err
    }
    try {
      if (this.closed) throw new AysfsError('EIO', `blob ${md5}: the fetcher is closed`)
      if (present(dest, size)) {
        this.counters.alreadyCached++
        return
      }
      // Larger than the quota or the whole disk: downloading it would evict every blob and fail.
      const never = this.quota.neverFits(size)
      if (never !== undefined) throw this.tooLarge(md5, size, never)
      const tried: string[] = []
      const missed: Source[] = []
      for (const src of this.sources) {
        if (this.closed) break
        if (signal.aborted) throw signal.reason as Error
        this.moved(dl) // on to the next source
        // An admission that comes after the abort is settled with no verdict (it may be a probe
        // other misses wait for).
        const admission = await unlessAborted(this.health.admit(src.key, this.config.main.timeoutMs), signal, (late) => {
          if (late) this.health.settle(src.key, undefined, late)
        })
        if (!admission) {
          tried.push(`${src.key}: backed off`)
          continue
        }
        this.moved(dl)
        let outcome: Outcome | undefined
        // The source served checked bytes: its verdict and the count are settled before the
        // waiting readers get them (so a reader that has its bytes sees them counted), even if
        // putting the blob in the cache then fails.
        let early = false
        const verified =
          onVerified &&
          ((data: Buffer): void => {
            if (early) return // a retry after the disk was full: its readers were answered
            if (signal.aborted) return // nobody to give them to
            early = true
            this.health.settle(src.key, true, admission)
            this.counters.served++
            onVerified(data)
          })
        try {
          // Abandoned mid-try: the slot is freed now; the try ends at the source's next chunk (the
          // sink refuses it) or by the source's own timeout, and its outcome is dropped.
          outcome = await unlessAborted(this.tryWithRoom(src, md5, size, dest, verified, dl), signal)
        } finally {
          // No verdict when the try ended for a reason of ours (the local disk).
          const healthy = outcome === undefined ? undefined : outcome === 'ok' || outcome === 'absent' || !isHealthFault(outcome.kind)
          if (!early) this.health.settle(src.key, healthy, admission)
          else if (outcome !== 'ok') this.counters.served-- // counted for its readers; not kept
        }
        if (outcome === 'ok') {
          if (!early) this.counters.served++
          this.schedulePushes(missed, md5, size, dest)
          return
        }
        tried.push(`${src.key}: ${outcome === 'absent' ? 'not found' : outcome.kind}`)
        if (src.push && (outcome === 'absent' || CONTENT_FAULTS.has(outcome.kind))) missed.push(src)
      }
      throw new AysfsError('EIO', `blob ${md5} (${size} bytes): no source could serve it (${tried.length > 0 ? tried.join(', ') : 'no sources'})`)
    } catch (err) {
      this.counters.failed++
      throw err
    } finally {
      this.slots.release()
    }
  }

  /**
   * {@link trySource}; when the local cache's disk is full, evict least recently used blobs and
   * try again (twice at most); when nothing more can be evicted, EIO and one clear log line.
   */
  private async tryWithRoom(src: Source, md5: string, size: number, dest: string, onVerified: ((data: Buffer) => void) | undefined, dl: Download): Promise<Outcome> {
    for (let attempt = 0, waits = 0; ; attempt++) {
      try {
        return await this.trySource(src, md5, size, dest, onVerified, dl)
      } catch (err) {
        if (!isNoSpace(err)) throw err
        const room = attempt < 2 ? this.quota.makeRoomSync(size) : undefined
        if (room?.never !== undefined) throw this.tooLarge(md5, size, room.never, err)
        if (room && (room.evicted > 0 || room.room)) continue
        // Nothing can go now, but other fetches pin their blobs until the turn after they settle
        // (readers are answered before the blob is written, so a single reader has several in
        // flight): wait for one of them to let go, then evict again.
        if ((this.inflight.size > 1 || this.unpinsDue > 0) && waits++ < MAX_ROOM_WAITS) {
          await this.waitFor(dl, new Promise<void>((resolve) => this.unpinWaiters.push(resolve)))
          attempt = -1
          continue
        }
        throw this.noSpace(md5, size, err)
      }
    }
  }

  private noSpace(md5: string, size: number, cause: unknown): AysfsError {
    this.counters.noSpace++
    const msg = `local cache ${this.cacheDir}: disk full (ENOSPC), no room for blob ${md5} (${size} bytes) even after evicting every blob not in use; reads of it fail with EIO until space is freed`
    const now = Date.now()
    if (now - this.noSpaceLog.at >= 60_000) {
      const more = this.noSpaceLog.suppressed > 0 ? ` (and ${this.noSpaceLog.suppressed} other blobs since the last message)` : ''
      this.log.error({ cache: this.cacheDir, md5, size, kind: 'ENOSPC' }, msg + more)
      this.noSpaceLog = { at: now, suppressed: 0 }
    } else {
      this.noSpaceLog.suppressed++
    }
    return new AysfsError('EIO', msg, { cause })
  }

  /** A blob that can never be in the local cache: EIO, and one error line per blob. */
  private tooLarge(md5: string, size: number, why: string, cause?: unknown): AysfsError {
    this.counters.tooLarge++
    const msg = `local cache ${this.cacheDir}: blob ${md5} (${size} bytes) can never fit: ${why}; reads of it fail with EIO, and no other blob was evicted for it`
    if (this.tooLargeLogged.has(md5)) this.log.debug({ cache: this.cacheDir, md5, size }, msg)
    else {
      if (this.tooLargeLogged.size >= 10_000) this.tooLargeLogged.clear()
      this.tooLargeLogged.add(md5)
      this.log.error({ cache: this.cacheDir, md5, size, kind: 'too-large' }, msg)
    }
    return new AysfsError('EIO', msg, cause === undefined ? {} : { cause })
  }

  /** Run a local-cache operation; its failure is EIO naming the cache. */
  private local<T>(fn: () => T): T {
    try {
      return fn()
    } catch (err) {
      throw new AysfsError('EIO', `local cache ${this.cacheDir}: ${(err as Error).message}`, { cause: err })
    }
  }

  /** Await a local-cache operation; its failure is EIO naming the cache. */
  private async localAsync<T>(op: Promise<T>): Promise<T> {
    try {
      return await op
    } catch (err) {
      throw new AysfsError('EIO', `local cache ${this.cacheDir}: ${(err as Error).message}`, { cause: err })
    }
  }

  /** A temp-file writer; the tmp dir is made again if someone removed it under us. */
  private newWriter(md5: string, size: number): LocalBlobWriter {
    try {
      return new LocalBlobWriter(md5, size, this.tmpName(md5), this.fsync)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      makeCacheSubdir(this.tmpDir)
      return new LocalBlobWriter(md5, size, this.tmpName(md5), this.fsync)
    }
  }

  private async trySource(src: Source, md5: string, size: number, dest: string, onVerified: ((data: Buffer) => void) | undefined, dl: Download): Promise<Outcome> {
    const st = this.perSource.get(src)!
    const variants = src.role === 'store' ? [false, true] : [false]
    for (const bro of variants) {
      const writer = this.local(() => this.newWriter(md5, size))
      const broSink = bro ? new BroSink(writer) : undefined
      let counted = false
      try {
        const sink = new MeteredSink(broSink ?? writer, dl, (d) => this.moved(d))
        const r = await src.get(blobRel(src.role, md5, bro), sink)
        if (r === 'absent') continue
        if (dl.signal.aborted) throw new Abandoned('the download was abandoned')
        // Counted before the readers are answered; taken back if the cache cannot keep the blob.
        st.hits++
        st.bytes += size
        counted = true
        const verified = writer.verifiedBytes()
        if (verified) onVerified?.(verified)
        await this.localAsync(writer.commit(dest))
        this.quota.added(size)
        return 'ok'
      } catch (err) {
        if (counted) {
          st.hits--
          st.bytes -= size
        }
        if (err instanceof AysfsError || err instanceof Abandoned) throw err
        const local = err instanceof LocalFailure ? err : writer.failure
        if (local) throw new AysfsError('EIO', `local cache ${this.cacheDir}: ${local.message}`, { cause: local })
        const fault = err instanceof SourceFault ? err : new SourceFault('internal', (err as Error).message, err)
        this.noteFault(src, fault)
        return fault
      } finally {
        broSink?.abort() // its decoder's memory goes now, not when it is collected
        writer.abort()
      }
    }
    st.misses++
    return 'absent'
  }

  /** Count a failure; log it the first time this source fails this way. */
  private noteFault(src: Source, fault: SourceFault): void {
    const st = this.perSource.get(src)!
    st.errors++
    st.errorKinds[fault.kind] = (st.errorKinds[fault.kind] ?? 0) + 1
    st.lastError = fault.message
    const once = `${src.key}\0${fault.kind}`
    const fields = { source: src.key, url: src.url, kind: fault.kind }
    if (this.logged.has(once)) {
      this.log.debug(fields, `${src.key}: ${fault.message}`)
    } else {
      this.logged.add(once)
      this.log.warn(fields, `${src.key} (${src.url}): ${fault.message} (further "${fault.kind}" failures of this source are counted, not logged)`)
    }
  }

  private schedulePushes(targets: Source[], md5: string, size: number, file: string): void {
    for (const target of targets) {
      if (this.closed || this.pushQueue.length >= PUSH_QUEUE_MAX) {
        this.counters.pushDropped++
        continue
      }
      this.pushQueue.push({ target, md5, size, file })
    }
    // Later, never inline: a directory push copies synchronously, and the fetch that caused it
    // must resolve first.
    if (this.pushQueue.length > 0 && !this.pushPumpScheduled) {
      this.pushPumpScheduled = true
      setImmediate(() => {
        this.pushPumpScheduled = false
        this.pumpPushes()
      })
    }
  }

  private pumpPushes(): void {
    while (this.pushActive < this.pushConcurrency && this.pushQueue.length > 0) {
      const job = this.pushQueue.shift()!
      this.pushActive++
      void this.runPush(job).finally(() => {
        this.pushActive--
        this.pumpPushes()
      })
    }
    if (this.pushActive === 0 && this.pushQueue.length === 0) {
      const waiters = this.idleWaiters
      this.idleWaiters = []
      for (const w of waiters) w()
    }
  }

  private async runPush(job: PushJob): Promise<void> {
    const st = this.perSource.get(job.target)!
    try {
      await job.target.put(blobRel(job.target.role, job.md5), job.file, job.size)
      st.pushes++
    } catch (err) {
      st.pushErrors++
      const fault = err instanceof SourceFault ? err : new SourceFault('push', (err as Error).message, err)
      const once = `${job.target.key}\0push:${fault.kind}`
      const fields = { source: job.target.key, url: job.target.url, kind: `push:${fault.kind}` }
      if (this.logged.has(once)) this.log.debug(fields, `${job.target.key}: push failed: ${fault.message}`)
      else {
        this.logged.add(once)
        this.log.warn(fields, `${job.target.key} (${job.target.url}): push failed: ${fault.message} (further failures of this kind are counted, not logged)`)
      }
    }
  }

  /** Resolves once no push is queued or running (a CLI waits for this before it exits). */
  drain(): Promise<void> {
    if (this.pushActive === 0 && this.pushQueue.length === 0 && !this.pushPumpScheduled) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  /**
   * Fetch the flist of service `id`: `R/md/<id>.flist` from the first store that has it, checked
   * with `validate` (which may parse it and return the result; a throw rejects the fetch as is:
   * a store's invalid flist is an error, not a reason to fall back) and then kept under
   * `<cache>/md/<id>.flist`. With `signature`, `R/md/<id>.flist.sig` from the same store is
   * handed to `validate` and kept too.
   *
   * `validate`'s third argument says where the bytes came from, for messages:
   * `store[0] (<url>)` or `the copy kept in <file>`.
   *
   * One kind of throw is not final: an `AysfsError` coded `EACCES` (the signature does not vouch
   * for the flist). The pair is then fetched from that store once more and validated again: a
   * `publish` renames the new flist and then its signature, and a fetch between the two renames
   * gets a mismatched pair that the second fetch finds whole. A pair still refused marks that
   * store's copy as refused, is logged and counted (`untrusted`), and the next store is tried. If
   * no store has an accepted copy, the fetch rejects with `EACCES` and the kept copy is not used:
   * a store answered, and what it says must be looked at.
   *
   * When no store answers, the kept copy is validated and used, with a warning. When every store
   * answers 404, the service does not exist: `ENOENT`, whatever is kept. No store and no copy:
   * `EIO`. An flist over `max_flist_size` is a failure of that store.
   */
  async fetchFlist<T>(
    id: string,
    validate: (data: Buffer, signature: Buffer | undefined, source: string) => T,
    opts: { signature?: boolean } = {},
  ): Promise<FlistResult<T>> {
    if (!isServiceId(id)) throw new AysfsError('EINVAL', `not a valid ays id: ${JSON.stringify(id)}: a service id must be ${SERVICE_ID_RULE}`)
    const stores = this.sources.filter((s) => s.role === 'store')
    const rel = `md/${id}.flist`
    const failures: string[] = []
    const refused: AysfsError[] = []
    let absent = 0
    stores: for (const store of stores) {
      for (let attempt = 1; ; attempt++) {
        let data: Buffer
        let signature: Buffer | undefined
        try {
          const sink = new BufferSink(this.config.main.maxFlistSize, `flist ${id}`)
          if ((await store.get(rel, sink)) === 'absent') {
            absent++
            failures.push(`${store.key}: not found`)
            continue stores
          }
          data = sink.data()
          if (opts.signature) {
            const sigSink = new BufferSink(MAX_SIG_SIZE, `signature of flist ${id}`)
            if ((await store.get(`${rel}.sig`, sigSink)) === 'ok') signature = sigSink.data()
          }
        } catch (err) {
          const fault = err instanceof SourceFault ? err : new SourceFault('internal', (err as Error).message, err)
          this.noteFault(store, fault)
          failures.push(`${store.key}: ${fault.kind}`)
          continue stores
        }
        let value: T
        try {
          value = validate(data, signature, `${store.key} (${store.url})`)
        } catch (err) {
          if (!(err instanceof AysfsError && err.code === 'EACCES')) throw err
          if (attempt === 1) {
            // Perhaps a publish between its two renames (the new flist, the old signature): the
            // pair once more from the same store, before this store's copy counts as refused.
            this.log.info({ id, source: store.key, url: store.url }, `${err.message}; fetching the flist and its signature from ${store.key} once more`)
            continue
          }
          // Refused (never kept): another store may have the genuine copy. Logged every time,
          // not once per source like blob faults: flists are few and this is a security event.
          const st = this.perSource.get(store)!
          st.errors++
          st.errorKinds.untrusted = (st.errorKinds.untrusted ?? 0) + 1
          st.lastError = err.message
          this.log.warn({ id, source: store.key, url: store.url, kind: 'untrusted' }, err.message)
          refused.push(err)
          failures.push(`${store.key}: refused`)
          continue stores
        }
        this.keepFlist(id, data, opts.signature ? signature : null)
        this.counters.flistsFetched++
        return { value, data, signature, source: store.key, kept: false }
      }
    }
    if (refused.length > 0) {
      if (refused.length === 1 && failures.length === 1) throw refused[0]
      throw new AysfsError('EACCES', `flist ${id}: no store has a copy that can be trusted (${failures.join(', ')}): ${refused.map((e) => e.message).join('; ')}`, {
        key: 'main.trusted_keys',
      })
    }
    if (stores.length > 0 && absent === stores.length) {
      throw new AysfsError('ENOENT', `flist ${id}: not found in any store (${stores.map((s) => s.key).join(', ')})`)
    }
    const keptFile = path.join(this.cacheDir, 'md', `${id}.flist`)
    let data: Buffer
    try {
      data = fs.readFileSync(keptFile)
    } catch (err) {
      const why = stores.length === 0 ? 'no store is configured' : `no store answered (${failures.join(', ')})`
      throw new AysfsError('EIO', `flist ${id}: ${why}, and no copy is kept in ${keptFile}`, { cause: err })
    }
    let signature: Buffer | undefined
    if (opts.signature) {
      try {
        signature = fs.readFileSync(`${keptFile}.sig`)
      } catch {
        // none kept
      }
    }
    const value = validate(data, signature, `the copy kept in ${keptFile}`)
    this.counters.flistsKept++
    this.log.warn(
      { id, file: keptFile },
      `flist ${id}: ${stores.length === 0 ? 'no store is configured' : `no store answered (${failures.join(', ')})`}; using the copy kept in ${keptFile}`,
    )
    return { value, data, signature, source: 'kept', kept: true }
  }

  /** Atomically replace `<cache>/md/<id>.flist` (and its `.sig`; `null` removes a stale one). */
  private keepFlist(id: string, data: Buffer, signature: Buffer | undefined | null): void {
    const dir = path.join(this.cacheDir, 'md')
    const write = (name: string, buf: Buffer) => {
      const tmp = this.tmpName(`md-${id.length > 64 ? id.slice(0, 64) : id}`)
      const fd = fs.openSync(tmp, 'wx', CACHE_FILE_MODE)
      try {
        writeAllSync(fd, buf)
        if (this.fsync) fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
      fs.renameSync(tmp, path.join(dir, name))
    }
    try {
      makeCacheSubdir(dir)
      write(`${id}.flist`, data)
      if (signature) write(`${id}.flist.sig`, signature)
      else if (signature === undefined) fs.rmSync(path.join(dir, `${id}.flist.sig`), { force: true })
    } catch (err) {
      // Keeping the copy is for a later offline start; failing to keep it must not fail this one.
      this.log.warn({ id, dir }, `flist ${id}: cannot keep a copy in ${dir}: ${(err as Error).message}`)
    }
  }

  stats(): FetcherStats {
    const c = this.counters
    return {
      fetches: c.fetches,
      merged: c.merged,
      served: c.served,
      failed: c.failed,
      alreadyCached: c.alreadyCached,
      empty: c.empty,
      noSpace: c.noSpace,
      tooLarge: c.tooLarge,
      cache: this.quota.stats(),
      downloads: { active: this.slots.active, queued: this.slots.queued, max: this.slots.max },
      pushes: { active: this.pushActive, queued: this.pushQueue.length, dropped: c.pushDropped },
      flists: { fetched: c.flistsFetched, kept: c.flistsKept },
      sources: this.sources.map((s) => {
        const st = this.perSource.get(s)!
        return { ...st, errorKinds: { ...st.errorKinds }, backoff: this.health.state(s.key) }
      }),
    }
  }

  /**
   * Stop: new fetches and queued pushes are refused, running pushes get up to `timeout` to end,
   * then every connection is closed (downloads still running fail with EIO).
   */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    releaseQuota(this.quota)
    this.counters.pushDropped += this.pushQueue.length
    this.pushQueue.length = 0
    if (this.pushActive > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([this.drain(), new Promise<void>((resolve) => (timer = setTimeout(resolve, this.config.main.timeoutMs)))])
      clearTimeout(timer)
    }
    for (const s of this.sources) s.close()
  }
}

function present(file: string, size: number): boolean {
  try {
    // No exception (and its stack trace) for the common answer on the miss path: not there.
    // lstat: a symlink planted in the cache is not a blob (the engine never follows one either);
    // the download's rename replaces it.
    const st = fs.lstatSync(file, { throwIfNoEntry: false })
    return st !== undefined && st.isFile() && st.size === size
  } catch {
    return false
  }
}
