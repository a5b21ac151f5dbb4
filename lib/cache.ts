/**
 * The local cache's quota (`main.cache_size`) and its answer to a full disk.
 *
 * **The file system is the database.** There is no index file to keep in step, to lose in a
 * crash or to fight over: every pass stats the blobs under `<cache>/<h0>/<h1>/` (256 directories,
 * about 0.4 s for 100,000 blobs), so the accounting is right after a restart, after a SIGKILL,
 * and with other processes (`prefetch`, `verify`, another mount) adding and removing blobs in the
 * same directory. Only blobs count: `md/`, `tmp/` and `bad/` are small or short-lived. A blob
 * counts with what it takes on disk (`st_blocks`), which is what fills a disk.
 *
 * **Recency is the blob's atime.** The native engine answers cached reads without JavaScript, so
 * the only record of a hit is the kernel's: a read updates the file's atime. Under `relatime` (the
 * Linux default) it does so only when the atime is not newer than the ctime or the mtime, so each
 * pass *re-arms* the blobs read since the previous one: `utimes(atime, mtime)` keeps both times and
 * sets the ctime to now, and the next read records itself again. A blob's atime is thus the time of
 * its first read after the last pass: LRU to the granularity of the pass interval, which is at
 * most a minute (longer for very large caches: see {@link REARM_EVERY_MS}). On a `noatime` cache
 * file system atimes never move and the order is that of arrival (FIFO).
 *
 * **Eviction never makes a read fail or serve wrong bytes.** A blob is only ever unlinked whole.
 * - The engine opens the blob file for each read request and closes it after the reply. A read
 *   that opened it before the unlink finishes from the open file (Linux keeps the inode until
 *   the last fd closes; its space is freed then). A read that comes after the unlink finds no
 *   file and parks as a miss: the blob is fetched again and the read answered. Correct, and the
 *   cost of a refetch, which LRU order makes rare: a blob being read is the most recent one.
 * - The one read that must not find the file gone is the engine's answer to the reads parked on
 *   a miss: once the fetch resolves, it serves them without parking again (EIO if the file
 *   vanished). So a blob is *pinned* from the start of its fetch until the event-loop turn after
 *   the fetch settled, by when the miss worker has answered the engine (which serves the parked
 *   reads synchronously inside that call). Passes never take pinned blobs, nor blobs whose ctime
 *   is less than {@link GRACE_MS} old (another process's fresh blob, about to be served), and a
 *   victim is re-stat'ed just before its unlink: if it was replaced since the scan, it stays.
 * - The kernel's page cache of the mounted file keeps serving pages it holds, whatever happens
 *   to the cache file: same content (blobs are immutable, named by their MD5).
 *
 * **A full disk** (ENOSPC, EDQUOT) while a blob is written: {@link CacheQuota.makeRoomSync} evicts
 * least recently used blobs (pins still hold; no grace) until the file system has room for it,
 * and the pipeline retries. A temp file is never renamed into place unless complete and checked,
 * so a full disk can never leave a half-written blob under its final name.
 *
 * Passes run on the thread of the pipeline that triggered them (the miss worker for a mount): sync
 * fs only, as everything there (docs/design.md). The background pass works one `<h0>` directory
 * per event-loop turn, so downloads keep moving while it runs.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

/** Passes evict down to this fraction of the quota, so that one pass makes room for many blobs. */
export const LOW_WATER = 0.9
/** Blobs changed less than this long ago are left alone by quota passes (not by a full disk). */
export const GRACE_MS = 2000
/** A quota pass re-arms atimes and re-counts at least this often (if any blob was fetched). */
export const REARM_EVERY_MS = 60_000
/** Two passes triggered by new blobs are at least this far apart. */
const MIN_PASS_GAP_MS = 1000
/** Room asked for beyond the blob itself when the disk is full (directories, the temp name). */
const ROOM_SLACK = 64 * 1024
/** A scan younger than this is reused by {@link CacheQuota.makeRoomSync}. */
const SCAN_REUSE_MS = 5000
const HEX = '0123456789abcdef'
const BLOB_NAME = /^[0-9a-f]{32}$/

/** Something to log to (pino's shape). */
export interface QuotaLog {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

/** Counters of the quota for `status`. */
export interface QuotaStats {
  /** `main.cache_size` in bytes; 0: unbounded. */
  limit: number
  /** Bytes the blobs take on disk: at the last pass, plus what was added since. Null before the first pass. */
  used: number | null
  /** Blobs at the last pass. */
  blobs: number | null
  passes: number
  /** Duration of the last pass (scan and evictions), ms. */
  lastPassMs: number | null
  lastPassAt: string | null
  /** Blobs removed to keep the quota or to make room on a full disk. */
  evicted: number
  evictedBytes: number
  /** Times the disk was full while writing a blob. */
  noSpace: number
}

/** The blobs one scan saw, as columns; `order` is filled (oldest atime first) when evicting. */
interface Scanned {
  names: string[]
  files: string[]
  /** Bytes on disk. */
  bytes: Float64Array
  atime: Float64Array
  ctime: Float64Array
  ino: Float64Array
  count: number
  /** Bytes on disk of the blobs still there (evictions subtract). */
  total: number
  order?: Uint32Array
  /** Next index into `order` an eviction looks at: the scan serves several calls in turn. */
  next: number
  at: number
}

/** What one pass did. */
export interface PassResult {
  blobs: number
  /** Bytes on disk before evicting. */
  before: number
  /** Bytes on disk after. */
  after: number
  evicted: number
  evictedBytes: number
  /** Blobs re-armed (read since the last pass). */
  rearmed: number
  ms: number
}

function diskBytes(st: fs.Stats): number {
  // st_blocks counts 512-byte units whatever the block size; a file system that reports none
  // (inline data) still holds the bytes.
  return st.blocks > 0 ? st.blocks * 512 : st.size
}

/** The on-disk size a blob of `size` bytes will roughly take (until a pass counts it). */
export function estimateBytes(size: number): number {
  return Math.ceil(size / 4096) * 4096
}

function newScan(capacity: number): Scanned {
  return {
    names: [],
    files: [],
    bytes: new Float64Array(capacity),
    atime: new Float64Array(capacity),
    ctime: new Float64Array(capacity),
    ino: new Float64Array(capacity),
    count: 0,
    total: 0,
    next: 0,
    at: Date.now(),
  }
}

function grow(s: Scanned): void {
  const n = Math.max(1024, s.bytes.length * 2)
  const g = (a: Float64Array) => {
    const b = new Float64Array(n)
    b.set(a)
    return b
  }
  s.bytes = g(s.bytes)
  s.atime = g(s.atime)
  s.ctime = g(s.ctime)
  s.ino = g(s.ino)
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir)
  } catch {
    return []
  }
}

/**
 * The quota of one cache directory, shared by every pipeline of a thread on that directory
 * ({@link acquireQuota}): pins and passes must see each other.
 */
export class CacheQuota {
  limit: number
  private log: QuotaLog
  private readonly pins = new Map<string, number>()
  private used: number | null = null
  private blobs: number | null = null
  /** Bytes added since this object exists (monotonic); a pass notes it at its start. */
  private addedTotal = 0
  private running: Promise<PassResult> | undefined
  private lastPassEnd = 0
  private lastPassMs: number | null = null
  private lastPassAt: string | null = null
  private passes = 0
  private evicted = 0
  private evictedBytes = 0
  private noSpace = 0
  private scan: Scanned | undefined
  private timer: NodeJS.Timeout | undefined
  private timerDue = Infinity
  private started = false
  private capacityHint = 1024
  /** Pipelines using this object ({@link acquireQuota} / {@link releaseQuota}). */
  refs = 0

  constructor(
    readonly cacheDir: string,
    limit: number,
    log: QuotaLog,
  ) {
    this.limit = limit
    this.log = log
  }

  /** A later pipeline's settings (a reload with a new `cache_size`, or another logger). */
  configure(limit: number, log: QuotaLog): void {
    const changed = limit !== this.limit
    this.limit = limit
    this.log = log
    if (changed && this.started) this.schedule(0)
  }

  /**
   * Starts the background passes (once; the pipeline calls it at its first fetch): a first
   * count now, then a pass whenever new blobs take the cache over the quota, and a re-arming
   * pass every {@link REARM_EVERY_MS}. Nothing runs while `cache_size` is 0.
   */
  start(): void {
    if (this.started) return
    this.started = true
    this.schedule(0)
  }

  /** Keeps `md5` from being evicted until {@link unpin}. Pins nest. */
  pin(md5: string): void {
    this.pins.set(md5, (this.pins.get(md5) ?? 0) + 1)
  }

  unpin(md5: string): void {
    const n = this.pins.get(md5) ?? 0
    if (n <= 1) this.pins.delete(md5)
    else this.pins.set(md5, n - 1)
  }

  /** A blob of `size` bytes was renamed into the cache. */
  added(size: number): void {
    const bytes = estimateBytes(size)
    this.addedTotal += bytes
    if (this.used !== null) this.used += bytes
    if (this.limit > 0 && this.used !== null && this.used > this.limit) this.schedule()
  }

  /** Counters for `status`. */
  stats(): QuotaStats {
    return {
      limit: this.limit,
      used: this.used,
      blobs: this.blobs,
      passes: this.passes,
      lastPassMs: this.lastPassMs,
      lastPassAt: this.lastPassAt,
      evicted: this.evicted,
      evictedBytes: this.evictedBytes,
      noSpace: this.noSpace,
    }
  }

  /** Stops background passes (one already running finishes). */
  stop(): void {
    this.started = false
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    this.timerDue = Infinity
  }

  /** Plans the next background pass: soon when over quota, else at the re-arming interval. */
  private schedule(delay?: number): void {
    if (!this.started || this.limit <= 0 || this.running) return // a running pass reschedules at its end
    const over = this.used === null || this.used > this.limit
    const gap = Math.max(MIN_PASS_GAP_MS, 2 * (this.lastPassMs ?? 0))
    const wait = Math.max(0, delay ?? (over ? this.lastPassEnd + gap - Date.now() : Math.max(REARM_EVERY_MS, 100 * (this.lastPassMs ?? 0))))
    const due = Date.now() + wait
    if (this.timer && this.timerDue <= due) return // an earlier plan stands
    if (this.timer) clearTimeout(this.timer)
    this.timerDue = due
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.timerDue = Infinity
      void this.pass().catch((err: Error) => this.log.warn({ cache: this.cacheDir }, `cache quota: pass failed: ${err.message}`))
    }, wait)
    this.timer.unref() // never what keeps a process alive
  }

  /**
   * One full pass, one `<h0>` directory per event-loop turn: counts and re-arms every blob and,
   * over the quota, evicts the least recently used down to {@link LOW_WATER} of it. Concurrent
   * calls share one pass.
   */
  pass(): Promise<PassResult> {
    this.running ??= (async () => {
      try {
        const it = this.passSteps()
        for (;;) {
          const r = it.next()
          if (r.done) return r.value
          await new Promise<void>((resolve) => setImmediate(resolve))
        }
      } finally {
        this.running = undefined
        this.schedule()
      }
    })()
    return this.running
  }

  /** The same pass in one go, without yielding (tests, benchmarks). */
  passSync(): PassResult {
    const it = this.passSteps()
    for (;;) {
      const r = it.next()
      if (r.done) return r.value
    }
  }

  private *passSteps(): Generator<void, PassResult, void> {
    const t0 = performance.now()
    const addedAtStart = this.addedTotal
    const s = newScan(this.capacityHint)
    let rearmed = 0
    for (const h0 of HEX) {
      rearmed += this.scanInto(s, h0)
      yield
    }
    this.capacityHint = Math.max(1024, Math.ceil(s.count * 1.1))
    const before = s.total
    let evicted = 0
    let evictedBytes = 0
    // Counted before evicting, so `evictFrom` keeps `used` and `blobs` in step.
    this.used = s.total + (this.addedTotal - addedAtStart)
    this.blobs = s.count
    if (this.limit > 0 && this.used > this.limit) {
      const target = Math.floor(this.limit * LOW_WATER) - (this.addedTotal - addedAtStart)
      const r = this.evictFrom(s, (left) => left <= target, GRACE_MS)
      evicted = r.count
      evictedBytes = r.bytes
    }
    this.scan = s
    const ms = performance.now() - t0
    this.passes++
    this.lastPassMs = Math.round(ms)
    this.lastPassAt = new Date().toISOString()
    this.lastPassEnd = Date.now()
    if (evicted > 0) {
      this.log.info(
        { cache: this.cacheDir, evicted, evictedBytes, used: this.used, limit: this.limit, ms: this.lastPassMs },
        `cache quota: evicted ${evicted} blobs (${mib(evictedBytes)}); ${mib(this.used)} of ${mib(this.limit)} used`,
      )
    } else if (this.limit > 0 && this.used > this.limit) {
      this.log.warn(
        { cache: this.cacheDir, used: this.used, limit: this.limit },
        `cache quota: ${mib(this.used)} used of ${mib(this.limit)}, and nothing can be evicted yet (every blob is in use or new)`,
      )
    }
    return { blobs: s.count, before, after: s.total, evicted, evictedBytes, rearmed, ms }
  }

  /** Stats every blob of `<cache>/<h0>/*`; re-arms those read since their last arming. */
  private scanInto(s: Scanned, h0: string): number {
    let rearmed = 0
    const d0 = path.join(this.cacheDir, h0)
    for (const h1 of listDir(d0)) {
      if (h1.length !== 1 || !HEX.includes(h1)) continue
      const d1 = path.join(d0, h1)
      for (const name of listDir(d1)) {
        if (name.length !== 32 || name[0] !== h0 || name[1] !== h1 || !BLOB_NAME.test(name)) continue
        const file = `${d1}/${name}`
        const st = fs.lstatSync(file, { throwIfNoEntry: false })
        if (!st || !st.isFile()) continue
        if (st.atimeMs > st.ctimeMs) {
          // Read since it was armed, and its atime says when. Keep both times; the new ctime
          // arms it again, so the next read is recorded too.
          try {
            fs.utimesSync(file, st.atimeMs / 1000, st.mtimeMs / 1000)
            rearmed++
          } catch {
            // gone meanwhile, or not ours to touch: it keeps the order of its atime
          }
        }
        const i = s.count++
        if (i >= s.bytes.length) grow(s)
        const b = diskBytes(st)
        s.names[i] = name
        s.files[i] = file
        s.bytes[i] = b
        s.atime[i] = st.atimeMs
        s.ctime[i] = st.ctimeMs
        s.ino[i] = st.ino
        s.total += b
      }
    }
    return rearmed
  }

  /**
   * Unlinks blobs of `s` in LRU order until `done(bytes left)`. Passes over pinned blobs, blobs
   * changed less than `graceMs` ago, and blobs read or replaced since the scan.
   */
  private evictFrom(s: Scanned, done: (left: number) => boolean, graceMs: number): { count: number; bytes: number } {
    if (!s.order) {
      const order = new Uint32Array(s.count)
      for (let i = 0; i < s.count; i++) order[i] = i
      const a = s.atime
      order.sort((x, y) => a[x]! - a[y]! || x - y)
      s.order = order
      s.next = 0
    }
    const now = Date.now()
    let count = 0
    let bytes = 0
    while (s.next < s.order.length && !done(s.total)) {
      const i = s.order[s.next++]!
      if (this.pins.has(s.names[i]!) || now - s.ctime[i]! < graceMs) continue
      const file = s.files[i]!
      // Still the blob the scan saw, unread since? (A read moves the atime of an armed blob; a
      // re-fetch makes a new inode.) Re-arming moved it by less than a millisecond.
      const st = fs.lstatSync(file, { throwIfNoEntry: false })
      if (!st) {
        s.total -= s.bytes[i]!
        continue
      }
      if (st.ino !== s.ino[i] || Math.abs(st.atimeMs - s.atime[i]!) >= 1) continue
      try {
        fs.unlinkSync(file)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') continue
      }
      s.total -= s.bytes[i]!
      count++
      bytes += s.bytes[i]!
    }
    this.evicted += count
    this.evictedBytes += bytes
    if (this.used !== null) this.used = Math.max(0, this.used - bytes)
    if (this.blobs !== null) this.blobs = Math.max(0, this.blobs - count)
    return { count, bytes }
  }

  /**
   * The disk is full: evict least recently used blobs until the file system has room for
   * `size` more bytes (and some slack). Pins hold; the grace period does not. Uses the last
   * scan when it is fresh, else scans (synchronously: the caller is waiting to write).
   */
  makeRoomSync(size: number): { evicted: number; bytes: number; room: boolean } {
    this.noSpace++
    const need = estimateBytes(size) + ROOM_SLACK
    const room = () => freeBytes(this.cacheDir) >= need
    let evicted = 0
    let bytes = 0
    for (let fresh = false; !room(); ) {
      let s = this.scan
      if (!s || Date.now() - s.at > SCAN_REUSE_MS || s.next >= (s.order?.length ?? s.count)) {
        if (fresh) break // a scan of our own found nothing more to evict
        s = newScan(this.capacityHint)
        for (const h0 of HEX) this.scanInto(s, h0)
        this.scan = s
        fresh = true
      }
      // A batch at a time, asking the file system after each: what it has free is the truth.
      const from = s.total
      const r = this.evictFrom(s, (left) => from - left >= need, 0)
      evicted += r.count
      bytes += r.bytes
    }
    return { evicted, bytes, room: room() }
  }
}

/** Bytes this process can still write on the file system of `dir` (root may use the reserve). */
export function freeBytes(dir: string): number {
  try {
    const s = fs.statfsSync(dir)
    const blocks = process.geteuid?.() === 0 ? s.bfree : s.bavail
    return blocks * s.bsize
  } catch {
    return Infinity
  }
}

function mib(n: number): string {
  return `${(n / 1048576).toFixed(1)} MiB`
}

/** The error code of `err` or of an error in its `cause` chain. */
export function errnoOf(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 8; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && /^E[A-Z0-9]+$/.test(e.code) && e.code !== 'EIO') return e.code
  }
  return undefined
}

/** Whether `err` (or its cause) says the disk is full. */
export function isNoSpace(err: unknown): boolean {
  const code = errnoOf(err)
  return code === 'ENOSPC' || code === 'EDQUOT'
}

const registry = new Map<string, CacheQuota>()

/**
 * The quota of `cacheDir` for this thread (each worker thread has its own module registry):
 * made on first use, re-configured by later pipelines on the same directory, stopped when the
 * last of them {@link releaseQuota releases} it.
 */
export function acquireQuota(cacheDir: string, limit: number, log: QuotaLog): CacheQuota {
  const key = path.resolve(cacheDir)
  let q = registry.get(key)
  if (q) q.configure(limit, log)
  else {
    q = new CacheQuota(key, limit, log)
    registry.set(key, q)
  }
  q.refs++
  return q
}

export function releaseQuota(q: CacheQuota): void {
  if (--q.refs > 0) return
  q.stop()
  if (registry.get(q.cacheDir) === q) registry.delete(q.cacheDir)
}
