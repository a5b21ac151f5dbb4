/**
 * The local cache's quota (`main.cache_size`) and its answer to a full disk: which blobs go, and
 * when (what CernVM-FS calls the cache manager's quota). Part of the local cache
 * (lib/local-cache/index.ts asks it before and after every blob it writes).
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
 *   reads synchronously inside that call). Passes never take pinned blobs, nor blobs that arrived
 *   less than {@link GRACE_MS} ago (by their mtime, the end of their download, which re-arming
 *   keeps: another process's fresh blob, about to be served), and a victim is re-stat'ed just
 *   before it goes: if it was read or replaced since the scan, it stays.
 * - The kernel's page cache of the mounted file keeps serving pages it holds, whatever happens
 *   to the cache file: same content (blobs are immutable, named by their MD5).
 *
 * **Freeing is deferred.** Unlinking a file whose blocks must be freed is slow on some disks (120 µs
 * with `discard` on a VM disk, against 25 µs for a rename), so a pass *renames* its victims into
 * `<cache>/tmp/` (the name is gone at once, for readers as for the accounting) and unlinks them
 * afterwards, a few milliseconds per event-loop turn. Victims a crash leaves there are temp files of
 * a dead process: `cleanTmp` removes them at the next start.
 *
 * **A full disk** (ENOSPC, EDQUOT) while a blob is written: {@link CacheQuota.makeRoomSync} first
 * unlinks what passes left to purge, then evicts least recently used blobs (pins still hold; no
 * grace), unlinking them at once, until the file system has room for it; the pipeline retries. A
 * temp file is never renamed into place unless complete and checked, so a full disk can never
 * leave a half-written blob under its final name.
 *
 * **A blob that can never fit evicts nothing.** Before a download, a blob larger than the quota
 * (or than the whole file system) is refused ({@link CacheQuota.neverFits}); on a full disk,
 * before evicting, a blob larger than the free space plus everything eviction could ever free
 * (every blob, pinned or not, and the temp files of downloads in flight) is refused too
 * ({@link CacheQuota.makeRoomSync}'s `never`). Evicting for it would empty the cache and still
 * fail.
 *
 * Passes run on the thread of the pipeline that triggered them (the miss worker for a mount): sync
 * fs only, as everything there (docs/design.md). The background pass works one `<h0>` directory
 * per event-loop turn, so downloads keep moving while it runs.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { BLOB_NAME } from '../blob'
import type { Logger } from '../log'
import { TMP_DIR } from './layout'

/** Passes evict down to this fraction of the quota, so that one pass makes room for many blobs. */
export const LOW_WATER = 0.95
/** Blobs that arrived less than this long ago are left alone by quota passes (not on a full disk). */
export const GRACE_MS = 2000
/** A quota pass re-arms atimes and re-counts at least this often (if any blob was fetched). */
const REARM_EVERY_MS = 60_000
/** Two passes triggered by new blobs are at least this far apart. */
const MIN_PASS_GAP_MS = 1000
/** Room asked for beyond the blob itself when the disk is full (directories, the temp name). */
const ROOM_SLACK = 64 * 1024
/** A scan younger than this is reused by {@link CacheQuota.makeRoomSync}. */
const SCAN_REUSE_MS = 5000
/** The background purge of evicted blobs holds the thread at most this long at a time. */
const PURGE_SLICE_MS = 10
const HEX = '0123456789abcdef'
/** One options object for every lstat of a pass (made once: a pass makes 100,000 calls). */
const LSTAT: fs.StatSyncOptions & { bigint?: false; throwIfNoEntry: false } = { throwIfNoEntry: false }

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
  /** When the blob arrived: its mtime, the end of its download (re-arming keeps it). */
  mtime: Float64Array
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
function estimateBytes(size: number): number {
  return Math.ceil(size / 4096) * 4096
}

function newScan(capacity: number): Scanned {
  return {
    names: [],
    files: [],
    bytes: new Float64Array(capacity),
    atime: new Float64Array(capacity),
    mtime: new Float64Array(capacity),
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
  s.mtime = g(s.mtime)
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
 * The quota of one cache directory, shared by every LocalCache of a thread on that directory
 * ({@link acquireQuota}): pins and passes must see each other.
 */
export class CacheQuota {
  limit: number
  private log: Logger
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
  /** A fetch happened since the last pass began: worth a re-arming pass later. */
  private active = false
  private capacityHint = 1024
  /** Victims moved into `tmp/`, to unlink in the background. */
  private trash: string[] = []
  private purging = false
  private trashSeq = 0
  /** Local caches using this object ({@link acquireQuota} / {@link releaseQuota}). */
  refs = 0
  /** Quota passes leave blobs that arrived less than this long ago alone (tests set 0). */
  graceMs = GRACE_MS
  private stuckLogged = false
  /**
   * A temp-file path (in `<cache>/tmp/`, named so `cleanTmp` knows its owner) for a victim;
   * undefined: victims are unlinked at once.
   */
  trashName?: (label: string) => string

  constructor(
    readonly cacheDir: string,
    limit: number,
    log: Logger,
  ) {
    this.limit = limit
    this.log = log
  }

  /** A later LocalCache's settings (a reload with a new `cache_size`, or another logger). */
  configure(limit: number, log: Logger): void {
    const changed = limit !== this.limit
    this.limit = limit
    this.log = log
    if (changed && this.started) this.schedule(0)
  }

  /**
   * Called at every fetch. The first call starts the background passes: a
   * count at once, then a pass whenever new blobs take the cache over the quota, and a
   * re-arming pass every {@link REARM_EVERY_MS} while fetches go on. A quiet mount (everything
   * cached) runs none: the cache does not grow, and reads keep their atimes until the next pass.
   * Nothing runs while `cache_size` is 0.
   */
  start(): void {
    this.active = true
    if (this.started) {
      if (!this.timer) this.schedule()
      return
    }
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
    if (!over && !this.active && delay === undefined) return // quiet: the next fetch plans again
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
    this.active = false
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
      const r = this.evictFrom(s, (left) => left <= target, this.graceMs, true)
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
      this.stuckLogged = false
      this.log.info(
        { cache: this.cacheDir, evicted, evictedBytes, used: this.used, limit: this.limit, ms: this.lastPassMs },
        `cache quota: evicted ${evicted} blobs (${mib(evictedBytes)}); ${mib(this.used)} of ${mib(this.limit)} used`,
      )
    } else if (this.limit > 0 && this.used > this.limit && !this.stuckLogged) {
      // Passes come back every second or so while over the quota: say it once.
      this.stuckLogged = true
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
        const st = fs.lstatSync(file, LSTAT)
        if (!st || !st.isFile()) continue
        let atime = st.atimeMs
        if (atime > st.ctimeMs) {
          // Read since it was armed, and its atime says when. Keep both times; the new ctime
          // arms it again, so the next read is recorded too. A millisecond earlier: the clock
          // behind ctime is coarse (a few ms), and an atime even a rounding error past the new
          // ctime would leave the blob unarmed.
          try {
            atime -= 1
            fs.utimesSync(file, atime / 1000, st.mtimeMs / 1000)
            // The new ctime may still be behind that atime: the read may have stamped a
            // fine-grained time and utimes a coarse one (a clock tick, up to 10 ms, apart). Then
            // once more, just under that ctime: a file's ctime never goes back, so the next one
            // is later still.
            const now = fs.lstatSync(file, LSTAT)
            if (now && now.atimeMs > now.ctimeMs) {
              atime = now.ctimeMs - 1
              fs.utimesSync(file, atime / 1000, st.mtimeMs / 1000)
            }
            rearmed++
          } catch {
            atime = st.atimeMs // gone meanwhile, or not ours to touch: it keeps its atime
          }
        }
        const i = s.count++
        if (i >= s.bytes.length) grow(s)
        const b = diskBytes(st)
        s.names[i] = name
        s.files[i] = file
        s.bytes[i] = b
        s.atime[i] = atime
        s.mtime[i] = st.mtimeMs
        s.ino[i] = st.ino
        s.total += b
      }
    }
    return rearmed
  }

  /**
   * Unlinks blobs of `s` in LRU order until `done(bytes left)`. Passes over pinned blobs, blobs
   * that arrived less than `graceMs` ago, and blobs read or replaced since the scan.
   */
  private evictFrom(s: Scanned, done: (left: number) => boolean, graceMs: number, deferFree: boolean): { count: number; bytes: number } {
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
      if (this.pins.has(s.names[i]!) || now - s.mtime[i]! < graceMs) continue
      const file = s.files[i]!
      // Still the blob the scan saw, unread since? (A read moves the atime of an armed blob; a
      // re-fetch makes a new inode.) utimes rounds to a fraction of a microsecond.
      const st = fs.lstatSync(file, LSTAT)
      if (!st) {
        s.total -= s.bytes[i]!
        continue
      }
      if (st.ino !== s.ino[i] || Math.abs(st.atimeMs - s.atime[i]!) >= 0.01) continue
      if (!this.remove(file, s.names[i]!, deferFree)) continue
      this.log.debug({ cache: this.cacheDir, md5: s.names[i], bytes: s.bytes[i] }, `cache quota: evicted blob ${s.names[i]} (${s.bytes[i]} bytes, least recently used)`)
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

  /** Takes a victim's name away: renamed into `tmp/` to free later, or unlinked. False: it stays. */
  private remove(file: string, md5: string, deferFree: boolean): boolean {
    if (deferFree && this.trashName) {
      try {
        const to = this.trashName(`evicted.${++this.trashSeq}.${md5}`)
        fs.renameSync(file, to)
        this.trash.push(to)
        this.schedulePurge()
        return true
      } catch {
        // The victim went meanwhile, or tmp/ did (someone cleaned up): unlink it if it is there.
        if (!fs.existsSync(file)) return false
      }
    }
    try {
      fs.unlinkSync(file)
      return true
    } catch {
      return false
    }
  }

  private schedulePurge(): void {
    if (this.purging) return
    this.purging = true
    setImmediate(() => {
      this.purging = false
      this.purgeSync(PURGE_SLICE_MS)
      if (this.trash.length > 0) this.schedulePurge()
    })
  }

  /** Unlinks moved victims for at most `budgetMs`. */
  private purgeSync(budgetMs: number): void {
    const t0 = performance.now()
    while (this.trash.length > 0 && performance.now() - t0 < budgetMs) {
      try {
        fs.unlinkSync(this.trash.pop()!)
      } catch {
        // already gone
      }
    }
  }

  /** Victims moved aside and not unlinked yet. */
  get pendingFrees(): number {
    return this.trash.length
  }

  /**
   * Why a blob of `size` bytes can never be kept in this cache, or undefined when it can: it is
   * larger than the quota (`main.cache_size`), or than the whole file system of the cache. Asked
   * before a download; costs at most one statfs (none for blobs up to 1 MiB).
   */
  neverFits(size: number): string | undefined {
    const need = estimateBytes(size)
    if (this.limit > 0 && need > this.limit) return `it is larger than main.cache_size (${this.limit} bytes, ${mib(this.limit)})`
    if (size > FS_CHECK_MIN) {
      const total = fsBytes(this.cacheDir)
      if (need > total) return `it is larger than the whole file system of the cache (${total} bytes, ${mib(total)})`
    }
    return undefined
  }

  /**
   * The disk is full: can evicting ever make room for `size` bytes? Not when the free space plus
   * every blob (pinned ones too: they are let go soon) and every temp file (downloads in flight
   * become blobs) is less. Then the reason, else undefined. A scan younger than
   * {@link SCAN_REUSE_MS} is trusted only to say yes: blobs that arrived since are not in it.
   */
  private neverFitsOnDiskSync(size: number): string | undefined {
    const need = estimateBytes(size)
    const total = fsBytes(this.cacheDir)
    if (need > total) return `it is larger than the whole file system of the cache (${total} bytes, ${mib(total)})`
    const tmp = path.join(this.cacheDir, TMP_DIR)
    for (let fresh = false; ; fresh = true) {
      let s = this.scan
      if (fresh || !s || Date.now() - s.at > SCAN_REUSE_MS) {
        s = newScan(this.capacityHint)
        for (const h0 of HEX) this.scanInto(s, h0)
        this.scan = s
        fresh = true
      }
      const free = freeBytes(this.cacheDir)
      const reclaimable = s.total + dirBytes(tmp)
      if (need <= free + reclaimable) return undefined
      if (fresh) {
        return `the file system of the cache has ${free} bytes free (${mib(free)}), and every cached blob and download in flight takes ${reclaimable} more (${mib(reclaimable)})`
      }
    }
  }

  /**
   * The disk is full: evict least recently used blobs until the file system has room for
   * `size` more bytes (and some slack). Pins hold; the grace period does not. Uses the last
   * scan when it is fresh, else scans (synchronously: the caller is waiting to write). Evicts
   * nothing, and says why in `never`, when eviction could never make room.
   */
  makeRoomSync(size: number): { evicted: number; bytes: number; room: boolean; never?: string } {
    this.noSpace++
    const need = estimateBytes(size) + ROOM_SLACK
    const room = () => freeBytes(this.cacheDir) >= need
    let evicted = 0
    let bytes = 0
    this.purgeSync(Infinity) // what passes evicted but did not free yet: no new victims needed
    if (!room()) {
      const never = this.neverFitsOnDiskSync(size)
      if (never !== undefined) return { evicted: 0, bytes: 0, room: false, never }
    }
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
      const r = this.evictFrom(s, (left) => from - left >= need, 0, false)
      evicted += r.count
      bytes += r.bytes
    }
    return { evicted, bytes, room: room() }
  }
}

/** Blobs of at most this size skip the file-system size check before their download (a statfs):
 * the full-disk path still catches them. */
const FS_CHECK_MIN = 1 << 20

/** Size of the file system of `dir` in bytes; Infinity when it cannot be asked. */
function fsBytes(dir: string): number {
  try {
    const s = fs.statfsSync(dir)
    return s.blocks * s.bsize
  } catch {
    return Infinity
  }
}

/** Bytes on disk of the files directly in `dir` (temp files: downloads in flight, victims). */
function dirBytes(dir: string): number {
  let total = 0
  for (const name of listDir(dir)) {
    const st = fs.lstatSync(path.join(dir, name), LSTAT)
    if (st?.isFile()) total += diskBytes(st)
  }
  return total
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
function errnoOf(err: unknown): string | undefined {
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
 * made on first use, re-configured by later local caches on the same directory, stopped when the
 * last of them {@link releaseQuota releases} it.
 */
export function acquireQuota(cacheDir: string, limit: number, log: Logger): CacheQuota {
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
