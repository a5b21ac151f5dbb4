/**
 * `aysfs-native rebuild`: compile the native addon where the package is installed, with the
 * install script's own compile step (scripts/install.js).
 */
import path from 'node:path'
import { packageRoot } from './package-root'

/** The compile step shared with the install script (scripts/install.js, plain CommonJS). */
interface InstallScript {
  compile(options?: { stdio?: 'inherit' | 'ignore' }): Promise<number>
}

/**
 * Compiles the native addon in the package's own directory (`cmake-js compile`, into
 * `build/Release`, which is loaded before any prebuild). For a platform with no prebuild, or
 * after installing with `--ignore-scripts` on a machine the prebuild does not fit. When a needed
 * tool or header is missing, prints which Debian/Ubuntu packages to install (`libfuse3-dev
 * libbrotli-dev cmake g++ make pkg-config`) and compiles nothing. Resolves to the exit code (0 on
 * success).
 */
export function rebuild(): Promise<number> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const script = require(path.join(packageRoot(), 'scripts', 'install.js')) as InstallScript
  return script.compile()
}
