// A worker of `publish`'s hashing pool (lib/publish.ts): MD5 of files, and copies of files into a
// store that are checked against the MD5 they were published under. MD5 runs at one core's speed,
// so a pool of these keeps every core (and the disk queue) busy on a large tree.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { parentPort } from 'node:worker_threads'
import { createTempFile, writeAll } from './temp-file'

export type HashJob =
  | { id: number; op: 'hash'; file: string }
  | { id: number; op: 'copy'; file: string; dest: string; md5: string; size: number; fsync: boolean }

export type HashReply =
  | { id: number; md5: string; size: number }
  | { id: number; copied: true }
  | { id: number; error: { code?: string; message: string } }

const CHUNK = 1 << 20
const buf = Buffer.allocUnsafe(CHUNK)

/** Reads `file` to its end, handing each chunk to `each`; returns the MD5 and the size read. */
function pass(file: string, each?: (chunk: Buffer) => void): { md5: string; size: number } {
  const hash = crypto.createHash('md5')
  const fd = fs.openSync(file, 'r')
  let size = 0
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, CHUNK, null)
      if (n === 0) break
      const chunk = buf.subarray(0, n)
      hash.update(chunk)
      each?.(chunk)
      size += n
    }
  } finally {
    fs.closeSync(fd)
  }
  return { md5: hash.digest('hex'), size }
}

function copy(job: Extract<HashJob, { op: 'copy' }>): void {
  // Next to the destination, so the rename is atomic; a name no reader of the store looks up.
  const { path: tmp, fd: out } = createTempFile(path.dirname(job.dest), path.basename(job.dest), 0o644)
  let renamed = false
  try {
    const got = pass(job.file, (chunk) => writeAll(out, chunk))
    if (got.md5 !== job.md5 || got.size !== job.size) {
      const err = new Error(`${job.file} changed while it was being published (its MD5 or size is not what was hashed); run publish again`)
      ;(err as NodeJS.ErrnoException).code = 'ECHANGED'
      throw err
    }
    if (job.fsync) fs.fsyncSync(out)
    fs.closeSync(out)
    fs.renameSync(tmp, job.dest)
    renamed = true
  } finally {
    if (!renamed) {
      try {
        fs.closeSync(out)
      } catch {
        // closed already
      }
      fs.rmSync(tmp, { force: true })
    }
  }
}

parentPort?.on('message', (job: HashJob) => {
  try {
    if (job.op === 'hash') {
      const { md5, size } = pass(job.file)
      parentPort!.postMessage({ id: job.id, md5, size } satisfies HashReply)
    } else {
      copy(job)
      parentPort!.postMessage({ id: job.id, copied: true } satisfies HashReply)
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    parentPort!.postMessage({ id: job.id, error: { code: e.code, message: e.message } } satisfies HashReply)
  }
})
