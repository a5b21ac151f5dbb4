/**
 * The mount table as the CLI sees it (`/proc/self/mounts`), and unmounting a mount that another
 * process serves (`aysfs-native unmount`). Node has no umount2(2): a FUSE mount is detached with
 * `fusermount3 -u -z` (which also works for unprivileged users on their own mounts), and `umount -l`
 * is the fallback for root when fusermount3 is missing or refuses.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { AysfsError } from './errors'

/** One line of `/proc/self/mounts`. */
export interface MountEntry {
  /** `aysfs` for our mounts (the `fsname`). */
  source: string
  target: string
  /** `fuse.aysfs` for our mounts. */
  fstype: string
  options: string
}

/** The file system type an aysfs-native mount shows in the mount table. */
export const AYSFS_FSTYPE = 'fuse.aysfs'

// The kernel escapes space, tab, newline and backslash in the mount table as octal.
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)))
}

function listMounts(): MountEntry[] {
  let text: string
  try {
    text = fs.readFileSync('/proc/self/mounts', 'utf8')
  } catch {
    return []
  }
  const out: MountEntry[] = []
  for (const line of text.split('\n')) {
    const f = line.split(' ')
    if (f.length < 4) continue
    out.push({ source: unescape(f[0]!), target: unescape(f[1]!), fstype: f[2]!, options: f[3]! })
  }
  return out
}

/**
 * The absolute form of a mountpoint argument as the mount table spells it: symlinks resolved when
 * that is possible (a dead FUSE mount cannot be resolved: ENOTCONN), else just made absolute.
 */
export function canonicalMountpoint(p: string): string {
  const abs = path.resolve(p)
  try {
    return fs.realpathSync(abs)
  } catch {
    try {
      return path.join(fs.realpathSync(path.dirname(abs)), path.basename(abs))
    } catch {
      return abs
    }
  }
}

/** The mount at exactly `target` (the last one, when several are stacked), if any. */
export function findMount(target: string): MountEntry | undefined {
  const want = canonicalMountpoint(target)
  return listMounts()
    .filter((m) => m.target === want)
    .pop()
}

/**
 * Detach the aysfs-native mount at `target` at once, even when files are open on it (a lazy
 * unmount: the tree goes away for new lookups; the serving process sees it and exits).
 * @throws AysfsError `ENOENT` when nothing is mounted there, `EINVAL` for a mount that is not
 *   ours (we do not unmount other file systems), `EPERM`/`EIO` when both tools fail.
 */
export function unmountPath(target: string): MountEntry {
  const m = findMount(target)
  const where = canonicalMountpoint(target)
  if (!m) throw new AysfsError('ENOENT', `${where} is not mounted`)
  if (m.fstype !== AYSFS_FSTYPE && !(m.fstype.startsWith('fuse') && m.source === 'aysfs')) {
    throw new AysfsError('EINVAL', `${where} is a ${m.fstype} mount, not an aysfs-native one: not unmounting it`)
  }
  const tries: Array<[string, string[]]> = [['fusermount3', ['-u', '-z', '--', where]]]
  if (process.getuid?.() === 0) tries.push(['umount', ['-l', '--', where]])
  const failures: string[] = []
  for (const [cmd, args] of tries) {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 })
    if (r.status === 0 && !findMount(where)) return m
    const why = r.error ? ((r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not installed' : r.error.message) : r.stderr.trim() || `exit status ${r.status}`
    failures.push(`${cmd}: ${why}`)
  }
  if (!findMount(where)) return m
  const perm = failures.some((f) => /not permitted|permission/i.test(f))
  throw new AysfsError(perm ? 'EPERM' : 'EIO', `cannot unmount ${where}: ${failures.join('; ')}${perm ? ' (unmount as the user who mounted it, or as root)' : ''}`)
}
