/**
 * A source that is a directory: a plain absolute path or a `file://` URL (a local store, or a
 * grid cache on a shared file system). Synchronous fs only (it runs on the miss worker); between
 * chunks of a large file it yields to the event loop so concurrent HTTP downloads keep moving.
 *
 * Whatever is found under the root is opened once, without following a link and without waiting
 * (`O_NOFOLLOW | O_NONBLOCK`: a FIFO would block a plain open forever), and must be a regular
 * file; anything else fails that source (`not-a-file`). Pushes into a grid cache run on the
 * addon's committer threads, relative to directory fds (`pushToDir`): a symlink planted in a
 * shared grid cache never redirects them.
 *
 * There is no timeout here: a sync read from a hung network file system blocks the miss worker.
 * Mount such shares with `soft`/`timeo` options, or serve them over HTTP.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { redactUrl, type SourceConfig } from '../config'
import { fileKindOf, kindWords } from '../file-kind'
import { pushToDir } from '../local-cache/committer'
import { SourceFault, type GetResult, type Sink, type Source, type SourceRole } from './source'

/** How a source file is opened: read only, never through a symlink (ELOOP), never waiting for a
 * writer (a FIFO), never becoming our controlling terminal (a tty). */
const OPEN_SOURCE = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY

const CHUNK = 1024 * 1024
/** Bytes copied between two yields to the event loop. */
const YIELD_EVERY = 8 * CHUNK

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve))

/** The directory a `file://` URL or plain path names, or undefined for any other URL. */
export function dirRoot(url: string): string | undefined {
  if (url.startsWith('file:')) return fileURLToPath(url)
  if (path.isAbsolute(url)) return url
  return undefined
}

function ioFault(err: unknown, what: string): SourceFault {
  const code = (err as NodeJS.ErrnoException).code ?? 'EIO'
  return new SourceFault(`io:${code}`, `${what}: ${(err as Error).message}`, err)
}

export class DirSource implements Source {
  readonly key: string
  readonly url: string
  readonly push: boolean
  readonly root: string

  constructor(
    cfg: SourceConfig,
    readonly role: SourceRole,
  ) {
    const root = dirRoot(cfg.url)
    if (root === undefined) throw new TypeError(`DirSource: not a directory URL: ${cfg.url}`)
    this.root = root
    this.key = cfg.key
    this.url = redactUrl(cfg.url)
    this.push = role === 'cache' && cfg.push
  }

  private resolve(rel: string): string {
    return path.join(this.root, ...rel.split('/'))
  }

  async get(rel: string, sink: Sink): Promise<GetResult> {
    const file = this.resolve(rel)
    let fd: number
    try {
      fd = fs.openSync(file, OPEN_SOURCE)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') return 'absent'
      if (code === 'ELOOP') throw new SourceFault('not-a-file', `${file} is a symbolic link (not followed)`, err)
      throw ioFault(err, file)
    }
    try {
      const st = fs.fstatSync(fd)
      if (!st.isFile()) throw new SourceFault('not-a-file', `${file} is a ${fileKindOf(st) === 'fifo' ? 'FIFO' : kindWords(st)}, not a regular file`)
      if (sink.exactBytes !== undefined && st.size !== sink.exactBytes) {
        throw new SourceFault(st.size > sink.exactBytes ? 'too-long' : 'too-short', `${file} has ${st.size} bytes, expected ${sink.exactBytes}`)
      }
      if (st.size > sink.maxBytes) throw new SourceFault('too-long', `${file} has ${st.size} bytes, more than ${sink.maxBytes}`)
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(st.size, 1) + 1))
      let sinceYield = 0
      for (;;) {
        let n: number
        try {
          n = fs.readSync(fd, buf, 0, buf.length, null)
        } catch (err) {
          throw ioFault(err, file)
        }
        if (n === 0) break
        // Copy: the sink may keep the chunk (BroSink, BufferSink) and buf is reused.
        sink.write(Buffer.from(buf.subarray(0, n)))
        sinceYield += n
        if (sinceYield >= YIELD_EVERY) {
          sinceYield = 0
          await yieldToLoop()
        }
      }
      sink.end()
      return 'ok'
    } finally {
      fs.closeSync(fd)
    }
  }

  /**
   * Copy the local-cache blob `file` to `rel` through a hidden temp file in the target directory,
   * then rename, on the committer's threads and relative to directory fds (`pushToDir`). A
   * symlink in the grid cache (or in the blob's place) fails the push (`symlink`); nothing is
   * followed.
   */
  async put(rel: string, file: string, size: number): Promise<void> {
    try {
      await pushToDir(this.root, rel, file, size, true)
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      if (e.code === 'ELOOP') {
        throw new SourceFault('symlink', `${e.path ?? this.resolve(rel)} is a symbolic link${e.syscall === 'source' ? '' : ' in the grid cache'}: not followed`, err)
      }
      if (e.syscall === 'source' && e.code === 'EINVAL') {
        throw new SourceFault('not-a-file', `${file} is not a regular file of ${size} bytes`, err)
      }
      throw ioFault(err, e.path ?? this.resolve(rel))
    }
  }

  close(): void {}
}
