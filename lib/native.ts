/**
 * Loads the native addon. The one loader; the engine (lib/engine.ts) is the one module that asks
 * it for anything, and hands the miss worker and the fetchers what they need of it.
 */
import { AysfsError } from './errors'
import { packageRoot } from './package-root'

/** The addon's exports (binding.d.ts). */
export type Binding = typeof import('../binding')

let cached: Binding | undefined

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
