/**
 * Who may own and write the local cache directory, and its mode: one check for every entry
 * point that uses a cache (mount, the pipeline, `prefetch`, `verify`, the engine). Part of the
 * local cache (lib/local-cache/).
 *
 * The local cache holds the content of every file anyone read through the mount, whatever that
 * file's mode in the flist: with `allow_other`, a 0600 file of root is refused to other users by
 * the kernel (`default_permissions`), but its blob sits in `<cache>/<h0>/<h1>/<md5>`. So the
 * cache's top directory is 0700 and owned by the user that runs the mount: nothing below it is
 * reachable by anyone else, whatever the modes below (blobs that older versions wrote 0644 in
 * 0755 directories included). A directory that another user owns, or that group or others may
 * write, is refused: its owner (or whoever can write in it) could read every blob, or plant
 * files and links that a root mount would then use.
 *
 * Grid caches are not checked here: they are shared with other nodes by design, and keep the
 * modes and group their operator gave them.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { AysfsError } from '../errors'
import { systemIds } from '../system-ids'
import { BAD_DIR, KEPT_DIR, TMP_DIR } from './layout'

/** Mode of the cache's top directory and of the directories we make in it (`md/`, `tmp/`, `bad/`). */
const CACHE_DIR_MODE = 0o700
/** Mode of the files we write in the cache (kept flists and signatures; blobs moved to `bad/`). */
export const CACHE_FILE_MODE = 0o600
/** The cache's own subdirectories other than the blob tree. */
const SUBDIRS = [KEPT_DIR, TMP_DIR, BAD_DIR]

/** What {@link prepareCacheDir} did. */
export interface CacheDirResult {
  /** The absolute path. */
  dir: string
  /** True when this call made the directory. */
  created: boolean
  /** The permission bits it had before they were set to 0700, when they were not 0700. */
  previousMode?: number
}

/** `uid 1000 (alice)`, or `uid 1000` for a uid that /etc/passwd does not name. */
function describeUid(uid: number): string {
  const name = systemIds().users.byId.get(uid)
  return name === undefined ? `uid ${uid}` : `uid ${uid} (${name})`
}

/** Permission bits as `ls` and `chmod` write them: `0755`, `1777`. */
export function octalMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0')
}

/**
 * Makes the local cache directory `dir` safe to use, or refuses it:
 * - missing: made (its parents with the default mode, itself 0700), unless `create` is false;
 * - owned by another user than the effective one: refused;
 * - writable by group or others: refused;
 * - otherwise its mode is set to 0700 if it was anything else (an older version made it 0755),
 *   and `md/`, `tmp/`, `bad/` in it, when they are directories of ours, to 0700 too.
 *
 * The checks and the chmod go through one descriptor of the directory, so they are about the
 * same directory. A symlink named by `dir` itself is followed (an operator may put the cache
 * elsewhere that way): what it leads to must pass the checks.
 *
 * @throws AysfsError `EINVAL` (key `main.cache`) naming the directory, its owner or mode, and
 *   what to do; `ENOTDIR` when it is not a directory; `ENOENT` when it is missing and `create`
 *   is false; `EIO` when it cannot be made or opened.
 */
export function prepareCacheDir(dir: string, opts: { create?: boolean } = {}): CacheDirResult {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('the cache directory must be a non-empty path')
  const abs = path.resolve(dir)
  const where = `local cache ${abs}`
  let created = false
  if (opts.create !== false && !fs.existsSync(abs)) {
    try {
      fs.mkdirSync(path.dirname(abs), { recursive: true })
      fs.mkdirSync(abs, { mode: CACHE_DIR_MODE })
      created = true
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new AysfsError('EIO', `${where}: cannot make it: ${(err as Error).message}`, { key: 'main.cache', cause: err })
      }
    }
  }
  let fd: number
  try {
    fd = fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new AysfsError('ENOENT', `${where}: no such directory`, { key: 'main.cache', cause: err })
    if (code === 'ENOTDIR') throw new AysfsError('ENOTDIR', `${where}: not a directory`, { key: 'main.cache', cause: err })
    throw new AysfsError('EIO', `${where}: cannot open it: ${(err as Error).message}`, { key: 'main.cache', cause: err })
  }
  try {
    const st = fs.fstatSync(fd)
    const me = process.geteuid?.() ?? st.uid
    if (st.uid !== me) {
      throw new AysfsError(
        'EINVAL',
        `${where} is owned by ${describeUid(st.uid)}, not by ${describeUid(me)} that uses it: its owner could read every file anyone reads through the mount, or replace what it serves. ` +
          `Give each user that mounts a cache directory of its own (main.cache), or make this one theirs (chown ${me} ${abs}, after checking what is in it)`,
        { key: 'main.cache' },
      )
    }
    if ((st.mode & 0o022) !== 0) {
      const who = (st.mode & 0o020) !== 0 && (st.mode & 0o002) !== 0 ? 'its group and all users' : (st.mode & 0o020) !== 0 ? 'its group' : 'all users'
      throw new AysfsError(
        'EINVAL',
        `${where} has mode ${octalMode(st.mode)}: ${who} can write in it, so could read what it holds or plant files and links in it. ` +
          `Check what is in it, then chmod 0700 ${abs}, or use another directory (main.cache)`,
        { key: 'main.cache' },
      )
    }
    let previousMode: number | undefined
    if ((st.mode & 0o7777) !== CACHE_DIR_MODE) {
      previousMode = st.mode & 0o7777
      try {
        fs.fchmodSync(fd, CACHE_DIR_MODE)
      } catch (err) {
        throw new AysfsError('EIO', `${where}: cannot set its mode to 0700 (it is ${octalMode(st.mode)}): ${(err as Error).message}`, { key: 'main.cache', cause: err })
      }
    }
    for (const sub of SUBDIRS) tightenSubdir(path.join(abs, sub), me)
    return { dir: abs, created, ...(previousMode !== undefined ? { previousMode } : {}) }
  } finally {
    fs.closeSync(fd)
  }
}

/** Sets `md/`, `tmp/` or `bad/` to 0700 if it is a directory of ours with a wider mode. Never
 * follows a link; anything else there is left alone (the top directory keeps it private). */
function tightenSubdir(sub: string, me: number): void {
  let fd: number
  try {
    fd = fs.openSync(sub, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW)
  } catch {
    return // missing (made 0700 when needed), a link or not a directory
  }
  try {
    const st = fs.fstatSync(fd)
    if (st.uid === me && (st.mode & 0o7777) !== CACHE_DIR_MODE) fs.fchmodSync(fd, CACHE_DIR_MODE)
  } catch {
    // not ours to change: the top directory keeps it private anyway
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Makes a directory of the cache (`md/`, `tmp/`, `bad/`) 0700 if it is missing; an existing one
 * is left as it is ({@link prepareCacheDir} tightened it).
 */
export function makeCacheSubdir(sub: string): void {
  try {
    fs.mkdirSync(sub, { mode: CACHE_DIR_MODE })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
}
