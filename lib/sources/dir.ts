/**
 * A source that is a directory: a plain absolute path or a `file://` URL (a local store, or a
 * grid cache on a shared file system). Synchronous fs only (it runs on the miss worker); between
 * chunks of a large file it yields to the event loop so concurrent HTTP downloads keep moving.
 *
 * There is no timeout here: a sync read from a hung network file system blocks the miss worker.
 * Mount such shares with `soft`/`timeo` options, or serve them over HTTP.
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { redactUrl, type SourceConfig } from '../config'
import { SourceFault, writeAllSync, type GetResult, type Sink, type Source, type SourceRole } from './source'

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
      fd = fs.openSync(file, 'r')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') return 'absent'
      throw ioFault(err, file)
    }
    try {
      const st = fs.fstatSync(fd)
      if (!st.isFile()) throw new SourceFault('not-a-file', `${file} is not a regular file`)
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

  /** Copy `file` to `rel` through a hidden temp file in the target directory, then rename. */
  async put(rel: string, file: string, size: number): Promise<void> {
    const dest = this.resolve(rel)
    const dir = path.dirname(dest)
    const tmp = path.join(dir, `.${path.basename(dest)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`)
    let out: number | undefined
    let inp: number | undefined
    try {
      fs.mkdirSync(dir, { recursive: true })
      inp = fs.openSync(file, 'r')
      out = fs.openSync(tmp, 'wx', 0o644)
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(size, 1)))
      let copied = 0
      let sinceYield = 0
      for (;;) {
        const n = fs.readSync(inp, buf, 0, buf.length, null)
        if (n === 0) break
        writeAllSync(out, buf.subarray(0, n))
        copied += n
        sinceYield += n
        if (sinceYield >= YIELD_EVERY) {
          sinceYield = 0
          await yieldToLoop()
        }
      }
      if (copied !== size) throw new SourceFault('too-short', `${file} has ${copied} bytes, expected ${size}`)
      fs.fsyncSync(out)
      fs.closeSync(out)
      out = undefined
      fs.renameSync(tmp, dest)
    } catch (err) {
      if (out !== undefined) fs.closeSync(out)
      try {
        fs.unlinkSync(tmp)
      } catch {
        // never created or already renamed
      }
      throw err instanceof SourceFault ? err : ioFault(err, dest)
    } finally {
      if (inp !== undefined) fs.closeSync(inp)
    }
  }

  close(): void {}
}
