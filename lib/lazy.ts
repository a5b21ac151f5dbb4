/**
 * Dependencies loaded at their first use instead of when a file that uses them is: pino,
 * pino-pretty and cli-progress each cost megabytes of memory and tens of milliseconds, so
 * `require('aysfs-native')` and the command line's `--help` or `status` do not pay for them.
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
