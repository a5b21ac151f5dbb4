/**
 * The raw exports of the native addon (native/addon.cc, the bridge files native/bridge_*.cc).
 * This is the contract between C++ and TypeScript; `lib/engine.ts` and (for `Committer` and
 * `BrotliDecoder`) `lib/sources/source.ts` use it. Every function checks its argument types and
 * throws a TypeError on a mismatch; failures that reach users carry an errno-style `code`.
 */

/**
 * Options of one mount, copied by the native side at `mount`: every one of them, of its type.
 * `Engine.mount` (lib/engine.ts) checks each option's type and range and fills in its default;
 * the native side only checks again that each is present and of its type (an integer within its
 * C++ type's range), and throws a TypeError naming it otherwise. Same keys, same order as the
 * native list (native/options.h, the `mountOptionNames` export).
 */
export interface NativeMountOptions {
  /** Absolute path of an existing directory. */
  mountpoint: string
  /** The local cache: blobs at `<cacheDir>/<h0>/<h1>/<md5>`. */
  cacheDir: string
  /** Shown as the source in /proc/mounts (`fsname`). No `,` or `\`. */
  fsname: string
  /** Let other users than the mounting one see the tree (`allow_other`). */
  allowOther: boolean
  /** Honour setuid/setgid bits (otherwise mounted `nosuid`). */
  suid: boolean
  /** Honour device files (otherwise mounted `nodev`). */
  dev: boolean
  /** libfuse's debug output on stderr. */
  debug: boolean
  /**
   * The backstop of parked reads, in ms: when the fetch of a blob has made no progress (see
   * `progress`) for this long, the reads parked on it fail with EIO (counted in `missTimeouts`)
   * and `progress` tells the miss worker to end that fetch, which aborts it through its `signal`.
   * Progress is what the fetcher reports through `onProgress` (bytes arriving from any source, a
   * move to the next source, and for a fetch still queued for a download slot, any download of
   * the pipeline moving); a fetch that never reports progress gets this long from its first read.
   * `mount()` sets it from the sources' `timeout` (docs/hardening.md, "The backstop of parked
   * reads").
   */
  stallTimeoutMs: number
  /** Files at least this large (bytes) are read with splice; smaller ones with pread. */
  spliceMinSize: number
  /**
   * Read-ahead window in KiB for the mount's own backing device, set when running as root
   * (sequential reads then come in requests this big); 0 leaves the kernel's (128).
   */
  readAheadKb: number
  /**
   * A small read at a random offset also puts the rest of its aligned chunk of this many bytes
   * in the kernel's page cache, as the kernel does around a page fault; 0 = off.
   */
  readAround: number
  /**
   * Regular files of at most this many bytes whose blobs are in the local cache are put whole in
   * the kernel's page cache before anyone reads them, so that reading them sends no request: a
   * file as soon as a lookup names it (opened by path: an import, an exec), and the files of a
   * directory after two of them were read from the start (a walk: cat, tar, cp -r). A listing
   * alone pushes nothing. 0 = off.
   */
  pushFiles: number
}

/**
 * Requests served per FUSE operation; `rejected` counts write-type requests answered EROFS.
 * Same keys, same order as the native list (`AYSFS_OPS`, native/counters.h).
 */
export interface NativeOpCounters {
  init: number
  lookup: number
  forget: number
  getattr: number
  readlink: number
  open: number
  opendir: number
  read: number
  readdir: number
  readdirplus: number
  release: number
  releasedir: number
  statfs: number
  getxattr: number
  listxattr: number
  /** ioctl requests (answered ENOTTY): the kernel sends one for every isatty() on a file. */
  ioctl: number
  rejected: number
}

/**
 * The counters of one mount; the status document's `engine` part is the same but `mounted`.
 * Same keys, same order as the native list (native/counters.h, the `statNames` export):
 * test/unit/native-lists.test.ts checks this file against it.
 */
export interface NativeStats {
  ops: NativeOpCounters
  /** Bytes returned to readers. */
  bytesRead: number
  /** Reads answered from a local cache file at once. */
  hits: number
  /** Reads that parked because their blob was not cached. */
  misses: number
  /** Fetches asked of JavaScript: one per blob, however many readers waited on it. */
  missCalls: number
  /** Fetches that failed (their readers got EIO). */
  missFailures: number
  /** Fetches the backstop gave up on: no progress for `stallTimeoutMs` (their readers got EIO). */
  missTimeouts: number
  /** Parked reads answered EINTR because their reader was interrupted (a signal); their fetch went on. */
  interrupted: number
  /** EIO replies of any cause. */
  errors: number
  /** Reads parked right now. */
  parked: number
  /** Blobs being fetched right now. */
  fetching: number
  /** Entries in the live table. */
  entries: number
  /** Replaced tables kept alive because the kernel still holds some of their inodes. */
  retiredTables: number
  /** Kernel cache entries and inodes dropped by table swaps. */
  invalidations: number
  /** Bytes pushed to the kernel's page cache around random reads (see `readAround`). */
  readAround: number
  /** Bytes of small files pushed whole to the kernel's page cache (see `pushFiles`). */
  pushedFiles: number
  /** Reads answered from the cached chunks of a chunked file (its whole blob not cached). */
  chunkReads: number
  /** False once the mount is gone (unmounted, or unmounted from outside). */
  mounted: boolean
}

export interface SwapResult {
  invalidatedEntries: number
  invalidatedInodes: number
  retiredTables: number
}

/** Mounts a table; `onExit` runs (on this thread) if the mount goes away from outside. Returns a session id. */
export function mount(options: NativeMountOptions, table: Buffer, onExit: () => void): number
/**
 * Called on the miss worker: `onMiss(md5, size, off, len)` runs there for every blob to fetch;
 * `off` and `len` are the read that missed (a chunked file's fetch brings the chunks it covers).
 */
export function attach(id: number, onMiss: (md5: string, size: number, off: number, len: number) => void): void
/**
 * Called on the miss worker, a few times a second while fetches run (never per chunk): the
 * fetches of blobs `md5s` made progress (bytes arrived, or they moved on to another source).
 * Returns the blobs the backstop gave up on since the last call: their readers got EIO, and
 * their fetches must end now (no `complete` is owed for them).
 */
export function progress(id: number, md5s: string[]): string[]
/**
 * A fetch settled: `errno` 0 means the blob is now in the cache (for a file with chunks set, some
 * of its chunks: a read whose chunks are still absent misses again); anything else fails its
 * readers with EIO.
 */
export function complete(id: number, md5: string, errno: number): void
/**
 * A fetch verified blob `md5` (these bytes, MD5- and size-checked) and is still putting it in the
 * cache: the reads parked on it are answered from `data` now. Reads that park later wait for
 * `complete`, which the fetch still owes.
 */
export function serveVerified(id: number, md5: string, data: Buffer): void
/**
 * The miss worker checked the chunk index of file `md5` (`size` bytes; `md5s`: the chunks' MD5s,
 * 16 raw bytes each, every chunk `chunkSize` bytes but the last): from now on a read of the file
 * while its whole blob is not cached is answered from the cached chunks that cover it. False
 * (nothing set) when the list does not fit `size` and `chunkSize`.
 */
export function setChunks(id: number, md5: string, size: number, chunkSize: number, md5s: Buffer): boolean
/** Replaces the live table and invalidates what changed in the kernel's caches. */
export function swap(id: number, table: Buffer): SwapResult
export function stats(id: number): NativeStats
/** Sets one part (`pipeline`, `mount`) of the `user.aysfs.status` document to a JSON text. */
export function setStatus(id: number, part: string, json: string): void
/** The whole `user.aysfs.status` document, as the mount's root serves it. */
export function status(id: number): string
/**
 * The miss-latency histogram (native/counters.h): how long parked reads waited until they were
 * answered. `counts` has one count per bucket of `boundsUs` (upper bounds, µs), then the count
 * above the last bound; not cumulative. `sumUs`: the waits added up.
 */
export function missLatency(id: number): MissLatency
/** What {@link missLatency} returns. */
export interface MissLatency {
  boundsUs: number[]
  counts: number[]
  sumUs: number
}
/** Unmounts; returns within about a second even with files held open. Idempotent. */
export function unmount(id: number): void
/** Validates a table without mounting it. */
export function checkTable(table: Buffer): { entries: number; bytes: number }
/** Gives the C heap's free memory back to the system (glibc's `malloc_trim`; else a no-op). */
export function trimMemory(): void
/**
 * Finishes verified blobs on a small pool of native threads (native/commit.cc), so that creating,
 * fsyncing and renaming them never blocks the thread that runs the downloads, and the fsyncs of
 * several blobs overlap; the same threads copy blobs into directory grid caches (`push`). Made on
 * the thread that uses it; `done` runs there when a job ends: `errno` 0 and `step` null when the
 * blob is in place, else the errno and the step that failed (`open`, `write`, `fsync`, `close`,
 * `mkdir`, `rename`; for a push also `path`, `source`, `create`, `read`, `chmod`), the temp file
 * then removed. `where` is null but for a failed push: the path it failed on (the source file, or
 * a path relative to the grid cache's root, `''` for the root itself). A pending job keeps the
 * event loop alive; an idle committer does not. Local-cache files it creates are 0600 and its
 * directories 0700, whatever the umask.
 */
export class Committer {
  constructor(done: (token: number, errno: number, step: string | null, where: string | null) => void)
  /**
   * Creates `tmp` (exclusively), writes a copy of `data`, fsyncs it if `sync`, renames it to
   * `dest`. False (no job, no report) while this thread ends.
   */
  write(token: number, tmp: string, dest: string, data: Buffer, sync: boolean): boolean
  /**
   * `tmp` is written and closed: fsyncs it if `sync`, renames it to `dest`. False (no job, no
   * report, `tmp` left) while this thread ends.
   */
  finish(token: number, tmp: string, dest: string, sync: boolean): boolean
  /**
   * Copies `src` (a local-cache blob: opened without following a link, it must be a regular file
   * of `size` bytes, else step `source`, errno ELOOP or EINVAL) to `root/rel` (`h0/h1/md5`) in a
   * directory grid cache. `root` is opened as given; every component of `rel` is opened or made
   * relative to its parent's fd without following links (a symlink there fails the push with
   * ELOOP), the temp file is created exclusively under a random name, written, fsynced if `sync`
   * and renamed within its directory. New directories take the root's group and permission bits,
   * the file the root's group and read bits plus the owner's read and write. False (no job, no
   * report) while this thread ends.
   */
  push(token: number, root: string, rel: string, src: string, size: number, sync: boolean): boolean
}
/**
 * A streaming brotli decoder (native/brotli.cc, libbrotlidec linked in) for `.bro` bodies: memory
 * bounded by the stream's window, whatever the size of what it decodes. Synchronous, on the
 * calling thread (never libuv's threadpool). A corrupt stream throws an Error whose `code` is
 * `bro-corrupt`; it stays failed.
 */
export class BrotliDecoder {
  /** The most one decoder may hold (bytes); a stream that needs more is corrupt. */
  static readonly maxMemory: number
  /**
   * @param maxMemory the most this decoder may hold, in bytes (1 to {@link maxMemory}, the
   *   default): a stream that needs more is corrupt. Throws a TypeError outside that range.
   */
  constructor(maxMemory?: number)
  /** Takes a copy of compressed bytes. Throws while bytes pushed before are not all pulled. */
  push(chunk: Buffer): void
  /**
   * Decompresses into `out`; returns the bytes written, 0 once what was pushed is used up (push
   * more) or the stream has ended. Bytes after the end of the stream are corrupt.
   */
  pull(out: Buffer): number
  /** The stream's end was decoded and every byte of it pulled. */
  finished(): boolean
  /** The most this decoder has held at once, in bytes. */
  peakMemory(): number
  /** Frees the decoder's memory now (else when it is collected); it fails from then on. */
  close(): void
}
/**
 * The names of the counters `stats()` returns, in the order of the native list
 * (native/counters.h): `ops` are the keys of {@link NativeOpCounters}, `stats` those of
 * {@link NativeStats} after `ops` and before `mounted`.
 */
export const statNames: { readonly ops: readonly string[]; readonly stats: readonly string[] }
/**
 * What each name of `statNames.stats` is, in the same order (native/counters.h): its C++ name
 * (snake_case: the Prometheus metric's), whether it is a count since the mount or a value of
 * right now, and what it counts.
 */
export const statMeta: readonly { readonly name: string; readonly kind: 'counter' | 'gauge'; readonly help: string }[]
/** The keys of {@link NativeMountOptions}, in the order of the native list (native/options.h). */
export const mountOptionNames: readonly string[]
