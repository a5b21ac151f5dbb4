/**
 * Parse one flist, both line shapes (seed `path|md5|size`, extended with ten fields), keeping
 * what is under the prefix, into a {@link FlistTree}.
 *
 * Built for million-line flists: the bytes are walked line by line (no split into strings), a
 * file is read in chunks with `readSync` (this may run where libuv's threadpool must not be used),
 * and each line's fields go into one reused record ({@link EntryAttrs}) that the tree stores.
 */
import { isUtf8 } from 'node:buffer'
import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import { EMPTY_MD5 } from '../blob'
import { AysfsError, fromSystemError } from '../errors'
import { componentProblem, flistPathProblem, normalisePrefix, pathLengthProblem } from '../paths'
import { systemIds } from '../system-ids'
import { DEFAULT_PERM, FLAG_EXPLICIT, FLAG_HAS_CHILDREN, FType, FlistTree, KIND_NAME, type EntryAttrs, type FlistEntry, type FlistSource } from './tree'

/** Longest accepted line, without its line end. */
const MAX_LINE_BYTES = 64 * 1024

const DIR = FType.dir
const NL = 10
const CR = 13
const PIPE = 124
const SLASH = 47
const HASH = 35
const COMMA = 44
const MINUS = 45
const EQUALS = 61
const CHUNK = 4 * 1024 * 1024

const EMPTY_MD5_BYTES = Buffer.from(EMPTY_MD5, 'hex')
const HEX = new Int8Array(256).fill(-1)
for (let i = 0; i < 10; i++) HEX[48 + i] = i
for (let i = 0; i < 6; i++) HEX[97 + i] = HEX[65 + i] = 10 + i

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
  /** The path of the first line outside the prefix, for messages (lib/prefix-warning.ts). */
  firstIgnored?: string
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

/** The prefix, normalised, or a TypeError: options are the caller's, not the user's, mistakes. */
function checkedPrefix(prefix: string): string {
  if (typeof prefix !== 'string') throw new TypeError(`prefix must be an absolute path, got ${JSON.stringify(prefix)}`)
  const p = normalisePrefix(prefix)
  const problem = flistPathProblem(p)
  if (problem) throw new TypeError(`prefix must be an absolute flist path, got ${JSON.stringify(prefix)}: it ${problem.text}`)
  return p
}

/** A path (or other field) for a message: quoted, escaped, shortened. */
function quote(buf: Uint8Array, s: number, e: number): string {
  const str = Buffer.from(buf.buffer, buf.byteOffset + s, Math.min(e - s, 200)).toString('utf8')
  return JSON.stringify(str) + (e - s > 200 ? '...' : '')
}

/** Whether `buf[s..e)` is all hex digits. */
function isHexRange(buf: Uint8Array, s: number, e: number): boolean {
  for (let i = s; i < e; i++) if (HEX[buf[i]!]! < 0) return false
  return true
}

/** The integer `buf[s..e)` in `base` (8 or 10), of at most `maxDigits` digits and at most `max`; else -1. */
function digits(buf: Uint8Array, s: number, e: number, base: number, maxDigits: number, max: number): number {
  if (s === e || e - s > maxDigits) return -1
  let n = 0
  for (let i = s; i < e; i++) {
    const d = buf[i]! - 48
    if (d < 0 || d >= base) return -1
    n = n * base + d
  }
  return n > max ? -1 : n
}

/** Non-negative decimal integer <= 2^53-1 in `buf[s..e)`, or -1. */
function parseUint(buf: Uint8Array, s: number, e: number): number {
  return digits(buf, s, e, 10, 16, Number.MAX_SAFE_INTEGER)
}

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
  /** Where the `|` of the current line are. */
  private readonly pipes = new Int32Array(9)
  /** `slashes[k]` is the k-th `/` of the current line's path; `slashes[nc]` its end. */
  private readonly slashes = new Int32Array(MAX_LINE_BYTES / 2 + 2)
  /** What the current line says: filled by {@link seedFields} or {@link extendedFields}. */
  private readonly rec: EntryAttrs = { ftype: 0, perm: 0, uid: 0, gid: 0, size: 0, mtime: 0, ctime: 0, md5: new Uint8Array(16), extra: undefined }
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
      this.users = opts.users ?? sys.users.byName
      this.groups = opts.groups ?? sys.groups.byName
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
    const nc = this.pathComponents(buf, s, pe)

    // Under the prefix? The prefix is normalised, so a byte match ending at "/" or at the end is
    // a match on whole components.
    const plen = this.plen
    const under = plen === 0 || (pe - s >= plen && buf.compare(this.prefixBuf, 0, plen, s, s + plen) === 0 && (pe - s === plen || buf[s + plen] === SLASH))

    if (np === 2) this.seedFields(buf, pe, e)
    else this.extendedFields(buf, s, e, under)
    if (!under) {
      if (this.res.ignored++ === 0) this.res.firstIgnored = buf.toString('utf8', s, pe)
      return
    }
    this.store(buf, s, pe, nc)
  }

  /**
   * Checks the path `buf[s..pe)` against the flist path rules (lib/paths.ts: absolute, every
   * component, the length) and records its slashes; returns its number of components.
   */
  private pathComponents(buf: Buffer, s: number, pe: number): number {
    if (pe === s || buf[s] !== SLASH) this.fail(`path must be absolute, got ${quote(buf, s, pe)}`)
    const sl = this.slashes
    let nc = 0
    sl[0] = s
    if (pe - s > 1) {
      for (let i = s + 1; i <= pe; i++) {
        if (i < pe && buf[i] !== SLASH) continue
        const problem = componentProblem(buf, sl[nc]! + 1, i)
        if (problem !== undefined) this.fail(`path ${quote(buf, s, pe)} ${problem}`)
        sl[++nc] = i
      }
    } else sl[1] = pe
    const long = pathLengthProblem(pe - s)
    if (long !== undefined) this.fail(`path ${quote(buf, s, pe)} ${long}`)
    return nc
  }

  /** A seed line, `path|md5|size` (`pe` is its first `|`): a regular file of the defaults. */
  private seedFields(buf: Buffer, pe: number, e: number): void {
    const r = this.rec
    const d = this.tree.defaults
    const p1 = this.pipes[1]!
    if (!this.hex(buf, pe + 1, p1)) this.fail(`bad md5 ${quote(buf, pe + 1, p1)}: expected 32 hex digits`)
    const size = parseUint(buf, p1 + 1, e)
    if (size < 0) this.fail(`bad size ${quote(buf, p1 + 1, e)}: expected an integer from 0 to 2^53-1`)
    r.ftype = FType.file
    r.perm = DEFAULT_PERM
    r.uid = d.uid
    r.gid = d.gid
    r.size = size
    r.mtime = r.ctime = d.time
    r.extra = undefined
  }

  /** An extended line, `path|hash|size|uname|gname|perms|ftype|ctime|mtime|extended`. Owners are
   * looked up only for lines under the prefix. */
  private extendedFields(buf: Buffer, s: number, e: number, under: boolean): void {
    const r = this.rec
    const pipes = this.pipes
    const f = (k: number): number => (k === 0 ? s : pipes[k - 1]! + 1)
    const t = f(6)
    if (pipes[6] !== t + 1 || buf[t]! < 48 || buf[t]! > 54) this.fail(`bad ftype ${quote(buf, t, pipes[6]!)}: expected 0 to 6`)
    const ftype = buf[t]! - 48
    const regular = ftype === FType.file
    // hash and size: required for regular files; for others they carry nothing, but a value
    // there must still look right (a generator may write a directory's st_size).
    let size = pipes[2]! === f(2) && !regular ? 0 : parseUint(buf, f(2), pipes[2]!)
    if (size < 0) this.fail(`bad size ${quote(buf, f(2), pipes[2]!)}: expected an integer from 0 to 2^53-1`)
    if (pipes[1] === f(1)) {
      if (regular && size !== 0) this.fail('missing md5 of a non-empty regular file')
      if (regular) r.md5.set(EMPTY_MD5_BYTES)
    } else if (!this.hex(buf, f(1), pipes[1]!)) this.fail(`bad md5 ${quote(buf, f(1), pipes[1]!)}: expected 32 hex digits`)
    if (!regular) size = 0
    const perm = digits(buf, f(5), pipes[5]!, 8, 7, 0o177777)
    if (perm < 0) this.fail(`bad perms ${quote(buf, f(5), pipes[5]!)}: expected octal permission bits like 755`)
    r.ctime = this.seconds(buf, f(7), pipes[7]!, 'ctime')
    r.mtime = this.seconds(buf, f(8), pipes[8]!, 'mtime')
    r.extra = undefined
    const xs = f(9)
    if (ftype === FType.symlink) {
      if (xs === e) this.fail('symlink with an empty target')
      for (let i = xs; i < e; i++) if (buf[i] === CR) this.fail('stray CR inside the line')
      r.extra = buf.toString('utf8', xs, e)
      size = e - xs
    } else if (ftype === FType.blockdev || ftype === FType.chardev) {
      let comma = xs
      while (comma < e && buf[comma] !== COMMA) comma++
      const maj = comma === e ? -1 : parseUint(buf, xs, comma)
      const min = comma === e ? -1 : parseUint(buf, comma + 1, e)
      if (maj < 0 || min < 0 || maj > 0xffffffff || min > 0xffffffff) this.fail(`bad device numbers ${quote(buf, xs, e)}: expected major,minor`)
      r.extra = `${maj},${min}`
    } else if (regular) {
      if (xs !== e) r.extra = this.fileKeys(buf, xs, e)
    } else if (xs !== e) {
      this.fail(`the extended field must be empty for a ${KIND_NAME[ftype]}, got ${quote(buf, xs, e)}`)
    }
    const d = this.tree.defaults
    r.ftype = ftype
    r.perm = perm & 0o7777 // type bits, if present, are ignored
    r.size = size
    r.uid = under ? this.id(buf, f(3), pipes[3]!, this.users, this.userCache, d.uid) : d.uid
    r.gid = under ? this.id(buf, f(4), pipes[4]!, this.groups, this.groupCache, d.gid) : d.gid
  }

  /**
   * A regular file's extended field `buf[xs..e)`: `key=value` entries separated by `,`. Keys
   * this version does not know are skipped (so a later field never makes a node refuse a flist);
   * a malformed entry, or a known key with a bad value, fails the line. Returns the chunk index
   * (`chunks=<md5>`, lower-case hex), or undefined without one.
   */
  private fileKeys(buf: Buffer, xs: number, e: number): string | undefined {
    let chunks: string | undefined
    for (let s = xs; s <= e; ) {
      let end = s
      while (end < e && buf[end] !== COMMA) end++
      let eq = s
      while (eq < end && buf[eq] !== EQUALS) eq++
      if (eq === end || eq === s) this.fail(`bad extended entry ${quote(buf, s, end)}: expected key=value (entries separated by ",")`)
      for (let i = s; i < eq; i++) {
        const b = buf[i]!
        const ok = (b >= 97 && b <= 122) || (b >= 48 && b <= 57) || b === 95 || b === 45 || b === 46
        if (!ok) this.fail(`bad extended key ${quote(buf, s, eq)}: expected lower-case letters, digits, "_", "-" or "."`)
      }
      if (eq - s === 6 && buf.toString('latin1', s, eq) === 'chunks') {
        if (chunks !== undefined) this.fail('chunks= given twice in the extended field')
        if (end - eq - 1 !== 32 || !isHexRange(buf, eq + 1, end)) this.fail(`bad chunks ${quote(buf, eq + 1, end)}: expected the 32 hex digits of a chunk index's md5`)
        chunks = buf.toString('latin1', eq + 1, end).toLowerCase()
      }
      for (let i = eq + 1; i < end; i++) if (buf[i] === CR) this.fail('stray CR inside the line')
      s = end + 1
    }
    return chunks
  }

  /** Decode 32 hex digits into the record's md5; false if they are not that. */
  private hex(buf: Uint8Array, s: number, e: number): boolean {
    if (e - s !== 32) return false
    const md5 = this.rec.md5
    for (let i = 0; i < 16; i++) {
      const hi = HEX[buf[s + 2 * i]!]!
      const lo = HEX[buf[s + 2 * i + 1]!]!
      if (hi < 0 || lo < 0) return false
      md5[i] = (hi << 4) | lo
    }
    return true
  }

  /** A signed decimal integer (Unix seconds). */
  private seconds(buf: Uint8Array, s: number, e: number, what: string): number {
    const neg = s < e && buf[s] === MINUS
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

  /** Puts the record at the path `buf[s..pe)` of `nc` components, making implied directories. */
  private store(buf: Buffer, s: number, pe: number, nc: number): void {
    const tree = this.tree
    const ftype = this.rec.ftype
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
    tree.setEntry(id, this.rec, this.lineNo)
    this.opts.onEntry?.(tree.entry(id))
  }

  private newEntry(parent: number, buf: Buffer, s: number, e: number): number {
    if (this.tree.count > this.maxEntries) this.fail(`more than ${this.maxEntries} entries (main.max_entries)`)
    return this.tree.add(parent, buf, s, e, this.lineNo, 0)
  }
}

/**
 * Parse one flist, both line shapes, `\n` or `\r\n`.
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
  const prefix = checkedPrefix(opts.prefix)
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
  const unreadable = (err: unknown): AysfsError => fromSystemError(err, `flist ${opts.name} (${file}): cannot read`, { file })
  let fd: number
  try {
    fd = openSync(file, 'r')
  } catch (err) {
    throw unreadable(err)
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
    throw unreadable(err)
  } finally {
    closeSync(fd)
  }
}

function finish(p: Parser): ParsedFlist {
  p.res.entries = p.tree.count - 1
  return p.res
}
