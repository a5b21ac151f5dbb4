// The benchmark's data, made on the fly: a tree shaped like a software install (many small
// files in nested directories, some MB-sized libraries with their symlinks, a Python package
// compiled to byte code, a Node package, one large file), its publication to a store (docs/format.md), and a large
// synthetic flist for the mount-time workload.
import { prng } from './prng'
import { execFileSync } from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { FType, formatFlistLine, type FlistLineInput } from '../lib/flist'

/** What to make. */
export interface TreeSpec {
  /** Regular files at least (the large file and the Python package included). */
  files: number
  /** MB-sized files (1-6 MiB), with a symlink each. */
  mbFiles: number
  /** Bytes of the one large file. */
  bigSize: number
  /** Modules of the generated Python package. */
  pyModules: number
  /** Modules of the generated Node package. */
  nodeModules: number
}

/** What was made; paths relative to the tree's root. */
export interface TreeInfo {
  spec: TreeSpec
  /** Regular files but the large one, sorted. */
  files: string[]
  /** The large file. */
  big: string
  /** Directory to put on `sys.path`. */
  pyPath: string
  /** Package to import. */
  pyPackage: string
  /** The Node package's directory (to `require`), or '' when there is none. */
  nodePackage: string
  /** Entries under the root: directories, files, symlinks. */
  entries: number
  /** Bytes of `files`. */
  bytes: number
}

const WORDS = ['core', 'util', 'net', 'io', 'http', 'json', 'xml', 'crypto', 'db', 'log', 'cli', 'gui', 'img', 'math', 'text', 'time']

/** How a generated package is written in one language. */
interface PackageLanguage {
  /** The package's (and each sub-package's) index file. */
  index: string
  /** A module's file name. */
  file(mod: string): string
  /** A module's source: 12 functions and a class, `m` its number in its sub-package. */
  module(where: string, m: number): string
  /** An index importing these modules or sub-packages. */
  imports(names: string[]): string
}

const PYTHON: PackageLanguage = {
  index: '__init__.py',
  file: (mod) => `${mod}.py`,
  module: (where, m) => {
    let src = `"""Generated module ${where}."""\nimport os\n\nCONST = ${m}\n\n`
    for (let f = 0; f < 12; f++) {
      src += `def f${f}(x, y=${f}):\n    """Adds things."""\n    z = [i * y for i in range(x)]\n    return sum(z) + CONST + len(os.sep)\n\n`
    }
    return src + `class C${m}:\n    a = ${m}\n\n    def method(self, v):\n        return {k: v for k in range(self.a)}\n`
  },
  imports: (names) => names.map((n) => `from . import ${n}\n`).join(''),
}

// CommonJS with extensionless relative requires, as packages write them: each costs a failed
// probe of the bare name, then the `.js` file.
const NODE: PackageLanguage = {
  index: 'index.js',
  file: (mod) => `${mod}.js`,
  module: (where, m) => {
    let src = `'use strict'\n// Generated module ${where}.\nconst path = require('node:path')\n\nconst CONST = ${m}\n\n`
    for (let f = 0; f < 12; f++) {
      src += `function f${f}(x, y = ${f}) {\n  const z = Array.from({ length: x }, (_, i) => i * y)\n  return z.reduce((a, b) => a + b, 0) + CONST + path.sep.length\n}\n\n`
    }
    src += `class C${m} {\n  method(v) {\n    return Object.fromEntries(Array.from({ length: ${m} }, (_, k) => [k, v]))\n  }\n}\n\n`
    return src + `module.exports = { ${Array.from({ length: 12 }, (_, f) => `f${f}`).join(', ')}, C${m} }\n`
  },
  imports: (names) => `'use strict'\n${names.map((n) => `exports.${n} = require('./${n}')\n`).join('')}`,
}

/**
 * Writes a package of `modules` modules in sub-packages of 20: the package's index imports
 * every sub-package, whose index imports its modules. Returns the files written.
 */
function writePackage(dir: string, modules: number, rand: () => number, lang: PackageLanguage): number {
  const perPkg = 20
  const pkgs = Math.max(1, Math.ceil(modules / perPkg))
  let files = 0
  const top: string[] = []
  for (let p = 0; p < pkgs; p++) {
    const name = `sub${String(p).padStart(3, '0')}`
    const pdir = path.join(dir, name)
    fs.mkdirSync(pdir, { recursive: true })
    const mods: string[] = []
    for (let m = 0; m < perPkg && p * perPkg + m < modules; m++) {
      const mod = `m${String(m).padStart(2, '0')}_${WORDS[Math.floor(rand() * WORDS.length)]}`
      mods.push(mod)
      fs.writeFileSync(path.join(pdir, lang.file(mod)), lang.module(`${name}/${mod}`, m))
      files++
    }
    fs.writeFileSync(path.join(pdir, lang.index), lang.imports(mods))
    files++
    top.push(name)
  }
  fs.writeFileSync(path.join(dir, lang.index), lang.imports(top))
  return files + 1
}

/** The real interpreter behind `python3` (pyenv's shim is a shell script). */
export function pythonExecutable(): string {
  return execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim()
}

/** Makes the tree under `root` (which must not exist). */
export function makeTree(root: string, spec: TreeSpec, seed = 1): TreeInfo {
  const rand = prng(seed)
  fs.mkdirSync(root, { recursive: true })
  const usr = path.join(root, 'usr')
  const pyRel = 'usr/lib/python3/site-packages'
  const pkgDir = path.join(root, pyRel, 'benchapp')
  fs.mkdirSync(pkgDir, { recursive: true })
  let count = writePackage(pkgDir, spec.pyModules, rand, PYTHON)
  // Byte code with unchecked hashes: Python trusts it whatever the source's mtime says, so both
  // trees start from the same .pyc files and the mount (read-only) never needs to write one.
  execFileSync(pythonExecutable(), ['-m', 'compileall', '-q', '-j', '0', '--invalidation-mode', 'unchecked-hash', pkgDir])
  count *= 2
  const nodeRel = 'usr/lib/node_modules/benchnode'
  if (spec.nodeModules > 0) count += writePackage(path.join(root, nodeRel), spec.nodeModules, rand, NODE)

  // MB-sized shared libraries, each with a versionless symlink.
  const libDir = path.join(usr, 'lib')
  for (let i = 0; i < spec.mbFiles; i++) {
    const size = Math.floor((1 + rand() * 5) * 1024 * 1024)
    const name = `lib${WORDS[i % WORDS.length]}${i}.so.1`
    fs.writeFileSync(path.join(libDir, name), crypto.randomBytes(size))
    fs.symlinkSync(name, path.join(libDir, name.replace(/\.1$/, '')))
    count++
  }

  // The bulk: small files, log-uniform from 32 B to 48 KiB, in nested directories under
  // share/, include/, bin/ and libexec/.
  const tops = ['share', 'include', 'bin', 'libexec', 'lib/modules']
  const dirs: { rel: string; depth: number }[] = []
  for (const t of tops) {
    fs.mkdirSync(path.join(usr, t), { recursive: true })
    dirs.push({ rel: path.join('usr', t), depth: 1 })
  }
  const exts = ['.h', '.txt', '.mo', '.xml', '.json', '.png', '.js', '.so', '', '.conf']
  const buf = Buffer.alloc(48 * 1024)
  let n = 0
  while (count < spec.files - 1) {
    if (rand() < 1 / 12 || dirs.length < 20) {
      const parent = dirs[Math.floor(rand() * dirs.length)]!
      if (parent.depth < 7) {
        const rel = path.join(parent.rel, `${WORDS[Math.floor(rand() * WORDS.length)]}-${dirs.length}`)
        fs.mkdirSync(path.join(root, rel))
        dirs.push({ rel, depth: parent.depth + 1 })
      }
    }
    const d = dirs[dirs.length - 1 - Math.floor(rand() * Math.min(dirs.length, 40))]!
    const size = Math.floor(32 * Math.pow(48 * 32, rand()))
    crypto.randomFillSync(buf, 0, size)
    const name = `f${n++}${exts[Math.floor(rand() * exts.length)]}`
    fs.writeFileSync(path.join(root, d.rel, name), buf.subarray(0, size))
    count++
  }

  // The large file, written in 8 MiB slices.
  const bigRel = 'var/data/big.bin'
  fs.mkdirSync(path.join(root, 'var/data'), { recursive: true })
  const fd = fs.openSync(path.join(root, bigRel), 'w')
  const slice = Buffer.alloc(8 << 20)
  for (let off = 0; off < spec.bigSize; off += slice.length) {
    const len = Math.min(slice.length, spec.bigSize - off)
    crypto.randomFillSync(slice, 0, len)
    fs.writeSync(fd, slice, 0, len)
  }
  fs.closeSync(fd)

  return describeTree(root, spec, bigRel, pyRel, 'benchapp', spec.nodeModules > 0 ? nodeRel : '')
}

/** Lists a tree (one made by {@link makeTree} or a real one: `--tree`). */
export function describeTree(root: string, spec: TreeSpec, big?: string, pyPath = '', pyPackage = '', nodePackage = ''): TreeInfo {
  const files: string[] = []
  let entries = 0
  let bytes = 0
  let largest = { rel: '', size: -1 }
  const walk = (rel: string): void => {
    for (const d of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel === '' ? d.name : `${rel}/${d.name}`
      entries++
      if (d.isDirectory()) walk(r)
      else if (d.isFile()) {
        const size = fs.statSync(path.join(root, r)).size
        if (size > largest.size) largest = { rel: r, size }
        files.push(r)
      }
    }
  }
  walk('')
  const bigRel = big ?? largest.rel
  const rest = files.filter((f) => f !== bigRel).sort()
  for (const f of rest) bytes += fs.statSync(path.join(root, f)).size
  return { spec, files: rest, big: bigRel, pyPath, pyPackage, nodePackage, entries, bytes }
}

/** Where a blob lives in a store (`files/h0/h1/md5`) or a cache (`h0/h1/md5`). */
export function blobPath(root: string, md5: string, layout: 'store' | 'cache'): string {
  return layout === 'store' ? path.join(root, 'files', md5[0]!, md5[1]!, md5) : path.join(root, md5[0]!, md5[1]!, md5)
}

// One buffer for every file: allocating (and zeroing) 4 MiB per file cost ~1.5 ms a file, most
// of the time to publish a tree of small files.
let md5Buf: Buffer | undefined

function md5File(file: string): string {
  const h = crypto.createHash('md5')
  const fd = fs.openSync(file, 'r')
  const buf = (md5Buf ??= Buffer.allocUnsafe(4 << 20))
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null)
      if (n === 0) break
      h.update(buf.subarray(0, n))
    }
  } finally {
    fs.closeSync(fd)
  }
  return h.digest('hex')
}

/** A published blob. */
export interface Blob {
  md5: string
  size: number
}

/**
 * Publishes `root` as service `id` under `prefix` to the store at `store`: every regular file
 * becomes `files/h0/h1/md5` (a hard link to the tree's file: same bytes, no copy) and
 * `md/<id>.flist` lists the tree in the extended format. Returns the distinct blobs.
 *
 * `include`, when given, is asked of every entry by its path relative to `root` (`lib`,
 * `lib/python3.11/os.py`): an entry it refuses is left out, a directory with all below it.
 */
export function publishTree(root: string, store: string, id: string, prefix: string, include?: (rel: string) => boolean): Blob[] {
  const lines: string[] = []
  const blobs = new Map<string, number>()
  const line = (e: FlistLineInput): void => {
    lines.push(formatFlistLine(e, 'extended'))
  }
  const walk = (rel: string): void => {
    const names = fs.readdirSync(path.join(root, rel)).sort()
    for (const name of names) {
      const r = `${rel}/${name}`
      if (include && !include(r.slice(1))) continue
      const file = path.join(root, r)
      const st = fs.lstatSync(file)
      const common = { path: prefix + r, uname: 'root', gname: 'root', perm: st.mode & 0o7777, mtime: st.mtimeMs / 1000, ctime: st.ctimeMs / 1000 }
      if (st.isDirectory()) {
        line({ ...common, ftype: FType.dir })
        walk(r)
      } else if (st.isSymbolicLink()) {
        line({ ...common, ftype: FType.symlink, target: fs.readlinkSync(file) })
      } else if (st.isFile()) {
        const md5 = md5File(file)
        line({ ...common, ftype: FType.file, md5, size: st.size })
        if (!blobs.has(md5)) {
          blobs.set(md5, st.size)
          const dest = blobPath(store, md5, 'store')
          fs.mkdirSync(path.dirname(dest), { recursive: true })
          try {
            fs.linkSync(file, dest)
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'EXDEV') fs.copyFileSync(file, dest)
            else if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
          }
        }
      }
    }
  }
  walk('')
  fs.mkdirSync(path.join(store, 'md'), { recursive: true })
  fs.writeFileSync(path.join(store, 'md', `${id}.flist`), lines.join('\n') + '\n')
  return [...blobs].map(([md5, size]) => ({ md5, size }))
}

/**
 * A flist of `entries` entries (directories and files, 20 files a directory, 3 levels) with
 * made-up hashes: enough to mount and list, not to read.
 */
export function writeSyntheticFlist(file: string, prefix: string, entries: number): void {
  const fd = fs.openSync(file, 'w')
  const rand = prng(7)
  const hex = (): string => {
    let s = ''
    for (let i = 0; i < 4; i++) s += Math.floor(rand() * 0x100000000).toString(16).padStart(8, '0')
    return s
  }
  let made = 0
  let chunk = ''
  const flush = (): void => {
    fs.writeSync(fd, chunk)
    chunk = ''
  }
  outer: for (let a = 0; ; a++) {
    for (let b = 0; b < 50; b++) {
      const dir = `${prefix}/pkg-${a}/component-${b}`
      for (let f = 0; f < 20; f++) {
        chunk += `${dir}/file-${f}.dat|${hex()}|${1000 + f}\n`
        if (++made >= entries) break outer
      }
      if (chunk.length > 1 << 20) flush()
    }
  }
  flush()
  fs.closeSync(fd)
}
