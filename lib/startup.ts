/**
 * Start-up lists: the blobs a program read when it started, in the order it first read them
 * (`aysfs-native record` writes one, `publish --startup` stores it beside the flist as
 * `md/<id>.startup`, a mounting node fetches its blobs at once, behind any read). This module is
 * the file's format, which the three share: a header line with the version, then one MD5 a line
 * (docs/format.md, "Start-up lists").
 */
import { AysfsError } from './errors'

/** The first line of a start-up list (version 1). */
export const STARTUP_HEADER = 'aysfs-native startup 1'
/**
 * Largest start-up list read (a node's fetch, publish, the kept copy): 16 MiB, about 490,000
 * blobs. It bounds what a store can make a node hold in memory for one service.
 */
export const MAX_STARTUP_SIZE = 16 << 20

/** One blob of a list, and the line that names it. */
export interface StartupEntry {
  /** Lower-case hex. */
  md5: string
  /** 1-based. */
  line: number
}

/**
 * The blobs a start-up list names, in its order (a blob named twice keeps its first place).
 * @param file names the list in messages (a path, or `<id>.startup`).
 * @throws AysfsError `EINVAL` with `file` and `line`: no header or another version, a line that is
 *   not 32 hex digits (nor blank, nor a `#` comment), or more than {@link MAX_STARTUP_SIZE} bytes.
 */
export function parseStartupList(data: Buffer, file: string): StartupEntry[] {
  const fail = (line: number | undefined, msg: string): never => {
    throw new AysfsError('EINVAL', `start-up list ${file}${line !== undefined ? ` line ${line}` : ''}: ${msg}`, { file, ...(line !== undefined ? { line } : {}) })
  }
  if (data.length > MAX_STARTUP_SIZE) fail(undefined, `larger than ${MAX_STARTUP_SIZE} bytes`)
  // latin1: every byte stays one character, so a non-ASCII byte shows in the message as itself.
  const lines = data.toString('latin1').split('\n')
  if (lines[lines.length - 1] === '') lines.pop()
  const out: StartupEntry[] = []
  const seen = new Set<string>()
  lines.forEach((raw, i) => {
    const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw
    if (i === 0) {
      if (text === STARTUP_HEADER) return
      const version = /^aysfs-native startup (\S+)$/.exec(text)?.[1]
      fail(1, version !== undefined ? `version ${JSON.stringify(version.slice(0, 20))}; this aysfs-native reads version 1` : `expected the header ${JSON.stringify(STARTUP_HEADER)}, got ${JSON.stringify(text.slice(0, 40))}`)
    }
    if (text.trim() === '' || text.startsWith('#')) return
    if (!/^[0-9a-fA-F]{32}$/.test(text)) fail(i + 1, `${JSON.stringify(text.slice(0, 40))}: expected an MD5 (32 hex digits) alone on its line`)
    const md5 = text.toLowerCase()
    if (seen.has(md5)) return
    seen.add(md5)
    out.push({ md5, line: i + 1 })
  })
  if (lines.length === 0) fail(undefined, `empty: expected the header ${JSON.stringify(STARTUP_HEADER)}`)
  return out
}

/** The text of a start-up list naming `md5s` (lower-case hex), in order. */
export function formatStartupList(md5s: readonly string[]): Buffer {
  return Buffer.from(`${STARTUP_HEADER}\n${md5s.map((m) => `${m}\n`).join('')}`)
}
