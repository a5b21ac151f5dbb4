/**
 * Directory locality for speculative fetching: which blobs sit beside a blob that was just
 * missed. Built on the main thread from the merged tree ({@link buildLocality}), handed to the
 * miss worker as plain typed arrays (structured-cloneable), and looked up there by MD5
 * ({@link LocalityIndex}). Only what speculation may fetch is kept: regular files of 1 byte to
 * {@link SMALL_BLOB} bytes.
 *
 * A directory's small files form a *group*, sorted by *kind* (the name from its first dot on:
 * `.cpython-311.pyc`, `.js`; a name without one is its own kind, `''`) and then by size, so the
 * files of one kind are one contiguous range, smallest first. A program that reads one file of a
 * kind in a directory tends to read others of that kind there (an interpreter's imports, a
 * package's modules), and rarely those of another (`.py` sources beside their byte code, the
 * `.opt-1.pyc` of another optimisation level). A directory with a `__pycache__` child has it as
 * its *companion*: a miss of a source there also names the byte code of the companion's most
 * common kind.
 *
 * A miss also names its *cousins*, first in the queue (its own directory goes before them): the
 * files of its name in the sibling directories of its directory, and of its directory's name and
 * its name one level further up. A program that starts a package tends to start others the same
 * way: Node reads `node_modules/<each package>/package.json`, then often `lib/index.js`; Python
 * imports `<each package>/__pycache__/__init__.cpython-311.pyc`. Each miss of a new package was a
 * round trip that directory locality could not foresee (the Node start-up of the WAN benchmark
 * waited on one per directory). The speculator asks for them only over a far link (`FAR_MS` of
 * ./speculate.ts): near, a guess costs the miss worker more CPU than the round trip it saves.
 *
 * The *paths* of small trees (a `"<directory>/<name>"` table, directories only, no symlink) let
 * the miss worker resolve what a file's content names: a `package.json`'s entry file
 * ({@link LocalityIndex.entryPoints}), a `.pyc`'s imports ({@link LocalityIndex.pycImports}), a
 * `.js`'s requires ({@link LocalityIndex.jsImports}).
 */
import type { FlistTree } from '../flist'
import { barePackage, jsSpecifiers, packageEntryFiles, packageRelative } from './entry-points'
import { moduleParts, pycNames } from './imports'

/** Largest blob a miss names (its directory, its cousins), in bytes. */
export const SMALL_BLOB = 512 << 10

/**
 * Largest blob speculation considers at all, in bytes: the files a blob's content names
 * (./entry-points.ts, ./imports.ts) may be this large (the Python start-up of the WAN benchmark
 * loads six `lib-dynload` extension modules of 513 KiB to 1.7 MiB); larger ones are fetched on
 * demand only.
 */
export const NAMED_BLOB = 2 << 20

/**
 * Trees with more small files than this are not guessed from. The groups cost about 30 bytes a
 * file on each thread and 1.1 s a million files at mount (5.3 s to parse them, on the loaded
 * 2-CPU machine of docs/benchmarks.md): a million-entry mount would pass its bounds (3 s, 250 B
 * an entry), for services whose start-up reads a tiny part of them.
 */
export const MAX_LOCALITY_FILES = 250_000

/** Kinds of JavaScript files (./locality.ts kinds: the name from its first dot). */
const JS_KIND = /\.(c|m)?js$/

const FILE = 2
const DIR = 4
const PYCACHE = Buffer.from('__pycache__')
const DOT = 0x2e

/** The locality of a tree, as plain typed arrays. */
export interface LocalityData {
  /** 16 bytes per entry (the MD5, binary); entries grouped by directory. */
  md5: Uint8Array
  size: Float64Array
  /** Kind number of each entry: within a group, entries are sorted by kind, then size. */
  kind: Uint32Array
  /** Group `g` is entries `start[g]` to `start[g + 1]`; `groups + 1` values. */
  start: Uint32Array
  /** Group of the directory's `__pycache__`, or -1. */
  companion: Int32Array
  /** The most common kind of each group (ties: the lower number). */
  mainKind: Uint32Array
  /**
   * *Cousins*: files of one name in sibling directories (the `package.json` of each package in a
   * `node_modules`), or of one relative path below sibling directories (the
   * `__pycache__/__init__.cpython-311.pyc` of each package). Cousin group `c` is entries
   * `cousins[cousinStart[c]]` to `cousins[cousinStart[c + 1] - 1]`, smallest first; only names
   * shared by 2 directories or more.
   */
  cousins: Uint32Array
  cousinStart: Uint32Array
  /** Each entry's cousin group by name (one level), or -1 (empty: no cousins, {@link MAX_COUSIN_FILES}). */
  cousin1: Int32Array
  /** Each entry's cousin group by directory name and name (two levels), or -1. */
  cousin2: Int32Array
  /**
   * *Paths*, for the guesses a file's content names (./entry-points.ts, ./imports.ts): `pathKeys[k]`
   * is `"<directory id>/<name>"` of a small regular file (`pathValues[k]`: its entry) or of a
   * directory (`-1 - its id`), and `"<directory id>/.."` is a directory's parent (`-1 - its id`).
   * Symlinks are not in it: a lookup only walks directories. `entryDir[j]` is entry `j`'s
   * directory. All empty for trees of more than {@link MAX_COUSIN_FILES} small files or
   * {@link MAX_PATH_ENTRIES} entries.
   */
  pathKeys: string[]
  pathValues: Int32Array
  entryDir: Uint32Array
  /** The kinds by number (`'.cpython-311.pyc'`). */
  kindNames: string[]
}

/** The kind of a name: from its first dot (not a leading one) to the end, or `''`. */
export function kindOf(name: string): string {
  const dot = name.indexOf('.', 1)
  return dot < 0 ? '' : name.slice(dot)
}

/**
 * The locality groups of `tree`'s directories; undefined when it has more than
 * {@link MAX_LOCALITY_FILES} small files. Linear in the entries, plus a sort per group.
 */
export function buildLocality(tree: FlistTree, maxFiles = MAX_LOCALITY_FILES): LocalityData | undefined {
  const n = tree.count
  // Files per parent directory (counting sort by parent id).
  const perDir = new Uint32Array(n + 1)
  let files = 0
  for (let id = 1; id < n; id++) {
    if (tree.ftype[id] !== FILE) continue
    const size = tree.size[id]!
    if (size <= 0 || size > NAMED_BLOB) continue
    perDir[tree.parent[id]!]!++
    files++
  }
  if (files > maxFiles) return undefined
  const groupOfDir = new Int32Array(n).fill(-1)
  let groups = 0
  for (let id = 0; id < n; id++) if (perDir[id]! > 0) groupOfDir[id] = groups++
  const start = new Uint32Array(groups + 1)
  {
    let at = 0
    for (let id = 0; id < n; id++) {
      const g = groupOfDir[id]!
      if (g < 0) continue
      start[g] = at
      at += perDir[id]!
    }
    start[groups] = at
  }
  const fill = start.slice(0, groups)
  const ids = new Uint32Array(files)
  const kindNumbers = new Map<string, number>()
  const kindOfId = new Uint32Array(n)
  for (let id = 1; id < n; id++) {
    if (tree.ftype[id] !== FILE) continue
    const size = tree.size[id]!
    if (size <= 0 || size > NAMED_BLOB) continue
    const g = groupOfDir[tree.parent[id]!]!
    ids[fill[g]!++] = id
    // kindOf() on the name's bytes: a million names as strings cost a second.
    const off = tree.nameOff[id]!
    const end = off + tree.nameLen[id]!
    const names = tree.names
    let dot = off + 1
    while (dot < end && names[dot] !== DOT) dot++
    const k = dot >= end ? '' : names.toString('latin1', dot, end)
    let kn = kindNumbers.get(k)
    if (kn === undefined) kindNumbers.set(k, (kn = kindNumbers.size))
    kindOfId[id] = kn
  }
  const md5 = new Uint8Array(files * 16)
  const size = new Float64Array(files)
  const kind = new Uint32Array(files)
  const mainKind = new Uint32Array(groups)
  for (let g = 0; g < groups; g++) {
    const s = start[g]!
    const e = start[g + 1]!
    const slice = Array.from(ids.subarray(s, e))
    slice.sort((a, b) => kindOfId[a]! - kindOfId[b]! || tree.size[a]! - tree.size[b]! || a - b)
    ids.set(slice, s) // entry j is tree id ids[j] from here on
    let best = 0
    let bestKind = 0
    let run = 0
    for (let i = 0; i < slice.length; i++) {
      const id = slice[i]!
      const j = s + i
      md5.set(tree.md5.subarray(id * 16, id * 16 + 16), j * 16)
      size[j] = tree.size[id]!
      kind[j] = kindOfId[id]!
      run = i > 0 && kind[j] === kind[j - 1] ? run + 1 : 1
      if (run > best) {
        best = run
        bestKind = kind[j]!
      }
    }
    mainKind[g] = bestKind
  }
  const cousins = buildCousins(tree, ids, size)
  const paths = buildPaths(tree, ids)
  const companion = new Int32Array(groups).fill(-1)
  for (let id = 1; id < n; id++) {
    if (tree.ftype[id] !== DIR) continue
    const g = groupOfDir[id]!
    if (g < 0 || tree.nameLen[id] !== PYCACHE.length) continue
    if (tree.names.compare(PYCACHE, 0, PYCACHE.length, tree.nameOff[id]!, tree.nameOff[id]! + PYCACHE.length) !== 0) continue
    const parentGroup = groupOfDir[tree.parent[id]!]!
    if (parentGroup >= 0) companion[parentGroup] = g
  }
  return { md5, size, kind, start, companion, mainKind, ...cousins, ...paths, kindNames: [...kindNumbers.keys()] }
}

/** Trees with more entries than this get no path table (nor guesses by content): its keys are
 * two strings a directory and one a small file, on each thread. */
export const MAX_PATH_ENTRIES = 50_000

/** The paths of {@link LocalityData}; `ids[j]` is the tree id of entry `j`. */
function buildPaths(tree: FlistTree, ids: Uint32Array): Pick<LocalityData, 'pathKeys' | 'pathValues' | 'entryDir'> {
  const files = ids.length
  if (files > MAX_COUSIN_FILES || tree.count > MAX_PATH_ENTRIES) return { pathKeys: [], pathValues: new Int32Array(0), entryDir: new Uint32Array(0) }
  const keys: string[] = []
  const values: number[] = []
  for (let id = 1; id < tree.count; id++) {
    if (tree.ftype[id] !== DIR) continue
    const p = tree.parent[id]!
    keys.push(`${p}/${tree.nameOf(id)}`, `${id}/..`)
    values.push(-1 - id, -1 - p)
  }
  const entryDir = new Uint32Array(files)
  for (let j = 0; j < files; j++) {
    const id = ids[j]!
    entryDir[j] = tree.parent[id]!
    keys.push(`${entryDir[j]}/${tree.nameOf(id)}`)
    values.push(j)
  }
  return { pathKeys: keys, pathValues: Int32Array.from(values), entryDir }
}

/**
 * Trees with more small files than this get no cousins: they cost about 2.5 µs a file at mount
 * (0.6-0.8 s for 250,000 files on the loaded bench machine, 5x the directory groups), and a
 * mount with a warm cache pays it too: at most ~50 ms here. The start-ups they help (an
 * interpreter's library, a Node tree) are a few thousand files.
 */
export const MAX_COUSIN_FILES = 20_000

/** Cousin groups larger than this are cut (the smallest kept): a name everywhere says little. */
const MAX_COUSINS = 512

/** The cousins of {@link LocalityData}; `ids[j]` is the tree id of entry `j`. */
function buildCousins(tree: FlistTree, ids: Uint32Array, size: Float64Array): Pick<LocalityData, 'cousins' | 'cousinStart' | 'cousin1' | 'cousin2'> {
  const files = ids.length
  if (files > MAX_COUSIN_FILES) return { cousins: new Uint32Array(0), cousinStart: new Uint32Array(1), cousin1: new Int32Array(0), cousin2: new Int32Array(0) }
  // Numbers, not strings, for the keys: names are interned once (a million files' keys as
  // strings cost seconds). A key is (anchor directory, name) or (anchor, directory name, name).
  const nameIds = new Map<string, number>()
  const names = tree.names
  const nameId = (id: number): number => {
    const s = names.toString('latin1', tree.nameOff[id]!, tree.nameOff[id]! + tree.nameLen[id]!)
    let n = nameIds.get(s)
    if (n === undefined) nameIds.set(s, (n = nameIds.size))
    return n
  }
  const dirNames = new Map<number, number>()
  const pairIds = new Map<number, number>()
  const key1 = new Float64Array(files).fill(-1)
  const key2 = new Float64Array(files).fill(-1)
  const count = new Map<number, number>()
  const bump = (k: number): void => {
    count.set(k, (count.get(k) ?? 0) + 1)
  }
  for (let j = 0; j < files; j++) {
    const id = ids[j]!
    const d = tree.parent[id]!
    if (d === 0 || size[j]! > SMALL_BLOB) continue
    const a1 = tree.parent[d]!
    const name = nameId(id)
    // Anchors and ids stay below 2^26 (a tree's entries), so each key is exact below 2^53.
    key1[j] = a1 * 67_108_864 + name
    bump(key1[j]!)
    if (a1 === 0) continue
    let dn = dirNames.get(d)
    if (dn === undefined) dirNames.set(d, (dn = nameId(d)))
    const pk = dn * 67_108_864 + name
    let pair = pairIds.get(pk)
    if (pair === undefined) pairIds.set(pk, (pair = pairIds.size))
    // Apart from the one-level keys (and from the -1 of none): below -1.
    key2[j] = -2 - (tree.parent[a1]! * 67_108_864 + pair)
    bump(key2[j]!)
  }
  const byKey = new Map<number, number[]>()
  const add = (k: number, j: number): void => {
    if (count.get(k)! < 2) return
    let l = byKey.get(k)
    if (!l) byKey.set(k, (l = []))
    l.push(j)
  }
  for (let j = 0; j < files; j++) {
    if (key1[j] !== -1) add(key1[j]!, j)
    if (key2[j] !== -1) add(key2[j]!, j)
  }
  const groupOfKey = new Map<number, number>()
  const starts: number[] = [0]
  const members: number[] = []
  for (const [k, l] of byKey) {
    l.sort((a, b) => size[a]! - size[b]! || a - b)
    for (let x = 0; x < l.length && x < MAX_COUSINS; x++) members.push(l[x]!)
    groupOfKey.set(k, starts.length - 1)
    starts.push(members.length)
  }
  const cousin1 = new Int32Array(files).fill(-1)
  const cousin2 = new Int32Array(files).fill(-1)
  for (let j = 0; j < files; j++) {
    if (key1[j] !== -1) cousin1[j] = groupOfKey.get(key1[j]!) ?? -1
    if (key2[j] !== -1) cousin2[j] = groupOfKey.get(key2[j]!) ?? -1
  }
  return { cousins: Uint32Array.from(members), cousinStart: Uint32Array.from(starts), cousin1, cousin2 }
}

/** A range of entries `[from, to)` of one group: one kind, smallest first. */
export interface Range {
  from: number
  to: number
  /** The range indexes this list of entries (cousins), not the entries themselves. */
  perm?: Uint32Array
}

/** Keys of cousin ranges start here (above every group-and-kind key). */
const COUSIN_KEYS = 2 ** 52

/** Groups a blob may belong to that a miss looks at (a blob shared by many directories). */
const MAX_GROUPS_PER_BLOB = 2

/** Files one `.pyc` names, at most (./imports.ts). */
export const MAX_IMPORTS = 64

/** {@link LocalityData} with a hash index by MD5, for the miss worker. */
export class LocalityIndex {
  private readonly slots: Int32Array
  private readonly mask: number
  private readonly groupOf: Uint32Array
  private readonly md5: Buffer

  constructor(readonly data: LocalityData) {
    const n = data.size.length
    this.md5 = Buffer.from(data.md5.buffer, data.md5.byteOffset, data.md5.byteLength)
    let cap = 16
    while (cap < n * 2) cap *= 2
    this.mask = cap - 1
    // Open addressing on the MD5's first 32 bits (uniform), entry index + 1 in each slot.
    this.slots = new Int32Array(cap)
    for (let i = 0; i < n; i++) {
      let h = this.md5.readUInt32LE(i * 16) & this.mask
      while (this.slots[h] !== 0) h = (h + 1) & this.mask
      this.slots[h] = i + 1
    }
    this.groupOf = new Uint32Array(n)
    for (let g = 0; g + 1 < data.start.length; g++) this.groupOf.fill(g, data.start[g]!, data.start[g + 1]!)
  }

  /** {@link LocalityData.pathKeys} as a map (built at the first lookup). */
  private pathMap?: Map<string, number>

  private paths(): Map<string, number> {
    if (!this.pathMap) {
      const m = new Map<string, number>()
      const { pathKeys, pathValues } = this.data
      for (let k = 0; k < pathKeys.length; k++) m.set(pathKeys[k]!, pathValues[k]!)
      this.pathMap = m
    }
    return this.pathMap
  }

  /** Whether the index has paths (small trees: {@link MAX_PATH_ENTRIES}). */
  get hasPaths(): boolean {
    return this.data.entryDir.length > 0
  }

  /** Directory of entry `i` (a tree id), when {@link hasPaths}. */
  dirOf(i: number): number {
    return this.data.entryDir[i]!
  }

  /** The parent of directory `dir`, or undefined (the root). */
  parentOf(dir: number): number | undefined {
    const v = this.paths().get(`${dir}/..`)
    return v === undefined ? undefined : -1 - v
  }

  /**
   * What `rel` (components joined by `/`) names below directory `dir`, walking down directories
   * only (an empty, `.` or `..` component: nothing): `{ entry }` for a small regular file, `{ dir }` for a directory,
   * undefined for anything else.
   */
  lookup(dir: number, rel: string): { entry: number } | { dir: number } | undefined {
    const m = this.paths()
    let d = dir
    const parts = rel.split('/')
    for (let k = 0; k < parts.length; k++) {
      const c = parts[k]!
      // `".."` keys a directory's parent: never a way up for a name a file gave.
      if (c === '' || c === '.' || c === '..') return undefined
      const v = m.get(`${d}/${c}`)
      if (v === undefined) return undefined
      if (v >= 0) return k === parts.length - 1 ? { entry: v } : undefined
      d = -1 - v
    }
    return { dir: d }
  }

  /** A small regular file `rel` below `dir` (see {@link lookup}), or undefined. */
  fileAt(dir: number, rel: string): number | undefined {
    const r = this.lookup(dir, rel)
    return r && 'entry' in r ? r.entry : undefined
  }

  /**
   * The entry files of the packages whose `package.json` is the blob `md5` with content `json`
   * (./entry-points.ts), one a package at most: only files below the package's own directory.
   */
  entryPoints(md5: string, json: Uint8Array): number[] {
    if (!this.hasPaths) return []
    const out: number[] = []
    for (const i of this.entriesOf(md5)) {
      const dir = this.dirOf(i)
      if (this.fileAt(dir, 'package.json') !== i) continue
      for (const e of packageEntryFiles(json, (rel) => this.fileAt(dir, rel))) if (!out.includes(e)) out.push(e)
    }
    return out
  }

  /** Whether the blob is byte code whose content names its imports ({@link pycImports}). */
  namesImports(md5: string): boolean {
    if (!this.hasPaths) return false
    return this.entriesOf(md5).some((i) => this.data.kindNames[this.data.kind[i]!]!.endsWith('.pyc'))
  }

  /** Whether the blob's content may name files: byte code, JavaScript, a `package.json`. */
  namesContent(md5: string): boolean {
    if (!this.hasPaths) return false
    return this.entriesOf(md5).some((i) => {
      const kind = this.data.kindNames[this.data.kind[i]!]!
      return kind.endsWith('.pyc') || JS_KIND.test(kind) || this.fileAt(this.dirOf(i), 'package.json') === i
    })
  }

  /** Module name to `.so` entry, per `lib-dynload` directory looked at. */
  private readonly dynload = new Map<number, Map<string, number>>()

  /**
   * The files the module-level imports of a `.pyc` resolve to (./imports.ts), in its order, for
   * the byte code `data` of blob `md5` in a `__pycache__`: each name as a module or package of
   * the `.pyc`'s own package, then of the import root above it (the first directory up that is
   * not a package), then as an extension module in the root's `lib-dynload`. Byte code of the
   * same kind (`.cpython-311.pyc`) only. At most {@link MAX_IMPORTS} files.
   */
  pycImports(md5: string, data: Uint8Array): number[] {
    if (!this.hasPaths) return []
    const out: number[] = []
    // Byte code that has nothing an optimisation level drops is the same blob at every level
    // (`x.cpython-311.pyc`, `x.cpython-311.opt-1.pyc`): it then names the imports of the plain one.
    const tagOf = (i: number): string => this.data.kindNames[this.data.kind[i]!]!
    const entries = this.entriesOf(md5, 4).filter((i) => tagOf(i).endsWith('.pyc'))
    const plain = entries.filter((i) => !tagOf(i).includes('.opt-'))
    for (const i of plain.length > 0 ? plain : entries) {
      const tag = tagOf(i)
      const cache = this.dirOf(i)
      const dir = this.parentOf(cache)
      if (dir === undefined) continue
      const found = this.lookup(dir, '__pycache__')
      if (!found || !('dir' in found) || found.dir !== cache) continue
      const names = pycNames(data)
      if (!names) continue
      const isPackage = (d: number): boolean => this.fileAt(d, '__init__.py') !== undefined || this.fileAt(d, `__pycache__/__init__${tag}`) !== undefined
      let root = dir
      for (let up = 0; up < 16 && isPackage(root); up++) {
        const p = this.parentOf(root)
        if (p === undefined) break
        root = p
      }
      const bases = root === dir ? [root] : [dir, root]
      const dyn = this.dynloadOf(root)
      const add = (e: number | undefined): void => {
        if (e !== undefined && e !== i && out.length < MAX_IMPORTS && !out.includes(e)) out.push(e)
      }
      for (const name of names) {
        const parts = moduleParts(name)
        if (!parts) continue
        for (const base of bases) {
          let d = base
          for (const c of parts) {
            const mod = this.fileAt(d, `__pycache__/${c}${tag}`)
            if (mod !== undefined) {
              add(mod)
              break
            }
            const sub = this.lookup(d, c)
            const init = sub && 'dir' in sub ? this.fileAt(sub.dir, `__pycache__/__init__${tag}`) : undefined
            if (init === undefined) break
            add(init)
            d = (sub as { dir: number }).dir
          }
        }
        if (parts.length === 1) add(dyn?.get(parts[0]!))
      }
    }
    return out
  }

  /**
   * The files a JavaScript file (`data`, blob `md5`, named `*.js`, `.cjs` or `.mjs`) asks for by a
   * literal (./entry-points.ts): a relative one as Node resolves it (`x`, `x.js`, `x.json`,
   * `x/index.js`) from the file's directory; a bare one in the nearest `node_modules` up that
   * holds the package: its `package.json` (Node reads it for `exports` and `type`), then the file
   * below it, or else the entry file the package's tree alone tells ({@link treeEntry}; the one
   * its `package.json` names is named when that lands). Each JavaScript file named comes after
   * the nearest `package.json` up from it, which Node reads first (the package scope's `type`).
   * At most {@link MAX_IMPORTS} files.
   */
  jsImports(md5: string, data: Uint8Array): number[] {
    if (!this.hasPaths) return []
    const out: number[] = []
    for (const i of this.entriesOf(md5)) {
      const kind = this.data.kindNames[this.data.kind[i]!]!
      if (!JS_KIND.test(kind)) continue
      const dir = this.dirOf(i)
      const push = (e: number): void => {
        if (e !== i && out.length < MAX_IMPORTS && !out.includes(e)) out.push(e)
      }
      const add = (e: number | undefined): boolean => {
        if (e === undefined) return false
        if (JS_KIND.test(this.data.kindNames[this.data.kind[e]!]!)) {
          const scope = this.scopeOf(this.dirOf(e))
          if (scope !== undefined) push(scope)
        }
        push(e)
        return true
      }
      const asFile = (d: number, rel: string): boolean => {
        if (rel === '') return add(this.fileAt(d, 'index.js'))
        for (const n of [rel, `${rel}.js`, `${rel}.json`, `${rel}/index.js`]) if (add(this.fileAt(d, n))) return true
        return false
      }
      for (const spec of jsSpecifiers(data)) {
        if (spec.startsWith('./') || spec.startsWith('../')) {
          // Up for each leading "..", then down: only directories of the tree.
          let d: number | undefined = dir
          const parts = spec.split('/')
          let k = 0
          for (; k < parts.length && (parts[k] === '.' || parts[k] === '..') && d !== undefined; k++) if (parts[k] === '..') d = this.parentOf(d)
          const rel = packageRelative(parts.slice(k).join('/'))
          if (d !== undefined && rel !== undefined) asFile(d, rel)
          continue
        }
        const bare = barePackage(spec)
        if (!bare) continue
        for (let d: number | undefined = dir, up = 0; d !== undefined && up < 32; d = this.parentOf(d), up++) {
          const pkg = this.lookup(d, `node_modules/${bare.name}`)
          if (!pkg || !('dir' in pkg)) continue
          const json = this.fileAt(pkg.dir, 'package.json')
          add(json)
          if (bare.sub === '' || !asFile(pkg.dir, bare.sub)) add(json === undefined ? undefined : this.treeEntry(pkg.dir, json))
          break
        }
      }
    }
    return out
  }

  /** The nearest `package.json` in `dir` or up from it (8 levels at most): a JavaScript file's package scope. */
  private scopeOf(dir: number): number | undefined {
    for (let d: number | undefined = dir, up = 0; d !== undefined && up < 8; d = this.parentOf(d), up++) {
      const json = this.fileAt(d, 'package.json')
      if (json !== undefined) return json
    }
    return undefined
  }

  /**
   * A package's entry file as its tree alone tells, before its `package.json` (entry `json`, in
   * `dir`) has landed: `index.js`, `lib/index.js`, or the only `.js` file beside the
   * `package.json`; else undefined. Without it, each package a start-up required cost two round
   * trips, its `package.json`'s and then its entry file's.
   */
  private treeEntry(dir: number, json: number): number | undefined {
    const e = this.fileAt(dir, 'index.js') ?? this.fileAt(dir, 'lib/index.js')
    if (e !== undefined) return e
    const g = this.groupOf[json]!
    let only: number | undefined
    for (let j = this.data.start[g]!; j < this.data.start[g + 1]!; j++) {
      if (this.data.kindNames[this.data.kind[j]!] !== '.js') continue
      if (only !== undefined) return undefined
      only = j
    }
    return only
  }

  /** The extension modules of `root/lib-dynload` by module name (looked up once a directory). */
  private dynloadOf(root: number): Map<string, number> | undefined {
    const d = this.lookup(root, 'lib-dynload')
    if (!d || !('dir' in d)) return undefined
    let m = this.dynload.get(d.dir)
    if (m) return m
    m = new Map()
    const prefix = `${d.dir}/`
    const { pathKeys, pathValues } = this.data
    for (let k = 0; k < pathKeys.length; k++) {
      const key = pathKeys[k]!
      if (pathValues[k]! < 0 || !key.startsWith(prefix) || !key.endsWith('.so')) continue
      const name = key.slice(prefix.length)
      const dot = name.indexOf('.')
      if (dot > 0 && !m.has(name.slice(0, dot))) m.set(name.slice(0, dot), pathValues[k]!)
    }
    this.dynload.set(d.dir, m)
    return m
  }

  /** The entries of blob `md5`, at most `max`. */
  entriesOf(md5: string, max = MAX_GROUPS_PER_BLOB): number[] {
    const q = Buffer.from(md5, 'hex')
    const out: number[] = []
    if (q.length !== 16) return out
    let h = q.readUInt32LE(0) & this.mask
    for (let slot = this.slots[h]!; slot !== 0 && out.length < max; slot = this.slots[(h = (h + 1) & this.mask)]!) {
      const i = slot - 1
      if (this.md5.compare(q, 0, 16, i * 16, i * 16 + 16) === 0) out.push(i)
    }
    return out
  }

  /** Entries in the index. */
  get size(): number {
    return this.data.size.length
  }

  /** MD5 (hex) of entry `i`. */
  md5Of(i: number): string {
    return this.md5.toString('hex', i * 16, i * 16 + 16)
  }

  /** Size of entry `i`. */
  sizeOf(i: number): number {
    return this.data.size[i]!
  }

  /**
   * What a miss of `md5` names: for each group the blob is in (at most
   * {@link MAX_GROUPS_PER_BLOB}), the range of its kind there, then the companion's main kind.
   * Each range has a key, so a caller can take a range only once.
   */
  neighbours(md5: string, cousins = true, ownDir = true): { key: number; range: Range }[] {
    if (md5.length !== 32) return []
    const q = Buffer.from(md5, 'hex')
    const out: { key: number; range: Range }[] = []
    let h = q.readUInt32LE(0) & this.mask
    let seen = 0
    for (let slot = this.slots[h]!; slot !== 0 && seen < MAX_GROUPS_PER_BLOB; slot = this.slots[(h = (h + 1) & this.mask)]!) {
      const i = slot - 1
      if (this.md5.compare(q, 0, 16, i * 16, i * 16 + 16) !== 0) continue
      if (this.data.size[i]! > SMALL_BLOB) break // a large blob names nothing
      seen++
      const g = this.groupOf[i]!
      // Cousins first: the speculator takes the newest range first, so the miss's own directory
      // goes before them (with the cousins first instead, the Python start-up took 1.09x as long).
      for (const c of cousins ? [this.data.cousin2[i] ?? -1, this.data.cousin1[i] ?? -1] : []) {
        if (c >= 0 && !out.some((o) => o.key === COUSIN_KEYS + c)) out.push({ key: COUSIN_KEYS + c, range: { from: this.data.cousinStart[c]!, to: this.data.cousinStart[c + 1]!, perm: this.data.cousins } })
      }
      if (!ownDir) continue
      out.push(this.kindRange(g, this.data.kind[i]!))
      const c = this.data.companion[g]!
      if (c >= 0) out.push(this.kindRange(c, this.data.mainKind[c]!))
    }
    return out
  }

  /** The entries of kind `k` in group `g` (contiguous: sorted by kind), and its key. */
  private kindRange(g: number, k: number): { key: number; range: Range } {
    const { start, kind } = this.data
    let from = start[g]!
    let to = start[g + 1]!
    while (from < to && kind[from] !== k) from++
    let end = from
    // Sorted by size within a kind: the large ones (above SMALL_BLOB) end it, and are left out.
    while (end < to && kind[end] === k && this.data.size[end]! <= SMALL_BLOB) end++
    to = end
    // Group and kind in one number: groups and kinds are each far below 2^26.
    return { key: g * 67_108_864 + k, range: { from, to } }
  }
}
