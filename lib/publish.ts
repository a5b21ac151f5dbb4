/**
 * `aysfs-native publish DIR --id ID --store R`: make a directory tree servable. Every regular
 * file's content goes to `R/files/<h0>/<h1>/<md5>` (once per content, and never again when the
 * store has it), then `R/md/<id>.flist` lists the tree. Safe to run again: blobs are written to a
 * temp name, checked against the MD5 they were hashed under and renamed into place, and the flist
 * is replaced atomically after every blob it names is there, so a mount never sees a flist whose
 * blobs are missing, and an interrupted run leaves the old flist in force.
 *
 * Someone may change the tree while it is published (or race it on purpose): each file is opened
 * once, never through a link and never waiting on a FIFO, checked by its fd to be the regular file
 * the walk listed, and hashed and copied from that fd (lib/hash-worker.ts). A file that changed is
 * left out with a warning, or fails the run with `strict`.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { isUtf8 } from 'node:buffer'
import { Worker } from 'node:worker_threads'
import { isBlobInPlace, makeBlobDirs } from './blob'
import { checkChunkSize, DEFAULT_CHUNK_SIZE, formatChunkIndex, type Chunk } from './chunks'
import { AysfsError, fromSystemError } from './errors'
import { fileKindOf, type FileKind } from './file-kind'
import { FType, formatFlistLine, parseFlist, type FlistLineInput } from './flist'
import type { HashJob, HashReply, HashResult } from './hash-worker'
import { runtimeModule } from './package-root'
import { isRevision, loadSigningKey, MAX_REVISION, parseSignature, signFlist, signStartup } from './sign'
import { formatStartupList, MAX_STARTUP_SIZE, parseStartupList, type StartupEntry } from './startup'
import { sourceBlobRel, storeFlistRel, storeStartupRel } from './sources/source'
import { systemIds } from './system-ids'
import { createProgress } from './progress'
import { createTempFile, writeAll } from './temp-file'
import { flistPathProblem, forbiddenCharIn, isServiceId, normalisePrefix, SERVICE_ID_RULE } from './paths'

/** Options of {@link publish}. */
export interface PublishOptions {
  /** The directory to publish. */
  dir: string
  /** The service id: the flist is `md/<id>.flist`. */
  id: string
  /** The store root: a path or a `file://` URL. */
  store: string
  /** Flist path of `dir`; default `dir`'s absolute path. */
  prefix?: string
  /** Default `extended`: the seed format keeps regular files only. */
  format?: 'seed' | 'extended'
  /** A private key file (`aysfs-native keygen`): also write `md/<id>.flist.sig`. Checked before any work. */
  sign?: string
  /**
   * Remove the `md/<id>.flist.sig` of an older flist when publishing without `sign`. Without it,
   * such a publish is refused before any work: nodes with `main.trusted_keys` would refuse the
   * service at their next reload.
   */
  unsign?: boolean
  /**
   * The revision the signature carries (needs `sign`): greater than the revision of this id in
   * the store. Default: the current Unix time in seconds, or the store's revision + 1 if that is
   * not greater.
   */
  revision?: number
  /** The current time in ms (tests); default `Date.now`. */
  now?: () => number
  /** Files hashed at once; default the number of CPUs, at most 8. */
  jobs?: number
  /** fsync blobs and the flist before renaming them in; default true. */
  fsync?: boolean
  /** Progress display; default a bar on a TTY, lines otherwise. False: none. */
  progress?: boolean | { tty?: boolean; every?: number }
  /**
   * A file that changed while it was published (replaced, a link or a FIFO now, another size, other
   * bytes between hashing and storing) fails the run (`EAGAIN`, naming every such file) before the
   * flist is written, instead of being left out of it. Default false.
   */
  strict?: boolean
  /**
   * Also store every regular file larger than `chunkSize` as chunks, with a chunk index its flist
   * line names (extended format only). Default false.
   */
  chunks?: boolean
  /** With `chunks`: bytes a chunk, 256 KiB to 64 MiB; default 4 MiB. */
  chunkSize?: number
  /** With `chunks`: false leaves a chunked file's whole blob out of the store. Default true. */
  whole?: boolean
  /**
   * A start-up list (`aysfs-native record`'s output) to store beside the flist as
   * `md/<id>.startup`, signed in `md/<id>.startup.sig` with `sign`. Read and checked before any
   * work; every blob it names must be one the new flist names.
   */
  startup?: string
}

/** A file {@link publish} left out because it changed under it. */
export interface ChangedFile {
  file: string
  /** What was found, e.g. `is a symbolic link now (not followed)`. */
  reason: string
}

/** What {@link publish} did. */
export interface PublishResult {
  flist: string
  signature?: string
  /** The older flist's signature that was removed (`unsign`): nodes with `main.trusted_keys` now refuse the service. */
  removedSignature?: string
  /** The revision the signature carries (with `sign`). */
  revision?: number
  format: 'seed' | 'extended'
  prefix: string
  /** Lines in the flist. */
  lines: number
  /** Regular files listed, and their bytes. */
  files: number
  bytes: number
  directories: number
  symlinks: number
  /** Fifos, sockets, devices. */
  special: number
  /** Distinct contents. */
  blobs: number
  /** Blobs written now, and their bytes; the rest were in the store already. */
  written: number
  writtenBytes: number
  /** Entries the seed format cannot hold, by kind (symlink, empty directory, fifo, …). */
  skipped: Record<string, number>
  /** Files left out of the flist because they changed while they were published (none with `strict`). */
  changed: ChangedFile[]
  /** True when the flist had exactly these bytes already. */
  unchanged: boolean
  /** With `chunks`: files stored as chunks, chunk blobs written now and their bytes, and chunk
   * indexes written now (the rest were in the store). */
  chunked?: { files: number; written: number; writtenBytes: number; indexesWritten: number }
  /** With `startup`: the list written, the blobs it names, and its signature (with `sign`). */
  startup?: { file: string; blobs: number; signature?: string }
}

type Kind = FileKind

interface Item {
  /** Relative path, `/`-separated; '' for `dir` itself. */
  rel: string
  abs: string
  kind: Kind
  /** What the walk's `lstat` saw. A file must still be this device and inode when it is opened. */
  dev: bigint
  ino: bigint
  size: number
  mode: number
  uid: number
  gid: number
  rdev: bigint
  /** Unix seconds. */
  mtime: number
  ctime: number
  target?: string
  md5?: string
  /** Its chunks, when it is chunked; and the MD5 of its chunk index. */
  chunks?: Chunk[]
  index?: string
  /** Why the file was left out: it changed while it was published. */
  changed?: string
}

const FTYPE_OF: Record<Kind, FType> = {
  socket: FType.socket,
  symlink: FType.symlink,
  file: FType.file,
  blockdev: FType.blockdev,
  dir: FType.dir,
  chardev: FType.chardev,
  fifo: FType.fifo,
}

const KIND_LABEL: Record<Kind, string> = {
  file: 'file',
  dir: 'directory without files',
  symlink: 'symlink',
  fifo: 'fifo',
  socket: 'socket',
  chardev: 'character device',
  blockdev: 'block device',
}


/** The directory a store argument names: a path or `file://`; HTTP stores are not written to. */
function storeRoot(store: string): string {
  if (/^https?:\/\//i.test(store)) {
    throw new AysfsError(
      'EUSAGE',
      `publish writes to a store directory (a path or file:// URL), not to ${store}: publish to the directory your web server serves, or publish locally and copy the files/ and md/ trees over (files/ first)`,
    )
  }
  if (store.startsWith('file:')) {
    try {
      return fileURLToPath(store)
    } catch (err) {
      throw new AysfsError('EUSAGE', `--store ${store}: ${(err as Error).message}`)
    }
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(store)) throw new AysfsError('EUSAGE', `--store ${store}: only a path or a file:// URL can be published to`)
  return path.resolve(store)
}

function checkId(id: string): void {
  if (!isServiceId(id)) throw new AysfsError('EUSAGE', `--id ${JSON.stringify(id)}: a service id must be ${SERVICE_ID_RULE}`)
}

function checkPrefix(prefix: string): string {
  const p = normalisePrefix(prefix)
  const problem = flistPathProblem(p)
  if (problem) {
    throw new AysfsError('EUSAGE', `--prefix ${JSON.stringify(prefix)}: must be an absolute path without empty, "." or ".." components, "|", CR, LF or NUL (it ${problem.text})`)
  }
  return p
}

const NS = 1_000_000_000n

/** Whole seconds of a time in nanoseconds, rounded down (as for times before 1970). */
function seconds(ns: bigint): number {
  const s = ns / NS
  return Number(ns < 0n && s * NS !== ns ? s - 1n : s)
}

/** Walks `root` depth first, parents before children, names in byte order; never follows symlinks. */
function walk(root: string, exclude: Set<string>): { items: Item[]; refused: string[] } {
  const items: Item[] = []
  const refused: string[] = []
  const visit = (abs: string, rel: string): void => {
    let st: fs.BigIntStats
    try {
      // BigInt: device and inode numbers are compared exactly when the file is opened.
      st = fs.lstatSync(abs, { bigint: true })
    } catch (err) {
      throw fromSystemError(err, abs)
    }
    const kind = fileKindOf(st)
    if (!kind) return
    const item: Item = {
      rel,
      abs,
      kind,
      dev: st.dev,
      ino: st.ino,
      size: Number(st.size),
      mode: Number(st.mode),
      uid: Number(st.uid),
      gid: Number(st.gid),
      rdev: st.rdev,
      mtime: seconds(st.mtimeNs),
      ctime: seconds(st.ctimeNs),
    }
    if (kind === 'symlink') {
      item.target = fs.readlinkSync(abs)
      const bad = forbiddenCharIn(item.target, { pipe: false })
      if (bad !== undefined) refused.push(`${abs}: its symlink target contains ${bad}`)
    }
    items.push(item)
    if (kind !== 'dir') return
    let names: Buffer[]
    try {
      names = fs.readdirSync(abs, { encoding: 'buffer' })
    } catch (err) {
      throw fromSystemError(err, abs)
    }
    names.sort(Buffer.compare)
    for (const raw of names) {
      const childAbs = path.join(abs, raw.toString('utf8'))
      if (!isUtf8(raw)) {
        refused.push(`${path.join(abs, raw.toString('latin1'))}: its name is not valid UTF-8`)
        continue
      }
      const name = raw.toString('utf8')
      const what = forbiddenCharIn(name)
      if (what !== undefined) {
        refused.push(`${JSON.stringify(childAbs)}: its name contains ${what}`)
        continue
      }
      if (exclude.has(childAbs)) continue
      visit(childAbs, rel === '' ? name : `${rel}/${name}`)
    }
  }
  visit(root, '')
  return { items, refused }
}

/** A job without its `id` (the pool numbers them). */
type JobInput = HashJob extends infer J ? (J extends HashJob ? Omit<J, 'id'> : never) : never

interface Queued {
  job: HashJob
  resolve: (r: Done) => void
  reject: (e: Error) => void
}

/** A worker of the pool and the jobs posted to it that it has not answered yet. */
interface Slot {
  worker: Worker
  busy: number
}

/** A job's reply, and the worker that ran it (which holds the file a `held` reply speaks of). */
interface Done {
  reply: HashReply
  slot: Slot
}

/**
 * A fixed set of workers (lib/hash-worker.ts). Jobs queue FIFO for the next idle worker; a job
 * about a file a worker holds open goes to that worker ({@link HashPool.runOn}), since an fd is
 * used and closed by the thread that opened it.
 */
class HashPool {
  private readonly slots: Slot[] = []
  private readonly queue: Queued[] = []
  private readonly pending = new Map<number, Queued & { slot: Slot }>()
  private seq = 0
  /** Set when a worker died (or the pool closed): every job after that is refused, none waits forever. */
  private broken: Error | undefined

  constructor(size: number) {
    for (let i = 0; i < size; i++) {
      const slot: Slot = { worker: new Worker(runtimeModule('hash-worker'), { execArgv: [] }), busy: 0 }
      slot.worker.on('message', (r: HashReply) => {
        const p = this.pending.get(r.id)
        if (!p) return
        this.pending.delete(r.id)
        slot.busy--
        this.pump()
        p.resolve({ reply: r, slot })
      })
      // Its open files are closed by Node as the worker goes.
      const died = (err: Error): void => {
        this.broken ??= err
        for (const [id, p] of this.pending) {
          this.pending.delete(id)
          p.reject(err)
        }
        for (const q of this.queue.splice(0)) q.reject(err)
      }
      slot.worker.on('error', (err) => died(fromSystemError(err, 'publish: a hashing worker failed')))
      slot.worker.on('exit', (code) => died(new AysfsError('EIO', `publish: a hashing worker exited (code ${code})`)))
      this.slots.push(slot)
    }
  }

  /** Runs `job` on the next idle worker. */
  run(job: JobInput): Promise<Done> {
    return new Promise((resolve, reject) => {
      if (this.broken) return reject(this.broken)
      this.queue.push({ job: { ...job, id: ++this.seq } as HashJob, resolve, reject })
      this.pump()
    })
  }

  /** Runs `job` on `slot`'s worker, idle or not (it answers after what it was given before). */
  runOn(slot: Slot, job: JobInput): Promise<HashReply> {
    return new Promise((resolve, reject) => {
      if (this.broken) return reject(this.broken)
      this.post(slot, { job: { ...job, id: ++this.seq } as HashJob, resolve: (d) => resolve(d.reply), reject })
    })
  }

  private post(slot: Slot, q: Queued): void {
    this.pending.set(q.job.id, { ...q, slot })
    slot.busy++
    slot.worker.postMessage(q.job)
  }

  private pump(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return
      if (slot.busy === 0) this.post(slot, this.queue.shift()!)
    }
  }

  async close(): Promise<void> {
    this.broken ??= new AysfsError('EIO', 'publish: the hashing pool is closed')
    await Promise.all(this.slots.map((s) => s.worker.terminate()))
  }
}

/** Files a `hash` job takes at most, and bytes (a larger file goes alone). */
const BATCH_FILES = 32
const BATCH_BYTES = 1 << 20

/**
 * The files in walk order, cut into `hash` jobs: small files go several to a job, so that a
 * message between threads does not cost more than hashing the file it is about.
 */
function batches(files: Item[]): Item[][] {
  const out: Item[][] = []
  let cur: Item[] = []
  let bytes = 0
  for (const f of files) {
    if (cur.length > 0 && (cur.length >= BATCH_FILES || bytes + f.size > BATCH_BYTES)) {
      out.push(cur)
      cur = []
      bytes = 0
    }
    cur.push(f)
    bytes += f.size
  }
  if (cur.length > 0) out.push(cur)
  return out
}

/** Runs `fn` on every item with at most `limit` running at once; the first failure rejects. */
export async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  let failed = false
  const lane = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const item = items[next++]!
      try {
        await fn(item)
      } catch (err) {
        failed = true
        throw err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane))
}

function fail(reply: { error: { code?: string; message: string } }, file: string): never {
  const e = reply.error
  throw new AysfsError(e.code ?? 'EIO', e.message.includes(file) ? e.message : `${file}: ${e.message}`)
}

/**
 * Writes `data` to a new temp file next to `file` (a random name, created exclusively, never
 * through a link: lib/temp-file.ts) and fsyncs it; the caller renames it into place.
 */
function writeTemp(file: string, data: Buffer, fsync: boolean): string {
  const tmp = createTempFile(path.dirname(file), path.basename(file), 0o644)
  try {
    writeAll(tmp.fd, data)
    if (fsync) fs.fsyncSync(tmp.fd)
  } catch (err) {
    fs.closeSync(tmp.fd)
    fs.rmSync(tmp.path, { force: true })
    throw err
  }
  fs.closeSync(tmp.fd)
  return tmp.path
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Test hook, for the project's tests only: when `AYSFS_PUBLISH_TEST_HOOK` names a JavaScript
 * module, it is loaded after the walk and before any file is opened, and its export (a function)
 * is called with the absolute paths of the regular files the walk found; publish goes on once it
 * returns (or its promise settles). This lets a test change the tree at the one moment a racing
 * user would aim for. It gives no say over the checks, which all run after it; and whoever sets a
 * process's environment can make it run code anyway (`NODE_OPTIONS`).
 */
async function runTestHook(files: string[]): Promise<void> {
  const hook = process.env.AYSFS_PUBLISH_TEST_HOOK
  if (!hook) return
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(path.resolve(hook)) as ((files: string[]) => unknown) | { default: (files: string[]) => unknown }
  await (typeof mod === 'function' ? mod : mod.default)(files)
}

/** Sets `tmp`'s mtime to `now`, or to a whole second after `old`'s if `now` is not later than that. */
function setLaterMtime(tmp: string, old: string, now: number): void {
  let mtime = Math.floor(now / 1000)
  try {
    const before = Math.floor(fs.lstatSync(old).mtimeMs / 1000)
    if (mtime <= before) mtime = before + 1
  } catch {
    // nothing there yet
  }
  fs.utimesSync(tmp, mtime, mtime)
}

/**
 * The revision of service `id` in the store now: what its signature carries (0 for a signature
 * made before revisions); undefined when it has no readable signature.
 */
function storeRevision(flistFile: string): number | undefined {
  try {
    return parseSignature(fs.readFileSync(`${flistFile}.sig`)).revision
  } catch {
    return undefined
  }
}

/** The revision to sign with: see {@link PublishOptions.revision}. */
function chooseRevision(opts: PublishOptions, flistFile: string, now: number): number | undefined {
  if (opts.revision === undefined) {
    if (opts.sign === undefined) return undefined
    const current = storeRevision(flistFile) ?? -1
    return Math.max(Math.floor(now / 1000), current + 1)
  }
  if (!isRevision(opts.revision) || opts.revision > MAX_REVISION) {
    throw new AysfsError('EUSAGE', `--revision ${String(opts.revision)}: expected an integer from 0 to ${MAX_REVISION}`)
  }
  if (opts.sign === undefined) throw new AysfsError('EUSAGE', '--revision needs --sign: the revision is carried by the signature')
  const current = storeRevision(flistFile)
  if (current !== undefined && opts.revision <= current) {
    throw new AysfsError(
      'EUSAGE',
      `--revision ${opts.revision}: the store has revision ${current} of ${opts.id} (${flistFile}.sig); a new revision must be greater, or nodes that have revision ${current} refuse it (leave --revision out for the current time in seconds)`,
    )
  }
  return opts.revision
}

/**
 * Puts `data` at `flistFile` and `sig` (or no signature) at `flistFile.sig`; returns whether the
 * flist had these bytes already. Both files are written and fsynced under temp names first, then
 * renamed back to back: the flist, then its signature. Until the first rename the old pair is
 * whole (an interrupted run changes nothing); a node that reads the pair between the two renames
 * gets the new flist with the old signature, refuses it, and fetches the pair once more
 * (lib/pipeline/flists.ts). A start-up list and its `.sig` are put in place the same way.
 */
function replaceSigned(flistFile: string, data: Buffer, sig: Buffer | undefined, fsync: boolean, now: number): { unchanged: boolean; removedSignature: boolean } {
  const mdDir = path.dirname(flistFile)
  const sigFile = `${flistFile}.sig`
  fs.mkdirSync(mdDir, { recursive: true })
  let old: Buffer | undefined
  try {
    old = fs.readFileSync(flistFile)
  } catch {
    // a new service
  }
  const unchanged = old !== undefined && old.equals(data)
  let flistTmp: string | undefined
  let sigTmp: string | undefined
  let removedSignature = false
  try {
    if (!unchanged) flistTmp = writeTemp(flistFile, data, fsync)
    if (sig) sigTmp = writeTemp(sigFile, sig, fsync)
    // A web server's validators are the mtime in whole seconds (and the size): a file replaced
    // within the second its predecessor was written, at the same size, would keep its ETag and
    // Last-Modified, and nodes asking "changed since?" would be told no. So each new file is
    // given an mtime later than the one it replaces.
    if (flistTmp !== undefined) setLaterMtime(flistTmp, flistFile, now)
    if (sigTmp !== undefined) setLaterMtime(sigTmp, sigFile, now)
    if (flistTmp !== undefined) {
      fs.renameSync(flistTmp, flistFile)
      flistTmp = undefined
    }
    if (sigTmp !== undefined) {
      fs.renameSync(sigTmp, sigFile)
      sigTmp = undefined
    } else if (!sig) {
      // A signature of an older flist would make signed mounts refuse this one: it is wrong now.
      // Removed (one unlink) after the flist is in place, like a new signature would be renamed.
      try {
        fs.unlinkSync(sigFile)
        removedSignature = true
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
    }
  } finally {
    for (const tmp of [flistTmp, sigTmp]) if (tmp !== undefined) fs.rmSync(tmp, { force: true })
  }
  if (fsync) fsyncDir(mdDir)
  return { unchanged, removedSignature }
}

/**
 * Whether the store can be written: the nearest directory of `md/` that exists is searched and
 * written to (access(2), no file made), so a read-only or foreign store fails before any hashing.
 */
function checkWritable(root: string): void {
  for (let dir = path.join(root, 'md'); ; dir = path.dirname(dir)) {
    let st: fs.Stats
    try {
      st = fs.statSync(dir)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if ((code === 'ENOENT' || code === 'ENOTDIR') && dir !== path.dirname(dir)) continue
      throw fromSystemError(err, `store ${root}: cannot write to ${dir}`)
    }
    if (!st.isDirectory()) throw new AysfsError('ENOTDIR', `store ${root}: ${dir} is not a directory`)
    try {
      fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK)
    } catch (err) {
      throw fromSystemError(err, `store ${root}: cannot write to ${dir}`)
    }
    return
  }
}

/**
 * Publishes `opts.dir` into the store as service `opts.id`. See the module comment.
 * @throws AysfsError `EUSAGE`/`EINVAL` (exit status 2) for bad arguments and for names a flist
 *   cannot hold (`|`, CR, LF, not UTF-8: every such path is named); `EAGAIN` with `strict` when
 *   a file changed while it was published (every such file is named; without `strict` they are
 *   left out and listed in the result's `changed`); fs codes for unreadable files or an
 *   unwritable store.
 */
export async function publish(opts: PublishOptions): Promise<PublishResult> {
  const format = opts.format ?? 'extended'
  if (format !== 'seed' && format !== 'extended') throw new AysfsError('EUSAGE', `--format ${String(format)}: expected seed or extended`)
  checkId(opts.id)
  const chunkSize = chunkOptions(opts, format)
  const dir = path.resolve(opts.dir)
  let dst: fs.Stats
  try {
    dst = fs.statSync(dir)
  } catch (err) {
    throw new AysfsError('EUSAGE', `${dir}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (err as Error).message}`)
  }
  if (!dst.isDirectory()) throw new AysfsError('EUSAGE', `${dir} is not a directory`)
  const prefix = checkPrefix(opts.prefix ?? dir)
  const root = storeRoot(opts.store)
  const fsync = opts.fsync ?? true
  // Before any work (hashing a large tree takes a while): the key, the store, the old signature.
  if (opts.sign !== undefined && opts.unsign) throw new AysfsError('EUSAGE', '--sign and --unsign: give one of them')
  const signingKey = opts.sign !== undefined ? loadSigningKey(path.resolve(opts.sign)) : undefined
  if (opts.revision !== undefined && opts.sign === undefined) throw new AysfsError('EUSAGE', '--revision needs --sign: the revision is carried by the signature')
  checkWritable(root)
  const flistFile = path.join(root, storeFlistRel(opts.id))
  if (opts.sign === undefined && !opts.unsign && fs.existsSync(`${flistFile}.sig`)) {
    throw new AysfsError(
      'EUSAGE',
      `${flistFile}.sig: the flist in the store is signed; publishing without --sign would remove its signature, and nodes with main.trusted_keys would refuse ${opts.id}: sign it (--sign KEY), or pass --unsign to remove the signature`,
    )
  }
  const now = opts.now ?? Date.now
  // An explicit revision is checked before any work: one that nodes would refuse fails at once.
  if (opts.revision !== undefined) chooseRevision(opts, flistFile, now())
  const startup = opts.startup !== undefined ? readStartupFile(opts.startup) : undefined

  // The store may live inside the tree (publish . --store ./store): never publish it into itself.
  const exclude = new Set<string>([root])
  try {
    exclude.add(fs.realpathSync(root))
  } catch {
    // not there yet
  }
  const { items, refused } = walk(dir, exclude)
  if (refused.length > 0) {
    const shown = refused.slice(0, 20).map((r) => `  ${r}`).join('\n')
    const more = refused.length > 20 ? `\n  … and ${refused.length - 20} more` : ''
    throw new AysfsError('EINVAL', `cannot publish ${refused.length} path(s): a flist path cannot contain "|", CR, LF or NUL, and must be UTF-8; rename them:\n${shown}${more}`)
  }

  const walked = items.filter((i) => i.kind === 'file')
  await runTestHook(walked.map((f) => f.abs))
  const showProgress = opts.progress !== false
  const progressOpts = typeof opts.progress === 'object' ? opts.progress : {}
  const work = batches(walked)
  const jobs = Math.max(1, Math.min(opts.jobs ?? Math.min(8, os.availableParallelism()), work.length || 1))
  const pool = new HashPool(jobs)
  // Per content: true once the store has it; while one file's copy is storing it, a promise of
  // whether it did (a file that changed between hashing and storing stores nothing).
  const blobs = new Map<string, true | Promise<boolean>>()
  let written = 0
  let writtenBytes = 0
  const chunked = { files: 0, written: 0, writtenBytes: 0, indexesWritten: 0 }
  let firstError: unknown

  /** One file, hashed (`r`): stored from the fd its worker holds when the store lacks its bytes. */
  const settleFile = async (f: Item, r: HashResult, slot: Slot): Promise<void> => {
    if ('error' in r) fail(r, f.abs)
    if ('changed' in r) {
      f.changed = r.changed
      return
    }
    const md5 = r.md5
    f.md5 = md5
    if (r.chunks) f.chunks = r.chunks
    if (r.held !== undefined && r.chunksMissing) {
      // Its chunk blobs first, from the fd the worker holds (which stays held for the whole blob).
      const c = await pool.runOn(slot, { op: 'chunks', of: r.held, store: root, chunks: r.chunks!, fsync }).catch(async (err: unknown) => {
        await pool.runOn(slot, { op: 'release', of: r.held! }).catch(() => undefined)
        throw err
      })
      if ('changed' in c || 'error' in c || r.wholeDone) await pool.runOn(slot, { op: 'release', of: r.held }).catch(() => undefined)
      if ('error' in c) fail(c, f.abs)
      if ('changed' in c) {
        f.changed = c.changed
        return
      }
      if ('chunksWritten' in c) {
        chunked.written += c.chunksWritten
        chunked.writtenBytes += c.chunkBytes
      }
      if (r.wholeDone) return
    }
    if (r.held === undefined || r.wholeDone) {
      // Empty, or in the store already.
      if (f.size > 0 && !blobs.has(md5)) blobs.set(md5, true)
      return
    }
    // The store lacked these bytes: the worker holds the file open until a copy or a release.
    let held = true
    try {
      for (;;) {
        const b = blobs.get(md5)
        if (b === true) return
        if (b !== undefined) {
          // Another file with these bytes is storing them; if it cannot (it changed), this one will.
          await b
          continue
        }
        if (firstError !== undefined) return
        let settle!: (stored: boolean) => void
        blobs.set(md5, new Promise<boolean>((resolve) => (settle = resolve)))
        let stored = false
        try {
          held = false // the copy closes it, whatever happens
          const c = await pool.runOn(slot, { op: 'copy', of: r.held, dest: path.join(root, sourceBlobRel('store', md5)), fsync })
          if ('error' in c) fail(c, f.abs)
          if ('changed' in c) {
            f.changed = c.changed
            return
          }
          stored = true
          written++
          writtenBytes += f.size
          return
        } finally {
          if (stored) blobs.set(md5, true)
          else blobs.delete(md5)
          settle(stored)
        }
      }
    } finally {
      // A pool that broke has lost its workers, and Node closed their files.
      if (held) await pool.runOn(slot, { op: 'release', of: r.held }).catch(() => undefined)
    }
  }

  // 1. Every file once: open, check, hash, and store its bytes if the store lacks them.
  const total = walked.reduce((n, f) => n + f.size, 0)
  const bar = showProgress ? createProgress({ label: 'publishing', files: walked.length, bytes: total, ...progressOpts }) : undefined
  try {
    // Two batches per worker keep it busy without holding a promise (or an open file) per file
    // of a huge tree. No lane throws: each settles its files (and their open fds) first.
    await forEachLimit(work, jobs * 2, async (batch) => {
      if (firstError !== undefined) return
      try {
        const files = batch.map((f) => ({ file: f.abs, dev: f.dev, ino: f.ino, size: f.size }))
        const { reply, slot } = await pool.run({ op: 'hash', files, store: root, ...(chunkSize !== undefined ? { chunkSize, whole: opts.whole ?? true } : {}) })
        if ('error' in reply) fail(reply, batch[0]!.abs)
        if (!('results' in reply)) throw new AysfsError('EIO', 'publish: a hashing worker gave an unexpected reply')
        await Promise.all(batch.map((f, i) => settleFile(f, reply.results[i]!, slot).catch((err: unknown) => void (firstError ??= err))))
      } catch (err) {
        firstError ??= err
      }
      bar?.add(batch.length, batch.reduce((n, f) => n + f.size, 0))
    })
  } finally {
    bar?.stop()
    await pool.close()
  }
  if (firstError !== undefined) throw firstError

  const changed: ChangedFile[] = walked.filter((f) => f.changed !== undefined).map((f) => ({ file: f.abs, reason: f.changed! }))
  if (changed.length > 0 && opts.strict) {
    const shown = changed.slice(0, 20).map((c) => `  ${c.file}: ${c.reason}`).join('\n')
    const more = changed.length > 20 ? `\n  … and ${changed.length - 20} more` : ''
    throw new AysfsError(
      'EAGAIN',
      `${changed.length} file(s) changed while they were published (--strict); the flist was not written, run publish again:\n${shown}${more}`,
    )
  }
  // A file that changed is left out: the flist lists what was checked, hashed and stored.
  const listed = changed.length > 0 ? items.filter((i) => i.changed === undefined) : items
  const files = listed.filter((i) => i.kind === 'file')
  // Chunk indexes after their chunks, before the flist that names them.
  for (const f of files) {
    if (!f.chunks) continue
    chunked.files++
    const index = writeChunkIndex(root, f.chunks, fsync)
    f.index = index.md5
    if (index.written) chunked.indexesWritten++
  }

  // 2. The flist.
  const { users: { byId: users }, groups: { byId: groups } } = systemIds()
  const flistPath = (rel: string): string => (rel === '' ? prefix : prefix === '/' ? `/${rel}` : `${prefix}/${rel}`)
  // Seed: a directory exists only as the parent of a file line.
  const implied = new Set<string>()
  if (format === 'seed') {
    for (const f of files) {
      for (let r = f.rel; r.includes('/'); ) {
        r = r.slice(0, r.lastIndexOf('/'))
        if (implied.has(r)) break
        implied.add(r)
      }
    }
  }
  const skipped: Record<string, number> = {}
  const lines: string[] = []
  let directories = 0
  let symlinks = 0
  let special = 0
  for (const i of listed) {
    if (i.kind === 'dir') {
      if (i.rel !== '') directories++
    } else if (i.kind === 'symlink') symlinks++
    else if (i.kind !== 'file') special++
    if (format === 'seed') {
      if (i.kind === 'file') lines.push(formatFlistLine({ path: flistPath(i.rel), md5: i.md5!, size: i.size }, 'seed'))
      else if (i.kind !== 'dir' || (i.rel !== '' && !implied.has(i.rel))) {
        // A directory with files below it is implied by their paths; anything else has no seed line.
        const label = KIND_LABEL[i.kind]
        skipped[label] = (skipped[label] ?? 0) + 1
      }
      continue
    }
    const line: FlistLineInput = {
      path: flistPath(i.rel),
      ftype: FTYPE_OF[i.kind],
      uname: users.get(i.uid) ?? String(i.uid),
      gname: groups.get(i.gid) ?? String(i.gid),
      perm: i.mode & 0o7777,
      mtime: i.mtime,
      ctime: i.ctime,
    }
    if (i.kind === 'file') {
      line.md5 = i.md5!
      line.size = i.size
      if (i.index !== undefined) line.chunks = i.index
    } else if (i.kind === 'symlink') {
      line.target = i.target!
    } else if (i.kind === 'chardev' || i.kind === 'blockdev') {
      // glibc's gnu_dev_major/minor: 12 bits of major and 20 of minor, split across the word.
      const rdev = i.rdev
      line.rdevMajor = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn & 0xffffffffn))
      line.rdevMinor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn & 0xffffffffn))
    }
    lines.push(formatFlistLine(line, 'extended'))
  }
  const data = Buffer.from(lines.length > 0 ? `${lines.join('\n')}\n` : '')
  // What we write must mount: check it with the parser the mount uses.
  parseFlist(data, { name: opts.id, prefix, file: `${opts.id}.flist` })
  // A start-up list names blobs of this flist only (a node would drop any other): checked
  // before the flist moves.
  const named = new Set(files.map((f) => f.md5!))
  if (startup) checkStartup(startup, named, opts.id)

  const revision = chooseRevision(opts, flistFile, now())
  const sig = signingKey !== undefined ? signFlist(data, signingKey, { id: opts.id, revision: revision! }) : undefined
  let unchanged: boolean
  let removedSignature: boolean
  try {
    ;({ unchanged, removedSignature } = replaceSigned(flistFile, data, sig, fsync, now()))
  } catch (err) {
    throw fromSystemError(err, `store ${root}: cannot write ${flistFile}`)
  }
  const stored = startup && storeStartupList(root, opts.id, startup, named, signingKey && { key: signingKey, revision: revision! }, fsync, now())

  return {
    flist: flistFile,
    ...(sig ? { signature: `${flistFile}.sig`, revision } : {}),
    ...(removedSignature ? { removedSignature: `${flistFile}.sig` } : {}),
    format,
    prefix,
    lines: lines.length,
    files: files.length,
    bytes: files.reduce((n, f) => n + f.size, 0),
    directories,
    symlinks,
    special,
    blobs: new Set(files.filter((f) => f.size > 0).map((f) => f.md5!)).size,
    written,
    writtenBytes,
    skipped,
    changed,
    unchanged,
    ...(chunkSize !== undefined ? { chunked } : {}),
    ...(stored ? { startup: stored } : {}),
  }
}

/** A start-up list read from a file ({@link readStartupFile}). */
export interface StartupFile {
  file: string
  entries: StartupEntry[]
}

/**
 * `--startup FILE`, read and parsed (publish does it before any work).
 * @throws AysfsError `EUSAGE` when it cannot be read; `EINVAL` (with the file and line) for a bad line.
 */
export function readStartupFile(file: string): StartupFile {
  let data: Buffer
  try {
    const st = fs.statSync(file)
    if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EINVAL' })
    if (st.size > MAX_STARTUP_SIZE) throw new Error(`larger than ${MAX_STARTUP_SIZE} bytes`)
    data = fs.readFileSync(file)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new AysfsError('EUSAGE', `--startup ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`, { file, cause: err })
  }
  return { file, entries: parseStartupList(data, file) }
}

/**
 * What `publish --startup` does once the flist is in place: stores `list` as
 * `<root>/md/<id>.startup` (one MD5 a line, lower case, each once: the text nodes get), with its
 * signature when `sign` is given (else a stale `.sig` is removed), each through a temp file,
 * fsync and rename, after checking that `named` (the MD5s of the flist's regular files) has every
 * blob it names. After the flist, as the flist after its blobs: a node that comes between gets
 * the new flist with the old list, and drops what the new flist does not name. (Exported for the
 * WAN bench, whose flists are written by a walker of its own.)
 * @throws AysfsError `EINVAL` as {@link checkStartup}; the fs error naming the file.
 */
export function storeStartupList(
  root: string,
  id: string,
  list: StartupFile,
  named: ReadonlySet<string>,
  sign: { key: crypto.KeyObject; revision: number } | undefined,
  fsync: boolean,
  now: number,
): { file: string; blobs: number; signature?: string } {
  const data = checkStartup(list, named, id)
  const file = path.join(root, storeStartupRel(id))
  const sig = sign && signStartup(data, sign.key, { id, revision: sign.revision })
  try {
    replaceSigned(file, data, sig, fsync, now)
  } catch (err) {
    throw fromSystemError(err, `store ${root}: cannot write ${file}`)
  }
  return { file, blobs: list.entries.length, ...(sig ? { signature: `${file}.sig` } : {}) }
}

/**
 * The start-up list's text as the store gets it, once every blob it names is in `named` (the
 * flist's regular files).
 * @throws AysfsError `EINVAL` naming the list's line of the first blob the flist does not name.
 */
function checkStartup(list: StartupFile, named: ReadonlySet<string>, id: string): Buffer {
  const stray = list.entries.find((e) => !named.has(e.md5))
  if (stray) {
    throw new AysfsError(
      'EINVAL',
      `--startup ${list.file} line ${stray.line}: blob ${stray.md5} is not named by the flist of ${id} being published: a start-up list names blobs of its service's own tree (record it again against this tree: aysfs-native record --ays ${id} …)`,
      { file: list.file, line: stray.line },
    )
  }
  return formatStartupList(list.entries.map((e) => e.md5))
}

/** The chunk size `publish` cuts at, or undefined without `chunks`; refuses what cannot go together. */
function chunkOptions(opts: PublishOptions, format: 'seed' | 'extended'): number | undefined {
  if (!opts.chunks) {
    if (opts.chunkSize !== undefined) throw new AysfsError('EUSAGE', '--chunk-size needs --chunks')
    if (opts.whole === false) throw new AysfsError('EUSAGE', '--no-whole needs --chunks')
    return undefined
  }
  if (format === 'seed') throw new AysfsError('EUSAGE', '--chunks needs the extended format: seed lines cannot name a chunk index (drop --format seed)')
  return checkChunkSize(opts.chunkSize ?? DEFAULT_CHUNK_SIZE)
}

/**
 * Puts the chunk index listing `chunks` in the store, as a blob named by its MD5 (temp name,
 * fsync, rename), unless it is there already.
 */
function writeChunkIndex(root: string, chunks: readonly Chunk[], fsync: boolean): { md5: string; written: boolean } {
  const data = formatChunkIndex(chunks)
  const md5 = crypto.createHash('md5').update(data).digest('hex')
  const dest = path.join(root, sourceBlobRel('store', md5))
  if (isBlobInPlace(dest, data.length)) return { md5, written: false }
  try {
    makeBlobDirs(dest)
    fs.renameSync(writeTemp(dest, data, fsync), dest)
  } catch (err) {
    throw fromSystemError(err, `store ${root}: cannot write the chunk index ${dest}`)
  }
  return { md5, written: true }
}
