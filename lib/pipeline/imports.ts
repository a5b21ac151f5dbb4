/**
 * The modules a Python byte-code file imports when it runs: the names its module-level code uses
 * (`co_names` of the top code object of a `.pyc`), which hold every `import x`, `from x import
 * y` and `from . import y` at module level, in order. Python imports a module's imports right
 * after reading it, so when a `.pyc` lands in the local cache the speculator (./speculate.ts)
 * guesses the files those names resolve to, first: over a WAN each was a round trip the Python
 * start-up of the benchmark waited on, a package's first file or a `lib-dynload` `.so` that no
 * name-based guess (./locality.ts) foresaw, or foresaw late.
 *
 * The `.pyc` is a blob of the tree whose content is whatever the publisher put there: it is read
 * by a bounded parser of the marshal format (CPython 3.11 to 3.13 layouts only: their magic
 * numbers), which never allocates more than the input's size in strings, never recurses more than
 * {@link MAX_DEPTH} deep, and answers nothing for anything it does not know. The names it returns
 * are only looked up in the tree, below the package's directory and the import root above it
 * (./locality.ts's paths, directories only): at worst a wrong `.pyc` names other blobs of the
 * tree, within the speculator's byte budget.
 */

/** CPython byte code whose code objects {@link pycNames} reads: 3.11 (3495) to 3.13 (3571 and its alphas). */
const MAGIC_MIN = 3495
const MAGIC_MAX = 3599

/** Nesting of marshalled objects read, at most. */
const MAX_DEPTH = 64

/** Names returned, at most. */
export const MAX_PYC_NAMES = 256

const FLAG_REF = 0x80

class Bad extends Error {}

/** A bounded reader of CPython's marshal format, enough to reach the top code object's names. */
class Marshal {
  private pos = 0
  /** Objects with FLAG_REF, in order: strings (what a name may refer to), else null. */
  private readonly refs: (string | null | unknown[])[] = []

  constructor(private readonly b: Uint8Array) {}

  at(pos: number): void {
    this.pos = pos
  }

  private need(n: number): number {
    if (n < 0 || this.pos + n > this.b.length) throw new Bad('truncated')
    const p = this.pos
    this.pos += n
    return p
  }

  private u8(): number {
    return this.b[this.need(1)]!
  }

  int32(): number {
    const p = this.need(4)
    const b = this.b
    return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0
  }

  private size(): number {
    const n = this.int32()
    if (n > this.b.length) throw new Bad('size')
    return n
  }

  private text(n: number, utf8: boolean): string {
    const p = this.need(n)
    return Buffer.from(this.b.buffer, this.b.byteOffset + p, n).toString(utf8 ? 'utf8' : 'latin1')
  }

  /**
   * The next object: a string as a string, a tuple or list as an array (its items read), a code
   * object as the array of its names (`co_names`), anything else as null.
   */
  object(depth: number): string | null | unknown[] {
    if (depth > MAX_DEPTH) throw new Bad('too deep')
    const code = this.u8()
    const type = String.fromCharCode(code & ~FLAG_REF)
    // The index is taken before the object's contents are read (as CPython's r_ref_reserve).
    const ref = code & FLAG_REF ? this.refs.push(null) - 1 : -1
    const done = <T extends string | null | unknown[]>(v: T): T => {
      if (ref >= 0) this.refs[ref] = v
      return v
    }
    switch (type) {
      case '0':
      case 'N':
      case 'F':
      case 'T':
      case 'S':
      case '.':
        return done(null)
      case 'i':
        this.need(4)
        return done(null)
      case 'I':
      case 'g':
        this.need(8)
        return done(null)
      case 'y':
        this.need(16)
        return done(null)
      case 'f':
        this.need(this.u8())
        return done(null)
      case 'x':
        this.need(this.u8())
        this.need(this.u8())
        return done(null)
      case 'l': {
        const n = this.int32() | 0
        this.need(Math.abs(n) * 2)
        return done(null)
      }
      case 's':
        this.need(this.size())
        return done(null)
      case 't':
      case 'u':
        return done(this.text(this.size(), true))
      case 'a':
      case 'A':
        return done(this.text(this.size(), false))
      case 'z':
      case 'Z':
        return done(this.text(this.u8(), false))
      case 'r': {
        const i = this.int32()
        if (i >= this.refs.length) throw new Bad('ref')
        return this.refs[i]!
      }
      case ')':
        return done(this.items(this.u8(), depth))
      case '(':
      case '[':
      case '<':
      case '>':
        return done(this.items(this.size(), depth))
      case '{': {
        for (;;) {
          if (this.b[this.pos] === 0x30) {
            this.pos++ // TYPE_NULL: the end
            return done(null)
          }
          this.object(depth + 1)
          this.object(depth + 1)
        }
      }
      case 'c':
        return done(this.code(depth))
      default:
        throw new Bad(`type ${code}`)
    }
  }

  private items(n: number, depth: number): unknown[] {
    const out: unknown[] = []
    for (let i = 0; i < n; i++) out.push(this.object(depth + 1))
    return out
  }

  /** A code object (3.11-3.13 layout); returns its `co_names`, the rest read past. */
  private code(depth: number): unknown[] {
    this.need(5 * 4) // argcount, posonlyargcount, kwonlyargcount, stacksize, flags
    this.object(depth + 1) // co_code
    this.object(depth + 1) // co_consts
    const names = this.object(depth + 1)
    for (let i = 0; i < 5; i++) this.object(depth + 1) // localsplusnames, localspluskinds, filename, name, qualname
    this.need(4) // firstlineno
    this.object(depth + 1) // linetable
    this.object(depth + 1) // exceptiontable
    return Array.isArray(names) ? names : []
  }
}

/**
 * The names the module-level code of a `.pyc` uses (`co_names` of its top code object), in
 * order, strings only, at most {@link MAX_PYC_NAMES}; undefined for anything that is not a
 * `.pyc` of a version it reads, or does not parse.
 */
export function pycNames(pyc: Uint8Array): string[] | undefined {
  if (pyc.length < 17 || pyc[2] !== 0x0d || pyc[3] !== 0x0a) return undefined
  const magic = pyc[0]! | (pyc[1]! << 8)
  if (magic < MAGIC_MIN || magic > MAGIC_MAX) return undefined
  if ((pyc[16]! & ~FLAG_REF) !== 0x63) return undefined // 'c': a code object
  const m = new Marshal(pyc)
  m.at(16)
  try {
    const names = m.object(0)
    if (!Array.isArray(names)) return undefined
    return names.filter((n): n is string => typeof n === 'string').slice(0, MAX_PYC_NAMES)
  } catch (err) {
    if (err instanceof Bad || err instanceof RangeError) return undefined
    throw err
  }
}

/** A module name's components, or undefined when it is not one (`a`, `a.b`: identifiers). */
export function moduleParts(name: string): string[] | undefined {
  if (name.length === 0 || name.length > 200) return undefined
  const parts = name.split('.')
  for (const p of parts) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(p)) return undefined
  return parts
}
