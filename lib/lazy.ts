/**
 * Dependencies loaded at their first use instead of when a file that uses them is: undici,
 * axios (with https-proxy-agent and form-data), pino, pino-pretty and cli-progress each cost
 * megabytes of memory and tens of milliseconds, so `require('aysfs-native')`, the command line's
 * `--help` or `status`, and a thread that never needs one do not pay for it.
 *
 * The miss worker must not load a module once a read may wait on it (lib/miss-worker.ts): it
 * calls its fetcher's `preload()` first, which loads each one the configuration can need.
 */

/**
 * A function that returns the package `id`, loaded the first time it is called. Types come from
 * an `import type` of the package: `lazyRequire<typeof Undici>('undici')`.
 */
export function lazyRequire<T>(id: string): () => T {
  let mod: T | undefined
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return () => (mod ??= require(id) as T)
}
