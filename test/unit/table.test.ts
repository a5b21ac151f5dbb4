// lib/table.ts: the exact layout of docs/design.md, sorted contiguous children, stable inode
// numbers; lib/md5.ts against node:crypto.
import crypto from 'node:crypto'
import fc from 'fast-check'
import t from 'tap'
import { AysfsError } from '../../lib/errors'
import { FType, mergeServices, parseFlist, type FlistTree } from '../../lib/flist'
import { MD5_PAD, md5Words } from '../../lib/md5'
import {
  buildTable, deriveIno, ENTRY, ENTRY_SIZE, HEADER, HEADER_SIZE, KIND_BY_FTYPE, MAGIC, readTable, ROOT_INO,
  S_IFMT_BY_FTYPE, VERSION, type TableEntry,
} from '../../lib/table'
import { tableViolations } from '../helpers/table-invariants'

const MD5A = '8a3e5e03a10ecc3601a1f14fbc371019'
const MD5B = '0123456789abcdef0123456789abcdef'

function tree(text: string, name = 'svc'): FlistTree {
  return mergeServices([parseFlist(Buffer.from(text), { name, prefix: '/', uid: 1000, gid: 100, users: new Map([['root', 0]]), groups: new Map([['root', 0]]) })])
}

const SAMPLE = [
  `/|||root|root|751|4|5|6|`,
  `/bin/jsnet|${MD5A}|4857`,
  `/bin/sh|||root|root|777|1|7|8|busybox|x`,
  `/bin/busybox|${MD5B}|100|root|root|4755|2|9|10|`,
  `/dev/null|||root|root|666|5|1|2|1,3`,
  `/dev/sda|||root|root|660|3|1|2|8,0`,
  `/run/fifo|||root|root|644|6|1|2|`,
  `/run/sock|||root|root|755|0|1|2|`,
  `/tmp|||root|root|1777|4|1|2|`,
  `/empty|${'d41d8cd98f00b204e9800998ecf8427e'}|0`,
  `/lib/x/y/z|${MD5A}|1`,
].join('\n')

function byPath(entries: TableEntry[]): Map<string, TableEntry> {
  return new Map(entries.map((e) => [e.path, e]))
}

t.test('layout constants match docs/design.md', async (t) => {
  t.equal(MAGIC, 0x54535941)
  t.equal(VERSION, 1)
  t.equal(HEADER_SIZE, 32)
  t.equal(ENTRY_SIZE, 96)
  t.equal(ROOT_INO, 1n)
  t.same(HEADER, { magic: 0, version: 4, count: 8, reserved: 12, stringsOffset: 16, stringsLength: 24 })
  t.same(ENTRY, {
    ino: 0, size: 8, mtime: 16, ctime: 24, mode: 32, uid: 36, gid: 40, parent: 44, nameOffset: 48, nameLength: 52,
    firstChild: 56, childCount: 60, targetOffset: 64, targetLength: 68, rdevMajor: 72, rdevMinor: 76, md5: 80,
  })
  t.same(KIND_BY_FTYPE, ['s', 'l', 'f', 'b', 'd', 'c', 'p'])
  t.same(S_IFMT_BY_FTYPE, [0o140000, 0o120000, 0o100000, 0o060000, 0o040000, 0o020000, 0o010000])
})

t.test('header and raw bytes', async (t) => {
  const { buffer, count } = buildTable(tree(SAMPLE))
  t.equal(buffer.toString('latin1', 0, 4), 'AYST', 'magic reads AYST')
  t.equal(buffer.readUInt32LE(4), 1)
  t.equal(buffer.readUInt32LE(8), count)
  t.equal(buffer.readUInt32LE(12), 0, 'reserved')
  t.equal(Number(buffer.readBigUInt64LE(16)), 32 + 96 * count)
  t.equal(Number(buffer.readBigUInt64LE(24)), buffer.length - (32 + 96 * count), 'the pool runs to the end')
  // Entry 0, the root, byte by byte.
  t.equal(buffer.readBigUInt64LE(32), 1n)
  t.equal(buffer.readUInt32LE(32 + 32), 0o40751, 'root mode from the / line')
  t.equal(Number(buffer.readBigInt64LE(32 + 16)), 6, 'root mtime')
  t.equal(buffer.readUInt32LE(32 + 52), 0, 'root has no name')
})

t.test('round trip: every entry, every field', async (t) => {
  const tr = tree(SAMPLE)
  const { buffer, count } = buildTable(tr, { suid: true, dev: true })
  const { entries } = readTable(buffer)
  t.equal(entries.length, count)
  t.equal(count, tr.count)
  t.same(tableViolations(entries), [])
  const got = byPath(entries)
  for (const e of tr.entries()) {
    const te = got.get(e.path)
    if (!te) {
      t.fail(`${e.path} missing`)
      continue
    }
    t.equal(te.mode, S_IFMT_BY_FTYPE[e.ftype]! | e.perm, `${e.path} mode`)
    t.equal(te.uid, e.uid)
    t.equal(te.gid, e.gid)
    t.equal(te.mtime, e.mtime)
    t.equal(te.ctime, e.ctime)
    t.equal(te.md5, e.md5)
    t.equal(te.size, e.size, `${e.path} size`)
    t.equal(te.target, e.target)
    t.equal(te.rdevMajor, e.rdevMajor ?? 0)
    t.equal(te.rdevMinor, e.rdevMinor ?? 0)
  }
  t.equal(got.get('/bin/sh')!.target, 'busybox|x')
  t.equal(got.get('/bin/sh')!.size, 9, 'a symlink\'s size is its target\'s byte length')
  t.equal(got.get('/dev/sda')!.rdevMajor, 8)
  t.equal(got.get('/tmp')!.mode, 0o41777, 'sticky bit kept')
  t.equal(got.get('/bin/busybox')!.mode, 0o104755, 'setuid kept with suid')
})

t.test('setuid and setgid bits are dropped unless suid', async (t) => {
  const got = byPath(readTable(buildTable(tree(SAMPLE + '\n/sg|||root|root|2755|4|1|1|')).buffer).entries)
  t.equal(got.get('/bin/busybox')!.mode, 0o100755)
  t.equal(got.get('/sg')!.mode, 0o40755)
  t.equal(got.get('/tmp')!.mode, 0o41777)
})

t.test('children sorted by UTF-8 bytes, not by UTF-16 or locale', async (t) => {
  const names = ['b', 'a', 'ab', 'aa', 'Z', '~', 'é', '\uff21', '😀', 'a b', 'A', '0']
  const { entries } = readTable(buildTable(tree(names.map((n) => `/d/${n}|${MD5A}|1`).join('\n'))).buffer)
  t.same(tableViolations(entries), [])
  const d = entries.find((e) => e.path === '/d')!
  const order = entries.slice(d.firstChild, d.firstChild + d.childCount).map((e) => e.name)
  t.same(order, [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))))
  t.ok(order.indexOf('\uff21') < order.indexOf('😀'), 'U+FF21 (EF BC A1) before U+1F600 (F0 ...), unlike UTF-16 order')
})

t.test('breadth-first order', async (t) => {
  const { entries } = readTable(buildTable(tree(SAMPLE), { dev: true }).buffer)
  t.same(entries.map((e) => e.path), [
    '/', '/bin', '/dev', '/empty', '/lib', '/run', '/tmp',
    '/bin/busybox', '/bin/jsnet', '/bin/sh', '/dev/null', '/dev/sda', '/lib/x', '/run/fifo', '/run/sock',
    '/lib/x/y', '/lib/x/y/z',
  ])
})

t.test('inode numbers: the documented derivation, stable, content-sensitive', async (t) => {
  const a = buildTable(tree(SAMPLE), { dev: true })
  const entries = readTable(a.buffer).entries
  for (const e of entries.slice(1)) {
    const kind = KIND_BY_FTYPE[S_IFMT_BY_FTYPE.indexOf(e.mode & 0o170000)]!
    const content = kind === 'f' ? e.md5 : kind === 'l' ? e.target! : kind === 'b' || kind === 'c' ? `${e.rdevMajor},${e.rdevMinor}` : ''
    t.equal(e.ino, deriveIno(kind, e.path, content), `${e.path}: md5(${kind}\\0${e.path}\\0${content})`)
  }
  t.equal(deriveIno('f', '/bin/jsnet', MD5A), crypto.createHash('md5').update(`f\0/bin/jsnet\0${MD5A}`).digest().readBigUInt64LE(0))
  t.not(deriveIno('f', '/x', MD5A, 1), deriveIno('f', '/x', MD5A), 'a re-derivation differs')
  t.equal(deriveIno('f', '/x', MD5A, 1), crypto.createHash('md5').update(`f\0/x\0${MD5A}\x001`).digest().readBigUInt64LE(0))

  const b = buildTable(tree(SAMPLE, 'other-name'), { dev: true })
  t.ok(a.buffer.equals(b.buffer), 'the same flist gives the same table, byte for byte')

  // New content for /bin/jsnet, new times for /bin/sh, a new file in /lib/x.
  const changed = SAMPLE.replace(`/bin/jsnet|${MD5A}|4857`, `/bin/jsnet|${MD5B}|4857`).replace('777|1|7|8|', '777|1|70|80|') + `\n/lib/x/new|${MD5A}|1`
  const before = byPath(entries)
  const after = byPath(readTable(buildTable(tree(changed), { dev: true }).buffer).entries)
  t.not(after.get('/bin/jsnet')!.ino, before.get('/bin/jsnet')!.ino, 'changed content: a new ino')
  t.equal(after.get('/bin/sh')!.ino, before.get('/bin/sh')!.ino, 'changed times: same ino')
  for (const p of ['/bin', '/lib', '/lib/x', '/bin/busybox', '/dev/null', '/lib/x/y/z']) {
    t.equal(after.get(p)!.ino, before.get(p)!.ino, `${p} keeps its ino`)
  }
  // The same content under another path, or as another kind, is another inode.
  const twins = byPath(readTable(buildTable(tree(`/a|${MD5A}|1\n/b|${MD5A}|1\n/c|||root|root|777|1|1|1|x\n/d|||root|root|777|6|1|1|`)).buffer).entries)
  t.not(twins.get('/a')!.ino, twins.get('/b')!.ino)
})

t.test('devices are left out unless dev, counted per service', async (t) => {
  const tr = tree(SAMPLE)
  const kept = buildTable(tr, { dev: true })
  t.same(kept.droppedDevices, [0])
  const { buffer, count, droppedDevices } = buildTable(tr)
  t.same(droppedDevices, [2], '/dev/null and /dev/sda, both of service 0')
  t.equal(count, kept.count - 2)
  const { entries } = readTable(buffer)
  t.equal(entries.length, count)
  t.same(tableViolations(entries), [])
  t.same(entries.map((e) => e.path), [
    '/', '/bin', '/dev', '/empty', '/lib', '/run', '/tmp',
    '/bin/busybox', '/bin/jsnet', '/bin/sh', '/lib/x', '/run/fifo', '/run/sock',
    '/lib/x/y', '/lib/x/y/z',
  ], 'no device; /dev stays (a directory); fifos and sockets stay')
  t.notOk(entries.some((e) => ((e.mode & 0o170000) === 0o020000 || (e.mode & 0o170000) === 0o060000)), 'no S_IFCHR or S_IFBLK entry')
  t.notOk(entries.some((e) => e.rdevMajor !== 0 || e.rdevMinor !== 0), 'no entry has an rdev')
  t.equal(entries.find((e) => e.path === '/dev')!.childCount, 0, '/dev is an empty directory')
  // Everything else is what the faithful table has, inode numbers included.
  const all = byPath(readTable(kept.buffer).entries)
  for (const e of entries) t.same({ ...e, index: 0, parent: 0, firstChild: 0, childCount: 0 }, { ...all.get(e.path)!, index: 0, parent: 0, firstChild: 0, childCount: 0 }, e.path)

  // Merged services: each device counts for the service whose line is in the tree.
  const opts = { prefix: '/', uid: 0, gid: 0, users: new Map([['root', 0]]), groups: new Map([['root', 0]]) }
  const a = parseFlist(Buffer.from('/d/c1|||root|root|666|5|1|2|1,1\n/d/b1|||root|root|660|3|1|2|8,0\n/d/x|||root|root|666|5|1|2|1,3\n'), { name: 'a', ...opts })
  const b = parseFlist(Buffer.from(`/d/x|${MD5A}|1\n/e/c2|||root|root|666|5|1|2|1,5\n`), { name: 'b', ...opts })
  const c = parseFlist(Buffer.from(`/f|${MD5A}|1\n`), { name: 'c', ...opts })
  const merged = buildTable(mergeServices([a, b, c]))
  t.same(merged.droppedDevices, [2, 1, 0], 'a: c1 and b1 (its /d/x was replaced by b\'s file); b: c2; c: none')
  t.same(readTable(merged.buffer).entries.map((e) => e.path), ['/', '/d', '/e', '/f', '/d/x'])
  t.same(tableViolations(readTable(merged.buffer).entries), [])
  t.same(buildTable(mergeServices([a, b, c]), { dev: true }).droppedDevices, [0, 0, 0])
})

t.test('an empty tree is a lone root', async (t) => {
  const { buffer, count } = buildTable(tree(''))
  t.equal(count, 1)
  t.equal(buffer.length, 32 + 96)
  const { entries } = readTable(buffer)
  t.same(tableViolations(entries), [])
  t.equal(entries[0]!.mode, 0o40555)
  t.equal(entries[0]!.uid, 1000)
})

t.test('merged trees pack like single ones', async (t) => {
  const a = parseFlist(Buffer.from(`/bin/a|${MD5A}|1\n/lib/x|${MD5A}|1\n`), { name: 'a', prefix: '/', uid: 0, gid: 0 })
  const b = parseFlist(Buffer.from(`/bin/b|${MD5B}|2\n/bin/a|${MD5B}|3\n`), { name: 'b', prefix: '/', uid: 0, gid: 0 })
  const { entries } = readTable(buildTable(mergeServices([a, b])).buffer)
  t.same(tableViolations(entries), [])
  t.same(entries.map((e) => e.path), ['/', '/bin', '/lib', '/bin/a', '/bin/b', '/lib/x'])
  t.equal(entries[3]!.md5, MD5B)
  t.equal(entries[3]!.ino, deriveIno('f', '/bin/a', MD5B))
})

t.test('readTable refuses what the native side would refuse', async (t) => {
  const { buffer } = buildTable(tree(SAMPLE))
  const mutate = (f: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(buffer)
    f(b)
    return b
  }
  const cases: Array<[Buffer, RegExp]> = [
    [buffer.subarray(0, 16), /shorter than the header/],
    [mutate((b) => b.writeUInt32LE(0, 0)), /bad magic/],
    [mutate((b) => b.writeUInt32LE(2, 4)), /version 2, expected 1/],
    [mutate((b) => b.writeUInt32LE(0, 8)), /no root/],
    [buffer.subarray(0, buffer.length - 1), /past the buffer/],
    [mutate((b) => b.writeUInt32LE(999, 32 + 96 + 44)), /parent 999 out of range/],
    [mutate((b) => b.writeUInt32LE(1 << 30, 32 + 96 + 48)), /name .* outside the string pool/],
    [mutate((b) => b.writeUInt32LE(1000, 32 + 60)), /children .* out of range/],
  ]
  for (const [b, re] of cases) {
    try {
      readTable(b)
      t.fail(`accepted: ${re}`)
    } catch (err) {
      t.ok(err instanceof AysfsError)
      t.equal((err as AysfsError).code, 'EINVAL')
      t.match((err as Error).message, re)
    }
  }
})

t.test('lib/md5.ts agrees with node:crypto', async (t) => {
  const check = (data: Uint8Array): boolean => {
    const buf = Buffer.alloc(data.length + MD5_PAD)
    buf.set(data)
    const out = new Int32Array(4)
    md5Words(buf, data.length, out)
    const ref = crypto.createHash('md5').update(data).digest()
    return Buffer.from(out.buffer).equals(ref)
  }
  // Every length around the block and padding boundaries, then random data.
  for (let n = 0; n <= 200; n++) t.ok(check(crypto.randomBytes(n)), `length ${n}`)
  fc.assert(fc.property(fc.uint8Array({ maxLength: 2000 }), check), { numRuns: 500 })
  t.ok(check(Buffer.from('The quick brown fox jumps over the lazy dog')))
})

