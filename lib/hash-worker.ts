// A worker of `publish`'s pool (lib/publish.ts). Each file is opened once, by `hash`: without
// following a link and without waiting (a FIFO swapped in is never read), then checked by its fd
// to be the regular file the walk listed (device, inode, size), and hashed from that fd. When the
// store lacks the content, this worker keeps the fd open, and publish then sends it either `copy`
// (write that fd's bytes to the store, checked against the MD5 they were hashed under) or
// `release` (another file with the same bytes stored them). The fd never leaves this thread: Node
// closes a worker's fds when it exits, so one thread's fd must not be used or closed by another.
// MD5 runs at one core's speed, so a pool of these keeps every core (and the disk queue) busy on a
// large tree.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { parentPort } from 'node:worker_threads'
import { EMPTY_MD5, isBlobInPlace, makeBlobDirs } from './blob'
import { ChunkHasher, type Chunk } from './chunks'
import { kindWords } from './file-kind'
import { sourceBlobRel } from './sources/source'
import { createTempFile, writeAll } from './temp-file'

/** A file to hash: its path and what the walk's `lstat` saw (it must be the same regular file now). */
export interface HashFile {
  file: string
  dev: bigint
  ino: bigint
  size: number
}

/** What `hash` found for one file. */
export type HashResult =
  | {
      md5: string
      /**
       * Set when the store lacked the content (and the file is not empty), or one of its chunks:
       * this worker holds the fd it was hashed from, under this handle, until a `copy` or a
       * `release` names it.
       */
      held?: number
      /** With `chunkSize`, for a file larger than that: its chunks, in order. */
      chunks?: Chunk[]
      /** Set with `chunks` when the store lacks one of them: `chunks` writes them from the held fd. */
      chunksMissing?: true
      /** The whole blob is there, or not wanted (`whole: false`): only chunks are to be written. */
      wholeDone?: true
    }
  /** The file is not what the walk listed any more (or changed while it was read): why. */
  | { changed: string }
  /** It could not be read (EACCES, EIO, …): a failure of the run. */
  | { error: { code?: string; message: string } }

/** Work for a worker; `id` matches the reply. */
export type HashJob =
  | {
      id: number
      op: 'hash'
      /** Several small files a message, so that messages do not cost more than hashing. */
      files: HashFile[]
      /** The store root: whether `files/<h0>/<h1>/<md5>` is there already decides who keeps the fd. */
      store: string
      /** Cut files larger than this into chunks of this size (and hash each). */
      chunkSize?: number
      /** Default true; false: a chunked file's whole blob is not wanted in the store. */
      whole?: boolean
    }
  | {
      id: number
      op: 'chunks'
      /** The handle of a file this worker holds; it stays held. */
      of: number
      store: string
      chunks: Chunk[]
      fsync: boolean
    }
  | {
      id: number
      op: 'copy'
      /** The handle of a file this worker holds; its fd is closed, whatever happens. */
      of: number
      dest: string
      fsync: boolean
    }
  /** Closes the fd of the held file `of`. */
  | { id: number; op: 'release'; of: number }

/** A worker's answer. */
export type HashReply =
  /** `hash`: one result a file, in order. */
  | { id: number; results: HashResult[] }
  | { id: number; copied: true }
  /** `chunks`: the chunk blobs the store lacked, written now. */
  | { id: number; chunksWritten: number; chunkBytes: number }
  | { id: number; released: true }
  /** `copy`: the file's bytes are not what was hashed any more: why. */
  | { id: number; changed: string }
  | { id: number; error: { code?: string; message: string } }

const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants
/** Never through a link (the last component), never blocking on a FIFO or a device. */
const OPEN_FLAGS = O_RDONLY | O_NOFOLLOW | O_NONBLOCK
const CHUNK = 1 << 20
const buf = Buffer.allocUnsafe(CHUNK)
const madeDirs = new Set<string>()
/** Files `hash` left open for a `copy`, by handle. */
const held = new Map<number, { fd: number; size: number; md5: string }>()
let nextHandle = 0

/** Why `st` is not the file the walk listed, if it is not. */
function mismatch(st: fs.BigIntStats, job: HashFile): string | undefined {
  if (st.isSymbolicLink()) return 'is a symbolic link now (not followed)'
  if (!st.isFile()) return `is not a regular file any more (a ${kindWords(st)} now; not read)`
  // Another inode at this name, or a directory above it swapped for a link to elsewhere.
  if (st.dev !== job.dev || st.ino !== job.ino) return 'was replaced by another file'
  if (Number(st.size) !== job.size) return `changed size (${job.size} bytes when listed, ${st.size} now)`
  return undefined
}

/** An open that failed: the reason when the path is not the listed file any more, else undefined. */
function openFailure(err: NodeJS.ErrnoException, job: HashFile): string | undefined {
  if (err.code === 'ELOOP') return 'is a symbolic link now (not followed)'
  // Anything else (ENXIO for a socket, a device's own errors, EACCES for someone else's file):
  // look at what is there without opening it. The file the walk listed, still there, is a real
  // error (EACCES, EIO) that fails the run as before.
  let st: fs.BigIntStats
  try {
    st = fs.lstatSync(job.file, { bigint: true })
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'was removed'
    return undefined
  }
  return mismatch(st, job)
}

/**
 * Reads `size` bytes of `fd` from offset 0, hashing them and handing each chunk to `each`. One
 * byte more is asked for at the end, so a file that grew is told from one that did not: the read
 * is bounded by the size the walk saw either way.
 */
function readAll(fd: number, size: number, each?: (chunk: Buffer) => void): { md5: string } | { changed: string } {
  const hash = crypto.createHash('md5')
  let off = 0
  for (;;) {
    const n = fs.readSync(fd, buf, 0, Math.min(CHUNK, size - off + 1), off)
    if (n === 0) break
    if (off + n > size) return { changed: 'grew while it was read' }
    const chunk = buf.subarray(0, n)
    hash.update(chunk)
    each?.(chunk)
    off += n
  }
  if (off < size) return { changed: `shrank while it was read (${size} bytes when listed, ${off} read)` }
  return { md5: hash.digest('hex') }
}

/**
 * Whether the store has the blob `md5` of `size` bytes: a regular file of that size at its name
 * ({@link isBlobInPlace}: a link planted there is not the blob, and is replaced by the rename of
 * {@link storeChecked}).
 */
function inStore(store: string, md5: string, size: number): boolean {
  return isBlobInPlace(path.join(store, sourceBlobRel('store', md5)), size)
}

/** Reads and hashes the `size` bytes of `fd` at `start` (a chunk), handing each piece to `each`. */
function readRange(fd: number, start: number, size: number, each: (piece: Buffer) => void): { md5: string } | { changed: string } {
  const hash = crypto.createHash('md5')
  let off = 0
  while (off < size) {
    const n = fs.readSync(fd, buf, 0, Math.min(CHUNK, size - off), start + off)
    if (n === 0) return { changed: 'shrank while it was read' }
    const piece = buf.subarray(0, n)
    hash.update(piece)
    each(piece)
    off += n
  }
  return { md5: hash.digest('hex') }
}

function hashOne(job: HashFile, store: string, chunkSize?: number, whole = true): HashResult {
  let fd: number
  try {
    fd = fs.openSync(job.file, OPEN_FLAGS)
  } catch (err) {
    const why = openFailure(err as NodeJS.ErrnoException, job)
    if (why !== undefined) return { changed: why }
    throw err
  }
  let keep = false
  try {
    const why = mismatch(fs.fstatSync(fd, { bigint: true }), job)
    if (why !== undefined) return { changed: why }
    // An empty file needs no reading, and never a blob: its MD5 is known.
    if (job.size === 0) return { md5: EMPTY_MD5 }
    const cut = chunkSize !== undefined && job.size > chunkSize ? new ChunkHasher(chunkSize) : undefined
    const r = readAll(fd, job.size, cut && ((piece) => cut.update(piece)))
    if ('changed' in r) return r
    const chunks = cut?.finish()
    const wholeDone = (!whole && chunks !== undefined) || inStore(store, r.md5, job.size)
    const chunksMissing = chunks?.some((c) => !inStore(store, c.md5, c.size)) === true
    const res: HashResult = { md5: r.md5 }
    if (chunks) res.chunks = chunks
    if (wholeDone && !chunksMissing) return res
    if (chunksMissing) res.chunksMissing = true
    if (wholeDone) res.wholeDone = true
    const handle = ++nextHandle
    held.set(handle, { fd, size: job.size, md5: r.md5 })
    keep = true
    res.held = handle
    return res
  } finally {
    if (!keep) fs.closeSync(fd)
  }
}

function hash(job: Extract<HashJob, { op: 'hash' }>): HashReply {
  return {
    id: job.id,
    results: job.files.map((f) => {
      try {
        return hashOne(f, job.store, job.chunkSize, job.whole)
      } catch (err) {
        const e = err as NodeJS.ErrnoException
        return { error: { code: e.code, message: e.message } }
      }
    }),
  }
}

function take(job: { op: string; of: number }): { fd: number; size: number; md5: string } {
  const h = held.get(job.of)
  if (!h) throw new Error(`${job.op}: no file is held as ${job.of}`)
  held.delete(job.of)
  return h
}

/**
 * Puts a blob at `dest`: the bytes `read` hands to its sink go to a new temp file beside it (so the
 * rename is atomic; a name no reader of the store looks up), which is renamed in only if they hash
 * to `md5`. Returns undefined once it is in place, else why not (the file changed); the temp file
 * never stays behind.
 */
function storeChecked(
  dest: string,
  md5: string,
  fsync: boolean,
  read: (sink: (piece: Buffer) => void) => { md5: string } | { changed: string },
  mismatch: string,
): { changed: string } | undefined {
  const dir = path.dirname(dest)
  if (!madeDirs.has(dir)) {
    makeBlobDirs(dest)
    madeDirs.add(dir)
  }
  const tmp = createTempFile(dir, path.basename(dest), 0o644)
  let renamed = false
  try {
    const r = read((piece) => writeAll(tmp.fd, piece))
    if ('changed' in r) return r
    if (r.md5 !== md5) return { changed: mismatch }
    if (fsync) fs.fsyncSync(tmp.fd)
    fs.closeSync(tmp.fd)
    fs.renameSync(tmp.path, dest)
    renamed = true
    return undefined
  } finally {
    if (!renamed) {
      try {
        fs.closeSync(tmp.fd)
      } catch {
        // closed already
      }
      fs.rmSync(tmp.path, { force: true })
    }
  }
}

function copy(job: Extract<HashJob, { op: 'copy' }>): HashReply {
  const h = take(job)
  try {
    const failed = storeChecked(job.dest, h.md5, job.fsync, (sink) => readAll(h.fd, h.size, sink), 'changed between hashing and storing (its MD5 is not what was hashed)')
    return failed ? { id: job.id, ...failed } : { id: job.id, copied: true }
  } finally {
    fs.closeSync(h.fd)
  }
}

/**
 * Writes the chunk blobs the store lacks from the held file, each read from its offset, checked
 * against the MD5 it was hashed under, and put in place like a whole blob (temp name, rename).
 */
function writeChunks(job: Extract<HashJob, { op: 'chunks' }>): HashReply {
  const h = held.get(job.of)
  if (!h) throw new Error(`chunks: no file is held as ${job.of}`)
  let chunksWritten = 0
  let chunkBytes = 0
  let off = 0
  for (const c of job.chunks) {
    const start = off
    off += c.size
    if (inStore(job.store, c.md5, c.size)) continue
    const dest = path.join(job.store, sourceBlobRel('store', c.md5))
    const failed = storeChecked(dest, c.md5, job.fsync, (sink) => readRange(h.fd, start, c.size, sink), "changed between hashing and storing (a chunk's MD5 is not what was hashed)")
    if (failed) return { id: job.id, ...failed }
    chunksWritten++
    chunkBytes += c.size
  }
  return { id: job.id, chunksWritten, chunkBytes }
}

parentPort?.on('message', (job: HashJob) => {
  try {
    if (job.op === 'hash') parentPort!.postMessage(hash(job))
    else if (job.op === 'chunks') parentPort!.postMessage(writeChunks(job))
    else if (job.op === 'copy') parentPort!.postMessage(copy(job))
    else {
      fs.closeSync(take(job).fd)
      parentPort!.postMessage({ id: job.id, released: true } satisfies HashReply)
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    parentPort!.postMessage({ id: job.id, error: { code: e.code, message: e.message } } satisfies HashReply)
  }
})
