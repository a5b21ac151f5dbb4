/**
 * Write one flist line (for `publish`), in either shape, refusing anything the parser would
 * refuse: publish never writes a flist that cannot mount.
 */
import { EMPTY_MD5, isMd5 } from '../blob'
import { AysfsError } from '../errors'
import { flistPathProblem, forbiddenCharIn, MAX_NAME_BYTES, MAX_PATH_BYTES } from '../paths'
import { DEFAULT_PERM, FType, KIND_NAME } from './tree'

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
  /** Regular files, extended format: the MD5 of the file's chunk index (`chunks=` in `extended`). */
  chunks?: string
  /** Devices. */
  rdevMajor?: number
  rdevMinor?: number
}

function refuse(path: string, what: string): never {
  const shown = path.length > 200 ? `${JSON.stringify(path.slice(0, 200))}...` : JSON.stringify(path)
  throw new AysfsError('EINVAL', `cannot write ${shown} to a flist: ${what}`)
}

/**
 * One flist line, without its line end, for `publish`.
 * `seed` has regular files only (directories are implied by paths); `extended` has every type.
 * @throws AysfsError `EINVAL` naming the path and the reason: a path the flist path rules refuse
 *   (lib/paths.ts: `|`, CR, LF or NUL, not absolute, an empty, `.` or `..` component, over
 *   {@link MAX_PATH_BYTES} bytes or a component over {@link MAX_NAME_BYTES}), a non-regular file
 *   in `seed`, a bad md5, a symlink target with CR, LF or NUL, a user or group name with `|`,
 *   CR, LF or NUL.
 */
export function formatFlistLine(entry: FlistLineInput, format: 'seed' | 'extended'): string {
  const { path } = entry
  const problem = flistPathProblem(path)
  if (problem !== undefined) refuse(path, `the path ${problem.text}`)
  const ftype = entry.ftype ?? FType.file
  if (!Number.isInteger(ftype) || ftype < 0 || ftype > 6) refuse(path, `bad ftype ${ftype}`)
  const size = entry.size ?? 0
  let md5 = ''
  if (ftype === FType.file) {
    if (!Number.isSafeInteger(size) || size < 0) refuse(path, `bad size ${size}`)
    md5 = entry.md5 ?? (size === 0 ? EMPTY_MD5 : refuse(path, 'a non-empty regular file needs its md5'))
    if (!isMd5(md5)) refuse(path, `bad md5 ${JSON.stringify(md5)}`)
    md5 = md5.toLowerCase()
    if (entry.chunks !== undefined && !isMd5(entry.chunks)) refuse(path, `bad chunk index md5 ${JSON.stringify(entry.chunks)}`)
  }
  if (format === 'seed') {
    if (entry.chunks !== undefined) refuse(path, 'the seed format cannot name a chunk index (use the extended format)')
    if (ftype !== FType.file) refuse(path, `the seed format has regular files only, and this is a ${KIND_NAME[ftype]} (use the extended format)`)
    return `${path}|${md5}|${size}`
  }
  const names = [entry.uname ?? '', entry.gname ?? '']
  for (const n of names) {
    const bad = forbiddenCharIn(n)
    if (bad !== undefined) refuse(path, `its owner or group name contains ${bad}`)
  }
  let ext = ''
  if (ftype === FType.symlink) {
    ext = entry.target ?? ''
    if (ext === '') refuse(path, 'a symlink needs a target')
    const bad = forbiddenCharIn(ext, { pipe: false })
    if (bad !== undefined) refuse(path, `the symlink target contains ${bad}`)
  } else if (ftype === FType.blockdev || ftype === FType.chardev) {
    const { rdevMajor: maj, rdevMinor: min } = entry
    if (!Number.isInteger(maj) || !Number.isInteger(min) || maj! < 0 || min! < 0 || maj! > 0xffffffff || min! > 0xffffffff) refuse(path, 'a device needs rdevMajor and rdevMinor')
    ext = `${maj},${min}`
  } else if (ftype === FType.file && entry.chunks !== undefined) {
    ext = `chunks=${entry.chunks.toLowerCase()}`
  }
  const perm = (entry.perm ?? DEFAULT_PERM) & 0o7777
  const t = (v: number | undefined): number => Math.floor(v ?? 0)
  return `${path}|${md5}|${ftype === FType.file ? size : 0}|${names[0]}|${names[1]}|${perm.toString(8)}|${ftype}|${t(entry.ctime)}|${t(entry.mtime)}|${ext}`
}
