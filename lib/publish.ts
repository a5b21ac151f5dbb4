/**
 * `aysfs-native publish DIR --id ID --store R`: make a directory tree servable. Every regular
 * file's content goes to `R/files/<h0>/<h1>/<md5>` (once per content, and never again when the
 * store has it), then `R/md/<id>.flist` lists the tree. Safe to run again: blobs are written to a
 * temp name, checked against the MD5 they were hashed under and renamed into place, and the flist
 * is replaced atomically after every blob it names is there, so a mount never sees a flist whose
 * blobs are missing, and an interrupted run leaves the old flist in force.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { isUtf8 } from 'node:buffer'
import { Worker } from 'node:worker_threads'
import { AysfsError } from './errors'
import { EMPTY_MD5, FType, formatFlistLine, parseFlist, type FlistLineInput } from './flist'
import type { HashJob, HashReply } from './hash-worker'
import { runtimeModule } from './native'
import { signFlist } from './sign'
import { createProgress, type Progress } from './progress'
import { createTempFile, writeAll } from './temp-file'

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
  /** A private key file (`aysfs-native keygen`): also write `md/<id>.flist.sig`. */
  sign?: string
  /** Files hashed at once; default the number of CPUs, at most 8. */
  jobs?: number
  /** fsync blobs and the flist before renaming them in; default true. */
  fsync?: boolean
  /** Progress display; default a bar on a TTY, lines otherwise. False: none. */
  progress?: boolean | { tty?: boolean; every?: number }
}

/** What {@link publish} did. */
export interface PublishResult {
  flist: string
  signature?: string
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
  /** True when the flist had exactly these bytes already. */
  unchanged: boolean
}

type Kind = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chardev' | 'blockdev'

interface Item {
  /** Relative path, `/`-separated; '' for `dir` itself. */
  rel: string
  abs: string
  kind: Kind
  st: fs.Stats
  target?: string
  md5?: string
  size?: number
  empty?: boolean
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

function kindOf(st: fs.Stats): Kind | undefined {
  if (st.isFile()) return 'file'
  if (st.isDirectory()) return 'dir'
  if (st.isSymbolicLink()) return 'symlink'
  if (st.isFIFO()) return 'fifo'
  if (st.isSocket()) return 'socket'
  if (st.isCharacterDevice()) return 'chardev'
  if (st.isBlockDevice()) return 'blockdev'
  return undefined
}

/** The directory a store argument names: a path or `file://`; HTTP stores are not written to. */
export function storeRoot(store: string): string {
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
  if (typeof id !== 'string' || id === '' || id === '.' || id === '..' || /[/\\\0-\x1f\x7f]/.test(id)) {
    throw new AysfsError('EUSAGE', `--id ${JSON.stringify(id)}: a service id must be usable as a file name (no "/", "\\" or control characters, not "." or "..")`)
  }
}

function checkPrefix(prefix: string): string {
  const p = prefix.length > 1 ? prefix.replace(/\/+$/, '') : prefix
  if (!p.startsWith('/') || (p !== '/' && p.slice(1).split('/').some((c) => c === '' || c === '.' || c === '..')) || /[|\r\n\0]/.test(p)) {
    throw new AysfsError('EUSAGE', `--prefix ${JSON.stringify(prefix)}: must be an absolute path without empty, "." or ".." components, "|", CR, LF or NUL`)
  }
  return p
}

/** uid → name and gid → name from /etc/passwd and /etc/group (the first line for an id wins). */
function idNames(file: string): Map<number, string> {
  const m = new Map<number, string>()
  let text = ''
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch {
    return m
  }
  for (const line of text.split('\n')) {
    const f = line.split(':')
    if (f.length < 3 || f[0] === '' || f[0]!.startsWith('#') || /[|\r\n]/.test(f[0]!)) continue
    const id = Number(f[2])
    if (Number.isInteger(id) && !m.has(id)) m.set(id, f[0]!)
  }
  return m
}

/** Walks `root` depth first, parents before children, names in byte order; never follows symlinks. */
function walk(root: string, exclude: Set<string>): { items: Item[]; refused: string[] } {
  const items: Item[] = []
  const refused: string[] = []
  const visit = (abs: string, rel: string): void => {
    let st: fs.Stats
    try {
      st = fs.lstatSync(abs)
    } catch (err) {
      throw new AysfsError((err as NodeJS.ErrnoException).code ?? 'EIO', `${abs}: ${(err as Error).message}`, { cause: err })
    }
    const kind = kindOf(st)
    if (!kind) return
    const item: Item = { rel, abs, kind, st }
    if (kind === 'symlink') {
      item.target = fs.readlinkSync(abs)
      if (/[\r\n\0]/.test(item.target)) refused.push(`${abs}: its symlink target contains CR or LF`)
    }
    items.push(item)
    if (kind !== 'dir') return
    let names: Buffer[]
    try {
      names = fs.readdirSync(abs, { encoding: 'buffer' })
    } catch (err) {
      throw new AysfsError((err as NodeJS.ErrnoException).code ?? 'EIO', `${abs}: ${(err as Error).message}`, { cause: err })
    }
    names.sort(Buffer.compare)
    for (const raw of names) {
      const childAbs = path.join(abs, raw.toString('utf8'))
      if (!isUtf8(raw)) {
        refused.push(`${path.join(abs, raw.toString('latin1'))}: its name is not valid UTF-8`)
        continue
      }
      const name = raw.toString('utf8')
      const what = name.includes('|') ? 'a "|"' : name.includes('\r') ? 'a carriage return (CR)' : name.includes('\n') ? 'a line feed (LF)' : undefined
      if (what) {
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

/** A fixed set of hashing workers; jobs queue FIFO. */
class HashPool {
  private readonly workers: Worker[] = []
  private readonly idle: Worker[] = []
  private readonly queue: Array<{ job: HashJob; resolve: (r: HashReply) => void; reject: (e: Error) => void }> = []
  private readonly pending = new Map<number, { resolve: (r: HashReply) => void; reject: (e: Error) => void; worker: Worker }>()
  private seq = 0

  constructor(size: number) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(runtimeModule('hash-worker'), { execArgv: [] })
      w.on('message', (r: HashReply) => {
        const p = this.pending.get(r.id)
        if (!p) return
        this.pending.delete(r.id)
        this.idle.push(w)
        this.pump()
        p.resolve(r)
      })
      w.on('error', (err) => {
        for (const [id, p] of this.pending) {
          if (p.worker !== w) continue
          this.pending.delete(id)
          p.reject(err)
        }
      })
      this.workers.push(w)
      this.idle.push(w)
    }
  }

  run(job: HashJob extends infer J ? (J extends HashJob ? Omit<J, 'id'> : never) : never): Promise<HashReply> {
    return new Promise((resolve, reject) => {
      this.queue.push({ job: { ...job, id: ++this.seq } as HashJob, resolve, reject })
      this.pump()
    })
  }

  private pump(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const w = this.idle.pop()!
      const { job, resolve, reject } = this.queue.shift()!
      this.pending.set(job.id, { resolve, reject, worker: w })
      w.postMessage(job)
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()))
  }
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

function fail(reply: HashReply, file: string): never {
  const e = (reply as { error: { code?: string; message: string } }).error
  if (e.code === 'ECHANGED') throw new AysfsError('EAGAIN', e.message)
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

interface SignModule {
  signFlist(data: Buffer, privateKeyFile: string): Buffer
}

function loadSign(): SignModule {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('./sign') as SignModule
  } catch (err) {
    throw new AysfsError('ENOSYS', `signing is not available in this build: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * Publishes `opts.dir` into the store as service `opts.id`. See the module comment.
 * @throws AysfsError `EUSAGE`/`EINVAL` (exit status 2) for bad arguments and for names a flist
 *   cannot hold (`|`, CR, LF, not UTF-8: every such path is named); `EAGAIN` when a file changed
 *   while it was published; fs codes for unreadable files or an unwritable store.
 */
export async function publish(opts: PublishOptions): Promise<PublishResult> {
  const format = opts.format ?? 'extended'
  if (format !== 'seed' && format !== 'extended') throw new AysfsError('EUSAGE', `--format ${String(format)}: expected seed or extended`)
  checkId(opts.id)
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

  const files = items.filter((i) => i.kind === 'file')
  const showProgress = opts.progress !== false
  const progressOpts = typeof opts.progress === 'object' ? opts.progress : {}
  const jobs = Math.max(1, Math.min(opts.jobs ?? Math.min(8, os.availableParallelism()), files.length || 1))
  const pool = new HashPool(jobs)
  const blobs = new Map<string, Item>()
  let written = 0
  let writtenBytes = 0
  let bar: Progress | undefined
  try {
    // 1. Hash.
    const total = files.reduce((n, f) => n + f.st.size, 0)
    bar = showProgress ? createProgress({ label: 'hashing', files: files.length, bytes: total, ...progressOpts }) : undefined
    // A few jobs queued per worker keep it busy without holding a promise per file of a huge tree.
    await forEachLimit(files, jobs * 4, async (f) => {
      if (f.st.size === 0) {
        // An empty file needs no reading: its MD5 is known.
        f.md5 = EMPTY_MD5
        f.size = 0
      } else {
        const r = await pool.run({ op: 'hash', file: f.abs })
        if ('error' in r) fail(r, f.abs)
        if (!('md5' in r)) throw new Error('hash worker: unexpected reply')
        f.md5 = r.md5
        f.size = r.size
      }
      bar?.add(1, f.size)
    })
    bar?.stop()

    // 2. Store each content the store lacks, once.
    for (const f of files) if (f.size! > 0 && !blobs.has(f.md5!)) blobs.set(f.md5!, f)
    const missing: Item[] = []
    for (const [md5, f] of blobs) {
      const dest = path.join(root, 'files', md5[0]!, md5[1]!, md5)
      let have = false
      try {
        have = fs.statSync(dest).size === f.size
      } catch {
        // absent
      }
      if (!have) missing.push(f)
    }
    const missingBytes = missing.reduce((n, f) => n + f.size!, 0)
    bar = showProgress && missing.length > 0 ? createProgress({ label: 'storing', files: missing.length, bytes: missingBytes, ...progressOpts }) : undefined
    const madeDirs = new Set<string>()
    await forEachLimit(missing, jobs * 2, async (f) => {
      const md5 = f.md5!
      const d = path.join(root, 'files', md5[0]!, md5[1]!)
      if (!madeDirs.has(d)) {
        fs.mkdirSync(d, { recursive: true })
        madeDirs.add(d)
      }
      const r = await pool.run({ op: 'copy', file: f.abs, dest: path.join(d, md5), md5, size: f.size!, fsync })
      if ('error' in r) fail(r, f.abs)
      written++
      writtenBytes += f.size!
      bar?.add(1, f.size!)
    })
    bar?.stop()
  } finally {
    bar?.stop()
    await pool.close()
  }

  // 3. The flist.
  const users = format === 'extended' ? idNames('/etc/passwd') : new Map<number, string>()
  const groups = format === 'extended' ? idNames('/etc/group') : new Map<number, string>()
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
  for (const i of items) {
    if (i.kind === 'dir') {
      if (i.rel !== '') directories++
    } else if (i.kind === 'symlink') symlinks++
    else if (i.kind !== 'file') special++
    if (format === 'seed') {
      if (i.kind === 'file') lines.push(formatFlistLine({ path: flistPath(i.rel), md5: i.md5!, size: i.size! }, 'seed'))
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
      uname: users.get(i.st.uid) ?? String(i.st.uid),
      gname: groups.get(i.st.gid) ?? String(i.st.gid),
      perm: i.st.mode & 0o7777,
      mtime: Math.floor(i.st.mtimeMs / 1000),
      ctime: Math.floor(i.st.ctimeMs / 1000),
    }
    if (i.kind === 'file') {
      line.md5 = i.md5!
      line.size = i.size!
    } else if (i.kind === 'symlink') {
      line.target = i.target!
    } else if (i.kind === 'chardev' || i.kind === 'blockdev') {
      // glibc's gnu_dev_major/minor: 12 bits of major and 20 of minor, split across the word.
      const rdev = BigInt(i.st.rdev)
      line.rdevMajor = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn & 0xffffffffn))
      line.rdevMinor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn & 0xffffffffn))
    }
    lines.push(formatFlistLine(line, 'extended'))
  }
  const data = Buffer.from(lines.length > 0 ? `${lines.join('\n')}\n` : '')
  // What we write must mount: check it with the parser the mount uses.
  parseFlist(data, { name: opts.id, prefix, file: `${opts.id}.flist` })

  const mdDir = path.join(root, 'md')
  fs.mkdirSync(mdDir, { recursive: true })
  const flistFile = path.join(mdDir, `${opts.id}.flist`)
  const sigFile = `${flistFile}.sig`
  let old: Buffer | undefined
  try {
    old = fs.readFileSync(flistFile)
  } catch {
    // a new service
  }
  const unchanged = old !== undefined && old.equals(data)
  const sig = opts.sign !== undefined ? signFlist(data, path.resolve(opts.sign)) : undefined
  // Both files are written and fsynced under temp names first, then renamed back to back: the
  // flist, then its signature. Until the first rename the old pair is whole (an interrupted run
  // changes nothing); a node that reads the pair between the two renames gets the new flist with
  // the old signature, refuses it, and fetches the pair once more (lib/pipeline.ts, fetchFlist).
  let flistTmp: string | undefined
  let sigTmp: string | undefined
  try {
    if (!unchanged) flistTmp = writeTemp(flistFile, data, fsync)
    if (sig) sigTmp = writeTemp(sigFile, sig, fsync)
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
      fs.rmSync(sigFile, { force: true })
    }
  } finally {
    for (const tmp of [flistTmp, sigTmp]) if (tmp !== undefined) fs.rmSync(tmp, { force: true })
  }
  if (fsync) fsyncDir(mdDir)

  return {
    flist: flistFile,
    ...(sig ? { signature: sigFile } : {}),
    format,
    prefix,
    lines: lines.length,
    files: files.length,
    bytes: files.reduce((n, f) => n + f.size!, 0),
    directories,
    symlinks,
    special,
    blobs: blobs.size,
    written,
    writtenBytes,
    skipped,
    unchanged,
  }
}
