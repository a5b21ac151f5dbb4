import path from 'node:path'
import { AysfsError } from './errors'

type Binding = typeof import('../binding')

let cached: Binding | undefined

/** The package root: two levels up from both `lib/` (sources) and `dist/lib/` (compiled). */
export function packageRoot(): string {
  const up = path.resolve(__dirname, '..')
  return path.basename(up) === 'dist' ? path.resolve(up, '..') : up
}

/**
 * Loads the addon: `build/Release` when it was compiled here, else the prebuild for this
 * platform (node-gyp-build). A missing libfuse3 becomes an error that names the package to
 * install instead of a raw dlopen message.
 */
export function loadBinding(): Binding {
  if (cached) return cached
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require('node-gyp-build')(packageRoot()) as Binding
    return cached
  } catch (err) {
    const message = String((err as Error)?.message ?? err)
    if (/libfuse3\.so/.test(message)) {
      throw new AysfsError(
        'ENOENT',
        'aysfs-native needs libfuse3: install it with `apt-get install libfuse3-3 fuse3` ' +
          '(fuse3 brings fusermount3 for mounts by non-root users)',
        { cause: err },
      )
    }
    if (/No native build was found/.test(message)) {
      throw new AysfsError(
        'ENOENT',
        'aysfs-native has no prebuilt addon for this platform and was not compiled: run ' +
          '`npx aysfs-native rebuild` (needs cmake, g++, libfuse3-dev and libbrotli-dev)',
        { cause: err },
      )
    }
    throw err
  }
}

/**
 * The compiled path of one of our modules that runs on the miss worker. Worker code always runs
 * as plain compiled JavaScript with no loader hooks, the way it ships: when this package runs from
 * its TypeScript sources (the tests), that is `dist/lib/<name>.js`, built by `npm test` first.
 */
export function runtimeModule(name: string): string {
  if (__filename.endsWith('.js')) return path.join(__dirname, `${name}.js`)
  return path.join(packageRoot(), 'dist', 'lib', `${name}.js`)
}
