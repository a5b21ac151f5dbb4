/**
 * Flists (docs/format.md): parse both line shapes, keep what is under the prefix, merge services.
 *
 * Built for million-line flists: the bytes are walked line by line (no split into strings), a
 * file is read in chunks with `readSync` (this may run where libuv's threadpool must not be
 * used), and the tree is columnar — typed arrays indexed by entry id plus one byte pool of
 * names — with its own open-addressing index on (parent, name). That keeps an entry near 90
 * bytes, where a Map of path strings to objects costs several hundred.
 */
import { isUtf8 } from 'node:buffer'
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs'
import { AysfsError } from './errors'

/** File types as the extended format numbers them (the `ftype` field). */
export const FType = { socket: 0, symlink: 1, file: 2, blockdev: 3, dir: 4, chardev: 5, fifo: 6 } as const
/** A file type number, 0..6 (see {@link FType}). */
export type FType = (typeof FType)[keyof typeof FType]

/** MD5 of empty content: a zero-size file never needs a source. */
export const EMPTY_MD5 = 'd41d8cd98f00b204e9800998ecf8427e'
/** Longest accepted line, without its line end. */
export const MAX_LINE_BYTES = 64 * 1024
/** Longest accepted path component, in bytes (Linux `NAME_MAX`): a longer name cannot be listed,
 * looked up or created by anyone, so a flist that has one is invalid. */
export const MAX_NAME_BYTES = 255
/** Longest accepted path, in bytes, as the flist writes it (the prefix included; Linux `PATH_MAX`). */
export const MAX_PATH_BYTES = 4096
/** Mode of files and directories that have no mode in the flist (seed lines, implied dirs). */
export const DEFAULT_PERM = 0o555

const DIR = FType.dir
/** flags: a line named this entry (for directories: not only implied). */
const FLAG_EXPLICIT = 1
/** flags: a directory that has entries (so it cannot turn into a non-directory). */
const FLAG_HAS_CHILDREN = 2
const NL = 10
const CR = 13
const PIPE = 124
const SLASH = 47
const DOT = 46
const HASH = 35
const CHUNK = 4 * 1024 * 1024

const EMPTY_MD5_BYTES = Buffer.from('d41d8cd98f00b204e9800998ecf8427e', 'hex')
const HEX = new Int8Array(256).fill(-1)
for (let i = 0; i < 10; i++) HEX[48 + i] = i
for (let i = 0; i < 6; i++) HEX[97 + i] = HEX[65 + i] = 10 + i

/** One entry, materialised as an object (for tests, `publish`, `onEntry`; the tree stores columns). */
export interface FlistEntry {
  /** Exposed path: `/bin/jsnet` for `/opt/jumpscale7/bin/jsnet` under prefix `/opt/jumpscale7`; the root is `/`. */
  path: string
  ftype: FType
  /** Permission bits (`0o7777`), as in the flist; setuid bits are dropped later by the table unless `suid`. */
  perm: number
  uid: number
  gid: number
  /** Content size for regular files; byte length of the target for symlinks; else 0. */
  size: number
  /** Unix seconds. */
  mtime: number
  /** Unix seconds. */
  ctime: number
  /** Regular files: 32 lower-case hex digits. Else ''. */
  md5: string
  /** Symlinks: the target. */
  target?: string
  /** Devices (block, char). */
  rdevMajor?: number
  rdevMinor?: number
  /** False for a directory that no line names, only paths under it (an implied directory). */
  explicit: boolean
  /** 1-based line that defined it, or that first implied it; 0 for a root no line named. */
  line: number
  /** Index into {@link FlistTree.services} of the flist that defined it. */
  service: number
}

/** A flist a tree came from, for messages. */
export interface FlistSource {
  /** The service (AYS id). */
  name: string
  /** The file it was read from, when known. */
  file?: string
}

/** Owner and times given to what the flist does not describe (seed lines, implied directories). */
export interface TreeDefaults {
  uid: number
  gid: number
  /** mtime and ctime, Unix seconds. */
  time: number
}

/**
 * A tree of entries, stored by columns. Entry 0 is the root; every other entry's parent has a
 * smaller id (parents are created first), so walking ids in order visits parents first.
 *
 * The typed-array fields are the storage that `lib/table.ts` reads directly; treat them as
 * read-only and valid for ids `0 .. count-1`. Use {@link entry}, {@link get}, {@link entries}
 * elsewhere.
 */
export class FlistTree {
  /** The flists merged into this tree, in merge order; `service` columns index it. */
  readonly services: FlistSource[]
  /** Defaults used for the root and implied directories. */
  readonly defaults: TreeDefaults
  /** Entries, the root included. */
  count = 0

  parent: Uint32Array
  nameOff: Uint32Array
  nameLen: Uint16Array
  ftype: Uint8Array
  flags: Uint8Array
  perm: Uint16Array
  uid: Uint32Array
  gid: Uint32Array
  size: Float64Array
  mtime: Float64Array
  ctime: Float64Array
  /** 16 bytes an entry. */
  md5: Uint8Array
  line: Uint32Array
  service: Uint16Array
  /** UTF-8 names, `nameOff`/`nameLen` into it. */
  names: Buffer
  namesLength = 0
  /** Symlink targets and device numbers (`"major,minor"`): rare, so kept aside. */
  extra = new Map<number, string>()

  private cap: number
  private buckets: Int32Array
  private mask: number

  /** @param capacity expected entries (grows as needed). */
  constructor(services: FlistSource[], defaults: TreeDefaults, capacity = 1024, nameBytes = capacity * 16) {
    this.services = services
    this.defaults = defaults
    this.cap = Math.max(16, Math.ceil(capacity))
    const c = this.cap
    this.parent = new Uint32Array(c)
    this.nameOff = new Uint32Array(c)
    this.nameLen = new Uint16Array(c)
    this.ftype = new Uint8Array(c)
    this.flags = new Uint8Array(c)
    this.perm = new Uint16Array(c)
    this.uid = new Uint32Array(c)
    this.gid = new Uint32Array(c)
    this.size = new Float64Array(c)
    this.mtime = new Float64Array(c)
    this.ctime = new Float64Array(c)
    this.md5 = new Uint8Array(c * 16)
    this.line = new Uint32Array(c)
    this.service = new Uint16Array(c)
    this.names = Buffer.allocUnsafe(Math.max(256, nameBytes))
    // Buckets for a load of at most 3/4: linear probing stays short, and at 4 bytes a bucket
    // this is the tree's third-largest column.
    let b = 16
    while (b * 3 < c * 4) b *= 2
    this.buckets = new Int32Array(b).fill(-1)
    this.mask = b - 1
    // The root: an implied directory until a line names the prefix itself.
    this.count = 1
    this.ftype[0] = DIR
    this.perm[0] = DEFAULT_PERM
    this.uid[0] = defaults.uid
    this.gid[0] = defaults.gid
    this.mtime[0] = this.ctime[0] = defaults.time
  }

  private grow(min: number): void {
    let c = this.cap
    while (c < min) c = Math.ceil(c * 1.5)
    const g = <T extends Uint8Array | Uint16Array | Uint32Array | Float64Array>(a: T, per = 1): T => {
      const n = new (a.constructor as new (len: number) => T)(c * per)
      n.set(a.subarray(0, this.count * per))
      return n
    }
    this.parent = g(this.parent)
    this.nameOff = g(this.nameOff)
    this.nameLen = g(this.nameLen)
    this.ftype = g(this.ftype)
    this.flags = g(this.flags)
    this.perm = g(this.perm)
    this.uid = g(this.uid)
    this.gid = g(this.gid)
    this.size = g(this.size)
    this.mtime = g(this.mtime)
    this.ctime = g(this.ctime)
    this.md5 = g(this.md5, 16)
    this.line = g(this.line)
    this.service = g(this.service)
    this.cap = c
    if (c * 4 > this.buckets.length * 3) {
      let b = this.buckets.length
      while (b * 3 < c * 4) b *= 2
      this.buckets = new Int32Array(b).fill(-1)
      this.mask = b - 1
      for (let id = 1; id < this.count; id++) {
        let h = this.hashName(this.parent[id]!, this.names, this.nameOff[id]!, this.nameOff[id]! + this.nameLen[id]!) & this.mask
        while (this.buckets[h] !== -1) h = (h + 1) & this.mask
        this.buckets[h] = id
      }
    }
  }

  private hashName(parent: number, buf: Uint8Array, s: number, e: number): number {
    let h = Math.imul(parent ^ 0x9e3779b9, 0x85ebca6b)
    for (let i = s; i < e; i++) h = Math.imul(h ^ buf[i]!, 16777619)
    h ^= h >>> 15
    h = Math.imul(h, 0x2c1b3c6d)
    return (h ^ (h >>> 12)) >>> 0
  }

  /** Id of the child `buf[s..e)` of `parent`, or -1. */
  lookup(parent: number, buf: Uint8Array, s: number, e: number): number {
    const len = e - s
    const names = this.names
    let h = this.hashName(parent, buf, s, e) & this.mask
    for (;;) {
      const id = this.buckets[h]!
      if (id === -1) return -1
      if (this.parent[id] === parent && this.nameLen[id] === len) {
        const off = this.nameOff[id]!
        let i = 0
        while (i < len && names[off + i] === buf[s + i]) i++
        if (i === len) return id
      }
      h = (h + 1) & this.mask
    }
  }

  /**
   * Append the child `buf[s..e)` of `parent` (not present: the caller looked it up) with the
   * defaults of an implied directory. Returns its id.
   */
  add(parent: number, buf: Uint8Array, s: number, e: number, line: number, service: number): number {
    if (this.count >= this.cap) this.grow(this.count + 1)
    const len = e - s
    if (this.namesLength + len > this.names.length) {
      let n = this.names.length
      while (n < this.namesLength + len) n = Math.ceil(n * 1.5)
      const b = Buffer.allocUnsafe(n)
      this.names.copy(b, 0, 0, this.namesLength)
      this.names = b
    }
    const names = this.names
    const off = this.namesLength
    for (let i = 0; i < len; i++) names[off + i] = buf[s + i]!
    this.namesLength += len
    const id = this.count++
    this.parent[id] = parent
    this.nameOff[id] = off
    this.nameLen[id] = len
    this.ftype[id] = DIR
    this.flags[id] = 0
    this.perm[id] = DEFAULT_PERM
    this.uid[id] = this.defaults.uid
    this.gid[id] = this.defaults.gid
    this.mtime[id] = this.ctime[id] = this.defaults.time
    this.line[id] = line
    this.service[id] = service
    this.flags[parent] |= FLAG_HAS_CHILDREN
    let h = this.hashName(parent, buf, s, e) & this.mask
    while (this.buckets[h] !== -1) h = (h + 1) & this.mask
    this.buckets[h] = id
    return id
  }

  /** Copy every attribute (not the place in the tree) of `src`'s entry `sid` onto entry `id`. */
  copyAttrs(id: number, src: FlistTree, sid: number, service: number): void {
    this.ftype[id] = src.ftype[sid]!
    this.flags[id] = (this.flags[id]! & FLAG_HAS_CHILDREN) | (src.flags[sid]! & FLAG_EXPLICIT)
    this.perm[id] = src.perm[sid]!
    this.uid[id] = src.uid[sid]!
    this.gid[id] = src.gid[sid]!
    this.size[id] = src.size[sid]!
    this.mtime[id] = src.mtime[sid]!
    this.ctime[id] = src.ctime[sid]!
    this.md5.set(src.md5.subarray(sid * 16, sid * 16 + 16), id * 16)
    this.line[id] = src.line[sid]!
    this.service[id] = service
    const x = src.extra.get(sid)
    if (x === undefined) this.extra.delete(id)
    else this.extra.set(id, x)
  }

  /** Name of an entry ('' for the root). */
  nameOf(id: number): string {
    return id === 0 ? '' : this.names.toString('utf8', this.nameOff[id], this.nameOff[id]! + this.nameLen[id]!)
  }

  /** Exposed path of an entry (`/` for the root). */
  pathOf(id: number): string {
    if (id === 0) return '/'
    const parts: string[] = []
    for (let i = id; i !== 0; i = this.parent[i]!) parts.push(this.nameOf(i))
    return '/' + parts.reverse().join('/')
  }

  /** Lower-case hex md5 of a regular file, '' for anything else. */
  md5Of(id: number): string {
    return this.ftype[id] === FType.file ? Buffer.from(this.md5.buffer, this.md5.byteOffset + id * 16, 16).toString('hex') : ''
  }

  /** Entry `id` as an object. */
  entry(id: number, path = this.pathOf(id)): FlistEntry {
    const ftype = this.ftype[id] as FType
    const e: FlistEntry = {
      path,
      ftype,
      perm: this.perm[id]!,
      uid: this.uid[id]!,
      gid: this.gid[id]!,
      size: this.size[id]!,
      mtime: this.mtime[id]!,
      ctime: this.ctime[id]!,
      md5: this.md5Of(id),
      explicit: ftype !== DIR || (this.flags[id]! & FLAG_EXPLICIT) !== 0,
      line: this.line[id]!,
      service: this.service[id]!,
    }
    const x = this.extra.get(id)
    if (ftype === FType.symlink && x !== undefined) e.target = x
    else if ((ftype === FType.blockdev || ftype === FType.chardev) && x !== undefined) {
      const [maj, min] = x.split(',')
      e.rdevMajor = Number(maj)
      e.rdevMinor = Number(min)
    }
    return e
  }

  /** The entry at an exposed path (`/`, `/bin/jsnet`), if any. */
  get(path: string): FlistEntry | undefined {
    if (path === '/' || path === '') return this.entry(0, '/')
    let id = 0
    for (const part of path.replace(/^\/+/, '').split('/')) {
      const b = Buffer.from(part)
      id = this.lookup(id, b, 0, b.length)
      if (id < 0) return undefined
    }
    return this.entry(id, path.startsWith('/') ? path : '/' + path)
  }

  /** Every entry, the root first, parents before children (id order). Allocates: for tests and tools. */
  *entries(): IterableIterator<FlistEntry> {
    const dirPaths = new Map<number, string>([[0, '']])
    for (let id = 0; id < this.count; id++) {
      const p = id === 0 ? '/' : `${dirPaths.get(this.parent[id]!)}/${this.nameOf(id)}`
      if (this.ftype[id] === DIR) dirPaths.set(id, id === 0 ? '' : p)
      yield this.entry(id, p)
    }
  }

  /** Calls `fn` for every regular file (for prefetch): md5 hex, size, id. */
  forEachFile(fn: (md5: string, size: number, id: number) => void): void {
    for (let id = 1; id < this.count; id++) if (this.ftype[id] === FType.file) fn(this.md5Of(id), this.size[id]!, id)
  }
}

/** The tree of all services of a mount: {@link mergeServices}' result, {@link buildTable}'s input. */
export type MergedTree = FlistTree

/** One parsed flist. */
export interface ParsedFlist {
  name: string
  file?: string
  /** The normalised prefix it was parsed with. */
  prefix: string
  tree: FlistTree
  /** Entry lines read (not blank, not comments), under the prefix or not. */
  lines: number
  /** Entries in the tree, implied directories included, the root not. */
  entries: number
  /** Lines outside the prefix. */
  ignored: number
  /** Lines under the prefix that repeated an earlier path (the last one is kept). */
  duplicates: number
  /** Whether a directory line named the prefix itself (and so gave the root its attributes). */
  rootLine: boolean
}

/** Options of {@link parseFlist}. */
export interface ParseFlistOptions {
  /** The service (AYS id), for messages. */
  name: string
  /** Only paths under it are kept, with it stripped. Absolute; a trailing `/` is ignored. */
  prefix: string
  /** File name for messages; defaults to the path when the source is a path. */
  file?: string
  /** More entries (implied directories included) than this is an error. Default 5 000 000. */
  maxEntries?: number
  /** A source larger than this many bytes is an error. Default: no limit. */
  maxSize?: number
  /** Called for every line kept, after it is stored (allocates an object a call). */
  onEntry?: (entry: FlistEntry) => void
  /** The mounting user: owner of seed entries and of unknown names. Default `process.getuid()`. */
  uid?: number
  /** Default `process.getgid()`. */
  gid?: number
  /** Name to uid; default `/etc/passwd`, read once. */
  users?: ReadonlyMap<string, number>
  /** Name to gid; default `/etc/group`, read once. */
  groups?: ReadonlyMap<string, number>
  /** mtime/ctime of seed entries, implied directories and a root no line names. Default 0. */
  time?: number
}

let systemIdsCache: { users: Map<string, number>; groups: Map<string, number> } | undefined

function readIdFile(file: string): Map<string, number> {
  const m = new Map<string, number>()
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return m // no file (a minimal container): every name is unknown, so the mounting user's
  }
  for (const line of text.split('\n')) {
    const f = line.split(':')
    if (f.length < 3 || f[0] === '' || f[0]!.startsWith('#')) continue
    const id = Number(f[2])
    // The first line for a name wins, as in getpwnam.
    if (Number.isInteger(id) && id >= 0 && id <= 0xffffffff && !m.has(f[0]!)) m.set(f[0]!, id)
  }
  return m
}

/**
 * Name-to-id maps from `/etc/passwd` and `/etc/group`, read synchronously once per process.
 * Names known only to NSS services (LDAP…) are not in them and map to the mounting user.
 */
export function systemIds(): { users: ReadonlyMap<string, number>; groups: ReadonlyMap<string, number> } {
  systemIdsCache ??= { users: readIdFile('/etc/passwd'), groups: readIdFile('/etc/group') }
  return systemIdsCache
}

/** A normalised flist prefix, or a TypeError: options are the caller's, not the user's, mistakes. */
function normalisePrefix(prefix: string): string {
  if (typeof prefix !== 'string' || !prefix.startsWith('/')) throw new TypeError(`prefix must be an absolute path, got ${JSON.stringify(prefix)}`)
  const p = prefix.replace(/\/+$/, '') || '/'
  if (p !== '/' && p.slice(1).split('/').some((c) => c === '' || c === '.' || c === '..')) {
    throw new TypeError(`prefix must not have empty, "." or ".." components, got ${JSON.stringify(prefix)}`)
  }
  return p
}

/** A path (or other field) for a message: quoted, escaped, shortened. */
function quote(buf: Uint8Array, s: number, e: number): string {
  const str = Buffer.from(buf.buffer, buf.byteOffset + s, Math.min(e - s, 200)).toString('utf8')
  return JSON.stringify(str) + (e - s > 200 ? '...' : '')
}

/** Non-negative decimal integer <= 2^53-1 in `buf[s..e)`, or -1. */
function parseUint(buf: Uint8Array, s: number, e: number): number {
  if (s === e || e - s > 16) return -1
  let n = 0
  for (let i = s; i < e; i++) {
    const d = buf[i]! - 48
    if (d < 0 || d > 9) return -1
    n = n * 10 + d
  }
  return n > Number.MAX_SAFE_INTEGER ? -1 : n
}

const KIND_NAME = ['socket', 'symlink', 'regular file', 'block device', 'directory', 'char device', 'fifo']

/** The line-by-line state of one parse. */
class Parser {
  readonly tree: FlistTree
  readonly res: ParsedFlist
  private readonly where: string
  private readonly plen: number
  private readonly pcomps: number
  private readonly prefixBuf: Buffer
  private readonly maxEntries: number
  private readonly users: ReadonlyMap<string, number>
  private readonly groups: ReadonlyMap<string, number>
  private readonly opts: ParseFlistOptions
  lineNo = 0
  /** Set once a chunk was found to hold a NUL or bad UTF-8: then each line is checked alone. */
  private slow = false
  private readonly pipes = new Int32Array(9)
  private readonly slashes = new Int32Array(MAX_LINE_BYTES / 2 + 2)
  private readonly md5 = new Uint8Array(16)
  /** The parent directory of the previous line (bytes and id): consecutive lines mostly share it. */
  private readonly dirBuf = Buffer.allocUnsafe(MAX_LINE_BYTES)
  private dirLen = -1
  private dirId = 0
  private readonly userCache = new Map<string, number>()
  private readonly groupCache = new Map<string, number>()

  constructor(opts: ParseFlistOptions, prefix: string, capacity: number) {
    this.opts = opts
    const uid = opts.uid ?? process.getuid?.() ?? 0
    const gid = opts.gid ?? process.getgid?.() ?? 0
    const source: FlistSource = { name: opts.name }
    if (opts.file !== undefined) source.file = opts.file
    this.tree = new FlistTree([source], { uid, gid, time: opts.time ?? 0 }, capacity)
    this.res = { name: opts.name, prefix, tree: this.tree, lines: 0, entries: 0, ignored: 0, duplicates: 0, rootLine: false }
    if (opts.file !== undefined) this.res.file = opts.file
    this.where = opts.file === undefined ? `flist ${opts.name}` : `flist ${opts.name} (${opts.file})`
    this.prefixBuf = Buffer.from(prefix === '/' ? '' : prefix)
    this.plen = this.prefixBuf.length
    this.pcomps = prefix === '/' ? 0 : prefix.split('/').length - 1
    this.maxEntries = opts.maxEntries ?? 5_000_000
    if (opts.users === undefined || opts.groups === undefined) {
      const sys = systemIds()
      this.users = opts.users ?? sys.users
      this.groups = opts.groups ?? sys.groups
    } else {
      this.users = opts.users
      this.groups = opts.groups
    }
  }

  fail(what: string, line = this.lineNo): never {
    throw new AysfsError('EINVAL', `${this.where} line ${line}: ${what}`, { file: this.opts.file, line })
  }

  /**
   * Parse the complete lines of `buf` (the last one too when `final`); returns how many bytes
   * were consumed, so a chunked reader can carry the partial last line over.
   */
  feed(buf: Buffer, final: boolean): number {
    // Whole-chunk checks run natively and fast; only a chunk that fails them is re-checked line
    // by line, to report the first bad line by number.
    if (!this.slow) {
      const last = final ? buf.length : buf.lastIndexOf(NL) + 1
      const region = buf.subarray(0, last)
      if (region.indexOf(0) >= 0 || !isUtf8(region)) this.slow = true
    }
    let pos = 0
    const end = buf.length
    while (pos < end) {
      let nl = buf.indexOf(NL, pos)
      if (nl < 0) {
        if (!final) {
          // +1: room for the CR of a CRLF line of the largest size.
          if (end - pos > MAX_LINE_BYTES + 1) this.fail('line longer than 64 KiB', this.lineNo + 1)
          break
        }
        nl = end
      }
      this.lineNo++
      this.parseLine(buf, pos, nl)
      pos = nl + 1
    }
    return Math.min(pos, end)
  }

  private parseLine(buf: Buffer, s: number, e: number): void {
    if (e > s && buf[e - 1] === CR) e--
    if (e - s > MAX_LINE_BYTES) this.fail('line longer than 64 KiB')
    if (this.lineNo === 1 && e - s >= 3 && buf[s] === 0xef && buf[s + 1] === 0xbb && buf[s + 2] === 0xbf) s += 3 // a BOM
    if (s === e) return
    const c0 = buf[s]!
    if (c0 === HASH) return
    if (c0 === 32 || c0 === 9) {
      let i = s
      while (i < e && (buf[i] === 32 || buf[i] === 9)) i++
      if (i === e) return
    }
    if (this.slow) {
      const line = buf.subarray(s, e)
      if (line.indexOf(0) >= 0) this.fail('NUL byte in line')
      if (!isUtf8(line)) this.fail('not valid UTF-8')
    }
    this.res.lines++

    const pipes = this.pipes
    let np = 0
    for (let i = s; i < e; i++) {
      const b = buf[i]!
      if (b === PIPE) {
        pipes[np++] = i
        if (np === 9) break
      } else if (b === CR) this.fail('stray CR inside the line')
    }
    if (np !== 2 && np !== 9) {
      this.fail(`expected 3 fields (path|md5|size) or 10 (path|hash|size|uname|gname|perms|ftype|ctime|mtime|extended), got ${np + 1}`)
    }
    const pe = pipes[0]!

    // Path: absolute, no empty, "." or ".." component. slashes[k] is the k-th "/", and
    // slashes[nc] = pe closes the last component.
    if (pe === s || buf[s] !== SLASH) this.fail(`path must be absolute, got ${quote(buf, s, pe)}`)
    const sl = this.slashes
    let nc = 0
    sl[0] = s
    if (pe - s > 1) {
      for (let i = s + 1; i <= pe; i++) {
        if (i < pe && buf[i] !== SLASH) continue
        const st = sl[nc]! + 1
        const len = i - st
        if (len === 0 || (len === 1 && buf[st] === DOT) || (len === 2 && buf[st] === DOT && buf[st + 1] === DOT)) {
          this.fail(`path ${quote(buf, s, pe)} has an empty, "." or ".." component`)
        }
        if (len > MAX_NAME_BYTES) this.fail(`path ${quote(buf, s, pe)} has a component of ${len} bytes: at most ${MAX_NAME_BYTES} (NAME_MAX)`)
        sl[++nc] = i
      }
    } else sl[1] = pe
    if (pe - s > MAX_PATH_BYTES) this.fail(`path ${quote(buf, s, pe)} is ${pe - s} bytes long: at most ${MAX_PATH_BYTES} (PATH_MAX)`)

    // Under the prefix? The prefix is normalised, so a byte match ending at "/" or at the end is
    // a match on whole components.
    const plen = this.plen
    const under = plen === 0 || (pe - s >= plen && buf.compare(this.prefixBuf, 0, plen, s, s + plen) === 0 && (pe - s === plen || buf[s + plen] === SLASH))

    let ftype: number
    let perm = DEFAULT_PERM
    let size: number
    let mtime = this.tree.defaults.time
    let ctime = mtime
    let uid = this.tree.defaults.uid
    let gid = this.tree.defaults.gid
    let extra: string | undefined
    const md5 = this.md5

    if (np === 2) {
      ftype = FType.file
      const p1 = pipes[1]!
      if (!this.hex(buf, pe + 1, p1)) this.fail(`bad md5 ${quote(buf, pe + 1, p1)}: expected 32 hex digits`)
      size = parseUint(buf, p1 + 1, e)
      if (size < 0) this.fail(`bad size ${quote(buf, p1 + 1, e)}: expected an integer from 0 to 2^53-1`)
    } else {
      const f = (k: number): number => (k === 0 ? s : pipes[k - 1]! + 1)
      const t = f(6)
      if (pipes[6] !== t + 1 || buf[t]! < 48 || buf[t]! > 54) this.fail(`bad ftype ${quote(buf, t, pipes[6]!)}: expected 0 to 6`)
      ftype = buf[t]! - 48
      const regular = ftype === FType.file
      // hash and size: required for regular files; for others they carry nothing, but a value
      // there must still look right (a generator may write a directory's st_size).
      size = pipes[2]! === f(2) && !regular ? 0 : parseUint(buf, f(2), pipes[2]!)
      if (size < 0) this.fail(`bad size ${quote(buf, f(2), pipes[2]!)}: expected an integer from 0 to 2^53-1`)
      if (pipes[1] === f(1)) {
        if (regular && size !== 0) this.fail('missing md5 of a non-empty regular file')
        if (regular) md5.set(EMPTY_MD5_BYTES)
      } else if (!this.hex(buf, f(1), pipes[1]!)) this.fail(`bad md5 ${quote(buf, f(1), pipes[1]!)}: expected 32 hex digits`)
      if (!regular) size = 0
      perm = this.octal(buf, f(5), pipes[5]!)
      if (perm < 0) this.fail(`bad perms ${quote(buf, f(5), pipes[5]!)}: expected octal permission bits like 755`)
      ctime = this.int(buf, f(7), pipes[7]!, 'ctime')
      mtime = this.int(buf, f(8), pipes[8]!, 'mtime')
      const xs = f(9)
      if (ftype === FType.symlink) {
        if (xs === e) this.fail('symlink with an empty target')
        for (let i = xs; i < e; i++) if (buf[i] === CR) this.fail('stray CR inside the line')
        extra = buf.toString('utf8', xs, e)
        size = e - xs
      } else if (ftype === FType.blockdev || ftype === FType.chardev) {
        let comma = -1
        for (let i = xs; i < e; i++) if (buf[i] === 44) { comma = i; break }
        const maj = comma < 0 ? -1 : parseUint(buf, xs, comma)
        const min = comma < 0 ? -1 : parseUint(buf, comma + 1, e)
        if (maj < 0 || min < 0 || maj > 0xffffffff || min > 0xffffffff) this.fail(`bad device numbers ${quote(buf, xs, e)}: expected major,minor`)
        extra = `${maj},${min}`
      } else if (xs !== e) {
        this.fail(`the extended field must be empty for a ${KIND_NAME[ftype]}, got ${quote(buf, xs, e)}`)
      }
      if (under) {
        uid = this.id(buf, f(3), pipes[3]!, this.users, this.userCache, uid)
        gid = this.id(buf, f(4), pipes[4]!, this.groups, this.groupCache, gid)
      }
    }

    if (!under) {
      this.res.ignored++
      return
    }
    this.store(buf, s, pe, nc, ftype, perm, uid, gid, size, mtime, ctime, extra)
  }

  /** Decode 32 hex digits into this.md5; false if they are not that. */
  private hex(buf: Uint8Array, s: number, e: number): boolean {
    if (e - s !== 32) return false
    const md5 = this.md5
    for (let i = 0; i < 16; i++) {
      const hi = HEX[buf[s + 2 * i]!]!
      const lo = HEX[buf[s + 2 * i + 1]!]!
      if (hi < 0 || lo < 0) return false
      md5[i] = (hi << 4) | lo
    }
    return true
  }

  /** Octal permission bits (type bits, if any, dropped); -1 if not octal. */
  private octal(buf: Uint8Array, s: number, e: number): number {
    if (s === e || e - s > 7) return -1
    let n = 0
    for (let i = s; i < e; i++) {
      const d = buf[i]! - 48
      if (d < 0 || d > 7) return -1
      n = n * 8 + d
    }
    return n > 0o177777 ? -1 : n & 0o7777
  }

  /** A signed decimal integer (Unix seconds). */
  private int(buf: Uint8Array, s: number, e: number, what: string): number {
    const neg = s < e && buf[s] === 45
    const n = parseUint(buf, neg ? s + 1 : s, e)
    if (n < 0) this.fail(`bad ${what} ${quote(buf, s, e)}: expected Unix seconds`)
    return neg ? -n : n
  }

  /** uid/gid of a name; unknown or empty names are the mounting user's. */
  private id(buf: Buffer, s: number, e: number, map: ReadonlyMap<string, number>, cache: Map<string, number>, dflt: number): number {
    if (s === e) return dflt
    const name = buf.toString('utf8', s, e)
    let v = cache.get(name)
    if (v === undefined) {
      v = map.get(name) ?? dflt
      cache.set(name, v)
    }
    return v
  }

  private store(buf: Buffer, s: number, pe: number, nc: number, ftype: number, perm: number, uid: number, gid: number, size: number, mtime: number, ctime: number, extra: string | undefined): void {
    const tree = this.tree
    const sl = this.slashes
    const pc = this.pcomps
    let id: number
    if (nc === pc) {
      // The prefix itself: the root.
      if (ftype !== DIR) this.fail(`${quote(buf, s, pe)} is the prefix (the root of the mount) but is a ${KIND_NAME[ftype]}, not a directory`)
      if (this.res.rootLine) this.res.duplicates++
      this.res.rootLine = true
      id = 0
    } else {
      const ds = sl[pc]!
      const de = sl[nc - 1]!
      let parent: number
      if (de === ds) parent = 0
      else if (de - ds === this.dirLen && buf.compare(this.dirBuf, 0, this.dirLen, ds, de) === 0) parent = this.dirId
      else {
        parent = 0
        for (let k = pc; k < nc - 1; k++) {
          const cs = sl[k]! + 1
          const ce = sl[k + 1]!
          let child = tree.lookup(parent, buf, cs, ce)
          if (child < 0) child = this.newEntry(parent, buf, cs, ce)
          else if (tree.ftype[child] !== DIR) {
            this.fail(`${quote(buf, s, pe)} is under ${quote(buf, s, ce)}, which is a ${KIND_NAME[tree.ftype[child]!]} (line ${tree.line[child]})`)
          }
          parent = child
        }
        buf.copy(this.dirBuf, 0, ds, de)
        this.dirLen = de - ds
        this.dirId = parent
      }
      const ns = sl[nc - 1]! + 1
      id = tree.lookup(parent, buf, ns, pe)
      if (id < 0) id = this.newEntry(parent, buf, ns, pe)
      else {
        if (tree.ftype[id] !== DIR || (tree.flags[id]! & FLAG_EXPLICIT) !== 0) this.res.duplicates++
        if (tree.ftype[id] === DIR && ftype !== DIR && (tree.flags[id]! & FLAG_HAS_CHILDREN) !== 0) {
          this.fail(`${quote(buf, s, pe)} is a ${KIND_NAME[ftype]} here but a directory with entries at line ${tree.line[id]}`)
        }
      }
    }
    tree.ftype[id] = ftype
    tree.flags[id] = (tree.flags[id]! & FLAG_HAS_CHILDREN) | FLAG_EXPLICIT
    tree.perm[id] = perm
    tree.uid[id] = uid
    tree.gid[id] = gid
    tree.size[id] = size
    tree.mtime[id] = mtime
    tree.ctime[id] = ctime
    if (ftype === FType.file) tree.md5.set(this.md5, id * 16)
    else tree.md5.fill(0, id * 16, id * 16 + 16)
    tree.line[id] = this.lineNo
    if (extra === undefined) tree.extra.delete(id)
    else tree.extra.set(id, extra)
    this.opts.onEntry?.(tree.entry(id))
  }

  private newEntry(parent: number, buf: Buffer, s: number, e: number): number {
    if (this.tree.count > this.maxEntries) this.fail(`more than ${this.maxEntries} entries (main.max_entries)`)
    return this.tree.add(parent, buf, s, e, this.lineNo, 0)
  }
}

/**
 * Parse one flist (docs/format.md), both line shapes, `\n` or `\r\n`.
 *
 * Seed lines are regular files of mode 0555 owned by the mounting user; implied directories are
 * 0555, owned by the mounting user, with times `opts.time` (default 0). Within the flist a
 * repeated path keeps its last line, except that a directory with entries cannot become a
 * non-directory.
 *
 * @param source the flist's bytes, or the path of a file to read (synchronously, in chunks: no
 *   threadpool work, bounded memory).
 * @throws AysfsError `EINVAL` for any invalid line: `flist <name> (<file>) line N: <what>`,
 *   with `file` and `line`; also for more than `maxEntries` entries or a source over `maxSize`.
 *   An unreadable file: AysfsError with the fs error's code (e.g. `ENOENT`) and `cause`.
 */
export function parseFlist(source: Buffer | string, opts: ParseFlistOptions): ParsedFlist {
  const prefix = normalisePrefix(opts.prefix)
  if (typeof source === 'string') {
    const o: ParseFlistOptions = opts.file === undefined ? { ...opts, file: source } : opts
    return parseFile(source, o, prefix)
  }
  if (!Buffer.isBuffer(source)) throw new TypeError('source must be a Buffer or a file path')
  checkSize(source.length, opts)
  // Count lines first (native indexOf, ~30 ms for a million): sizing the columns once saves
  // the copies (and the transient double memory) of growing them.
  let lines = 0
  for (let i = source.indexOf(NL); i >= 0; i = source.indexOf(NL, i + 1)) lines++
  const p = new Parser(opts, prefix, capacityFor(lines + 1))
  p.feed(source, true)
  return finish(p)
}

function capacityFor(lines: number): number {
  // Implied directories are typically well under 15% of the files.
  return Math.ceil(lines * 1.15) + 64
}

function checkSize(size: number, opts: ParseFlistOptions): void {
  if (opts.maxSize !== undefined && size > opts.maxSize) {
    const where = opts.file === undefined ? `flist ${opts.name}` : `flist ${opts.name} (${opts.file})`
    throw new AysfsError('EINVAL', `${where}: ${size} bytes, more than main.max_flist_size (${opts.maxSize})`, { file: opts.file })
  }
}

function parseFile(file: string, opts: ParseFlistOptions, prefix: string): ParsedFlist {
  let fd: number
  try {
    fd = openSync(file, 'r')
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new AysfsError(e.code ?? 'EIO', `flist ${opts.name} (${file}): cannot read: ${e.message}`, { file, cause: err })
  }
  try {
    const total = fstatSync(fd).size
    checkSize(total, opts)
    // Room for a chunk plus the longest line carried over from the previous one: feed() fails
    // a longer unfinished line, so the buffer never fills up without progress.
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(total, 1)) + MAX_LINE_BYTES + 2)
    let have = 0
    let p: Parser | undefined
    let read = 0
    for (;;) {
      const n = readSync(fd, buf, have, buf.length - have, null)
      read += n
      have += n
      const final = n === 0
      if (opts.maxSize !== undefined && read > opts.maxSize) checkSize(read, opts)
      if (p === undefined) {
        // Estimate the entry count from the first chunk's line density.
        let lines = 0
        for (let i = buf.indexOf(NL); i >= 0 && i < have; i = buf.indexOf(NL, i + 1)) lines++
        const est = have === 0 ? 16 : ((lines + 1) * Math.max(total, have)) / have
        p = new Parser(opts, prefix, capacityFor(Math.min(est, (opts.maxEntries ?? 5_000_000) + 1)))
      }
      const used = p.feed(buf.subarray(0, have), final)
      if (final) break
      buf.copy(buf, 0, used, have)
      have -= used
    }
    return finish(p!)
  } catch (err) {
    if (err instanceof AysfsError) throw err
    const e = err as NodeJS.ErrnoException
    throw new AysfsError(e.code ?? 'EIO', `flist ${opts.name} (${file}): cannot read: ${e.message}`, { file, cause: err })
  } finally {
    closeSync(fd)
  }
}

function finish(p: Parser): ParsedFlist {
  p.res.entries = p.tree.count - 1
  return p.res
}

/** Options of {@link mergeServices}. */
export interface MergeOptions {
  /** More entries in the merged tree than this is an error. Default 5 000 000. */
  maxEntries?: number
}

function describeAt(tree: FlistTree, id: number): string {
  const src = tree.services[tree.service[id]!]!
  const where = src.file === undefined ? `flist ${src.name}` : `flist ${src.name} (${src.file})`
  const explicit = tree.ftype[id] !== DIR || (tree.flags[id]! & FLAG_EXPLICIT) !== 0
  return `${where} ${explicit ? 'line' : 'implied by line'} ${tree.line[id]}`
}

/**
 * Merge the services of one mount into one tree, in config order (docs/format.md): directories are
 * merged (the union of their children) and keep the attributes of the last explicit directory
 * line (an implied directory never overrides an explicit one); any other path takes the last
 * service's entry; a path that is a directory in one service and not in another is an error
 * naming both. One flist is returned as is (its tree), without a copy.
 * @throws AysfsError `EINVAL` for a conflict (with the later flist's `file` and `line`) or too many entries.
 */
export function mergeServices(flists: ParsedFlist[], opts: MergeOptions = {}): MergedTree {
  const maxEntries = opts.maxEntries ?? 5_000_000
  if (flists.length === 1) {
    const t = flists[0]!.tree
    if (t.count - 1 > maxEntries) throw new AysfsError('EINVAL', `flist ${flists[0]!.name}: more than ${maxEntries} entries (main.max_entries)`)
    return t
  }
  const services: FlistSource[] = flists.map((f) => (f.file === undefined ? { name: f.name } : { name: f.name, file: f.file }))
  const defaults = flists[0]?.tree.defaults ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, time: 0 }
  const total = flists.reduce((n, f) => n + f.tree.count, 0)
  const out = new FlistTree(services, defaults, Math.min(total, maxEntries + 1), flists.reduce((n, f) => n + f.tree.namesLength, 0))
  flists.forEach((f, si) => {
    const src = f.tree
    if (src.flags[0]! & FLAG_EXPLICIT) out.copyAttrs(0, src, 0, si)
    const map = new Uint32Array(src.count)
    for (let id = 1; id < src.count; id++) {
      const parent = map[src.parent[id]!]!
      const off = src.nameOff[id]!
      const end = off + src.nameLen[id]!
      let d = out.lookup(parent, src.names, off, end)
      const srcDir = src.ftype[id] === DIR
      if (d < 0) {
        if (out.count > maxEntries) {
          throw new AysfsError('EINVAL', `services ${services.map((s) => s.name).join(', ')}: more than ${maxEntries} entries together (main.max_entries)`)
        }
        d = out.add(parent, src.names, off, end, src.line[id]!, si)
        out.copyAttrs(d, src, id, si)
      } else {
        const dstDir = out.ftype[d] === DIR
        if (srcDir !== dstDir) {
          throw new AysfsError(
            'EINVAL',
            `${src.pathOf(id)} is a ${KIND_NAME[src.ftype[id]!]} in ${describeAt(src, id)} but a ${KIND_NAME[out.ftype[d]!]} in ${describeAt(out, d)}: a path cannot be a directory in one service and not in another`,
            f.file === undefined ? { line: src.line[id]! } : { file: f.file, line: src.line[id]! },
          )
        }
        if (!srcDir || (src.flags[id]! & FLAG_EXPLICIT) !== 0) out.copyAttrs(d, src, id, si)
      }
      map[id] = d
    }
  })
  return out
}

/** Input of {@link formatFlistLine}: what `publish` knows of a file. */
export interface FlistLineInput {
  /** Absolute path as it goes in the flist (the prefix included). */
  path: string
  /** Default: a regular file. */
  ftype?: FType
  /** Regular files: 32 hex digits; may be omitted for an empty file. */
  md5?: string
  /** Regular files: content size. */
  size?: number
  uname?: string
  gname?: string
  /** Permission bits; default 0o555. */
  perm?: number
  /** Unix seconds (fractions are dropped); default 0. */
  mtime?: number
  ctime?: number
  /** Symlinks. */
  target?: string
  /** Devices. */
  rdevMajor?: number
  rdevMinor?: number
}

const FORBIDDEN: Array<[RegExp, string]> = [
  [/\|/, 'a "|"'],
  [/\r/, 'a carriage return (CR)'],
  [/\n/, 'a line feed (LF)'],
  [/\0/, 'a NUL byte'],
]

function refuse(path: string, what: string): never {
  const shown = path.length > 200 ? `${JSON.stringify(path.slice(0, 200))}...` : JSON.stringify(path)
  throw new AysfsError('EINVAL', `cannot write ${shown} to a flist: ${what}`)
}

/**
 * One flist line, without its line end, for `publish`.
 * `seed` has regular files only (directories are implied by paths); `extended` has every type.
 * @throws AysfsError `EINVAL` naming the path and the reason: a path with `|`, CR, LF or NUL, a
 *   relative path or one with empty, `.` or `..` components, a path over {@link MAX_PATH_BYTES}
 *   bytes or a component over {@link MAX_NAME_BYTES}, a non-regular file in `seed`, a bad
 *   md5, a symlink target with CR, LF or NUL, a user or group name with `|`, CR, LF or NUL.
 */
export function formatFlistLine(entry: FlistLineInput, format: 'seed' | 'extended'): string {
  const { path } = entry
  for (const [re, what] of FORBIDDEN) if (re.test(path)) refuse(path, `the path contains ${what}`)
  if (!path.startsWith('/')) refuse(path, 'the path is not absolute')
  if (path !== '/' && path.slice(1).split('/').some((c) => c === '' || c === '.' || c === '..')) {
    refuse(path, 'the path has an empty, "." or ".." component')
  }
  const pathBytes = Buffer.byteLength(path)
  if (pathBytes > MAX_PATH_BYTES) refuse(path, `the path is ${pathBytes} bytes long: at most ${MAX_PATH_BYTES} (PATH_MAX)`)
  for (const c of path.split('/')) {
    const n = Buffer.byteLength(c)
    if (n > MAX_NAME_BYTES) refuse(path, `the path has a component of ${n} bytes: at most ${MAX_NAME_BYTES} (NAME_MAX)`)
  }
  const ftype = entry.ftype ?? FType.file
  if (!Number.isInteger(ftype) || ftype < 0 || ftype > 6) refuse(path, `bad ftype ${ftype}`)
  const size = entry.size ?? 0
  let md5 = ''
  if (ftype === FType.file) {
    if (!Number.isSafeInteger(size) || size < 0) refuse(path, `bad size ${size}`)
    md5 = entry.md5 ?? (size === 0 ? EMPTY_MD5 : refuse(path, 'a non-empty regular file needs its md5'))
    if (!/^[0-9a-fA-F]{32}$/.test(md5)) refuse(path, `bad md5 ${JSON.stringify(md5)}`)
    md5 = md5.toLowerCase()
  }
  if (format === 'seed') {
    if (ftype !== FType.file) refuse(path, `the seed format has regular files only, and this is a ${KIND_NAME[ftype]} (use the extended format)`)
    return `${path}|${md5}|${size}`
  }
  const names = [entry.uname ?? '', entry.gname ?? '']
  for (const n of names) {
    for (const [re, what] of FORBIDDEN) if (re.test(n)) refuse(path, `its owner or group name contains ${what}`)
  }
  let ext = ''
  if (ftype === FType.symlink) {
    ext = entry.target ?? ''
    if (ext === '') refuse(path, 'a symlink needs a target')
    for (const [re, what] of FORBIDDEN.slice(1)) if (re.test(ext)) refuse(path, `the symlink target contains ${what}`)
  } else if (ftype === FType.blockdev || ftype === FType.chardev) {
    const { rdevMajor: maj, rdevMinor: min } = entry
    if (!Number.isInteger(maj) || !Number.isInteger(min) || maj! < 0 || min! < 0 || maj! > 0xffffffff || min! > 0xffffffff) refuse(path, 'a device needs rdevMajor and rdevMinor')
    ext = `${maj},${min}`
  }
  const perm = (entry.perm ?? DEFAULT_PERM) & 0o7777
  const t = (v: number | undefined): number => Math.floor(v ?? 0)
  return `${path}|${md5}|${ftype === FType.file ? size : 0}|${names[0]}|${names[1]}|${perm.toString(8)}|${ftype}|${t(entry.ctime)}|${t(entry.mtime)}|${ext}`
}
