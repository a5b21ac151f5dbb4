// A generated tree shaped like a software install, with every kind of entry an flist can
// describe: nested and empty directories, files from 0 bytes to MiBs (some sharing content),
// symlinks (some with `|` in the target), fifos, sockets, device nodes, setuid modes.
import { prng } from '../../bench/prng'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { mergeServices, parseFlist } from '../../lib/flist'
import { buildTable } from '../../lib/table'

export type Kind = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chr' | 'blk'

export interface GenEntry {
  /** Exposed path, e.g. `/lib/a/b.py` (the flist has it under the prefix). */
  path: string
  kind: Kind
  /** Permission bits, e.g. 0o4755. */
  perms: number
  size: number
  md5: string
  mtime: number
  target?: string
  major?: number
  minor?: number
  content?: Buffer
}

const FTYPE: Record<Kind, number> = { socket: 0, symlink: 1, file: 2, blk: 3, dir: 4, chr: 5, fifo: 6 }
export const EMPTY_MD5 = 'd41d8cd98f00b204e9800998ecf8427e'

export function md5(data: Buffer | string): string {
  return crypto.createHash('md5').update(data).digest('hex')
}

export interface TreeOptions {
  /** Entries to make, at least. */
  entries: number
  seed?: number
  /** How many files of 1-3 MiB. */
  bigFiles?: number
  /** Bytes of the largest small file. */
  maxSmall?: number
}

/** Makes a tree; directories come before their children. */
export function generateTree(opts: TreeOptions): GenEntry[] {
  const rand = prng(opts.seed ?? 1)
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!
  const out: GenEntry[] = []
  const dirs: string[] = ['']
  const contents: Buffer[] = []
  const mtime = (): number => 1_600_000_000 + Math.floor(rand() * 100_000_000)
  const add = (e: Omit<GenEntry, 'mtime'>): void => {
    out.push({ ...e, mtime: mtime() })
  }
  let n = 0
  while (out.length < opts.entries) {
    n++
    const parent = pick(dirs)
    const r = rand()
    if (r < 0.12 && parent.split('/').length < 8) {
      const p = `${parent}/d${n}`
      dirs.push(p)
      add({ path: p, kind: 'dir', perms: rand() < 0.1 ? 0o700 : 0o755, size: 0, md5: '' })
    } else if (r < 0.15) {
      // an empty directory: never picked as a parent
      add({ path: `${parent}/empty${n}`, kind: 'dir', perms: 0o555, size: 0, md5: '' })
    } else if (r < 0.19) {
      const target = rand() < 0.3 ? `weird|target|${n}` : `../f${n - 1}.py`
      add({ path: `${parent}/l${n}`, kind: 'symlink', perms: 0o777, size: Buffer.byteLength(target), md5: '', target })
    } else if (r < 0.195) {
      add({ path: `${parent}/fifo${n}`, kind: 'fifo', perms: 0o644, size: 0, md5: '' })
    } else if (r < 0.2) {
      add({ path: `${parent}/sock${n}`, kind: 'socket', perms: 0o755, size: 0, md5: '' })
    } else if (r < 0.205) {
      const kind = rand() < 0.5 ? 'chr' : 'blk'
      add({ path: `${parent}/dev${n}`, kind, perms: 0o660, size: 0, md5: '', major: 1 + Math.floor(rand() * 200), minor: Math.floor(rand() * 255) })
    } else {
      let content: Buffer
      if (contents.length > 10 && rand() < 0.05) {
        content = pick(contents) // the same content in another file: stored once
      } else if (rand() < 0.03) {
        content = Buffer.alloc(0)
      } else {
        const size = Math.floor(rand() * rand() * (opts.maxSmall ?? 16384))
        content = Buffer.alloc(size)
        for (let i = 0; i < size; i++) content[i] = (rand() * 256) | 0
        content.write(`file ${n}\n`.slice(0, size))
        contents.push(content)
      }
      const perms = rand() < 0.02 ? 0o4755 : rand() < 0.3 ? 0o755 : 0o644
      add({ path: `${parent}/f${n}.py`, kind: 'file', perms, size: content.length, md5: md5(content), content })
    }
  }
  for (let i = 0; i < (opts.bigFiles ?? 0); i++) {
    const size = (1 + Math.floor(rand() * 2)) * (1 << 20) + Math.floor(rand() * 65536)
    const content = crypto.randomBytes(size)
    add({ path: `/big${i}.bin`, kind: 'file', perms: 0o644, size, md5: md5(content), content })
  }
  return out
}

/** The tree as an extended-format flist under `prefix` (with the root line). */
export function extendedFlist(entries: GenEntry[], prefix: string): string {
  const lines = [`${prefix}||0|root|root|755|4|1600000000|1600000000|`]
  for (const e of entries) {
    const extended = e.kind === 'symlink' ? e.target : e.kind === 'chr' || e.kind === 'blk' ? `${e.major},${e.minor}` : ''
    const hash = e.kind === 'file' ? e.md5 : ''
    const size = e.kind === 'file' ? e.size : 0
    lines.push(`${prefix}${e.path}|${hash}|${size}|root|root|${e.perms.toString(8)}|${FTYPE[e.kind]}|${e.mtime}|${e.mtime}|${extended}`)
  }
  return lines.join('\n') + '\n'
}

/** Blobs as `<dir>/<md5>` (what the fixture fetcher copies from). */
export function writeFlatBlobs(entries: GenEntry[], dir: string): void {
  fs.mkdirSync(dir, { recursive: true })
  for (const e of entries) if (e.kind === 'file' && e.content) fs.writeFileSync(path.join(dir, e.md5), e.content)
}

/** A store: `R/files/<h0>/<h1>/<md5>` and `R/md/<id>.flist`. */
export function writeStore(entries: GenEntry[], root: string, id: string, prefix: string): void {
  for (const e of entries) {
    if (e.kind !== 'file' || !e.content) continue
    const dir = path.join(root, 'files', e.md5[0]!, e.md5[1]!)
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(dir, e.md5), e.content)
  }
  fs.mkdirSync(path.join(root, 'md'), { recursive: true })
  fs.writeFileSync(path.join(root, 'md', `${id}.flist`), extendedFlist(entries, prefix))
}

const S_IFMT: Record<Kind, number> = {
  file: fs.constants.S_IFREG,
  dir: fs.constants.S_IFDIR,
  symlink: fs.constants.S_IFLNK,
  fifo: fs.constants.S_IFIFO,
  socket: fs.constants.S_IFSOCK,
  chr: fs.constants.S_IFCHR,
  blk: fs.constants.S_IFBLK,
}

/**
 * Compares every entry through the mount: type, mode, size, mtime, link target, device
 * numbers and (when `content`) the bytes. Returns a list of differences (empty when equal).
 */
export function compareTree(entries: GenEntry[], mountpoint: string, content = true): string[] {
  const diffs: string[] = []
  for (const e of entries) {
    const p = path.join(mountpoint, e.path)
    let st: fs.Stats
    try {
      st = fs.lstatSync(p)
    } catch (err) {
      diffs.push(`${e.path}: ${(err as Error).message}`)
      continue
    }
    const wantMode = S_IFMT[e.kind] | e.perms
    if (st.mode !== wantMode) diffs.push(`${e.path}: mode ${st.mode.toString(8)} != ${wantMode.toString(8)}`)
    if (e.kind === 'file' && st.size !== e.size) diffs.push(`${e.path}: size ${st.size} != ${e.size}`)
    if (Math.floor(st.mtimeMs / 1000) !== e.mtime) diffs.push(`${e.path}: mtime ${st.mtimeMs} != ${e.mtime}`)
    if (e.kind === 'symlink' && fs.readlinkSync(p) !== e.target) diffs.push(`${e.path}: target ${fs.readlinkSync(p)}`)
    if ((e.kind === 'chr' || e.kind === 'blk') && st.rdev !== e.major! * 256 + e.minor!) {
      diffs.push(`${e.path}: rdev ${st.rdev}`)
    }
    if (content && e.kind === 'file' && md5(fs.readFileSync(p)) !== e.md5) diffs.push(`${e.path}: content differs`)
    if (diffs.length > 20) break
  }
  return diffs
}

/** The packed table of a generated tree, through the real flist parser and table builder. */
export function tableFor(entries: GenEntry[], prefix = '/opt/test'): Buffer {
  const flist = parseFlist(Buffer.from(extendedFlist(entries, prefix)), { name: 'test', prefix })
  return buildTable(mergeServices([flist]), { suid: true, dev: true }).buffer
}
