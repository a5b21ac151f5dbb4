#!/usr/bin/env node
'use strict'
// The package's install script, and the compile step of `aysfs-native rebuild` (lib/rebuild.ts).
//
// At install: if the addon loads (build/Release from an earlier compile, else the prebuild for
// this platform in prebuilds/), there is nothing to do. Otherwise compile it with cmake-js; when
// that cannot work (no compiler, cmake, make, pkg-config, libfuse3 or libbrotli headers), say which Debian
// packages are missing instead of failing deep inside CMake. Sites that install with
// --ignore-scripts never run this: the prebuild is loaded as shipped.
//
// Plain CommonJS with no dependencies of its own but cmake-js and node-gyp-build: it runs in a
// clean checkout (`npm ci`) before dist/ exists.
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
const PREFIX = 'aysfs-native:'

/** The executable `name` on `PATH`, or undefined. */
function which(name, env = process.env) {
  if (name.includes('/')) return isExecutable(name) ? name : undefined
  for (const dir of (env.PATH || '').split(path.delimiter)) {
    if (!dir) continue
    const file = path.join(dir, name)
    if (isExecutable(file)) return file
  }
  return undefined
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}

/**
 * The Debian/Ubuntu packages that compiling the addon needs and this machine lacks, in the order
 * `apt-get install` takes them. Empty when a compile can start.
 */
function missingPackages(env = process.env) {
  const missing = []
  const pkgConfig = which('pkg-config', env) || which('pkgconf', env)
  // The `.bro` decoder is linked in from libbrotli-dev's static libraries (CMakeLists.txt).
  const libs = [
    ['libfuse3-dev', 'fuse3 >= 3.10', '/usr/include/fuse3/fuse_lowlevel.h'],
    ['libbrotli-dev', 'libbrotlidec', '/usr/include/brotli/decode.h'],
  ]
  for (const [pkg, module, header] of libs) {
    if (pkgConfig) {
      const probe = spawnSync(pkgConfig, ['--exists', module], { env, stdio: 'ignore' })
      if (probe.status !== 0) missing.push(pkg)
    } else if (!fs.existsSync(header)) {
      missing.push(pkg)
    }
  }
  if (!which('cmake', env)) missing.push('cmake')
  const cxx = env.CXX ? env.CXX.split(' ')[0] : undefined
  if (cxx ? !which(cxx, env) : !which('c++', env) && !which('g++', env)) missing.push('g++')
  if (!which('make', env) && !which('ninja', env)) missing.push('make')
  if (!pkgConfig) missing.push('pkg-config')
  return missing
}

/** The message for a machine that cannot compile the addon. */
function missingMessage(missing) {
  return (
    `${PREFIX} cannot compile the native addon: this machine lacks ${missing.join(', ')}.\n` +
    `  Install them with:  apt-get install ${missing.join(' ')}\n` +
    `  then run:           npx aysfs-native rebuild`
  )
}

/**
 * Tries to load the addon the way lib/native.ts does. Resolves to `ok`, `none` (no build and no
 * prebuild for this platform), `libfuse` (the addon is fine, libfuse3.so.3 is missing) or
 * `broken` (it does not load here, e.g. it needs a newer glibc).
 */
function probe() {
  let file
  try {
    file = require('node-gyp-build').path(root)
  } catch (err) {
    return { state: 'none', message: String(err && err.message) }
  }
  try {
    require(file)
    return { state: 'ok', file }
  } catch (err) {
    const message = String(err && err.message)
    return { state: /libfuse3\.so/.test(message) ? 'libfuse' : 'broken', file, message }
  }
}

/**
 * Compiles the addon into build/Release with cmake-js (incremental; a failed build retries from
 * scratch). Resolves to the exit code. Missing packages are named before anything runs.
 */
function compile(options = {}) {
  const env = { ...process.env }
  // CMakeLists.txt runs `node` to find node-addon-api: make sure the node running us is found.
  const nodeDir = path.dirname(process.execPath)
  if (!which('node', env)) env.PATH = [env.PATH, nodeDir].filter(Boolean).join(path.delimiter)
  const missing = missingPackages(env)
  if (missing.length > 0) {
    console.error(missingMessage(missing))
    return Promise.resolve(1)
  }
  let cmakeJs
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] })
  } catch {
    console.error(`${PREFIX} cmake-js is not installed next to aysfs-native; reinstall the package`)
    return Promise.resolve(1)
  }
  const stdio = options.stdio || 'inherit'
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cmakeJs, 'compile', '--directory', root], { cwd: root, env, stdio })
    child.on('error', (err) => {
      console.error(`${PREFIX} could not run cmake-js: ${err.message}`)
      resolve(1)
    })
    child.on('exit', (code, signal) => {
      if (code !== 0) {
        console.error(
          `${PREFIX} compiling the native addon failed (${signal || `exit ${code}`}); it needs ` +
            `libfuse3-dev (>= 3.10), libbrotli-dev, cmake, g++, make and pkg-config`,
        )
      }
      resolve(code ?? 1)
    })
  })
}

async function install() {
  const fromSource =
    process.env.npm_config_build_from_source === 'true' || process.env.AYSFS_BUILD_FROM_SOURCE === '1'
  if (!fromSource) {
    const found = probe()
    if (found.state === 'ok') return 0
    if (found.state === 'libfuse') {
      // The prebuild fits; what is missing is the shared library, which a compile would need too.
      console.error(
        `${PREFIX} the native addon is installed but libfuse3 is not: install it with ` +
          '`apt-get install libfuse3-3 fuse3` before mounting',
      )
      return 0
    }
    const why =
      found.state === 'none'
        ? `no prebuilt addon for ${process.platform}-${os.arch()}`
        : `the prebuilt addon does not load here (${found.message.split('\n')[0]})`
    console.error(`${PREFIX} ${why}; compiling from source`)
  }
  return compile()
}

module.exports = { compile, missingPackages, missingMessage, probe }

if (require.main === module) {
  install().then(
    (code) => {
      process.exitCode = code
    },
    (err) => {
      console.error(`${PREFIX} ${err && err.stack ? err.stack : err}`)
      process.exitCode = 1
    },
  )
}
