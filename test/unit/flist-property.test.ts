// Property: for random trees, format -> parse gives back the tree (both line shapes, a prefix,
// lines outside it), parse -> format -> parse is a fixed point, and the packed table keeps every
// invariant and every attribute.
import assert from 'node:assert/strict'
import fc from 'fast-check'
import t from 'tap'
import { FType, formatFlistLine, parseFlist, type FlistEntry, type FlistLineInput, type FlistTree } from '../../lib/flist'
import { buildTable, readTable, S_IFMT_BY_FTYPE } from '../../lib/table'
import { tableViolations } from '../helpers/table-invariants'

const UID = 1000
const GID = 100
const USERS = new Map([['root', 0], ['bob', 1001]])
const GROUPS = new Map([['root', 0], ['staff', 50]])
const UNAMES = new Map([...USERS].map(([n, id]) => [id, n]))
const GNAMES = new Map([...GROUPS].map(([n, id]) => [id, n]))
const PREFIX = '/pre/fix'

const nameArb = fc
  .array(fc.constantFrom('a', 'b', 'c', 'é', '日', '😀', '-', '.', ' ', 'x', '#'), { minLength: 1, maxLength: 3 })
  .map((a) => a.join(''))
  .filter((n) => n !== '.' && n !== '..')

const leafArb = fc.record({
  ftype: fc.constantFrom<FType>(0, 1, 2, 2, 2, 3, 4, 4, 5, 6),
  seed: fc.boolean(),
  md5: fc.stringMatching(/^[0-9a-fA-F]{32}$/),
  size: fc.oneof(fc.constant(0), fc.nat(), fc.constant(Number.MAX_SAFE_INTEGER)),
  perm: fc.integer({ min: 0, max: 0o7777 }),
  mtime: fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
  ctime: fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
  uname: fc.constantFrom('root', 'bob', 'nobody', ''),
  gname: fc.constantFrom('root', 'staff', 'nogroup', ''),
  target: fc.string({ minLength: 1, maxLength: 12 }).filter((s) => !/[\r\n\0]/.test(s)),
  major: fc.nat(0xffffffff),
  minor: fc.nat(0xffffffff),
})
type Leaf = typeof leafArb extends fc.Arbitrary<infer L> ? L : never

const treeArb = fc.record({
  items: fc.array(fc.tuple(fc.array(nameArb, { minLength: 1, maxLength: 4 }), leafArb), { maxLength: 40 }),
  outside: fc.array(fc.array(nameArb, { minLength: 1, maxLength: 3 }), { maxLength: 4 }),
  rootLine: fc.option(leafArb, { nil: undefined }),
  crlf: fc.boolean(),
})

interface Model {
  text: string
  /** Exposed path -> what the parser must give (explicit entries only). */
  expected: Map<string, Omit<FlistEntry, 'line' | 'service'>>
  /** Every exposed path, implied directories included. */
  paths: Set<string>
  ignored: number
}

function expectedEntry(path: string, leaf: Leaf, seedLine: boolean): Omit<FlistEntry, 'line' | 'service'> {
  if (seedLine) {
    return { path, ftype: FType.file, perm: 0o555, uid: UID, gid: GID, size: leaf.size, mtime: 0, ctime: 0, md5: leaf.md5.toLowerCase(), explicit: true }
  }
  const e: Omit<FlistEntry, 'line' | 'service'> = {
    path, ftype: leaf.ftype, perm: leaf.perm, uid: USERS.get(leaf.uname) ?? UID, gid: GROUPS.get(leaf.gname) ?? GID,
    size: leaf.ftype === FType.file ? leaf.size : leaf.ftype === FType.symlink ? Buffer.byteLength(leaf.target) : 0,
    mtime: leaf.mtime, ctime: leaf.ctime, md5: leaf.ftype === FType.file ? leaf.md5.toLowerCase() : '', explicit: true,
  }
  if (leaf.ftype === FType.symlink) e.target = leaf.target
  if (leaf.ftype === FType.blockdev || leaf.ftype === FType.chardev) {
    e.rdevMajor = leaf.major
    e.rdevMinor = leaf.minor
  }
  return e
}

function lineFor(path: string, leaf: Leaf, seedLine: boolean): string {
  const input: FlistLineInput = {
    path, ftype: leaf.ftype, md5: leaf.md5, size: leaf.size, perm: leaf.perm, mtime: leaf.mtime, ctime: leaf.ctime,
    uname: leaf.uname, gname: leaf.gname, target: leaf.target, rdevMajor: leaf.major, rdevMinor: leaf.minor,
  }
  return formatFlistLine(input, seedLine ? 'seed' : 'extended')
}

type TreeInput = typeof treeArb extends fc.Arbitrary<infer T> ? T : never

function model(input: TreeInput): Model {
  // Last line wins for a path; any proper prefix of a path must be a directory.
  const last = new Map<string, Leaf>()
  for (const [parts, leaf] of input.items) last.set('/' + parts.join('/'), leaf)
  const paths = new Set<string>(['/'])
  for (const p of last.keys()) {
    const parts = p.slice(1).split('/')
    for (let i = 1; i <= parts.length; i++) paths.add('/' + parts.slice(0, i).join('/'))
  }
  const lines: string[] = []
  const expected = new Map<string, Omit<FlistEntry, 'line' | 'service'>>()
  for (const [p, l] of last) {
    const isPrefix = [...last.keys()].some((q) => q.startsWith(p + '/'))
    const leaf = isPrefix ? { ...l, ftype: FType.dir as FType } : l
    const seedLine = leaf.seed && leaf.ftype === FType.file
    lines.push(lineFor(PREFIX + p, leaf, seedLine))
    expected.set(p, expectedEntry(p, leaf, seedLine))
  }
  if (input.rootLine) {
    const root = { ...input.rootLine, ftype: FType.dir as FType }
    lines.splice(lines.length >> 1, 0, lineFor(PREFIX, root, false))
    expected.set('/', expectedEntry('/', root, false))
  }
  for (const o of input.outside) lines.push(lineFor('/pre/fixture/' + o.join('/'), { ...input.items[0]?.[1] ?? fcLeafFile, ftype: FType.file }, true))
  lines.unshift('# generated', '')
  return { text: lines.join(input.crlf ? '\r\n' : '\n') + '\n', expected, paths, ignored: input.outside.length }
}

const fcLeafFile: Leaf = {
  ftype: FType.file, seed: true, md5: '0'.repeat(32), size: 0, perm: 0o644, mtime: 0, ctime: 0, uname: '', gname: '',
  target: 'x', major: 0, minor: 0,
}

function parse(text: string): ReturnType<typeof parseFlist> {
  return parseFlist(Buffer.from(text), { name: 'prop', prefix: PREFIX, uid: UID, gid: GID, users: USERS, groups: GROUPS })
}

function strip(e: FlistEntry): Omit<FlistEntry, 'line' | 'service' | 'explicit'> {
  const { line: _l, service: _s, explicit: _e, ...rest } = e
  return rest
}

/** The tree back as extended lines (implied directories become explicit ones). */
function formatTree(tree: FlistTree): string {
  const lines: string[] = []
  for (const e of tree.entries()) {
    lines.push(formatFlistLine({
      path: e.path === '/' ? PREFIX : PREFIX + e.path, ftype: e.ftype, md5: e.md5 || undefined, size: e.size, perm: e.perm,
      mtime: e.mtime, ctime: e.ctime, uname: UNAMES.get(e.uid) ?? '', gname: GNAMES.get(e.gid) ?? '',
      target: e.target, rdevMajor: e.rdevMajor, rdevMinor: e.rdevMinor,
    }, 'extended'))
  }
  return lines.join('\n')
}

t.test('format -> parse round trip, and the table of the result', async (t) => {
  let runs = 0
  fc.assert(
    fc.property(treeArb, (input) => {
      runs++
      const m = model(input)
      const p = parse(m.text)
      assert.equal(p.ignored, m.ignored)
      assert.equal(p.entries, m.paths.size - 1)
      assert.equal(p.rootLine, input.rootLine !== undefined)
      const got = new Map([...p.tree.entries()].map((e) => [e.path, e]))
      assert.deepEqual(new Set(got.keys()), m.paths)
      for (const [path, want] of m.expected) {
        const { line: _l, service: _s, ...have } = got.get(path)!
        assert.deepEqual(have, want, path)
      }
      for (const [path, e] of got) {
        if (m.expected.has(path)) continue
        assert.deepEqual(strip(e), { path, ftype: FType.dir, perm: 0o555, uid: UID, gid: GID, size: 0, mtime: 0, ctime: 0, md5: '' }, `implied ${path}`)
        assert.equal(e.explicit, false)
      }

      // parse(format(tree)) is the same tree.
      const again = new Map([...parse(formatTree(p.tree)).tree.entries()].map((e) => [e.path, strip(e)]))
      assert.deepEqual(again, new Map([...got].map(([k, e]) => [k, strip(e)])))

      // The table: sound, and faithful.
      const { buffer, count } = buildTable(p.tree, { suid: true, dev: true })
      const { entries } = readTable(buffer)
      assert.equal(count, got.size)
      assert.deepEqual(tableViolations(entries), [])
      for (const te of entries) {
        const e = got.get(te.path)!
        assert.ok(e, te.path)
        assert.equal(te.mode, S_IFMT_BY_FTYPE[e.ftype]! | e.perm)
        assert.equal(te.size, e.size)
        assert.equal(te.mtime, e.mtime)
        assert.equal(te.ctime, e.ctime)
        assert.equal(te.md5, e.md5)
        assert.equal(te.target, e.target)
        assert.equal(te.uid, e.uid)
      }
      // Same input, same table.
      assert.ok(buildTable(parse(m.text).tree, { suid: true, dev: true }).buffer.equals(buffer))
    }),
    { numRuns: 300 },
  )
  t.equal(runs, 300, 'every run checked')
})
