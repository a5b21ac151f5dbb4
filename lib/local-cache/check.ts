/**
 * Re-hashing what a local cache holds (for `verify`): the blobs under `<cache>/<h0>/<h1>/`, each
 * checked against its name, a bad one moved to `<cache>/bad/` (kept for a look, never served).
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { BLOB_NAME } from '../blob'
import { CACHE_FILE_MODE, makeCacheSubdir } from './dir'
import { BAD_DIR, blobPath } from './layout'

/** Opens for reading without moving the atime (the cache quota's LRU clock, quota.ts) when the
 * file system and our rights allow it (O_NOATIME: the owner or root). */
function openNoAtime(file: string): number {
  try {
    return fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOATIME)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err
    return fs.openSync(file, 'r')
  }
}

/** MD5 and size of a file, read with readSync (without moving its atime: `verify` must not
 * reorder the cache's LRU). */
function hashFileSync(file: string): { md5: string; size: number } {
  const hash = crypto.createHash('md5')
  const fd = openNoAtime(file)
  try {
    const buf = Buffer.allocUnsafe(1024 * 1024)
    let size = 0
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null)
      if (n === 0) break
      hash.update(buf.subarray(0, n))
      size += n
    }
    return { md5: hash.digest('hex'), size }
  } finally {
    fs.closeSync(fd)
  }
}

/** Every file named like a blob under `<cache>/<h0>/<h1>/`, in name order. */
export function* cachedBlobs(cacheDir: string): Generator<{ md5: string; file: string }> {
  const hex = /^[0-9a-f]$/
  const list = (dir: string) => {
    try {
      return fs.readdirSync(dir).sort()
    } catch {
      return []
    }
  }
  for (const h0 of list(cacheDir)) {
    if (!hex.test(h0)) continue
    for (const h1 of list(path.join(cacheDir, h0))) {
      if (!hex.test(h1)) continue
      for (const name of list(path.join(cacheDir, h0, h1))) {
        if (BLOB_NAME.test(name) && name[0] === h0 && name[1] === h1) {
          yield { md5: name, file: path.join(cacheDir, h0, h1, name) }
        }
      }
    }
  }
}

/**
 * Re-hash one cached blob. A blob whose content does not match its name is moved to
 * `<cache>/bad/<md5>.<ms>` (kept for inspection, never served again) when `moveAside` is set.
 * @throws the fs error when the blob is there but cannot be read.
 */
export function checkCachedBlob(cacheDir: string, md5: string, opts: { moveAside?: boolean } = {}): 'ok' | 'missing' | 'bad' {
  const file = blobPath(cacheDir, md5)
  let got: { md5: string; size: number }
  try {
    got = hashFileSync(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing'
    throw err
  }
  if (got.md5 === md5) return 'ok'
  if (opts.moveAside) {
    const bad = path.join(cacheDir, BAD_DIR)
    makeCacheSubdir(bad)
    const to = path.join(bad, `${md5}.${Date.now()}`)
    fs.renameSync(file, to)
    privateFile(to)
  }
  return 'bad'
}

/** Sets a file we just put in the cache to 0600, through a descriptor (never following a link). */
function privateFile(file: string): void {
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  } catch {
    return // a link or gone: nothing to read through it
  }
  try {
    fs.fchmodSync(fd, CACHE_FILE_MODE)
  } finally {
    fs.closeSync(fd)
  }
}
