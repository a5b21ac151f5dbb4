/**
 * `aysfs-native verify [--cache C]`: re-hash every blob of a local cache and move the ones whose
 * content does not match their name to `C/bad/` (kept for a look, never served again; a mount
 * fetches them anew on the next read). Only checked content is ever renamed into a cache, so a bad
 * blob means the disk or someone's hands changed it. Safe while a mount serves the cache.
 */
import fs from 'node:fs'
import path from 'node:path'
import { BAD_DIR, TMP_DIR, cachedBlobs, checkCachedBlob, cleanTmp, prepareCacheDir } from './local-cache'
import { fromSystemError } from './errors'
import { createProgress } from './progress'

/** Options of {@link verify}. */
export interface VerifyOptions {
  cache: string
  /** Progress display; default a bar on a TTY, lines otherwise. False: none. */
  progress?: boolean | { tty?: boolean; every?: number }
}

/** What {@link verify} found. */
export interface VerifyResult {
  cache: string
  /** Blobs looked at, and their bytes. */
  checked: number
  bytes: number
  ok: number
  /** Moved to `<cache>/bad/`: their MD5s. */
  bad: string[]
  /** Gone between the listing and the check (evicted or moved by another process). */
  vanished: number
  /** Temp files of dead writers removed from `<cache>/tmp/`. */
  tmpRemoved: number
  badDir: string
}

/**
 * Checks every blob of the cache (sync hashing, with a pause for the event loop every 100 ms so
 * progress lines come out). The cache directory must pass the checks a mount makes (lib/local-cache/dir.ts):
 * ours, not writable by group or others; it is set 0700.
 * @throws AysfsError `ENOENT` when the cache directory does not exist, `EINVAL` when another user
 *   owns it or group or others may write in it; the fs error's code when a blob cannot be read
 *   or moved aside.
 */
export async function verify(opts: VerifyOptions): Promise<VerifyResult> {
  const cache = prepareCacheDir(opts.cache, { create: false }).dir
  const list: Array<{ md5: string; file: string; size: number }> = []
  for (const b of cachedBlobs(cache)) {
    try {
      list.push({ ...b, size: fs.statSync(b.file).size })
    } catch {
      // gone meanwhile
    }
  }
  const bytes = list.reduce((n, b) => n + b.size, 0)
  const bar = opts.progress === false ? undefined : createProgress({ label: 'verify', files: list.length, bytes, ...(typeof opts.progress === 'object' ? opts.progress : {}) })
  const result: VerifyResult = { cache, checked: 0, bytes: 0, ok: 0, bad: [], vanished: 0, tmpRemoved: 0, badDir: path.join(cache, BAD_DIR) }
  let paused = Date.now()
  try {
    for (const b of list) {
      if (Date.now() - paused > 100) {
        await new Promise((resolve) => setImmediate(resolve))
        paused = Date.now()
      }
      let r: ReturnType<typeof checkCachedBlob>
      try {
        r = checkCachedBlob(cache, b.md5, { moveAside: true })
      } catch (err) {
        throw fromSystemError(err, `verify: ${b.file}`)
      }
      if (r === 'ok') result.ok++
      else if (r === 'bad') result.bad.push(b.md5)
      else result.vanished++
      if (r !== 'missing') {
        result.checked++
        result.bytes += b.size
      }
      bar?.add(1, b.size)
    }
  } finally {
    bar?.stop()
  }
  result.tmpRemoved = cleanTmp(path.join(cache, TMP_DIR))
  return result
}
