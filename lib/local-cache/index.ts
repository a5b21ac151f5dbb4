/**
 * The local cache: the directory of checked blobs the native side serves from (what CernVM-FS
 * calls the cache manager). {@link LocalCache} is one user's handle on it: it owns the layout
 * (layout.ts), who may own the directory (dir.ts), temp files and their clean-up (temp.ts),
 * putting checked blobs in place (blob-writer.ts, through the addon's committer: committer.ts),
 * making room (the quota and its evictions: quota.ts) and the kept flists and start-up lists
 * (read back without following a link: read-kept.ts).
 * `verify` re-hashes a cache with check.ts.
 *
 * Errors of the cache itself are `AysfsError` `EIO` naming the directory (their `cause` the fs
 * error), so a caller never blames a source for them.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { BLOB_NAME, blobRel } from '../blob'
import { AysfsError } from '../errors'
import type { Logger } from '../log'
import { writeAll } from '../temp-file'
import { BlobWriter, LocalFailure } from './blob-writer'
import { CACHE_FILE_MODE, makeCacheSubdir, octalMode, prepareCacheDir } from './dir'
import { KEPT_DIR, TMP_DIR, blobPath, keptFlistPath, keptStartupPath } from './layout'
import { acquireQuota, releaseQuota, type CacheQuota, type QuotaStats } from './quota'
import { readRegularFile } from './read-kept'
import { cleanTmp, tempName } from './temp'

export { cachedBlobs, checkCachedBlob } from './check'
export { prepareCacheDir } from './dir'
export { BAD_DIR, TMP_DIR } from './layout'
export { isNoSpace, type QuotaStats } from './quota'
export { cleanTmp } from './temp'

/** How long {@link LocalCache.close} waits for blobs already handed to the committer. */
const CLOSE_COMMITS_MS = 1000

/** Options of {@link LocalCache}. */
export interface LocalCacheOptions {
  /** The cache directory (made 0700 if missing; refused if another user owns it or may write in it). */
  dir: string
  /** `main.cache_size` in bytes; 0: unbounded. */
  quota: number
  log: Logger
  /** fsync blobs and kept flists before renaming them in; default true (tests may turn it off). */
  fsync?: boolean
}

/** What {@link LocalCache.makeRoom} did about a full disk. */
export interface Room {
  /** Blobs evicted, and their bytes on disk. */
  evicted: number
  bytes: number
  /** The file system has room for the blob now. */
  room: boolean
  /** Set when evicting could never make room: why (nothing was evicted). */
  never?: string
}

/** A kept flist ({@link LocalCache.readKeptFlist}). */
export interface KeptFlist {
  file: string
  data: Buffer
  /** Its signature, when asked for and kept. */
  signature?: Buffer
}

/** One user's handle on a local cache directory; see the module comment. */
export class LocalCache {
  /** The absolute path of the directory. */
  readonly dir: string
  /** {@link dir} normalized, with a trailing `/`: see {@link path}. */
  private readonly blobPrefix: string
  readonly tmpDir: string
  private readonly log: Logger
  private readonly fsync: boolean
  private readonly quota: CacheQuota
  /** Commits handed to the committer and not reported yet: {@link close} waits for them. */
  private readonly commits = new Set<Promise<void>>()
  /** Blobs this handle pinned and has not released yet (releases are due the turn after). */
  private pinned = 0
  private releaseWaiters: (() => void)[] = []
  private closed = false

  /**
   * Checks the directory (lib/local-cache/dir.ts: made 0700, or refused), makes `tmp/`, removes
   * the temp files of dead writers and joins the quota of the directory (shared by every handle
   * on it in this thread).
   * @throws AysfsError naming the directory: `EINVAL` (key `main.cache`) for a directory another
   *   user owns or others may write in, `ENOTDIR`, `EIO`.
   */
  constructor(opts: LocalCacheOptions) {
    this.log = opts.log
    this.fsync = opts.fsync ?? true
    const made = prepareCacheDir(opts.dir)
    this.dir = opts.dir
    this.blobPrefix = path.join(this.dir, 'x').slice(0, -1) // normalized, with its last '/'
    if (made.previousMode !== undefined) {
      const was = octalMode(made.previousMode)
      this.log.info({ cache: this.dir, mode: was }, `local cache ${this.dir}: mode ${was} set to 0700 (only the user that mounts may read what is cached)`)
    }
    this.tmpDir = path.join(this.dir, TMP_DIR)
    try {
      makeCacheSubdir(this.tmpDir)
    } catch (err) {
      throw new AysfsError('EIO', `local cache ${this.dir}: ${(err as Error).message}`, { key: 'main.cache', cause: err })
    }
    cleanTmp(this.tmpDir)
    this.quota = acquireQuota(this.dir, opts.quota, this.log)
    this.quota.trashName ??= (label) => tempName(this.tmpDir, label)
  }

  /** Where the blob lives (or will). */
  path(md5: string): string {
    // The miss path asks this several times a blob: a lowercase hex MD5 is joined to the
    // normalized directory as it is (path.join's normalizing cost 5 to 8 µs a blob on the miss
    // worker); anything else goes through blobPath, which normalizes.
    if (BLOB_NAME.test(md5)) return this.blobPrefix + blobRel(md5)
    return blobPath(this.dir, md5.toLowerCase())
  }

  /** Whether the cache holds the blob with the right size (its content is trusted: only checked
   * content is ever renamed in). */
  has(md5: string, size: number): boolean {
    try {
      // No exception (and its stack trace) for the common answer on the miss path: not there.
      // lstat: a symlink planted in the cache is not a blob (the engine never follows one
      // either); the download's rename replaces it.
      const st = fs.lstatSync(this.path(md5), { throwIfNoEntry: false })
      return st !== undefined && st.isFile() && st.size === size
    } catch {
      return false
    }
  }

  /** A writer for the blob, its temp file in `tmp/` (made again if someone removed it). */
  writer(md5: string, size: number): BlobWriter {
    const make = (): BlobWriter => new BlobWriter(md5, size, tempName(this.tmpDir, md5), this.fsync)
    try {
      try {
        return make()
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        makeCacheSubdir(this.tmpDir)
        return make()
      }
    } catch (err) {
      throw this.failure(err)
    }
  }

  /** Puts the checked blob of `writer` in place and counts it for the quota; {@link close} waits
   * for it. Rejects with the cache's `EIO` (the fs error its cause). */
  async commit(writer: BlobWriter): Promise<void> {
    const done = writer.commit(this.path(writer.md5))
    this.commits.add(done)
    try {
      await done
    } catch (err) {
      throw this.failure(err)
    } finally {
      this.commits.delete(done)
    }
    if (writer.size > 0) this.quota.added(writer.size)
  }

  /**
   * What a try to write `writer` failed with, when the fault is the cache's and not the source's:
   * the cache's `EIO`; else undefined.
   */
  failureOf(err: unknown, writer: BlobWriter): AysfsError | undefined {
    if (err instanceof AysfsError) return err
    const local = err instanceof LocalFailure ? err : writer.failure
    return local ? this.failure(local) : undefined
  }

  /** The cache's own failure: `EIO` naming it, `err` the cause. */
  private failure(err: unknown): AysfsError {
    if (err instanceof AysfsError) return err
    return new AysfsError('EIO', `local cache ${this.dir}: ${(err as Error).message}`, { cause: err })
  }

  /** Keeps `md5` from being evicted until {@link releaseSoon}; starts the quota's passes. */
  pin(md5: string): void {
    this.pinned++
    this.quota.pin(md5)
    this.quota.start()
  }

  /**
   * The fetch of `md5` settled: its pin goes the event-loop turn after, by when whoever waited
   * for it (the engine's parked reads) has been answered from the file (quota.ts).
   */
  releaseSoon(md5: string): void {
    setImmediate(() => {
      this.pinned--
      this.quota.unpin(md5)
      const waiters = this.releaseWaiters
      this.releaseWaiters = []
      for (const w of waiters) w()
    })
  }

  /** Whether this handle pins blobs besides one (the asker's own), which will be let go. */
  othersPinned(): boolean {
    return this.pinned > 1
  }

  /** Resolves when this handle next lets a pinned blob go. */
  nextRelease(): Promise<void> {
    return new Promise((resolve) => this.releaseWaiters.push(resolve))
  }

  /** Why a blob of `size` bytes can never be kept here (larger than the quota or the file
   * system), or undefined. */
  neverFits(size: number): string | undefined {
    return this.quota.neverFits(size)
  }

  /** The disk is full: evict least recently used blobs until it has room for `size` bytes. */
  makeRoom(size: number): Room {
    return this.quota.makeRoomSync(size)
  }

  /** Atomically replace `md/<id>.flist` (and its `.sig`; `null` removes a stale one). A failure
   * is logged, not thrown: the copy is for a later start without a store. */
  keepFlist(id: string, data: Buffer, signature: Buffer | undefined | null): void {
    this.keep(id, 'flist', this.keptFlistFile(id), data, signature)
  }

  /** `md/<id>.flist`: where the copy of a service's flist is kept. */
  keptFlistFile(id: string): string {
    return keptFlistPath(this.dir, id)
  }

  /** The kept copy of a service's flist (and its signature, if asked for and kept).
   * @throws the fs error when there is none. */
  readKeptFlist(id: string, withSignature: boolean): KeptFlist {
    return this.readKept(this.keptFlistFile(id), withSignature, Infinity)
  }

  /**
   * Atomically replace `md/<id>.startup` (and its `.sig` as {@link keepFlist} does), or remove
   * both when `data` is undefined (the store has no list any more). A failure is logged.
   */
  keepStartup(id: string, data: Buffer | undefined, signature: Buffer | undefined | null): void {
    const file = keptStartupPath(this.dir, id)
    if (data !== undefined) return this.keep(id, 'start-up list', file, data, signature)
    for (const f of [file, `${file}.sig`]) {
      try {
        fs.rmSync(f, { force: true })
      } catch (err) {
        this.log.warn({ id, file: f }, `start-up list ${id}: cannot remove ${f}: ${(err as Error).message}`)
      }
    }
  }

  /**
   * The kept copy of a service's start-up list (and its signature, if asked for and kept); at most
   * `maxBytes`, and undefined when there is none.
   * @throws the fs error for anything else (a link, a directory, too large: `EFBIG`).
   */
  readKeptStartup(id: string, withSignature: boolean, maxBytes: number): KeptFlist | undefined {
    try {
      return this.readKept(keptStartupPath(this.dir, id), withSignature, maxBytes)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }

  /** Writes `file` (and its `.sig`: `undefined` removes a stale one, `null` leaves it) through temp
   * files renamed in, so a link planted there is replaced, never written through. */
  private keep(id: string, what: string, file: string, data: Buffer, signature: Buffer | undefined | null): void {
    const dir = path.join(this.dir, KEPT_DIR)
    const write = (to: string, buf: Buffer) => {
      const tmp = tempName(this.tmpDir, `md-${id.length > 64 ? id.slice(0, 64) : id}`)
      const fd = fs.openSync(tmp, 'wx', CACHE_FILE_MODE)
      try {
        writeAll(fd, buf)
        if (this.fsync) fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
      fs.renameSync(tmp, to)
    }
    try {
      makeCacheSubdir(dir)
      write(file, data)
      if (signature) write(`${file}.sig`, signature)
      else if (signature === undefined) fs.rmSync(`${file}.sig`, { force: true })
    } catch (err) {
      this.log.warn({ id, dir }, `${what} ${id}: cannot keep a copy in ${dir}: ${(err as Error).message}`)
    }
  }

  /** A kept file and its `.sig` (when asked for and there), each opened without following a link
   * and read from that fd only if it is a regular file of at most `maxBytes`. */
  private readKept(file: string, withSignature: boolean, maxBytes: number): KeptFlist {
    const kept: KeptFlist = { file, data: readRegularFile(file, maxBytes) }
    if (withSignature) {
      try {
        kept.signature = readRegularFile(`${file}.sig`, maxBytes)
      } catch {
        // none kept
      }
    }
    return kept
  }

  /** The quota's counters, for `status`. */
  stats(): QuotaStats {
    return this.quota.stats()
  }

  /**
   * Lets go of the quota and waits, about a second at most, for the blobs already handed to the
   * committer to be in place (or gone): whoever removes the directory after this resolves does
   * not race a late rename. Idempotent.
   */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true
      releaseQuota(this.quota)
    }
    if (this.commits.size === 0) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([Promise.allSettled([...this.commits]), new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_COMMITS_MS)))])
    clearTimeout(timer)
  }
}
