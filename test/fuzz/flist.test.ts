// Fuzz target: the flist parser and the table builder against hostile bytes.
//
// Inputs are the seed corpus (./corpus/*.flist) mutated by fast-check: tokens inserted (`/..`,
// `|`, NUL, CR, LF, BOMs, numbers at and past 2^53 and 2^32, 32-hex runs, octal modes, the
// prefix), bytes deleted and flipped, lines duplicated and swapped, 64 KiB runs; and plain
// random bytes. For every input:
//   - parseFlist either returns, or throws an AysfsError EINVAL that names the flist and a line
//     (never another exception, never a hang);
//   - what it returns holds only valid names (no empty, `.`, `..`, `/` or NUL), 32-hex MD5s of
//     regular files, safe-integer sizes, modes within 0o7777, ftypes 0..6;
//   - buildTable accepts it, and the table keeps every invariant the native side relies on;
//   - reading the same bytes from a file (the chunked path) gives the same result;
//   - two fuzzed flists merge into a valid table or fail with EINVAL.
//
// `npm test` runs a fixed number of inputs from a fixed seed (the same inputs on every run);
// AYSFS_FUZZ_SECONDS runs for that long from a new seed instead (`npm run fuzz`: 600 s).
// AYSFS_FUZZ_SEED replays a run (the seed is in the test's name). A failure prints the shrunk
// input, the seed and the path (fast-check's report: `{ seed: N, path: "..." }`).
import assert from 'node:assert/strict'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import fc from 'fast-check'
import t from 'tap'
import { AysfsError } from '../../lib/errors'
import { mergeServices, parseFlist, type ParsedFlist } from '../../lib/flist'
import { buildTable, readTable } from '../../lib/table'
import { tableViolations } from '../helpers/table-invariants'

/** Seconds of a long run; undefined: the short, fixed run of `npm test`. */
const SECONDS = process.env.AYSFS_FUZZ_SECONDS === undefined ? undefined : Number(process.env.AYSFS_FUZZ_SECONDS)
const FIXED_SEED = 14
const SEED = process.env.AYSFS_FUZZ_SEED !== undefined ? Number(process.env.AYSFS_FUZZ_SEED) : SECONDS === undefined ? FIXED_SEED : Date.now() ^ (process.pid << 8)
/** Inputs of the short run (and merges of two): a few seconds. */
const INPUTS = 2000
const MERGES = 60
// Generous: the fuzz runs, then shrinking a failure may take a while.
t.setTimeout(((SECONDS ?? 10) + 300) * 1000)

/** fast-check's run options: a fixed number of runs, or until the time is up. */
function budget(seed: number, runs: number, share: number): fc.Parameters<unknown> {
  if (SECONDS === undefined) return { seed, numRuns: runs }
  return { seed, numRuns: Number.MAX_SAFE_INTEGER, interruptAfterTimeLimit: SECONDS * 1000 * share, markInterruptAsFailure: false }
}

const CORPUS_DIR = path.join(__dirname, 'corpus')
const CORPUS = fs
  .readdirSync(CORPUS_DIR)
  .filter((n) => n.endsWith('.flist'))
  .sort()
  .map((n) => fs.readFileSync(path.join(CORPUS_DIR, n)))
const PREFIXES = ['/opt/jumpscale7', '/', '/opt', '/opt/jumpscale7/bin', '/nowhere']
const USERS = new Map([['root', 0], ['bob', 1001]])
const GROUPS = new Map([['root', 0], ['staff', 50], ['disk', 6]])

const TOKENS = [
  '/', '//', '/..', '/.', '..', '.', '|', '||', '|||||||||', '\0', '\r', '\n', '\r\n', '\n\n', '#', ' ', '\t', '\uFEFF',
  '0', '1', '2', '3', '4', '5', '6', '7', '-1', '-', '00', '755', '4755', '7777', '177777', '1777777', ',', '1,3', '4294967295,1', '4294967296,0',
  '9007199254740991', '9007199254740992', '9007199254740993', '18446744073709551616', '1e3', '0x10', '2.5',
  '0123456789abcdef0123456789abcdef', 'D41D8CD98F00B204E9800998ECF8427E', 'd41d8cd98f00b204e9800998ecf8427', 'g'.repeat(32),
  'root', 'nobody', 'é', '日本', '\u{1F600}', '\xff', '\xc3', '/opt/jumpscale7', '/opt/jumpscale7/', '../../etc/passwd',
].map((s) => Buffer.from(s, s === '\xff' || s === '\xc3' ? 'latin1' : 'utf8'))

type Edit =
  | { kind: 'insert'; pos: number; token: number }
  | { kind: 'delete'; pos: number; len: number }
  | { kind: 'flip'; pos: number; byte: number }
  | { kind: 'dupLine'; line: number }
  | { kind: 'swapLines'; a: number; b: number }
  | { kind: 'splice'; pos: number; from: number }
  | { kind: 'long'; pos: number; len: number }

const editArb: fc.Arbitrary<Edit> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('insert' as const), pos: fc.nat(), token: fc.nat(TOKENS.length - 1) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('delete' as const), pos: fc.nat(), len: fc.integer({ min: 1, max: 12 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('flip' as const), pos: fc.nat(), byte: fc.nat(255) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('dupLine' as const), line: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('swapLines' as const), a: fc.nat(), b: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('splice' as const), pos: fc.nat(), from: fc.nat(CORPUS.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('long' as const), pos: fc.nat(), len: fc.integer({ min: 65_000, max: 66_000 }) }) },
  // Around NAME_MAX (255) and PATH_MAX (4096).
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('long' as const), pos: fc.nat(), len: fc.oneof(fc.integer({ min: 250, max: 260 }), fc.integer({ min: 4080, max: 4100 })) }) },
)

function lines(b: Buffer): Buffer[] {
  const out: Buffer[] = []
  let s = 0
  for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, s)) {
    out.push(b.subarray(s, i + 1))
    s = i + 1
  }
  if (s < b.length) out.push(b.subarray(s))
  return out
}

function apply(base: Buffer, edits: Edit[]): Buffer {
  let b = base
  for (const e of edits) {
    const at = (p: number) => p % (b.length + 1)
    switch (e.kind) {
      case 'insert':
        b = Buffer.concat([b.subarray(0, at(e.pos)), TOKENS[e.token]!, b.subarray(at(e.pos))])
        break
      case 'delete':
        b = Buffer.concat([b.subarray(0, at(e.pos)), b.subarray(Math.min(b.length, at(e.pos) + e.len))])
        break
      case 'flip':
        if (b.length > 0) {
          b = Buffer.from(b)
          b[e.pos % b.length] = e.byte
        }
        break
      case 'dupLine': {
        const ls = lines(b)
        if (ls.length > 0) ls.splice(e.line % ls.length, 0, ls[e.line % ls.length]!)
        b = Buffer.concat(ls)
        break
      }
      case 'swapLines': {
        const ls = lines(b)
        if (ls.length > 1) {
          const a = e.a % ls.length
          const c = e.b % ls.length
          ;[ls[a], ls[c]] = [ls[c]!, ls[a]!]
        }
        b = Buffer.concat(ls)
        break
      }
      case 'splice': {
        const other = CORPUS[e.from]!
        b = Buffer.concat([b.subarray(0, at(e.pos)), other.subarray(0, other.length >> 1)])
        break
      }
      case 'long':
        b = Buffer.concat([b.subarray(0, at(e.pos)), Buffer.alloc(e.len, 0x61), b.subarray(at(e.pos))])
        break
    }
  }
  return b
}

const inputArb: fc.Arbitrary<Buffer> = fc.oneof(
  // Few edits mostly (fast-check favours short arrays), so that many inputs still parse and the
  // table builder gets its share; sometimes none, sometimes a dozen.
  { weight: 9, arbitrary: fc.tuple(fc.nat(CORPUS.length - 1), fc.array(editArb, { maxLength: 12 })).map(([i, edits]) => apply(CORPUS[i]!, edits)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }).map((a) => Buffer.from(a)) },
)

function parse(source: Buffer | string, prefix: string, name = 'fuzz'): ParsedFlist {
  return parseFlist(source, { name, prefix, uid: 1000, gid: 100, users: USERS, groups: GROUPS, maxEntries: 100_000 })
}

/** The parse's outcome, as something to compare: the error message or the table bytes. */
function outcome(fn: () => ParsedFlist): { error?: string; table?: Buffer; parsed?: ParsedFlist } {
  let p: ParsedFlist
  try {
    p = fn()
  } catch (err) {
    assert.ok(err instanceof AysfsError, `not an AysfsError: ${(err as Error)?.stack ?? String(err)}`)
    assert.equal(err.code, 'EINVAL', err.message)
    assert.match(err.message, /^flist fuzz( \([^)]*\))? (line \d+: |: \d+ bytes|: more than)/, err.message)
    return { error: err.message.replace(/^flist fuzz \([^)]*\)/, 'flist fuzz') }
  }
  return { table: buildTable(mergeServices([p]), { suid: true, dev: true }).buffer, parsed: p }
}

function checkTree(p: ParsedFlist): void {
  const tree = p.tree
  assert.equal(p.entries, tree.count - 1)
  for (const e of tree.entries()) {
    if (e.path !== '/') {
      for (const c of e.path.slice(1).split('/')) {
        assert.ok(c !== '' && c !== '.' && c !== '..' && !c.includes('\0'), `bad component in ${JSON.stringify(e.path)}`)
        assert.ok(Buffer.byteLength(c) <= 255, `a component over NAME_MAX in ${JSON.stringify(e.path.slice(0, 300))}`)
      }
      assert.ok(Buffer.byteLength(e.path) <= 4096, `a path over PATH_MAX: ${JSON.stringify(e.path.slice(0, 300))}`)
    }
    assert.ok(e.ftype >= 0 && e.ftype <= 6)
    assert.ok(e.perm >= 0 && e.perm <= 0o7777)
    assert.ok(Number.isSafeInteger(e.size) && e.size >= 0, `size ${e.size}`)
    if (e.ftype === 2) assert.match(e.md5, /^[0-9a-f]{32}$/)
    else assert.equal(e.md5, '')
  }
}

t.test(`fuzz the flist parser and the table builder ${SECONDS === undefined ? `with ${INPUTS} inputs` : `for ${SECONDS} s`} (seed ${SEED})`, async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-fuzz-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  let runs = 0
  let parsed = 0
  let rejected = 0
  const started = Date.now()
  fc.assert(
    fc.property(inputArb, fc.constantFrom(...PREFIXES), fc.nat(9), (input, prefix, coin) => {
      runs++
      const got = outcome(() => parse(input, prefix))
      if (got.error !== undefined) {
        rejected++
      } else {
        parsed++
        checkTree(got.parsed!)
        const { entries, count } = readTable(got.table!)
        assert.equal(count, got.parsed!.tree.count)
        assert.deepEqual(tableViolations(entries), [])
        // Same bytes, same table.
        assert.ok(outcome(() => parse(input, prefix)).table!.equals(got.table!), 'not deterministic')
      }
      // One input in ten: the chunked file reader must agree with the buffer parser.
      if (coin === 0) {
        const file = path.join(tmp, 'in.flist')
        fs.writeFileSync(file, input)
        const fromFile = outcome(() => parse(file, prefix))
        assert.equal(fromFile.error, got.error)
        if (got.table) assert.ok(fromFile.table!.equals(got.table))
      }
    }),
    budget(SEED, INPUTS, 5 / 6), // the merges below get the rest of a long run
  )
  const said = `${runs} inputs in ${((Date.now() - started) / 1000).toFixed(0)} s: ${parsed} parsed, ${rejected} rejected`
  if (SECONDS === undefined) t.equal(runs, INPUTS, said)
  else t.ok(runs > 100 || SECONDS < 5, said)
  t.ok(parsed > 0 && rejected > 0, 'both outcomes were exercised')
})

t.test('fuzz merges of two flists', async (t) => {
  let runs = 0
  fc.assert(
    fc.property(inputArb, inputArb, (a, b) => {
      let pa: ParsedFlist
      let pb: ParsedFlist
      try {
        pa = parse(a, '/opt/jumpscale7', 'one')
        pb = parse(b, '/opt/jumpscale7', 'two')
      } catch (err) {
        assert.ok(err instanceof AysfsError && err.code === 'EINVAL')
        return
      }
      runs++
      let merged
      try {
        merged = mergeServices([pa, pb], { maxEntries: 100_000 })
      } catch (err) {
        assert.ok(err instanceof AysfsError && err.code === 'EINVAL', String(err))
        assert.match(err.message, /(in flist (one|two).*){2}|more than/)
        return
      }
      const { entries } = readTable(buildTable(merged).buffer)
      assert.deepEqual(tableViolations(entries), [])
    }),
    budget(SEED + 1, MERGES, 1 / 6),
  )
  t.ok(runs > 10 || (SECONDS ?? 0) < 5, `${runs} merges of two valid flists`)
})
