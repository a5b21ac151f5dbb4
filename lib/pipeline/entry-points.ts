/**
 * A package's entry file, read from its `package.json`: what Node loads when a program requires
 * the package by name. Over a WAN the Node start-up of the benchmark waited on one round trip per
 * package for it: no name-based guess (./locality.ts) knows `main` before the `package.json` is
 * read. So when a `package.json` lands in the local cache (its bytes checked), the speculator
 * (./speculate.ts) asks {@link packageEntryFiles} which file it names and guesses that one first.
 *
 * The `package.json` is a blob of the tree, but its content is whatever the publisher put there:
 * it is parsed only up to {@link MAX_PACKAGE_JSON} bytes, in a try, and only string fields are
 * read. A path it names is resolved inside the package directory only: an absolute one, one that
 * climbs out (`..`) or one that is not a valid flist path (lib/paths.ts) names nothing, and the
 * lookup (`has`) only knows the regular files below the package's directory, reached without
 * following a symlink (built by ./locality.ts). So a `package.json` can make a node fetch at most
 * one or two blobs of its own package, and nothing else.
 */
import { flistPathProblem } from '../paths'

/** Larger `package.json` files are not parsed (the largest of npm's own tree is 8 KiB). */
export const MAX_PACKAGE_JSON = 256 << 10

/** Longest path a `main` or an `exports` target may be, in characters. */
const MAX_SPEC = 1024

/** Conditions of `exports` that `require()` of a package matches, as Node's CommonJS loader does. */
const CONDITIONS = new Set(['node', 'require', 'node-addons', 'default'])

/** Nesting of conditions and arrays looked into, at most. */
const MAX_DEPTH = 4

/**
 * `spec` (a `main` or an `exports` target) as a path relative to the package directory, with `.`
 * and empty components dropped and `..` applied: undefined when it is not a string, is too long,
 * is absolute, climbs out of the package directory, or is not a valid flist path once below it.
 * `''` is the package directory itself.
 */
export function packageRelative(spec: unknown): string | undefined {
  if (typeof spec !== 'string' || spec.length > MAX_SPEC || spec.startsWith('/')) return undefined
  const parts: string[] = []
  for (const c of spec.split('/')) {
    if (c === '' || c === '.') continue
    if (c === '..') {
      if (parts.length === 0) return undefined // out of the package
      parts.pop()
      continue
    }
    parts.push(c)
  }
  const rel = parts.join('/')
  if (rel !== '' && flistPathProblem(`/${rel}`) !== undefined) return undefined
  return rel
}

/** The target of `exports` for the package itself (`"."`) under {@link CONDITIONS}, or undefined. */
export function exportsTarget(exports: unknown): string | undefined {
  if (typeof exports === 'string' || Array.isArray(exports)) return conditional(exports, 0)
  if (exports === null || typeof exports !== 'object') return undefined
  const keys = Object.keys(exports)
  // Subpath keys start with "."; else the object is the conditions of "." itself.
  if (keys.some((k) => k.startsWith('.'))) return conditional((exports as Record<string, unknown>)['.'], 0)
  return conditional(exports, 0)
}

function conditional(v: unknown, depth: number): string | undefined {
  if (depth > MAX_DEPTH) return undefined
  // A target must start with "./" (Node refuses anything else).
  if (typeof v === 'string') return v.startsWith('./') ? v : undefined
  if (Array.isArray(v)) {
    for (const x of v.slice(0, 16)) {
      const t = conditional(x, depth + 1)
      if (t !== undefined) return t
    }
    return undefined
  }
  if (v === null || typeof v !== 'object') return undefined
  // The first key (in the file's order) that is a condition of require().
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (CONDITIONS.has(k)) return conditional(x, depth + 1)
  }
  return undefined
}

/**
 * The entry file of a package as Node's `require(<package>)` finds it, given its `package.json`
 * (`json`, the blob's bytes) and `has`, which answers a file's entry by its path relative to the
 * package directory (undefined: not a regular file of the package). `exports` first (its `"."`
 * target, exactly), else `main` as a file (`M`, `M.js`, `M.json`, `M.node`), else as a directory
 * (`M/index.js`, …), else `index.js`. Returns the entry found (one at most; none for a
 * `package.json` too large, not JSON, or not an object, or naming no file of the package).
 */
export function packageEntryFiles(json: Uint8Array, has: (rel: string) => number | undefined): number[] {
  if (json.length > MAX_PACKAGE_JSON) return []
  let pkg: unknown
  try {
    pkg = JSON.parse(Buffer.from(json.buffer, json.byteOffset, json.byteLength).toString('utf8'))
  } catch {
    return []
  }
  if (pkg === null || typeof pkg !== 'object' || Array.isArray(pkg)) return []
  // (Not `exports`: that name is the module's own once compiled to CommonJS.)
  const { main, exports: exp0 } = pkg as Record<string, unknown>
  const exp = exportsTarget(exp0)
  if (exp !== undefined) {
    const rel = packageRelative(exp)
    const e = rel ? has(rel) : undefined
    // Node then never looks at `main`.
    if (e !== undefined) return [e]
  }
  const first = (names: string[]): number | undefined => {
    for (const n of names) {
      const e = has(n)
      if (e !== undefined) return e
    }
    return undefined
  }
  const index = (dir: string): string[] => ['index.js', 'index.json', 'index.node'].map((n) => (dir === '' ? n : `${dir}/${n}`))
  let e: number | undefined
  if (main !== undefined) {
    const rel = packageRelative(main)
    if (rel !== undefined) e = first([...(rel === '' ? [] : [rel, `${rel}.js`, `${rel}.json`, `${rel}.node`]), ...index(rel)])
  }
  e ??= first(index(''))
  return e === undefined ? [] : [e]
}

/** Specifiers looked at in one JavaScript file, at most. */
export const MAX_JS_SPECIFIERS = 64

const REQUIRE = /\brequire\s*\(\s*(['"])([^'"\\\n]{1,256})\1\s*\)|\b(?:from|import)\s*(['"])([^'"\\\n]{1,256})\3/g

/**
 * The modules a JavaScript file asks for by a literal: `require('x')`, `import … from 'x'`,
 * `import 'x'`, in order, each once, at most {@link MAX_JS_SPECIFIERS}. A plain scan of the text
 * (a call in a function or a comment counts too: a guess, bounded by the speculator's budget).
 */
export function jsSpecifiers(js: Uint8Array): string[] {
  const text = Buffer.from(js.buffer, js.byteOffset, js.byteLength).toString('utf8')
  const out: string[] = []
  for (const m of text.matchAll(REQUIRE)) {
    const spec = m[2] ?? m[4]!
    if (!out.includes(spec)) out.push(spec)
    if (out.length >= MAX_JS_SPECIFIERS) break
  }
  return out
}

/**
 * A bare specifier's package name and the path below it (`@scope/name/sub/x` → `@scope/name`,
 * `sub/x`), or undefined for a relative or absolute one, a `node:` built-in, or anything not
 * shaped like a package name.
 */
export function barePackage(spec: string): { name: string; sub: string } | undefined {
  if (spec.startsWith('.') || spec.startsWith('/') || spec.includes(':') || spec.includes('\\')) return undefined
  const parts = spec.split('/')
  const n = spec.startsWith('@') ? 2 : 1
  if (parts.length < n || parts.slice(0, n).some((p) => p === '' || p === '.' || p === '..')) return undefined
  const sub = packageRelative(parts.slice(n).join('/'))
  if (sub === undefined) return undefined
  return { name: parts.slice(0, n).join('/'), sub }
}
