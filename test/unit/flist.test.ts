// lib/flist.ts: both line shapes, every kind of invalid line (with its number), prefixes, the
// merge rules, formatFlistLine.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import t, { type Test } from 'tap'
import { AysfsError } from '../../lib/errors'
import {
  EMPTY_MD5, FType, MAX_NAME_BYTES, MAX_PATH_BYTES, formatFlistLine, mergeServices, parseFlist,
  type FlistEntry, type ParseFlistOptions, type ParsedFlist,
} from '../../lib/flist'

const MD5A = '8a3e5e03a10ecc3601a1f14fbc371019'
const MD5B = '0123456789abcdef0123456789abcdef'
const USERS = new Map([['root', 0], ['bob', 1001]])
const GROUPS = new Map([['root', 0], ['staff', 50]])

function parse(text: string | Buffer, opts: Partial<ParseFlistOptions> = {}): ParsedFlist {
  return parseFlist(Buffer.isBuffer(text) ? text : Buffer.from(text), {
    name: 'svc', prefix: '/', file: 'svc.flist', uid: 1000, gid: 100, users: USERS, groups: GROUPS, ...opts,
  })
}

/** Entries of a parse as a path -> entry object. */
function byPath(p: ParsedFlist | ReturnType<typeof mergeServices>): Record<string, FlistEntry> {
  const tree = 'tree' in p ? p.tree : p
  return Object.fromEntries([...tree.entries()].map((e) => [e.path, e]))
}

function errorOf(t: Test, fn: () => unknown): AysfsError {
  try {
    fn()
  } catch (err) {
    t.ok(err instanceof AysfsError, `an AysfsError: ${(err as Error).message}`)
    return err as AysfsError
  }
  t.fail('expected an error')
  return new AysfsError('NONE', 'none')
}

/** The flist is rejected as a whole, naming the flist, its file and the line. */
function fails(t: Test, text: string | Buffer, line: number, what: RegExp, opts: Partial<ParseFlistOptions> = {}): void {
  const err = errorOf(t, () => parse(text, opts))
  t.equal(err.code, 'EINVAL')
  t.equal(err.line, line, `line ${line}`)
  t.equal(err.file, 'svc.flist')
  t.ok(err.message.startsWith(`flist svc (svc.flist) line ${line}: `), err.message)
  t.match(err.message, what)
}

t.test('seed lines', async (t) => {
  const p = parse(`/opt/js/bin/jsnet|${MD5A.toUpperCase()}|4857\n/opt/js/lib/a.py|${MD5B}|0\n`)
  const e = byPath(p)
  t.same(Object.keys(e), ['/', '/opt', '/opt/js', '/opt/js/bin', '/opt/js/bin/jsnet', '/opt/js/lib', '/opt/js/lib/a.py'])
  t.same(e['/opt/js/bin/jsnet'], {
    path: '/opt/js/bin/jsnet', ftype: FType.file, perm: 0o555, uid: 1000, gid: 100, size: 4857, mtime: 0, ctime: 0,
    md5: MD5A, explicit: true, line: 1, service: 0,
  }, 'md5 lower-cased, mode 0555, the mounting user')
  t.same(e['/opt/js/bin'], {
    path: '/opt/js/bin', ftype: FType.dir, perm: 0o555, uid: 1000, gid: 100, size: 0, mtime: 0, ctime: 0,
    md5: '', explicit: false, line: 1, service: 0,
  }, 'an implied directory')
  t.same(e['/']!.explicit, false)
  t.equal(p.lines, 2)
  t.equal(p.entries, 6)
  t.equal(p.ignored, 0)
  t.equal(p.rootLine, false)
  t.equal(parse(`/a|${MD5A}|1\n`, { time: 1234 }).tree.get('/a')!.mtime, 1234, 'opts.time for seed entries')
})

t.test('extended lines, every type, owners', async (t) => {
  const text = [
    `/d|||bob|staff|2755|4|10|20|`,
    `/d/f|${MD5A}|12|bob|staff|100644|2|11|21|`,
    `/d/exe|${MD5B}|3|root|root|4755|2|-5|-6|`,
    `/d/l|||nobody|nogroup|777|1|1|2|../x|y||z`,
    `/d/blk|||root|root|660|3|1|2|8,1`,
    `/d/chr|||root|root|666|5|1|2|1,3`,
    `/d/fifo|||root|root|644|6|1|2|`,
    `/d/sock|||root|root|755|0|1|2|`,
    `/d/empty||0|root||644|2|1|2|`,
    `/d/dir4096||4096|root|root|755|4|1|2|`,
  ].join('\n')
  const e = byPath(parse(text))
  t.match(e['/d'], { ftype: FType.dir, perm: 0o2755, uid: 1001, gid: 50, ctime: 10, mtime: 20, explicit: true })
  t.match(e['/d/f'], { ftype: FType.file, perm: 0o644, size: 12, md5: MD5A, ctime: 11, mtime: 21 }, 'type bits in perms ignored')
  t.match(e['/d/exe'], { perm: 0o4755, uid: 0, gid: 0, ctime: -5, mtime: -6 })
  t.match(e['/d/l'], { ftype: FType.symlink, target: '../x|y||z', size: 9, uid: 1000, gid: 100 }, 'target split at the 9th |; unknown names: the mounting user')
  t.match(e['/d/blk'], { ftype: FType.blockdev, rdevMajor: 8, rdevMinor: 1, md5: '' })
  t.match(e['/d/chr'], { ftype: FType.chardev, rdevMajor: 1, rdevMinor: 3 })
  t.match(e['/d/fifo'], { ftype: FType.fifo })
  t.match(e['/d/sock'], { ftype: FType.socket })
  t.match(e['/d/empty'], { ftype: FType.file, size: 0, md5: EMPTY_MD5, gid: 100 }, 'an empty regular file may omit its hash; empty gname: the mounting group')
  t.match(e['/d/dir4096'], { ftype: FType.dir, size: 0 }, 'a directory\'s size is accepted and ignored')
  t.equal(e['/d/l']!.target, '../x|y||z')
})

t.test('key=value entries in a regular file\'s extended field: chunks, unknown keys ignored', async (t) => {
  const text = [
    `/c|${MD5A}|12|root|root|644|2|1|2|chunks=${MD5B.toUpperCase()}`,
    `/u|${MD5A}|12|root|root|644|2|1|2|future=1,other.key-2=a=b|c`,
    `/both|${MD5A}|12|root|root|644|2|1|2|zz=,chunks=${MD5B},later=x`,
    `/plain|${MD5A}|12|root|root|644|2|1|2|`,
  ].join('\r\n')
  const p = parse(text)
  const e = byPath(p)
  t.equal(e['/c']!.chunks, MD5B, 'the chunk index, lower-cased')
  t.equal(e['/u']!.chunks, undefined, 'unknown keys are skipped')
  t.match(e['/u'], { ftype: FType.file, size: 12, md5: MD5A })
  t.equal(e['/both']!.chunks, MD5B, 'chunks among unknown keys')
  t.equal(e['/plain']!.chunks, undefined)
  t.equal(p.tree.chunksOf(p.tree.lookup(0, Buffer.from('c'), 0, 1)), MD5B)
  // A later line without chunks replaces one with them; the merge keeps a service's chunks.
  const again = parse(`${text}\n/c|${MD5A}|12|root|root|644|2|1|2|`)
  t.equal(byPath(again)['/c']!.chunks, undefined, 'a repeated path keeps its last line, chunks included')
  const merged = mergeServices([p, parse(`/other|${MD5A}|1`, { name: 'svc2' })])
  t.equal(byPath(merged)['/c']!.chunks, MD5B, 'carried through the merge')
})

t.test('mixed shapes, CRLF, blank and comment lines, BOM', async (t) => {
  const text = `\ufeff# a comment\r\n\r\n   \r\n/a|||root|root|700|4|1|2|\r\n/a/b|${MD5A}|5\r\n\t\n#/not|a|line\r\n/a/c|${MD5B}|6|root|root|600|2|3|4|\r\n`
  const p = parse(text)
  const e = byPath(p)
  t.same(Object.keys(e), ['/', '/a', '/a/b', '/a/c'])
  t.equal(e['/a']!.perm, 0o700)
  t.equal(e['/a/b']!.size, 5)
  t.equal(e['/a/b']!.line, 5, 'line numbers count blank and comment lines')
  t.equal(e['/a/c']!.line, 8)
  t.equal(p.lines, 3)
  t.equal(parse(`/x|${MD5A}|1`).tree.get('/x')!.size, 1, 'no final line end')
  t.equal(parse(`/x|${MD5A}|1\r`).tree.get('/x')!.size, 1, 'a final CR')
  t.equal(parse('').entries, 0, 'an empty flist is an empty tree')
})

t.test('every kind of invalid line is rejected with its line number', async (t) => {
  const ok = `/ok|${MD5A}|1\n# comment\n`
  const cases: Array<[string, RegExp]> = [
    [`/a|${MD5A}`, /expected 3 fields \(path\|md5\|size\) or 10 .*got 2/],
    [`/a|${MD5A}|1|x`, /got 4/],
    [`/a||1|root|root|644|2|1|2`, /got 9/],
    [`a/b|${MD5A}|1`, /path must be absolute, got "a\/b"/],
    [`|${MD5A}|1`, /path must be absolute, got ""/],
    [`/a//b|${MD5A}|1`, /path "\/a\/\/b" has an empty, "\." or "\.\." component/],
    [`/a/./b|${MD5A}|1`, /has an empty, "\." or "\.\." component/],
    [`/a/../b|${MD5A}|1`, /component/],
    [`/a/..|${MD5A}|1`, /component/],
    [`/a/|${MD5A}|1`, /component/],
    [`/a|${MD5A.slice(1)}|1`, /bad md5 "[0-9a-f]{31}": expected 32 hex digits/],
    [`/a|${MD5A.slice(1)}g|1`, /bad md5/],
    [`/a||1`, /bad md5 ""/],
    [`/a|${MD5A}|-1`, /bad size "-1": expected an integer from 0 to 2\^53-1/],
    [`/a|${MD5A}|12a`, /bad size "12a"/],
    [`/a|${MD5A}|`, /bad size ""/],
    [`/a|${MD5A}| 1`, /bad size " 1"/],
    [`/a|${MD5A}|9007199254740992`, /bad size "9007199254740992"/],
    [`/a|${MD5A}|99999999999999999999`, /bad size/],
    [`/a|${MD5A}|1|root|root|644|7|1|2|`, /bad ftype "7": expected 0 to 6/],
    [`/a|${MD5A}|1|root|root|644|x|1|2|`, /bad ftype "x"/],
    [`/a|${MD5A}|1|root|root|644||1|2|`, /bad ftype ""/],
    [`/a|${MD5A}|1|root|root|644|22|1|2|`, /bad ftype "22"/],
    [`/a|${MD5A}|1|root|root|955|2|1|2|`, /bad perms "955": expected octal permission bits/],
    [`/a|${MD5A}|1|root|root||2|1|2|`, /bad perms ""/],
    [`/a|${MD5A}|1|root|root|1777777|2|1|2|`, /bad perms/],
    [`/a|${MD5A}|1|root|root|644|2|x|2|`, /bad ctime "x": expected Unix seconds/],
    [`/a|${MD5A}|1|root|root|644|2|1||`, /bad mtime ""/],
    [`/a|${MD5A}|1|root|root|644|2|1|2.5|`, /bad mtime "2.5"/],
    [`/a||5|root|root|644|2|1|2|`, /missing md5 of a non-empty regular file/],
    [`/a|${MD5A}|x|root|root|644|2|1|2|`, /bad size "x"/],
    [`/a||-3|root|root|755|4|1|2|`, /bad size "-3"/],
    [`/a|xyz||root|root|755|4|1|2|`, /bad md5 "xyz"/],
    [`/a|||root|root|777|1|1|2|`, /symlink with an empty target/],
    [`/a|||root|root|666|5|1|2|`, /bad device numbers "": expected major,minor/],
    [`/a|||root|root|666|3|1|2|8`, /bad device numbers "8"/],
    [`/a|||root|root|666|3|1|2|8,x`, /bad device numbers "8,x"/],
    [`/a|||root|root|666|3|1|2|4294967296,1`, /bad device numbers/],
    [`/a|${MD5A}|1|root|root|644|2|1|2|junk`, /bad extended entry "junk": expected key=value/],
    [`/a|${MD5A}|1|root|root|644|2|1|2|=x`, /bad extended entry "=x"/],
    [`/a|${MD5A}|1|root|root|644|2|1|2|a=1,`, /bad extended entry ""/],
    [`/a|${MD5A}|1|root|root|644|2|1|2|a=1,,b=2`, /bad extended entry ""/],
    [`/a|${MD5A}|1|root|root|644|2|1|2|Chunks=1`, /bad extended key "Chunks"/],
    [`/a|${MD5A}|1|root|root|644|2|1|2|chunks=xyz`, /bad chunks "xyz": expected the 32 hex digits/],
    [`/a|${MD5A}|1|root|root|644|2|1|2|chunks=`, /bad chunks ""/],
    [`/a|${MD5A}|1|root|root|644|2|1|2|chunks=${MD5B},chunks=${MD5B}`, /chunks= given twice/],
    [`/a|${MD5A}|1|root|root|644|2|1|2|x=a\rb`, /stray CR/],
    [`/a|||root|root|755|4|1|2|chunks=${MD5B}`, /the extended field must be empty for a directory/],
    [`/a|||root|root|755|4|1|2|x|y`, /the extended field must be empty for a directory/],
    [`/a\r/b|${MD5A}|1`, /stray CR inside the line/],
    [`/a|||root|root|777|1|1|2|x\ry`, /stray CR/],
  ]
  for (const [line, re] of cases) {
    t.test(JSON.stringify(line), async (t) => fails(t, `${ok}${line}\n${ok}`, 3, re))
  }
})

t.test('NUL bytes, bad UTF-8 and long lines', async (t) => {
  const ok = `/ok|${MD5A}|1\n`
  fails(t, `${ok}${ok}/a\0b|${MD5A}|1\n${ok}`, 3, /NUL byte in line/)
  fails(t, Buffer.concat([Buffer.from(`${ok}${ok}${ok}/a`), Buffer.from([0xff, 0xfe]), Buffer.from(`|${MD5A}|1\n`)]), 4, /not valid UTF-8/)
  fails(t, `${ok}/${'x'.repeat(70_000)}|${MD5A}|1\n`, 2, /line longer than 64 KiB/)
  // The first bad line is the one reported, whatever the order of the kinds of problem.
  fails(t, `${ok}/bad|x|1\n/a\0|${MD5A}|1\n`, 2, /bad md5/)
  t.equal(parse(`# a comment with a \0 NUL is still a comment\n${ok}`).entries, 1)
  // (A long symlink target makes the long line: a path is at most 4096 bytes.)
  const longest = `/l|||root|root|777|1|1|2|${'y'.repeat(65_536 - 25)}`
  t.equal(Buffer.byteLength(longest), 65_536)
  t.equal(parse(`${longest}\r\n`).entries, 1, 'a line of exactly 64 KiB (plus CRLF) is fine')
  fails(t, `${ok}/l|||root|root|777|1|1|2|${'y'.repeat(65_536 - 24)}\n`, 2, /longer than 64 KiB/)
  t.equal(parse(`/é/日本/ü.txt|${MD5A}|1\n`).tree.get('/é/日本/ü.txt')!.size, 1, 'UTF-8 names')
})

t.test('names over 255 bytes and paths over 4096 bytes are invalid lines', async (t) => {
  t.equal(MAX_NAME_BYTES, 255)
  t.equal(MAX_PATH_BYTES, 4096)
  const ok = `/ok|${MD5A}|1\n`
  const name255 = 'n'.repeat(255)
  t.equal(parse(`/d/${name255}/f|${MD5A}|1\n`).tree.get(`/d/${name255}/f`)!.size, 1, 'a 255-byte component is fine')
  // Bytes, not characters: "é" is two bytes in UTF-8.
  t.ok(parse(`/${'é'.repeat(127)}x|${MD5A}|1\n`).tree.get(`/${'é'.repeat(127)}x`), '127 × "é" + "x" is 255 bytes: fine')
  fails(t, `${ok}/d/${'n'.repeat(256)}|${MD5A}|1\n`, 2, /path "\/d\/n{190,}"?\.*.* has a component of 256 bytes: at most 255 \(NAME_MAX\)/)
  fails(t, `${ok}${ok}/${'é'.repeat(128)}|${MD5A}|1\n`, 3, /has a component of 256 bytes: at most 255/)
  fails(t, `${ok}/dir/${'x'.repeat(5000)}|||root|root|755|4|1|2|\n`, 2, /has a component of 5000 bytes/)
  // A directory (the parent of later lines) is checked too, not only the last component.
  fails(t, `/${'p'.repeat(300)}/f|${MD5A}|1\n`, 1, /has a component of 300 bytes/)

  // Paths of 4096 and 4097 bytes: 16 components of 254 bytes (4080 with their slashes), then one
  // of 15 or 16.
  const base = Array.from({ length: 16 }, (_, i) => `/${String.fromCharCode(97 + i).repeat(254)}`).join('')
  const p4096 = `${base}/${'z'.repeat(15)}`
  const p4097 = `${base}/${'z'.repeat(16)}`
  t.equal(Buffer.byteLength(p4096), 4096)
  t.ok(parse(`${p4096}|${MD5A}|1\n`).tree.get(p4096), 'a 4096-byte path is fine')
  fails(t, `${ok}${p4097}|${MD5A}|1\n`, 2, /is 4097 bytes long: at most 4096 \(PATH_MAX\)/)

  // Lines outside the prefix are checked like any other: an invalid line rejects the flist.
  fails(t, `/in/a|${MD5A}|1\n/out/${'o'.repeat(256)}|${MD5A}|1\n`, 2, /component of 256 bytes/, { prefix: '/in' })
  // From a file as from a buffer.
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'flist-names-')), 'svc.flist')
  t.teardown(() => fs.rmSync(path.dirname(file), { recursive: true, force: true }))
  fs.writeFileSync(file, `${ok}/${'z'.repeat(256)}|${MD5A}|1\n`)
  const err = errorOf(t, () => parseFlist(file, { name: 'svc', prefix: '/', file: 'svc.flist' }))
  t.match(err, { code: 'EINVAL', line: 2, message: /^flist svc \(svc\.flist\) line 2: .*component of 256 bytes/ })
})

t.test('structural conflicts inside one flist', async (t) => {
  fails(t, `/a|${MD5A}|1\n/a/b|${MD5A}|1\n`, 2, /"\/a\/b" is under "\/a", which is a regular file \(line 1\)/)
  fails(t, `/a/b|${MD5A}|1\n/a|${MD5A}|1\n`, 2, /"\/a" is a regular file here but a directory with entries at line 1/)
  fails(t, `/p/x|${MD5A}|1\n/p|${MD5A}|1\n`, 2, /"\/p" is the prefix \(the root of the mount\) but is a regular file/, { prefix: '/p' })
})

t.test('a repeated path keeps its last line', async (t) => {
  const p = parse(`/a|${MD5A}|1\n/d|||root|root|700|4|1|2|\n/a|${MD5B}|2\n/d|||root|root|750|4|5|6|\n/e|||root|root|755|4|1|1|\n/e|${MD5A}|3\n/x/y|${MD5A}|1\n/x|||root|root|711|4|1|1|\n`)
  const e = byPath(p)
  t.match(e['/a'], { md5: MD5B, size: 2, line: 3 })
  t.match(e['/d'], { perm: 0o750, ctime: 5, line: 4 })
  t.match(e['/e'], { ftype: FType.file, size: 3 }, 'an empty directory may be replaced by a file')
  t.match(e['/x'], { perm: 0o711, explicit: true }, 'an explicit line after the implied directory')
  t.equal(p.duplicates, 3, 'the implied-then-explicit directory is not a duplicate')
  t.equal(p.entries, 5)
})

t.test('prefix: filter, strip, root line, counts', async (t) => {
  const text = [
    `/opt/js|||root|staff|750|4|7|8|`,
    `/opt/js/bin/jsnet|${MD5A}|1`,
    `/opt/jsx/other|${MD5A}|1`,
    `/opt|||root|root|755|4|1|1|`,
    `/opt/js/lib|||bob|root|700|4|1|1|`,
    `/etc/passwd|${MD5A}|1`,
    `/opt/js/lib/x|${MD5B}|2`,
  ].join('\n')
  for (const prefix of ['/opt/js', '/opt/js/', '/opt/js//']) {
    const p = parse(text, { prefix })
    const e = byPath(p)
    t.same(Object.keys(e), ['/', '/bin', '/bin/jsnet', '/lib', '/lib/x'], `prefix ${prefix}`)
    t.match(e['/'], { perm: 0o750, uid: 0, gid: 50, ctime: 7, mtime: 8, explicit: true, line: 1 }, 'the root takes the prefix line')
    t.equal(p.ignored, 3)
    t.equal(p.lines, 7)
    t.equal(p.prefix, '/opt/js')
    t.equal(p.rootLine, true)
  }
  const all = parse(text, { prefix: '/' })
  t.equal(all.ignored, 0)
  t.ok(all.tree.get('/opt/jsx/other'))
  t.equal(parse(text, { prefix: '/nothing' }).entries, 0, 'nothing under the prefix: an empty root')
  // Lines outside the prefix are still checked: an invalid flist is invalid as a whole.
  fails(t, `/opt/js/a|${MD5A}|1\n/elsewhere|bad|1\n`, 2, /bad md5/, { prefix: '/opt/js' })
  t.throws(() => parse(text, { prefix: 'opt' }), TypeError)
  t.throws(() => parse(text, { prefix: '/a/../b' }), TypeError)
})

t.test('limits', async (t) => {
  const text = `/a/b/c|${MD5A}|1\n/a/d|${MD5A}|1\n`
  t.equal(parse(text, { maxEntries: 4 }).entries, 4)
  fails(t, text, 2, /more than 3 entries \(main.max_entries\)/, { maxEntries: 3 })
  const err = errorOf(t, () => parse(text, { maxSize: 10 }))
  t.equal(err.code, 'EINVAL')
  t.match(err.message, /^flist svc \(svc.flist\): \d+ bytes, more than main.max_flist_size \(10\)$/)
})

t.test('onEntry sees every kept line', async (t) => {
  const seen: string[] = []
  parse(`/p/a/b|${MD5A}|1\n/q|${MD5A}|1\n/p/c|||root|root|777|1|1|1|t\n`, { prefix: '/p', onEntry: (e) => seen.push(`${e.path}:${e.ftype}`) })
  t.same(seen, ['/a/b:2', '/c:1'])
})

t.test('reading from a file: chunks, CRLF across chunk ends, errors', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-flist-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  // > 4 MiB so the file is read in more than one chunk; lines of varied length so that chunk
  // ends fall inside lines, between CR and LF, etc.
  const lines: string[] = []
  for (let i = 0, size = 0; size < 9 * 1024 * 1024; i++) {
    lines.push(i % 7 === 0 ? `# ${'c'.repeat(i % 50)}\r\n` : `/p/d${i % 13}/${'n'.repeat(i % 40)}${i}|${MD5A}|${i}\r\n`)
    size += lines[i]!.length
  }
  const text = lines.join('')
  const file = path.join(dir, 'big.flist')
  fs.writeFileSync(file, text)
  const fromFile = parseFlist(file, { name: 'svc', prefix: '/p', uid: 1, gid: 1 })
  const fromBuf = parseFlist(Buffer.from(text), { name: 'svc', prefix: '/p', uid: 1, gid: 1, file })
  t.equal(fromFile.file, file, 'the path is the file of messages')
  t.equal(fromFile.entries, fromBuf.entries)
  t.equal(fromFile.lines, fromBuf.lines)
  // isDeepStrictEqual (stricter than t.same) in C++: tcompare took ~10 s over these 150,000 entries.
  // Only when they differ does t.same run, for its diff.
  const [treeFile, treeBuf] = [[...fromFile.tree.entries()], [...fromBuf.tree.entries()]]
  if (isDeepStrictEqual(treeFile, treeBuf)) t.pass('same tree from a file and from a Buffer')
  else t.same(treeFile, treeBuf, 'same tree from a file and from a Buffer')

  // An error past the first chunk has the right line number.
  const bad = `${text}/p/x|nothex|1\r\n`
  fs.writeFileSync(file, bad)
  let err = errorOf(t, () => parseFlist(file, { name: 'svc', prefix: '/p' }))
  t.equal(err.line, lines.length + 1)
  t.equal(err.file, file)
  fs.writeFileSync(file, `${text}/${'x'.repeat(200_000)}\n`)
  err = errorOf(t, () => parseFlist(file, { name: 'svc', prefix: '/p' }))
  t.equal(err.line, lines.length + 1)
  t.match(err.message, /longer than 64 KiB/)
  fs.writeFileSync(file, `${text}/p/\0|${MD5A}|1\n`)
  err = errorOf(t, () => parseFlist(file, { name: 'svc', prefix: '/p' }))
  t.equal(err.line, lines.length + 1)
  t.match(err.message, /NUL/)

  err = errorOf(t, () => parseFlist(path.join(dir, 'missing.flist'), { name: 'svc', prefix: '/' }))
  t.equal(err.code, 'ENOENT')
  t.match(err.message, /^flist svc \(.*missing.flist\): cannot read: /)
  err = errorOf(t, () => parseFlist(file, { name: 'svc', prefix: '/', maxSize: 100 }))
  t.match(err.message, /more than main.max_flist_size \(100\)/)
})

t.test('mergeServices', async (t) => {
  const a = parse([
    `/|||root|root|711|4|1|1|`,
    `/bin|||root|root|755|4|1|1|`,
    `/bin/a|${MD5A}|1`,
    `/bin/both|${MD5A}|1`,
    `/lib/x|${MD5A}|1`,
    `/etc|||root|root|700|4|1|1|`,
  ].join('\n'), { name: 'a', file: 'a.flist' })
  const b = parse([
    `/bin/b|${MD5B}|2`,
    `/bin/both|${MD5B}|2`,
    `/lib|||bob|staff|750|4|3|3|`,
    `/etc/conf|${MD5B}|2`,
    `/bin/l|||root|root|777|1|1|1|a`,
  ].join('\n'), { name: 'b', file: 'b.flist' })
  const m = mergeServices([a, b])
  const e = byPath(m)
  t.same(Object.keys(e).sort(), ['/', '/bin', '/bin/a', '/bin/b', '/bin/both', '/bin/l', '/etc', '/etc/conf', '/lib', '/lib/x'])
  t.same(m.services, [{ name: 'a', file: 'a.flist' }, { name: 'b', file: 'b.flist' }])
  t.match(e['/bin/both'], { md5: MD5B, size: 2, service: 1 }, 'a later service wins for files')
  t.match(e['/bin'], { perm: 0o755, explicit: true, service: 0 }, 'an implied directory never overrides an explicit one')
  t.match(e['/lib'], { perm: 0o750, uid: 1001, gid: 50, explicit: true, service: 1 }, 'the last explicit directory line')
  t.match(e['/etc'], { perm: 0o700 }, 'implied in b, explicit in a')
  t.match(e['/'], { perm: 0o711 }, 'root from the last service with a root line')
  t.match(e['/bin/a'], { service: 0, line: 3 })

  const c = parse(`/|||root|root|700|4|9|9|\n/bin|||root|root|500|4|1|1|\n`, { name: 'c' })
  const m2 = byPath(mergeServices([a, b, c]))
  t.match(m2['/'], { perm: 0o700, ctime: 9 })
  t.match(m2['/bin'], { perm: 0o500 })
  t.equal(mergeServices([a]), a.tree, 'one flist: its tree, no copy')

  // A directory in one service, not in another: an error naming both.
  const d = parse(`/bin/a/inner|${MD5A}|1\n`, { name: 'd', file: 'd.flist' })
  let err = errorOf(t, () => mergeServices([a, d]))
  t.equal(err.code, 'EINVAL')
  t.equal(err.file, 'd.flist')
  t.equal(err.line, 1)
  t.equal(err.message, '/bin/a is a directory in flist d (d.flist) implied by line 1 but a regular file in flist a (a.flist) line 3: a path cannot be a directory in one service and not in another')
  err = errorOf(t, () => mergeServices([d, a]))
  t.match(err.message, /^\/bin\/a is a regular file in flist a \(a.flist\) line 3 but a directory in flist d \(d.flist\) implied by line 1/)
  const s = parse(`/bin|||root|root|777|1|1|1|/usr/bin\n`, { name: 's' })
  err = errorOf(t, () => mergeServices([a, s]))
  t.match(err.message, /^\/bin is a symlink in flist s \(svc.flist\) line 1 but a directory in flist a/)

  err = errorOf(t, () => mergeServices([a, b], { maxEntries: 6 }))
  t.match(err.message, /services a, b: more than 6 entries together \(main.max_entries\)/)
  t.equal(mergeServices([a, b], { maxEntries: 9 }).count, 10)
  t.throws(() => mergeServices([a], { maxEntries: 3 }), /more than 3 entries/)
})

t.test('formatFlistLine', async (t) => {
  t.equal(formatFlistLine({ path: '/opt/js/bin/x', md5: MD5A.toUpperCase(), size: 12 }, 'seed'), `/opt/js/bin/x|${MD5A}|12`)
  t.equal(formatFlistLine({ path: '/e', size: 0 }, 'seed'), `/e|${EMPTY_MD5}|0`)
  t.equal(
    formatFlistLine({ path: '/f', ftype: FType.file, md5: MD5A, size: 3, uname: 'bob', gname: 'staff', perm: 0o100644, mtime: 5.9, ctime: 4 }, 'extended'),
    `/f|${MD5A}|3|bob|staff|644|2|4|5|`,
  )
  t.equal(formatFlistLine({ path: '/d', ftype: FType.dir, perm: 0o755 }, 'extended'), '/d||0|||755|4|0|0|')
  t.equal(formatFlistLine({ path: '/l', ftype: FType.symlink, target: 'a|b', perm: 0o777 }, 'extended'), '/l||0|||777|1|0|0|a|b')
  t.equal(formatFlistLine({ path: '/c', ftype: FType.chardev, rdevMajor: 1, rdevMinor: 3 }, 'extended'), '/c||0|||555|5|0|0|1,3')
  const refusals: Array<[Parameters<typeof formatFlistLine>[0], 'seed' | 'extended', RegExp]> = [
    [{ path: '/a|b', md5: MD5A, size: 1 }, 'seed', /the path contains a "\|"/],
    [{ path: '/a\rb', md5: MD5A, size: 1 }, 'seed', /the path contains a carriage return \(CR\)/],
    [{ path: '/a\nb', md5: MD5A, size: 1 }, 'extended', /the path contains a line feed \(LF\)/],
    [{ path: '/a\0b', md5: MD5A, size: 1 }, 'seed', /the path contains a NUL byte/],
    [{ path: 'rel', md5: MD5A, size: 1 }, 'seed', /not absolute/],
    [{ path: '/a/../b', md5: MD5A, size: 1 }, 'seed', /empty, "\." or "\.\." component/],
    [{ path: '/l', ftype: FType.symlink, target: 'x' }, 'seed', /the seed format has regular files only, and this is a symlink/],
    [{ path: '/f', size: 3 }, 'seed', /needs its md5/],
    [{ path: '/f', md5: 'abc', size: 3 }, 'seed', /bad md5/],
    [{ path: '/f', md5: MD5A, size: -1 }, 'seed', /bad size/],
    [{ path: '/l', ftype: FType.symlink, target: 'a\nb' }, 'extended', /the symlink target contains a line feed/],
    [{ path: '/l', ftype: FType.symlink }, 'extended', /needs a target/],
    [{ path: '/f', md5: MD5A, size: 1, uname: 'a|b' }, 'extended', /owner or group name contains a "\|"/],
    [{ path: '/c', ftype: FType.blockdev }, 'extended', /needs rdevMajor and rdevMinor/],
  ]
  for (const [entry, format, re] of refusals) {
    const err = errorOf(t, () => formatFlistLine(entry, format))
    t.equal(err.code, 'EINVAL')
    t.ok(err.message.startsWith(`cannot write ${JSON.stringify(entry.path)} to a flist: `), err.message)
    t.match(err.message, re)
  }

  // NAME_MAX and PATH_MAX, in bytes: publish never writes a line the parser refuses.
  t.equal(formatFlistLine({ path: `/d/${'n'.repeat(255)}`, size: 0 }, 'seed'), `/d/${'n'.repeat(255)}|${EMPTY_MD5}|0`)
  const long: Array<[string, RegExp]> = [
    [`/d/${'n'.repeat(256)}`, /the path has a component of 256 bytes: at most 255 \(NAME_MAX\)/],
    [`/${'é'.repeat(128)}`, /the path has a component of 256 bytes/],
    [`/${Array.from({ length: 17 }, () => 'x'.repeat(250)).join('/')}`, /the path is 4267 bytes long: at most 4096 \(PATH_MAX\)/],
  ]
  for (const [p, re] of long) {
    for (const format of ['seed', 'extended'] as const) {
      const err = errorOf(t, () => formatFlistLine({ path: p, size: 0 }, format))
      t.equal(err.code, 'EINVAL')
      t.match(err.message, /^cannot write ".{1,210}"(\.\.\.)? to a flist: /, 'the path is named (shortened)')
      t.match(err.message, re)
    }
  }
})
