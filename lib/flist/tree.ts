/**
 * The tree of one flist, or of the services of a mount merged: stored by columns (typed arrays
 * indexed by entry id, plus one byte pool of names) with its own open-addressing index on
 * (parent, name). That keeps an entry near 90 bytes, where a Map of path strings to objects costs
 * several hundred, for million-line flists. lib/table.ts packs it; parse.ts and merge.ts fill it.
 */

/** File types as the extended format numbers them (the `ftype` field). */
export const FType = { socket: 0, symlink: 1, file: 2, blockdev: 3, dir: 4, chardev: 5, fifo: 6 } as const
/** A file type number, 0..6 (see {@link FType}). */
export type FType = (typeof FType)[keyof typeof FType]

/** What each file type is called in messages, by ftype. */
export const KIND_NAME: readonly string[] = ['socket', 'symlink', 'regular file', 'block device', 'directory', 'char device', 'fifo']

/** Mode of files and directories that have no mode in the flist (seed lines, implied dirs). */
export const DEFAULT_PERM = 0o555

const DIR = FType.dir
/** flags: a line named this entry (for directories: not only implied). */
export const FLAG_EXPLICIT = 1
/** flags: a directory that has entries (so it cannot turn into a non-directory). */
export const FLAG_HAS_CHILDREN = 2

/** What an entry is besides its place and content: kind, mode, owner, size, times. */
interface EntryBasics {
  ftype: number
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
}

/** One entry, materialised as an object (for tests, `publish`, `onEntry`; the tree stores columns). */
export interface FlistEntry extends EntryBasics {
  /** Exposed path: `/bin/jsnet` for `/opt/jumpscale7/bin/jsnet` under prefix `/opt/jumpscale7`; the root is `/`. */
  path: string
  ftype: FType
  /** Regular files: 32 lower-case hex digits. Else ''. */
  md5: string
  /** Symlinks: the target. */
  target?: string
  /** Regular files stored as chunks too: the MD5 (lower-case hex) of their chunk index. */
  chunks?: string
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
 * What one flist line says of its entry: the seed and the extended parsers fill one of these (the
 * same object for every line), and {@link FlistTree.setEntry} stores it.
 */
export interface EntryAttrs extends EntryBasics {
  /** Regular files: the 16 bytes of the MD5. Else not looked at. */
  readonly md5: Uint8Array
  /** Symlinks: the target; devices: `"major,minor"`; regular files: the chunk index's MD5 (hex)
   * when the line names one; else undefined. */
  extra: string | undefined
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
  /** Symlink targets, device numbers (`"major,minor"`) and chunk indexes of regular files (MD5
   * hex): rare, so kept aside. */
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

  /**
   * Entry `id` becomes what line `line` says (`a`): every attribute, marked explicit (a line
   * named it). Its place in the tree and its children stay.
   */
  setEntry(id: number, a: EntryAttrs, line: number): void {
    this.ftype[id] = a.ftype
    this.flags[id] = (this.flags[id]! & FLAG_HAS_CHILDREN) | FLAG_EXPLICIT
    this.perm[id] = a.perm
    this.uid[id] = a.uid
    this.gid[id] = a.gid
    this.size[id] = a.size
    this.mtime[id] = a.mtime
    this.ctime[id] = a.ctime
    if (a.ftype === FType.file) this.md5.set(a.md5, id * 16)
    else this.md5.fill(0, id * 16, id * 16 + 16)
    this.line[id] = line
    if (a.extra === undefined) this.extra.delete(id)
    else this.extra.set(id, a.extra)
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

  /** The MD5 (hex) of a regular file's chunk index, if its line names one. */
  chunksOf(id: number): string | undefined {
    return this.ftype[id] === FType.file ? this.extra.get(id) : undefined
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
    else if (ftype === FType.file && x !== undefined) e.chunks = x
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
