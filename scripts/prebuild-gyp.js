#!/usr/bin/env node
'use strict'
// A node-gyp stand-in for prebuildify (`prebuildify --node-gyp scripts/prebuild-gyp.js`).
// prebuildify drives node-gyp only: it runs `<node-gyp> rebuild --target=V --devdir=D --arch=A
// --release`, then takes the first *.node in build/Release, strips it and moves it to
// prebuilds/<platform>-<arch>/. We build with cmake-js instead, so this maps those arguments:
//   --target   dropped: an N-API build needs no Node headers of a version (cmake-js builds from
//              node-api-headers because package.json has binary.napi_versions), and cmake-js
//              would read --target as "the CMake target to build";
//   --devdir, --runtime, --dist-url, --build_v8_with_gn   dropped (node-gyp's header cache);
//   --arch     kept; when it is not this machine's, the build is set up as a cross build with
//              the Debian cross toolchain (see docs/packaging.md);
//   --debug    becomes cmake-js --debug.
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const root = path.resolve(__dirname, '..')

// Node's architecture names -> GNU triplets (also Debian's multiarch directory names) and the
// CMAKE_SYSTEM_PROCESSOR of a cross build.
const CROSS = {
  x64: { triplet: 'x86_64-linux-gnu', processor: 'x86_64' },
  arm64: { triplet: 'aarch64-linux-gnu', processor: 'aarch64' },
  arm: { triplet: 'arm-linux-gnueabihf', processor: 'arm' },
  ia32: { triplet: 'i686-linux-gnu', multiarch: 'i386-linux-gnu', processor: 'i686' },
  ppc64: { triplet: 'powerpc64le-linux-gnu', processor: 'ppc64le' },
  s390x: { triplet: 's390x-linux-gnu', processor: 's390x' },
  riscv64: { triplet: 'riscv64-linux-gnu', processor: 'riscv64' },
}

function parse(argv) {
  const out = { command: 'rebuild', arch: undefined, debug: false }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const eq = arg.indexOf('=')
    const key = eq === -1 ? arg : arg.slice(0, eq)
    const value = eq === -1 ? undefined : arg.slice(eq + 1)
    if (!arg.startsWith('-')) out.command = arg
    else if (key === '--arch') out.arch = value ?? argv[++i]
    else if (key === '--debug') out.debug = true
    else if (key === '--release') out.debug = false
    else if (['--target', '--devdir', '--runtime', '--dist-url', '--build_v8_with_gn'].includes(key)) {
      if (value === undefined && argv[i + 1] && !argv[i + 1].startsWith('-')) i++
    } else {
      throw new Error(`prebuild-gyp: unsupported node-gyp argument ${arg}`)
    }
  }
  if (!['rebuild', 'build', 'configure', 'clean'].includes(out.command)) {
    throw new Error(`prebuild-gyp: unsupported node-gyp command ${out.command}`)
  }
  return out
}

function main() {
  const opts = parse(process.argv.slice(2))
  const args = [require.resolve('cmake-js/bin/cmake-js', { paths: [root] }), opts.command, '--directory', root]
  if (opts.debug) args.push('--debug')
  const env = { ...process.env }
  const arch = opts.arch || os.arch()
  let crossOut
  if (opts.arch) args.push('--arch', opts.arch)
  if (arch !== os.arch()) {
    const cross = CROSS[arch]
    if (!cross || process.platform !== 'linux') {
      throw new Error(`prebuild-gyp: no cross build set up for ${process.platform}-${arch}; build on such a machine`)
    }
    // A Debian cross build: g++-<triplet> and libfuse3-dev:<arch> (multiarch). CXX and
    // PKG_CONFIG_LIBDIR from the environment win, for other toolchains or a sysroot.
    env.CXX = env.CXX || `${cross.triplet}-g++`
    env.CC = env.CC || `${cross.triplet}-gcc`
    env.PKG_CONFIG_LIBDIR =
      env.PKG_CONFIG_LIBDIR || `/usr/lib/${cross.multiarch || cross.triplet}/pkgconfig:/usr/share/pkgconfig`
    args.push('--CDCMAKE_SYSTEM_NAME=Linux', `--CDCMAKE_SYSTEM_PROCESSOR=${cross.processor}`)
    // A build directory of its own, so build/ keeps this machine's CMake cache: a later
    // `cmake-js compile` must not reuse the cross toolchain and put an arm64 file in build/Release.
    crossOut = path.join(root, 'build', `cross-${arch}`)
    args.push('--out', crossOut)
    console.error(`prebuild-gyp: cross build for ${arch} with ${env.CXX}; strip with PREBUILD_STRIP_BIN=${cross.triplet}-strip`)
  }
  if (opts.command === 'rebuild') {
    // prebuildify adds its file to prebuilds/<platform>-<arch>/ and never removes one: a stale
    // file there (an older name, an earlier flavour) would ship next to the new one.
    const dir = path.join(root, 'prebuilds', `${process.env.PREBUILD_PLATFORM || process.platform}-${arch}`)
    for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
      if (name.endsWith('.node')) fs.rmSync(path.join(dir, name))
    }
  }
  const result = spawnSync(process.execPath, args, { cwd: root, env, stdio: 'inherit' })
  if (result.error) throw result.error
  if (result.status === 0 && crossOut && !opts.command.startsWith('c')) {
    // prebuildify takes the first *.node in build/Release: put the cross-built one there alone.
    const release = path.join(root, 'build', 'Release')
    fs.mkdirSync(release, { recursive: true })
    for (const name of fs.readdirSync(release)) if (name.endsWith('.node')) fs.rmSync(path.join(release, name))
    for (const name of fs.readdirSync(path.join(crossOut, 'Release'))) {
      if (name.endsWith('.node')) fs.copyFileSync(path.join(crossOut, 'Release', name), path.join(release, name))
    }
  }
  process.exitCode = result.status ?? 1
}

try {
  main()
} catch (err) {
  console.error(err.message)
  process.exitCode = 1
}
