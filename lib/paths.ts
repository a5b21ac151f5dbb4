/**
 * The rules for the names users and stores hand us: flist paths (a prefix is one too), the user
 * and group names and symlink targets publish writes into a flist, and service ids. Written once,
 * so that the flist parser, the config, publish and the pipeline cannot disagree.
 *
 * A rule answers with the problem as a phrase (`has an empty, "." or ".." component`), or
 * undefined when there is none; each caller says where it found the name (a flist line, a config
 * key, a command-line flag) and throws its own error.
 */

/** Longest path component in bytes (Linux `NAME_MAX`): nobody can list, look up or create a
 * longer name, so a flist that has one is invalid. */
export const MAX_NAME_BYTES = 255
/** Longest flist path in bytes, the prefix included (Linux `PATH_MAX`). */
export const MAX_PATH_BYTES = 4096

const SLASH = 47
const DOT = 46

/** Characters a flist path or a user or group name cannot hold: the field separator, the line
 * ends, NUL. In the order they are looked for. */
const FORBIDDEN: ReadonlyArray<readonly [string, string]> = [
  ['|', 'a "|"'],
  ['\r', 'a carriage return (CR)'],
  ['\n', 'a line feed (LF)'],
  ['\0', 'a NUL byte'],
]

/**
 * The first character of `s` that a flist cannot hold, described (`a "|"`, `a line feed (LF)`),
 * or undefined. With `pipe: false`, `|` is allowed: a symlink target is the last field of its
 * line, so it may hold one.
 */
export function forbiddenCharIn(s: string, opts: { pipe?: boolean } = {}): string | undefined {
  for (const [c, what] of FORBIDDEN) {
    if (c === '|' && opts.pipe === false) continue
    if (s.includes(c)) return what
  }
  return undefined
}

/**
 * The problem of the path component `buf[s..e)` (UTF-8 bytes), or undefined: empty, `.` or `..`,
 * or longer than {@link MAX_NAME_BYTES}. Works on bytes so the flist parser can ask it of every
 * component of a million lines without making a string.
 */
export function componentProblem(buf: Uint8Array, s: number, e: number): string | undefined {
  const len = e - s
  if (len === 0 || (buf[s] === DOT && (len === 1 || (len === 2 && buf[s + 1] === DOT)))) return 'has an empty, "." or ".." component'
  if (len > MAX_NAME_BYTES) return `has a component of ${len} bytes: at most ${MAX_NAME_BYTES} (NAME_MAX)`
  return undefined
}

/** The problem of a path of `bytes` bytes (longer than {@link MAX_PATH_BYTES}), or undefined. */
export function pathLengthProblem(bytes: number): string | undefined {
  return bytes > MAX_PATH_BYTES ? `is ${bytes} bytes long: at most ${MAX_PATH_BYTES} (PATH_MAX)` : undefined
}

/** What is wrong with a flist path: `relative` is set when it is not absolute (callers word that
 * one in their own terms: "expected an absolute path"). */
export interface PathProblem {
  text: string
  relative?: true
}

/**
 * Why `p` cannot be a flist path, or undefined when it can: it holds no `|`, CR, LF or NUL, is
 * absolute, has no empty, `.` or `..` component (`/` alone is the root) and none over
 * {@link MAX_NAME_BYTES} bytes, and is at most {@link MAX_PATH_BYTES} bytes long.
 */
export function flistPathProblem(p: string): PathProblem | undefined {
  const bad = forbiddenCharIn(p)
  if (bad !== undefined) return { text: `contains ${bad}` }
  if (!p.startsWith('/')) return { text: 'is not absolute', relative: true }
  if (p === '/') return undefined
  const buf = Buffer.from(p)
  for (let s = 1, i = 1; i <= buf.length; i++) {
    if (i < buf.length && buf[i] !== SLASH) continue
    const c = componentProblem(buf, s, i)
    if (c !== undefined) return { text: c }
    s = i + 1
  }
  const long = pathLengthProblem(buf.length)
  return long === undefined ? undefined : { text: long }
}

/**
 * A prefix as flist paths are compared with it: trailing `/` dropped (`/` stays `/`). Check the
 * result with {@link flistPathProblem}.
 */
export function normalisePrefix(p: string): string {
  return p.length > 1 ? p.replace(/\/+$/, '') || '/' : p
}

/** The service-id rule, for messages: "a service id must be …". */
export const SERVICE_ID_RULE = 'usable as a file name (no "/", "\\" or control characters, not "." or "..")'

/**
 * Whether `id` may name a service: it becomes a file name, `md/<id>.flist`, in every store and in
 * the local cache, so it is one ({@link SERVICE_ID_RULE}).
 */
export function isServiceId(id: unknown): id is string {
  return typeof id === 'string' && id !== '' && id !== '.' && id !== '..' && !/[/\\\0-\x1f\x7f]/.test(id)
}
