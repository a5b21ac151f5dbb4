/**
 * This thread's side of the addon's committer (native/commit.cc): a pool of native threads that
 * create, write, fsync and rename finished blobs into the local cache, and copy blobs into
 * directory grid caches, so the thread that downloads only downloads and hashes (and never waits
 * on an fsync). Each job is a promise here, settled when the native side reports.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { getSystemErrorMap } from 'node:util'
import { createCommitter, type NativeCommitter } from '../engine'

/** This thread's committer, made on first use. */
let committer: NativeCommitter | undefined
/** A queued job: how to settle it, and how to name a failure (Node's fs error shape). */
interface QueuedJob {
  resolve: () => void
  reject: (err: Error) => void
  /** The file a failed step is about (`where`: a push's own report of it). */
  file: (step: string | null, where: string | null) => string
}
const jobs = new Map<number, QueuedJob>()
let nextToken = 0

function jobDone(token: number, errno: number, step: string | null, where: string | null): void {
  const job = jobs.get(token)
  if (!job) return
  jobs.delete(token)
  if (errno === 0) {
    job.resolve()
    return
  }
  // The shape of Node's own fs errors: `ENOSPC: no space left on device, write '/path'`.
  const [code, text] = getSystemErrorMap().get(-errno) ?? ['EIO', `errno ${errno}`]
  const file = job.file(step, where)
  job.reject(Object.assign(new Error(`${code}: ${text}, ${step} '${file}'`), { code, errno: -errno, syscall: step, path: file }))
}

/** Queues a job on this thread's committer; `cleanup` runs when it could not be queued. */
function queueJob(describe: QueuedJob['file'], start: (c: NativeCommitter, token: number) => boolean, cleanup: () => void, what: string): Promise<void> {
  committer ??= createCommitter(jobDone)
  const token = (nextToken = (nextToken + 1) >>> 0)
  return new Promise<void>((resolve, reject) => {
    jobs.set(token, { resolve, reject, file: describe })
    let queued = false
    try {
      queued = start(committer!, token)
      if (!queued) reject(Object.assign(new Error(`EBADF: the committer no longer takes jobs (this thread is ending), '${what}'`), { code: 'EBADF', path: what }))
    } catch (err) {
      reject(err as Error)
    } finally {
      if (!queued) {
        jobs.delete(token)
        cleanup()
      }
    }
  })
}

/** A job that ends with `tmp` renamed to `dest`; `tmp` is gone either way. */
function commitJob(tmp: string, dest: string, start: (c: NativeCommitter, token: number) => boolean): Promise<void> {
  const unlinkTmp = () => {
    try {
      fs.unlinkSync(tmp)
    } catch {
      // never made (a blob in memory) or already gone
    }
  }
  return queueJob((step) => (step === 'rename' || step === 'mkdir' ? dest : tmp), start, unlinkTmp, tmp)
}

/** Creates `tmp`, writes a copy of `data`, fsyncs it if `sync`, renames it to `dest` (its
 * directories made). Rejects with a Node-style fs error (`code`, `syscall` = the step, `path`). */
export function writeBlob(tmp: string, dest: string, data: Buffer, sync: boolean): Promise<void> {
  return commitJob(tmp, dest, (c, token) => c.write(token, tmp, dest, data, sync))
}

/** `tmp` is written and closed: fsyncs it if `sync`, renames it to `dest`. Rejects like
 * {@link writeBlob}. */
export function finishBlob(tmp: string, dest: string, sync: boolean): Promise<void> {
  return commitJob(tmp, dest, (c, token) => c.finish(token, tmp, dest, sync))
}

/**
 * Copies the local-cache blob `src` (`size` bytes) to `root/rel` in a directory grid cache, on
 * the committer's threads, relative to directory fds: nothing below `root` is followed (see
 * `Committer.push` in binding.d.ts). Rejects with a Node-style fs error (`code`, `syscall` = the
 * step, `path`): `ELOOP` when a symlink was found in the grid cache or in the source's place,
 * step `source` with `EINVAL` when `src` is not a regular file of `size` bytes.
 */
export function pushToDir(root: string, rel: string, src: string, size: number, sync: boolean): Promise<void> {
  const describe = (step: string | null, where: string | null): string => (step === 'source' ? src : where ? path.join(root, where) : root)
  return queueJob(describe, (c, token) => c.push(token, root, rel, src, size, sync), () => {}, path.join(root, rel))
}
