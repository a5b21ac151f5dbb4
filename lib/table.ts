/**
 * The inode table: the merged tree packed into one Buffer that the native side serves from
 * (layout: docs/design.md, mirrored in native/inode_table.h — change both or neither).
 *
 * Breadth-first, children of a directory contiguous and sorted by name bytes, so the native
 * side finds a name by binary search and lists a directory by walking a range. Inode numbers
 * are derived from what an entry is (kind, path, content), so the same flists give the same
 * numbers on every mount and reload.
 */
import { createHash } from 'node:crypto'
import { AysfsError } from './errors'
import { FType, type FlistTree } from './flist'
import { MD5_PAD, md5Words } from './md5'

/** `AYST` read as a little-endian u32. */
export const MAGIC = 0x54535941
/** Layout version; bump it with any change to the layout below. */
export const VERSION = 1
export const HEADER_SIZE = 32
export const ENTRY_SIZE = 96
/** The root's inode number (FUSE_ROOT_ID). */
export const ROOT_INO = 1n

/** Byte offsets of the header fields. */
export const HEADER = { magic: 0, version: 4, count: 8, reserved: 12, stringsOffset: 16, stringsLength: 24 } as const
/** Byte offsets of the fields inside an entry. */
export const ENTRY = {
  ino: 0, size: 8, mtime: 16, ctime: 24, mode: 32, uid: 36, gid: 40, parent: 44, nameOffset: 48, nameLength: 52,
  firstChild: 56, childCount: 60, targetOffset: 64, targetLength: 68, rdevMajor: 72, rdevMinor: 76, md5: 80,
} as const

/** `st_mode` type bits by flist ftype (0 socket … 6 fifo). */
export const S_IFMT_BY_FTYPE: readonly number[] = [0o140000, 0o120000, 0o100000, 0o060000, 0o040000, 0o020000, 0o010000]
/** The kind letter of the stable inode derivation, by ftype. */
export const KIND_BY_FTYPE: readonly string[] = ['s', 'l', 'f', 'b', 'd', 'c', 'p']
const KIND_BY_FTYPE_BYTES = Buffer.from(KIND_BY_FTYPE.join(''), 'latin1')

const S_ISUID_ISGID = 0o6000
const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1')
const MAX_U32 = 0xffffffff

/** Options of {@link buildTable}. */
export interface BuildTableOptions {
  /**
   * Keep setuid/setgid bits from the flists (`main.suid`). Default false: they are cleared, so
   * the table never advertises them even if the mount options would let them through.
   */
  suid?: boolean
  /**
   * Keep block and char devices from the flists (`main.dev`). Default false: they are left out
   * of the table (and counted, {@link BuiltTable.droppedDevices}), so nothing can list, stat or
   * copy them out of the mount (`cp -a` as root would make the device node), whatever the
   * mount options.
   */
  dev?: boolean
}

/** What {@link buildTable} made. */
export interface BuiltTable {
  /** Header, `count` entries, string pool. */
  buffer: Buffer
  /** Entries in the table, the root included. */
  count: number
  /**
   * Devices left out (without `dev`), by the index of the service that defined them in
   * `tree.services`; all zeros with `dev`.
   */
  droppedDevices: number[]
}

/** One decoded entry ({@link readTable}): the buffer's fields plus its path. */
export interface TableEntry {
  index: number
  ino: bigint
  size: number
  mtime: number
  ctime: number
  mode: number
  uid: number
  gid: number
  parent: number
  name: string
  firstChild: number
  childCount: number
  /** Symlinks only. */
  target?: string
  rdevMajor: number
  rdevMinor: number
  /** Lower-case hex for regular files, '' otherwise. */
  md5: string
  /** Exposed path, `/` for the root. */
  path: string
}


/**
 * The stable inode number of an entry (docs/design.md): the first 8 bytes, little endian, of
 * `md5(kind + "\0" + path + "\0" + content)`, with `"\0" + n` appended for the n-th re-derivation
 * (after a 0, a 1 or a number already used). Exported for tests and tools; {@link buildTable}
 * computes the same thing on bytes (with
 * lib/md5.ts; this one uses node:crypto, so the tests compare two implementations).
 */
export function deriveIno(kind: string, path: string, content: string, n = 0): bigint {
  const input = `${kind}\0${path}\0${content}` + (n > 0 ? `\0${n}` : '')
  return createHash('md5').update(input, 'utf8').digest().readBigUInt64LE(0)
}

/** Open-addressing set of 64-bit values as (lo, hi) u32 pairs; (0, 0) marks a free slot (0 is never an ino). */
class InoSet {
  private readonly slots: Uint32Array
  private readonly mask: number
  constructor(n: number) {
    // Load at most 3/4: 8 bytes a slot, and this lives beside the tree and the table.
    let cap = 16
    while (cap * 3 < n * 4) cap *= 2
    this.slots = new Uint32Array(cap * 2)
    this.mask = cap - 1
  }
  /** Adds; false if it was already there. */
  add(lo: number, hi: number): boolean {
    let h = (Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b) >>> 0) & this.mask
    for (;;) {
      const a = this.slots[2 * h]!
      const b = this.slots[2 * h + 1]!
      if (a === 0 && b === 0) {
        this.slots[2 * h] = lo
        this.slots[2 * h + 1] = hi
        return true
      }
      if (a === lo && b === hi) return false
      h = (h + 1) & this.mask
    }
  }
}

function writeI64(dv: DataView, off: number, v: number): void {
  // Exact for |v| <= 2^53: hi is floor(v / 2^32) (negative for v < 0), lo the rest in [0, 2^32).
  const hi = Math.floor(v / 4294967296)
  dv.setUint32(off, v - hi * 4294967296, true)
  dv.setInt32(off + 4, hi, true)
}

/**
 * Pack a tree into the inode table buffer. Without `opts.dev`, block and char devices are left
 * out (they are leaves: nothing is below them) and counted per service.
 * @throws AysfsError `EINVAL` if the tree cannot be represented (more than 2^32-1 entries, a
 *   string pool over 4 GiB).
 */
export function buildTable(tree: FlistTree, opts: BuildTableOptions = {}): BuiltTable {
  const total = tree.count
  const names = tree.names
  const droppedDevices = tree.services.map(() => 0)
  // Entries left out of the table: 1 = dropped. Undefined when none is (the common case).
  let dropped: Uint8Array | undefined
  if (!opts.dev) {
    for (let id = 1; id < total; id++) {
      const ft = tree.ftype[id]
      if (ft !== FType.blockdev && ft !== FType.chardev) continue
      dropped ??= new Uint8Array(total)
      dropped[id] = 1
      droppedDevices[tree.service[id]!]!++
    }
  }
  const n = total - droppedDevices.reduce((a, b) => a + b, 0)
  if (n > MAX_U32) throw new AysfsError('EINVAL', `inode table: ${n} entries is more than it can hold`)

  // Children of each entry as ranges of `kids` (CSR): kids[start[id] .. start[id+1]). The
  // filling pass uses start[p+1] as p's cursor, which leaves it at the end of p's range, i.e.
  // exactly the start of p+1's range: no separate cursor array. Ids stay the tree's (0 ..
  // total-1); only the entries kept are placed.
  const start = new Uint32Array(total + 2)
  for (let id = 1; id < total; id++) if (!dropped?.[id]) start[tree.parent[id]! + 2]++
  for (let id = 0; id < total; id++) start[id + 2] += start[id + 1]!
  const kids = new Uint32Array(Math.max(n - 1, 0))
  for (let id = 1; id < total; id++) if (!dropped?.[id]) kids[start[tree.parent[id]! + 1]!++] = id

  // Sort each directory's children by name bytes (Buffer.compare order: unsigned bytes, a
  // prefix first), as the native binary search expects.
  const nameOff = tree.nameOff
  const nameLen = tree.nameLen
  const byName = (a: number, b: number): number => {
    const ao = nameOff[a]!
    const bo = nameOff[b]!
    const al = nameLen[a]!
    const bl = nameLen[b]!
    const l = al < bl ? al : bl
    for (let i = 0; i < l; i++) {
      const d = names[ao + i]! - names[bo + i]!
      if (d !== 0) return d
    }
    return al - bl
  }
  for (let id = 0; id < total; id++) {
    if (start[id + 1]! - start[id]! > 1) kids.subarray(start[id], start[id + 1]).sort(byName)
  }

  // Breadth-first order: order[index] = id, indexOf[id] = index. A directory's first child is
  // then indexOf[kids[start[id]]], its children being placed together.
  const order = new Uint32Array(n)
  const indexOf = new Uint32Array(total)
  let tail = 1
  for (let i = 0; i < n; i++) {
    const id = order[i]!
    indexOf[id] = i
    for (let k = start[id]!, e = start[id + 1]!; k < e; k++) order[tail++] = kids[k]!
  }

  // String pool: names and symlink targets in id (flist) order, where siblings mostly sit together.
  let targetBytes = 0
  const targets = new Map<number, Buffer>()
  for (const [id, x] of tree.extra) {
    if (id < total && tree.ftype[id] === FType.symlink) {
      const b = Buffer.from(x, 'utf8')
      targets.set(id, b)
      targetBytes += b.length
    }
  }
  let nameBytes = 0
  for (let id = 1; id < total; id++) if (!dropped?.[id]) nameBytes += nameLen[id]!
  const poolLen = nameBytes + targetBytes
  if (poolLen > MAX_U32) throw new AysfsError('EINVAL', `inode table: ${poolLen} bytes of names and targets is more than it can hold (4 GiB)`)
  const pool0 = HEADER_SIZE + ENTRY_SIZE * n
  const buffer = Buffer.alloc(pool0 + poolLen)
  const dv = new DataView(buffer.buffer, buffer.byteOffset, buffer.length)

  dv.setUint32(HEADER.magic, MAGIC, true)
  dv.setUint32(HEADER.version, VERSION, true)
  dv.setUint32(HEADER.count, n, true)
  writeI64(dv, HEADER.stringsOffset, pool0)
  writeI64(dv, HEADER.stringsLength, poolLen)

  // Entries are written in id order, not table order: the tree's columns are then read
  // sequentially and only the table entry (96 bytes, contiguous) is written at a scattered place;
  // the other way round costs a cache miss per column per entry (about twice the time).
  //
  // Inode input: kind \0 path \0 content [\0 n] in one scratch buffer. Siblings mostly come one
  // after the other in id order, so "? \0 <parent path> /" is rewritten only when the parent
  // changes; only kind, name and content change per entry. Directory paths are kept in a byte
  // pool for their children (parents come before children in id order).
  let scratch = Buffer.allocUnsafe(256 * 1024)
  let dirPool = Buffer.allocUnsafe(64 * 1024)
  let dirPoolLen = 0
  // By id, for directories: where their path is in dirPool, as a u32 length then the bytes.
  // `order` is not needed any more: its memory serves (a million entries' table is built near
  // the memory budget, so every 4 bytes an entry count), unless entries were dropped: it is
  // indexed by table index, this by id.
  const dirPathAt = dropped ? new Uint32Array(total) : order
  const words = new Int32Array(4)
  const inos = new InoSet(n)
  inos.add(1, 0)
  const permMask = opts.suid ? 0o7777 : 0o7777 & ~S_ISUID_ISGID
  const md5 = tree.md5
  let poolPos = 0
  let prefixOf = -1
  let prefixEnd = 0

  for (let id = 0; id < total; id++) {
    if (dropped?.[id]) continue
    const at = HEADER_SIZE + ENTRY_SIZE * indexOf[id]!
    const ftype = tree.ftype[id]!
    const parentId = id === 0 ? 0 : tree.parent[id]!
    const nl = id === 0 ? 0 : nameLen[id]!
    const no = nameOff[id]!
    const nameAt = poolPos
    for (let k = 0, q = pool0 + poolPos; k < nl; k++) buffer[q + k] = names[no + k]!
    poolPos += nl
    let size = 0
    const target = targets.get(id)
    if (ftype === FType.file) size = tree.size[id]!
    else if (target !== undefined) size = target.length
    let rdevMajor = 0
    let rdevMinor = 0
    if (ftype === FType.blockdev || ftype === FType.chardev) {
      const x = tree.extra.get(id)
      if (x !== undefined) {
        const comma = x.indexOf(',')
        rdevMajor = Number(x.slice(0, comma))
        rdevMinor = Number(x.slice(comma + 1))
      }
    }

    writeI64(dv, at + ENTRY.size, size)
    writeI64(dv, at + ENTRY.mtime, tree.mtime[id]!)
    writeI64(dv, at + ENTRY.ctime, tree.ctime[id]!)
    dv.setUint32(at + ENTRY.mode, (S_IFMT_BY_FTYPE[ftype]! | (tree.perm[id]! & permMask)) >>> 0, true)
    dv.setUint32(at + ENTRY.uid, tree.uid[id]!, true)
    dv.setUint32(at + ENTRY.gid, tree.gid[id]!, true)
    dv.setUint32(at + ENTRY.parent, id === 0 ? 0 : indexOf[parentId]!, true)
    dv.setUint32(at + ENTRY.nameOffset, nameAt, true)
    dv.setUint32(at + ENTRY.nameLength, nl, true)
    const cs = start[id]!
    const cc = start[id + 1]! - cs
    if (cc > 0) {
      dv.setUint32(at + ENTRY.firstChild, indexOf[kids[cs]!]!, true)
      dv.setUint32(at + ENTRY.childCount, cc, true)
    }
    dv.setUint32(at + ENTRY.rdevMajor, rdevMajor, true)
    dv.setUint32(at + ENTRY.rdevMinor, rdevMinor, true)
    if (ftype === FType.file) {
      for (let k = 0, q = at + ENTRY.md5, m = id * 16; k < 16; k++) buffer[q + k] = md5[m + k]!
    }
    if (target !== undefined) {
      dv.setUint32(at + ENTRY.targetOffset, poolPos, true)
      dv.setUint32(at + ENTRY.targetLength, target.length, true)
      target.copy(buffer, pool0 + poolPos)
      poolPos += target.length
    }

    if (id === 0) {
      dv.setUint32(at + ENTRY.ino, 1, true)
      continue
    }
    if (parentId !== prefixOf) {
      const pa = parentId === 0 ? 0 : dirPathAt[parentId]!
      const pl = parentId === 0 ? 0 : dirPool.readUInt32LE(pa)
      if (pl + 2 * 65536 + MD5_PAD + 64 > scratch.length) scratch = Buffer.allocUnsafe(2 * (pl + 2 * 65536 + MD5_PAD + 64))
      scratch[1] = 0
      dirPool.copy(scratch, 2, pa + 4, pa + 4 + pl)
      scratch[2 + pl] = 0x2f
      prefixEnd = 3 + pl
      prefixOf = parentId
    }
    const contentLen = ftype === FType.file ? 32 : target !== undefined ? target.length : 24
    if (prefixEnd + nl + contentLen + 32 + MD5_PAD > scratch.length) {
      const b = Buffer.allocUnsafe(2 * (prefixEnd + nl + contentLen + 32 + MD5_PAD))
      scratch.copy(b, 0, 0, prefixEnd)
      scratch = b
    }
    scratch[0] = KIND_BY_FTYPE_BYTES[ftype]!
    let p = prefixEnd
    for (let k = 0; k < nl; k++) scratch[p++] = names[no + k]!
    if (ftype === FType.dir) {
      // Its path ("/a/b") for its children.
      const len = p - 2
      if (dirPoolLen + 4 + len > dirPool.length) {
        const b = Buffer.allocUnsafe(Math.max(dirPool.length * 2, dirPoolLen + 4 + len))
        dirPool.copy(b, 0, 0, dirPoolLen)
        dirPool = b
      }
      dirPathAt[id] = dirPoolLen
      dirPool.writeUInt32LE(len, dirPoolLen)
      scratch.copy(dirPool, dirPoolLen + 4, 2, p)
      dirPoolLen += 4 + len
    }
    scratch[p++] = 0
    if (ftype === FType.file) {
      for (let k = 0, m = id * 16; k < 16; k++) {
        const b = md5[m + k]!
        scratch[p++] = HEX_DIGITS[b >> 4]!
        scratch[p++] = HEX_DIGITS[b & 15]!
      }
    } else if (target !== undefined) p += target.copy(scratch, p)
    else if (ftype === FType.blockdev || ftype === FType.chardev) p += scratch.write(`${rdevMajor},${rdevMinor}`, p, 'latin1')
    const base = p
    for (let attempt = 0; ; attempt++) {
      // md5Words pads in place, so the suffix is rewritten on each attempt.
      let q = base
      if (attempt > 0) {
        scratch[q++] = 0
        q += scratch.write(String(attempt), q, 'latin1')
      }
      md5Words(scratch, q, words)
      const lo = words[0]! >>> 0
      const hi = words[1]! >>> 0
      if (hi === 0 && lo <= 1) continue
      if (!inos.add(lo, hi)) continue
      dv.setUint32(at + ENTRY.ino, lo, true)
      dv.setUint32(at + ENTRY.ino + 4, hi, true)
      break
    }
  }
  return { buffer, count: n, droppedDevices }
}

function bad(what: string): never {
  throw new AysfsError('EINVAL', `inode table: ${what}`)
}

/**
 * Decode a table buffer (for tests, `status` and debugging), checking what the native side
 * relies on: header, bounds of every offset, parents and child ranges inside the table.
 * Allocates an object an entry (seconds for a million): `limit` decodes only the first entries.
 * @throws AysfsError `EINVAL` naming what is wrong.
 */
export function readTable(buffer: Buffer, opts: { limit?: number } = {}): { count: number; entries: TableEntry[] } {
  if (buffer.length < HEADER_SIZE) bad(`${buffer.length} bytes is shorter than the header`)
  const dv = new DataView(buffer.buffer, buffer.byteOffset, buffer.length)
  if (dv.getUint32(HEADER.magic, true) !== MAGIC) bad('bad magic')
  const version = dv.getUint32(HEADER.version, true)
  if (version !== VERSION) bad(`version ${version}, expected ${VERSION}`)
  const count = dv.getUint32(HEADER.count, true)
  if (count < 1) bad('no root entry')
  const pool0 = Number(dv.getBigUint64(HEADER.stringsOffset, true))
  const poolLen = Number(dv.getBigUint64(HEADER.stringsLength, true))
  if (pool0 !== HEADER_SIZE + ENTRY_SIZE * count) bad(`stringsOffset ${pool0}, expected ${HEADER_SIZE + ENTRY_SIZE * count}`)
  if (pool0 + poolLen > buffer.length) bad(`string pool ends at ${pool0 + poolLen}, past the buffer (${buffer.length})`)
  const str = (off: number, len: number, what: string): string => {
    if (off + len > poolLen) bad(`${what} [${off}, ${off + len}) outside the string pool`)
    return buffer.toString('utf8', pool0 + off, pool0 + off + len)
  }
  const entries: TableEntry[] = []
  const end = Math.min(count, opts.limit ?? count)
  for (let i = 0; i < end; i++) {
    const at = HEADER_SIZE + ENTRY_SIZE * i
    const u32 = (f: number): number => dv.getUint32(at + f, true)
    const mode = u32(ENTRY.mode)
    const isLink = (mode & 0o170000) === 0o120000
    const isReg = (mode & 0o170000) === 0o100000
    const parent = u32(ENTRY.parent)
    if (parent >= count) bad(`entry ${i}: parent ${parent} out of range`)
    const firstChild = u32(ENTRY.firstChild)
    const childCount = u32(ENTRY.childCount)
    if (childCount > 0 && (firstChild <= i || firstChild + childCount > count)) bad(`entry ${i}: children [${firstChild}, +${childCount}) out of range`)
    const e: TableEntry = {
      index: i,
      ino: dv.getBigUint64(at + ENTRY.ino, true),
      size: Number(dv.getBigUint64(at + ENTRY.size, true)),
      mtime: Number(dv.getBigInt64(at + ENTRY.mtime, true)),
      ctime: Number(dv.getBigInt64(at + ENTRY.ctime, true)),
      mode,
      uid: u32(ENTRY.uid),
      gid: u32(ENTRY.gid),
      parent,
      name: str(u32(ENTRY.nameOffset), u32(ENTRY.nameLength), `entry ${i} name`),
      firstChild,
      childCount,
      rdevMajor: u32(ENTRY.rdevMajor),
      rdevMinor: u32(ENTRY.rdevMinor),
      md5: isReg ? buffer.toString('hex', at + ENTRY.md5, at + ENTRY.md5 + 16) : '',
      path: '/',
    }
    if (isLink) e.target = str(u32(ENTRY.targetOffset), u32(ENTRY.targetLength), `entry ${i} target`)
    if (i > 0) {
      if (parent >= i) bad(`entry ${i}: parent ${parent} is not before it (breadth-first order)`)
      const pp = entries[parent]!.path
      e.path = pp === '/' ? `/${e.name}` : `${pp}/${e.name}`
    }
    entries.push(e)
  }
  return { count, entries }
}
