// Waiting in tests for something to happen, never for a fixed time: a poll with a deadline, a
// promise with a deadline, and the file system's clock (the one behind atimes and mtimes).
// No mount, no server: test/unit/ may use it.
import * as fs from 'node:fs'
import * as path from 'node:path'

/** Polls `fn` until it returns true (or `ms` passed); returns its last answer. */
export async function until(fn: () => boolean | Promise<boolean>, ms: number, every = 50): Promise<boolean> {
  const end = Date.now() + ms
  for (;;) {
    if (await fn()) return true
    if (Date.now() > end) return false
    await new Promise((resolve) => setTimeout(resolve, every))
  }
}

/**
 * `p`, or a rejection naming `what` once `ms` passed. Its timer also keeps the event loop alive
 * while `p` waits on something that does not (an unref'd timer, a stream).
 */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

/**
 * The file system's clock (the one behind atimes and mtimes): a time it stamps now, in ms since
 * the epoch, the mtime of a write to a probe file (`.clock-probe` in `dir`). That clock is
 * coarse (a tick of 1 to 10 ms, or finer when asked) and never goes back: a time it stamps later
 * is at least as late.
 */
export function fsNow(dir: string): number {
  const probe = path.join(dir, '.clock-probe')
  fs.appendFileSync(probe, '.')
  return fs.statSync(probe).mtimeMs
}

/**
 * Resolves true once the file system of `dir` stamps times later than `ms` (false after `within`
 * ms): a read from then on sets an atime past `ms`.
 */
export function fsClockPast(dir: string, ms: number, within = 5000): Promise<boolean> {
  return until(() => fsNow(dir) > ms, within, 1)
}
