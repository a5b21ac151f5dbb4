/**
 * Speculative fetching behind demand misses (`main.speculate`): a miss names the blobs beside
 * it (./locality.ts), and they are fetched with the download slots demand leaves free, so that
 * the program finds them in the local cache when it asks. The recorded start-up set
 * (`main.startup`) goes through the same queue, first (below).
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
 * Over a far link a blob read also names what its content asks for ({@link Speculator.verified}:
 * a package's entry file, a `.pyc`'s imports, a `.js`'s requires), queued before every range of
 * locality, lowest level first (what the program read is level 0, what it names level 1, …).
 *
 * A recorded start-up set (./startup.ts) is fetched the same way, before any guess (none starts
 * while a blob of the set downloads):
 * only in slots no miss waits for, a miss taking one back or joining a download, the same checks.
 * Its own bounds are wider (every slot, 2 MiB at once: it is what the program reads next, in
 * order), and its bytes are not held to `maxBytes`: the set is bounded by the lists themselves,
 * which name only blobs of the tree (a wrong list wastes bandwidth, never a byte served).
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
import { pycNames } from './imports'
import type { StartupSet } from './startup'

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
  /**
   * Bytes of the start-up set downloading at once (a blob starts while less is in flight, so a
   * large one never waits to go alone). The set is what the program reads next, in its order: a
   * read mostly joins a download in flight rather than queueing behind it. With the guesses'
   * 512 KiB (counted until a blob is committed) and three quarters of the slots, the Python
   * start-up's 13.2 MB set came at about half the link's rate, and the start-up took 1.79x curl's
   * time; with 2 MiB and every slot, 1.10x (docs/benchmarks.md, "After: recorded start-up sets").
   */
  startupInFlightBytes: 2 << 20,
} as const

/**
 * A miss's cousins (./locality.ts) are guessed only while the demand downloads take this long or
 * more to their last checked byte (the fastest of the last 8, at least 3 measured; before, see
 * {@link FAR_AFTER_MS}). Over a 40 ms
 * round trip they took the Node start-up of the benchmark from 2.50 s to 1.99 s; on loopback
 * they only cost the miss worker CPU (0.72-1.08 s against 0.56-0.88 s, same run). With 15 ms a
 * loopback store on a CPU loaded by other processes still looked far in some runs.
 */
export const FAR_MS = 30

/**
 * Before 3 demand downloads are measured, the sources are far when one took this long or more
 * (and none less than {@link FAR_MS}): the first download of a connection pays the handshake's
 * round trip too, so over a link of {@link FAR_MS} it takes twice that at least, and a loopback
 * store does not come near even on a loaded CPU. Waiting for 3, the first misses of a start-up
 * named nothing by content and no cousins: over a 40 ms round trip the Node start-up of the
 * benchmark started 27 downloads for its reads instead of 22, the Python one 56 instead of 45
 * (same run, with the other changes of docs/benchmarks.md "After: content chains through the
 * cache").
 */
export const FAR_AFTER_MS = 2 * FAR_MS

/** Keys of what a blob's content named (below every range key of ./locality.ts): `ENTRY_KEYS - 2e`
 * for a package's entry file `e`, `ENTRY_KEYS - 1 - 2e` for what file `e` imports. */
const ENTRY_KEYS = -1

/**
 * Files named by files named by … what a program read, at most this many steps away. The Python
 * start-up of the benchmark imports its modules up to ~10 deep.
 */
const MAX_LEVEL = 8

/**
 * The same for JavaScript (a `require()` or a package's entry file): a scan of the text also
 * finds the requires a function makes only when called, so the chain fans out faster. Over
 * npm's tree, what `npm --version` reads names 0.13 MB it does not read within 3 steps, 0.34 MB
 * within 4, 0.81 MB within 8 (the start-up reads 0.45 MB).
 */
const MAX_JS_LEVEL = 3

/** Landed guesses whose content was not named kept for {@link Speculator.expandRead}, at most. */
const MAX_UNEXPANDED = 256
/** Of those, looked at per miss. */
const EXPAND_PER_MISS = 64

/**
 * The blob at `file` when it holds `size` bytes, else undefined. Sync: the miss worker's way.
 * Its atime is left as it was (O_NOATIME, else put back): the atime says whether the program
 * read a landed guess ({@link Speculator.expandRead}, the byte budget's check).
 */
function readCached(file: string, size: number): Buffer | undefined {
  let fd: number
  let restore: fs.Stats | undefined
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NOATIME ?? 0))
  } catch {
    try {
      // Not ours to read without touching the atime (O_NOATIME needs its owner): put it back.
      fd = fs.openSync(file, 'r')
      restore = fs.fstatSync(fd)
    } catch {
      return undefined
    }
  }
  try {
    const data = fs.readFileSync(fd)
    if (restore) fs.futimesSync(fd, restore.atime, restore.mtime)
    return data.length === size ? data : undefined
  } catch {
    return undefined
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * The blob at `file` if it was read since it landed (its atime past its mtime), `null` if not
 * read yet, undefined if it is gone or not `size` bytes.
 */
function readIfRead(file: string, size: number): Buffer | null | undefined {
  let st: fs.Stats | undefined
  try {
    st = fs.statSync(file, { throwIfNoEntry: false })
  } catch {
    return undefined
  }
  if (!st) return undefined
  if (st.atimeMs <= st.mtimeMs) return null
  return readCached(file, size)
}

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
  /**
   * Downloads of the start-up set at once, at most. Default `max_downloads`: every slot no miss
   * waits for (a miss takes one back at once).
   */
  startupDownloads?: number
  /** Bytes of the start-up set downloading at once, at most (see the default's note). Default 2 MiB. */
  startupInFlightBytes?: number
}

/** How a guess ended. `used`: a miss joined it before it ended. */
export type GuessOutcome = 'landed' | 'used' | 'failed'

/** What the speculator asks of the pipeline. */
export interface SpeculationHost {
  /** A slot is free and no demand download waits for one. */
  canStart(): boolean
  /**
   * Starts a guess of the blob (`startup`: one of the start-up set); undefined when it is cached
   * or in flight already.
   */
  start(md5: string, size: number, startup: boolean): Promise<GuessOutcome> | undefined
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

/** The `startup` part of the pipeline's counters: the recorded start-up set (`main.startup`). */
export interface StartupStats {
  /** `main.startup`. */
  enabled: boolean
  /** Blobs the start-up lists in force name (each once). */
  listed: number
  /** Of those, blobs the mounted tree does not name (as a regular file of 1 byte or more not read by chunks): never fetched. */
  dropped: number
  /** Blobs of the set already in the local cache, or being fetched for a read, when their turn came. */
  alreadyCached: number
  /** Downloads started for the set. */
  started: number
  /** Of those, blobs put in the local cache. */
  fetched: number
  /** Of the fetched, blobs a read asked for while they were downloading. */
  joined: number
  /** Downloads no source could serve (wrong bytes, errors). */
  failed: number
  /** Bytes of the fetched blobs. */
  bytes: number
  /** Downloads running now, and blobs of the set still waiting for their turn. */
  active: number
  queued: number
}

/** A landed guess not seen read yet. */
interface Landed {
  md5: string
  size: number
}

/** The queue of guesses, their bounds and counters. Runs on the miss worker. */
export class Speculator {
  /** The tree to guess from (`main.speculate`); none: only the start-up set is fetched. */
  private index?: LocalityIndex
  readonly maxBytes: number
  readonly maxDownloads: number
  readonly maxInFlightBytes: number
  readonly startupDownloads: number
  readonly startupInFlightBytes: number
  /** Bytes of the guesses (and of the start-up set) downloading now. */
  private inFlightBytes = 0
  /** Ranges to guess from, the newest last: the program's latest directory goes first. */
  private readonly ranges: Range[] = []
  /**
   * Files a blob's content named (an import, a package's entry file): before every range of
   * {@link ranges}, the newest first (a program loads what it imports depth first).
   */
  private readonly named: (Range & { level: number })[] = []
  /** Blobs some content named (forgotten all at once past {@link MAX_TAKEN}). */
  private readonly namedBlobs = new Set<string>()
  /** The level of each guess started from {@link named} and not ended yet. */
  private readonly levels = new Map<string, number>()
  private readonly taken = new Set<number>()
  private active = 0
  /** Guessed bytes not seen read: in flight, or landed and unread. */
  private outstanding = 0
  private readonly landedList: Landed[] = []
  private checkAt = 0
  private closed = false
  private readonly c = { started: 0, landed: 0, used: 0, yielded: 0, failed: 0, bytes: 0, usedBytes: 0 }
  /** The start-up set in force, and the next of its blobs to start. */
  private startup: StartupSet | undefined
  private startupNext = 0
  private readonly s = { alreadyCached: 0, started: 0, fetched: 0, joined: 0, failed: 0, bytes: 0, active: 0 }

  constructor(
    private readonly host: SpeculationHost,
    opts: SpeculationOptions & { slots: number },
  ) {
    this.maxBytes = opts.maxBytes ?? SPECULATION_DEFAULTS.maxBytes
    this.maxInFlightBytes = opts.maxInFlightBytes ?? SPECULATION_DEFAULTS.maxInFlightBytes
    this.maxDownloads = Math.max(1, Math.min(opts.slots, opts.maxDownloads ?? Math.floor(opts.slots * SPECULATION_DEFAULTS.downloadsShare)))
    this.startupDownloads = Math.max(1, Math.min(opts.slots, opts.startupDownloads ?? opts.slots))
    this.startupInFlightBytes = opts.startupInFlightBytes ?? SPECULATION_DEFAULTS.startupInFlightBytes
  }

  /** A new tree to guess from (a reload): what was queued from the old one is dropped. */
  setLocality(data: LocalityData): void {
    this.index = new LocalityIndex(data)
    this.ranges.length = 0
    this.named.length = 0
    this.taken.clear()
    this.namedBlobs.clear()
    this.unexpanded.length = 0
  }

  /** The start-up set to fetch (at mount, and with a new tree): replaces what is left of the last one. */
  setStartup(set: StartupSet): void {
    this.startup = set
    this.startupNext = 0
    this.pump()
  }

  /**
   * A demand miss of `md5` started a download: queue its neighbours, and start what fits.
   * `far`: the sources answer slowly enough (see {@link FAR_MS}) for its cousins to pay too, and
   * for what content names ({@link verified}). `oneReader`: no other miss is downloading. Far
   * and with one reader, a miss of byte code some content named names its cousins only, not its
   * directory, whose files its imports name once it is read (the Python start-up of the
   * benchmark fetched 0.59x its needed bytes in guesses, against 1.57x with its directory too,
   * in the same time). Byte code nothing named is imported by what the worker never sees (the
   * command line, a script), and the next such module is likely beside it: it names its
   * directory too (the Python start-up started 39 downloads for its reads instead of 51, and
   * took 0.89x the time, guessing 1.0-1.2x its needed bytes instead of 0.57x; same run). Landed
   * guesses the program has read since name their content first ({@link expandRead}).
   */
  demand(md5: string, far = true, oneReader = true): void {
    if (this.closed) return
    if (far && oneReader) this.expandRead()
    // Byte code nothing named came from what the worker never sees (a command line, a script):
    // its directory too, where the next such module likely is.
    const ownDir = !(far && oneReader && this.index?.namesImports(md5)) || !this.namedBlobs.has(md5)
    this.queueRanges(this.index?.neighbours(md5, far, ownDir) ?? [])
    this.pump()
  }

  /** Queues ranges of locality not queued before, the last one first. */
  private queueRanges(ranges: { key: number; range: Range }[]): void {
    for (const { key, range } of ranges) {
      if (this.taken.has(key) || range.from >= range.to) continue
      if (this.taken.size >= MAX_TAKEN) this.taken.clear()
      this.taken.add(key)
      this.ranges.push({ ...range })
      if (this.ranges.length > MAX_RANGES) this.ranges.shift()
    }
  }

  /**
   * A blob's bytes were checked (`data`: all of them), for a read (`demand`) or for a guess: the
   * files its content names (a `package.json`'s entry file, a `.pyc`'s imports, a `.js`'s
   * requires: ./entry-points.ts, ./imports.ts) go before every range of locality, as files named
   * one level further from what the program read than the blob. A guess from locality names
   * nothing (nothing says the program reads it). `far`: as for {@link demand}; near, a guess
   * costs the miss worker more than the round trip it saves. `oneReader`: no other miss is
   * downloading; readers at once (a tree read) read in an order of their own, which locality
   * follows better (the benchmark's tree read took 6.89 s with this bound, 7.76 s without, 6.94 s
   * naming nothing, same run).
   */
  verified(md5: string, data: Uint8Array, far = true, demand = true, oneReader = true): void {
    if (this.closed || !this.index || !far) return
    if (!oneReader) {
      // Byte code whose miss named no directory (see demand()) names it now.
      if (demand && this.index.namesImports(md5)) {
        this.queueRanges(this.index.neighbours(md5, false, true))
        this.pump()
      }
      return
    }
    // Its miss may have come before the sources were measured far ({@link FAR_AFTER_MS}), or a
    // read joined a guess (no miss): its cousins now.
    if (demand) this.queueRanges(this.index.neighbours(md5, true, false))
    // How sure: 0 for what a program read, one more for each file named on the way from it.
    const parent = demand ? 0 : this.levels.get(md5)
    if (!demand && (parent === undefined || parent + 1 > (this.index.namesImports(md5) ? MAX_LEVEL : MAX_JS_LEVEL)) && this.index.namesContent(md5)) {
      // A guess whose content is not named now (from locality, or too many steps away): named
      // once the program is seen to have read it (expandRead).
      this.unexpanded.push({ md5, size: data.length })
      if (this.unexpanded.length > MAX_UNEXPANDED) this.unexpanded.shift()
    }
    if (this.nameFrom(md5, data, parent, demand)) this.pump()
  }

  /**
   * Queues what the content `data` of blob `md5` names, as files one level further than
   * `parent` (undefined, or {@link MAX_LEVEL} or more: nothing). Returns whether it queued any.
   */
  private nameFrom(md5: string, data: Uint8Array, parent: number | undefined, demand: boolean): boolean {
    if (!this.index || parent === undefined || parent >= MAX_LEVEL) return false
    const level = parent + 1
    const js = level <= MAX_JS_LEVEL
    const index = this.index
    const key = ENTRY_KEYS - 1 - 2 * (index.entriesOf(md5)[0] ?? 0)
    let queued = false
    const queue = (key: number, entries: number[]): void => {
      if (entries.length === 0 || this.taken.has(key)) return
      if (this.taken.size >= MAX_TAKEN) this.taken.clear()
      this.taken.add(key)
      if (this.namedBlobs.size >= MAX_TAKEN) this.namedBlobs.clear()
      for (const e of entries) this.namedBlobs.add(index.md5Of(e))
      this.named.push({ from: 0, to: entries.length, perm: Uint32Array.from(entries), level })
      if (this.named.length > MAX_RANGES) this.named.shift()
      queued = true
    }
    try {
      if (js) for (const e of index.entryPoints(md5, data)) queue(ENTRY_KEYS - 2 * e, [e])
      if (js) queue(key, index.jsImports(md5, data))
      const imports = index.pycImports(md5, data)
      if (imports.length > 0) queue(key, imports)
      else if (demand && index.namesImports(md5) && pycNames(data) === undefined) {
        // Byte code of a version not read: its miss named no directory (see demand()); now it does.
        this.queueRanges(index.neighbours(md5, false, true))
        queued = true
      }
    } catch {
      // A guess is never worth a download: whatever the content, the blob is served as it is.
    }
    return queued
  }

  /**
   * Landed guesses whose content was not named when they landed (a guess from locality, or one
   * too many steps from a read), newest last: those the program has read since name what they
   * ask for, as a read does (at level 0), at the next miss. A program that reads a landed guess
   * is served from the local cache without the pipeline seeing it; the blob's atime shows it (as
   * for {@link check}). Without this, every file such a guess imports was a download of its own
   * for the program (the Python start-up of the benchmark: 52 instead of 45).
   */
  private readonly unexpanded: Landed[] = []

  /** See {@link unexpanded}: at most {@link EXPAND_PER_MISS} looked at (a `stat` each), newest first. */
  private expandRead(): boolean {
    if (!this.index) return false
    let queued = false
    for (let k = this.unexpanded.length - 1, n = 0; k >= 0 && n < EXPAND_PER_MISS; k--, n++) {
      const l = this.unexpanded[k]!
      const data = readIfRead(this.host.path(l.md5), l.size)
      if (data === null) continue // not read yet
      this.unexpanded.splice(k, 1)
      if (data !== undefined && this.nameFrom(l.md5, data, 0, false)) queued = true
    }
    return queued
  }

  /** A miss joined the guess of a blob of `size` bytes while it ran: it was worth it. (A blob of
   * the start-up set counts when it ends.) */
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

  /**
   * Starts downloads while a slot no miss waits for is free and the bounds on downloads and bytes
   * at once allow: the start-up set first, in its order (within its own bounds), then guesses
   * (within theirs, and the byte budget).
   */
  pump(): void {
    while (!this.closed && this.host.canStart()) {
      const set = this.startup
      if (set && this.startupNext < set.md5.length) {
        if (this.active >= this.startupDownloads || this.inFlightBytes >= this.startupInFlightBytes) return
        const size = set.size[this.startupNext]!
        const md5 = set.md5[this.startupNext++]!
        const p = this.host.start(md5, size, true)
        if (!p) {
          this.s.alreadyCached++
          continue
        }
        this.s.started++
        this.s.active++
        this.launched(md5, size, p, true)
        continue
      }
      // No guess while blobs of the set download: the set is what the program reads next, and a
      // guess would only share the link with it (the Node start-up with its recorded set waited
      // 0.34 s on its reads instead of 0.14 s once guesses started beside the set's last blobs).
      if (this.s.active > 0) return
      // The named files of the lowest level, the newest first; then the ranges, the newest first.
      let at = -1
      for (let k = this.named.length - 1; k >= 0; k--) if (at < 0 || this.named[k]!.level < this.named[at]!.level) at = k
      const r = at >= 0 ? this.named[at]! : this.ranges[this.ranges.length - 1]
      if (!r || !this.index || this.active >= this.maxDownloads) return
      if (r.from >= r.to) {
        if (at >= 0) this.named.splice(at, 1)
        else this.ranges.pop()
        continue
      }
      const entry = r.perm ? r.perm[r.from]! : r.from
      const size = this.index.sizeOf(entry)
      if (this.active > 0 && this.inFlightBytes + size > this.maxInFlightBytes) return
      if (this.outstanding + size > this.maxBytes) {
        // Full: see whether reads paid some back (at most every 100 ms), else wait for them.
        if (!this.check(true) || this.outstanding + size > this.maxBytes) return
      }
      const md5 = this.index.md5Of(entry)
      r.from++
      const p = this.host.start(md5, size, false)
      if (!p) {
        // In the local cache already (a guess landed; or in flight, and named when it lands): what
        // it names is known now. Without this, the chain of names stopped at every file a guess
        // from locality had brought (the Python start-up of the benchmark: 62 downloads of its
        // own instead of 45).
        if (at >= 0 && this.index.namesContent(md5)) {
          const level = this.named[at]!.level
          const data = readCached(this.host.path(md5), size)
          if (data) this.nameFrom(md5, data, level, false)
        }
        continue
      }
      if (at >= 0) this.levels.set(md5, this.named[at]!.level)
      this.outstanding += size
      this.c.started++
      this.launched(md5, size, p, false)
    }
  }

  private launched(md5: string, size: number, p: Promise<GuessOutcome>, startup: boolean): void {
    this.active++
    this.inFlightBytes += size
    p.then((outcome) => this.ended(md5, size, outcome, startup))
  }

  private ended(md5: string, size: number, outcome: GuessOutcome, startup: boolean): void {
    this.levels.delete(md5)
    this.active--
    this.inFlightBytes -= size
    if (startup) {
      this.s.active--
      if (outcome === 'failed') this.s.failed++
      else {
        this.s.fetched++
        this.s.bytes += size
        if (outcome === 'used') this.s.joined++
      }
    } else if (outcome === 'landed') {
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
    for (const r of [...this.named, ...this.ranges]) queued += r.to - r.from
    const c = this.c
    return {
      enabled: this.index !== undefined,
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

  startupStats(): StartupStats {
    const set = this.startup ?? { md5: [], listed: 0, dropped: 0 }
    const { active, ...s } = this.s
    return { enabled: true, listed: set.listed, dropped: set.dropped, ...s, active, queued: set.md5.length - this.startupNext }
  }

  /** Queued guesses and what is left of the start-up set are dropped; running ones end with the pipeline. */
  close(): void {
    this.closed = true
    this.ranges.length = 0
    this.named.length = 0
    this.startup = undefined
  }
}

/** The counters when speculation is off. */
export function speculationOff(): SpeculationStats {
  return { enabled: false, started: 0, landed: 0, used: 0, yielded: 0, failed: 0, bytes: 0, usedBytes: 0, unusedBytes: 0, active: 0, queued: 0, maxBytes: 0, maxDownloads: 0, maxInFlightBytes: 0 }
}

/** The start-up counters when `main.startup` is off, or no set came. */
export function startupOff(enabled: boolean): StartupStats {
  return { enabled, listed: 0, dropped: 0, alreadyCached: 0, started: 0, fetched: 0, joined: 0, failed: 0, bytes: 0, active: 0, queued: 0 }
}
