/**
 * The mountpoint, checked before `mount()` does any work (flists from stores, prefetch): what the
 * engine would refuse after all of it, refused first with a message that says what to do.
 */
import fs from 'node:fs'
import { AysfsError, fromSystemError } from './errors'
import { AYSFS_FSTYPE, findMount } from './mounts'

/**
 * @throws AysfsError `ENOENT` (it does not exist), `ENOTDIR`, `EBUSY` (something, an
 *   aysfs-native mount or another, is mounted there), or the code of `stat`'s failure. A stale
 *   mount whose process died (`ENOTCONN`) passes: the engine clears it.
 */
export function checkMountpoint(mountpoint: string): void {
  let st: fs.Stats
  try {
    st = fs.statSync(mountpoint)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOTCONN' || code === 'ECONNABORTED') return
    if (code === 'ENOENT') {
      throw new AysfsError('ENOENT', `mountpoint ${mountpoint} does not exist: create it first (mkdir -p ${mountpoint})`, { key: 'main.mount', cause: err })
    }
    throw fromSystemError(err, `mountpoint ${mountpoint}`, { key: 'main.mount' })
  }
  if (!st.isDirectory()) throw new AysfsError('ENOTDIR', `mountpoint ${mountpoint} is not a directory`, { key: 'main.mount' })
  const m = findMount(mountpoint)
  if (m === undefined) return
  if (m.fstype === AYSFS_FSTYPE) {
    // A mount whose process died may still answer stat from the kernel's attribute cache; statfs
    // always asks the file system, and a dead one answers ENOTCONN: stale, the engine clears it.
    try {
      fs.statfsSync(mountpoint)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOTCONN' || code === 'ECONNABORTED') return
    }
    throw new AysfsError(
      'EBUSY',
      `mountpoint ${mountpoint} is already mounted by aysfs-native (aysfs-native status ${mountpoint} shows what; aysfs-native unmount ${mountpoint} to replace it)`,
      { key: 'main.mount' },
    )
  }
  throw new AysfsError('EBUSY', `mountpoint ${mountpoint} is already mounted (${m.fstype}): unmount it first`, { key: 'main.mount' })
}
