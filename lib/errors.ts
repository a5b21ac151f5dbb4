/**
 * The one error type that reaches users. `code` is an errno name (`ENOENT`, `EINVAL`, `EBUSY`,
 * `EIO`, ...) so callers can branch on it the way they do on Node's own fs errors; `file`, `line`
 * and `key` say where bad input was found.
 */
export class AysfsError extends Error {
  /** errno-style code, e.g. `EINVAL` for bad input, `EIO` for a blob no source could serve. */
  readonly code: string
  /** The file the problem was found in (a config, an flist), when there is one. */
  readonly file?: string
  /** 1-based line number inside `file`, when known. */
  readonly line?: number
  /** The config key (dotted, e.g. `main.timeout`, `store[1].url`) the problem is about. */
  readonly key?: string

  constructor(code: string, message: string, where: { file?: string; line?: number; key?: string; cause?: unknown } = {}) {
    super(message, where.cause === undefined ? undefined : { cause: where.cause })
    this.name = 'AysfsError'
    this.code = code
    if (where.file !== undefined) this.file = where.file
    if (where.line !== undefined) this.line = where.line
    if (where.key !== undefined) this.key = where.key
  }
}

/** Exit status for an error: 2 for usage and configuration mistakes, 1 for failures at run time. */
export function exitCodeFor(err: unknown): 1 | 2 {
  return err instanceof AysfsError && (err.code === 'EINVAL' || err.code === 'EUSAGE') ? 2 : 1
}

/**
 * A system error (an fs call's, or any Node error with an errno `code`) as an AysfsError: its
 * code (`EIO` when it has none), the message `<what>: <its message>`, the error as `cause`.
 */
export function fromSystemError(err: unknown, what: string, where: { file?: string; key?: string } = {}): AysfsError {
  const e = err as NodeJS.ErrnoException
  return new AysfsError(typeof e?.code === 'string' ? e.code : 'EIO', `${what}: ${e?.message ?? String(err)}`, { ...where, cause: err })
}
