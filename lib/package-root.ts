/**
 * Where the package's own files are, whether it runs from its TypeScript sources (the tests) or
 * as the compiled JavaScript it ships: its root, and the compiled modules that run in threads of
 * their own (the miss worker, publish's hashing workers, the fetcher module).
 */
import path from 'node:path'

/** The package root: two levels up from both `lib/` (sources) and `dist/lib/` (compiled). */
export function packageRoot(): string {
  const up = path.resolve(__dirname, '..')
  return path.basename(up) === 'dist' ? path.resolve(up, '..') : up
}

/**
 * The compiled path of one of our modules that runs in a worker thread (`miss-worker`,
 * `pipeline/index`). Worker code always runs as plain compiled JavaScript with no loader hooks,
 * the way it ships: when this package runs from its TypeScript sources (the tests), that is
 * `dist/lib/<name>.js`, built by `npm test` first.
 */
export function runtimeModule(name: string): string {
  if (__filename.endsWith('.js')) return path.join(__dirname, `${name}.js`)
  return path.join(packageRoot(), 'dist', 'lib', `${name}.js`)
}
