// The native check of the inode table (native/inode_table.cc `InodeTable::Adopt`, through the
// addon's `checkTable`): it accepts what lib/table.ts writes and refuses each malformed buffer
// with an error naming the entry and the field, without reading outside the buffer. The checks
// run in a child process, so a check that crashes fails a test instead of killing the runner.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { mergeServices, parseFlist } from '../../lib/flist'
import { buildTable, ENTRY, ENTRY_SIZE, HEADER, HEADER_SIZE, MAGIC, VERSION } from '../../lib/table'

const ROOT = path.resolve(__dirname, '../..')
const MD5A = '8a3e5e03a10ecc3601a1f14fbc371019'

interface Outcome {
  entries?: number
  bytes?: number
  code?: string
  message?: string
}

/**
 * `checkTable` of each buffer in a child process. Results come back one line each as they are
 * made, so a crash shows which buffer did it (`crashed`: the signal or exit status).
 */
function checkInChild(buffers: Buffer[]): { outcomes: Outcome[]; crashed?: string; stderr: string } {
  const script = `
    const fs = require('node:fs')
    const binding = require(require.resolve('node-gyp-build', { paths: [${JSON.stringify(ROOT)}] }))(${JSON.stringify(ROOT)})
    for (const b64 of JSON.parse(fs.readFileSync(0, 'utf8'))) {
      let out
      try {
        out = binding.checkTable(Buffer.from(b64, 'base64'))
      } catch (err) {
        out = { code: err.code, message: err.message }
      }
      fs.writeSync(1, JSON.stringify(out) + '\\n')
    }`
  const r = spawnSync(process.execPath, ['-e', script], { input: JSON.stringify(buffers.map((b) => b.toString('base64'))), encoding: 'utf8', timeout: 60_000 })
  const outcomes = r.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Outcome)
  const crashed = r.signal !== null ? `killed by ${r.signal}` : r.status !== 0 ? `exit status ${r.status}` : undefined
  return { outcomes, crashed, stderr: r.stderr }
}

/** A table written by hand: `entries` (fields by name, the rest 0) and a string pool. */
function handTable(entries: Array<Partial<Record<keyof typeof ENTRY, number | bigint>>>, pool: string): Buffer {
  const poolBuf = Buffer.from(pool, 'latin1')
  const b = Buffer.alloc(HEADER_SIZE + ENTRY_SIZE * entries.length + poolBuf.length)
  b.writeUInt32LE(MAGIC, HEADER.magic)
  b.writeUInt32LE(VERSION, HEADER.version)
  b.writeUInt32LE(entries.length, HEADER.count)
  b.writeBigUInt64LE(BigInt(HEADER_SIZE + ENTRY_SIZE * entries.length), HEADER.stringsOffset)
  b.writeBigUInt64LE(BigInt(poolBuf.length), HEADER.stringsLength)
  entries.forEach((e, i) => {
    const at = HEADER_SIZE + ENTRY_SIZE * i
    for (const [k, v] of Object.entries(e)) {
      const off = at + ENTRY[k as keyof typeof ENTRY]
      if (k === 'ino' || k === 'size' || k === 'mtime' || k === 'ctime') b.writeBigUInt64LE(BigInt(v), off)
      else b.writeUInt32LE(Number(v), off)
    }
  })
  poolBuf.copy(b, HEADER_SIZE + ENTRY_SIZE * entries.length)
  return b
}

const DIR = 0o40755
const REG = 0o100644

t.test('a child whose name lies outside the string pool is refused, not read (it crashed the process)', async (t) => {
  // The root lists "a" and a second child whose name offset is 4 GiB past the pool. The old
  // check compared the two names while checking the root, before it had checked the second
  // child's offset: a read 4 GiB past the buffer.
  const bad = handTable([
    { ino: 1n, mode: DIR, firstChild: 1, childCount: 2 },
    { ino: 2n, mode: REG, parent: 0, nameOffset: 0, nameLength: 1 },
    { ino: 3n, mode: REG, parent: 0, nameOffset: 0xfffffff0, nameLength: 1 },
  ], 'ab')
  // The input the fuzz target found the same way (test/fuzz/table-corpus/): the fifth entry's
  // one-byte name starts at the pool's end, and the root compared it with its sibling first.
  const found = fs.readFileSync(path.join(ROOT, 'test/fuzz/table-corpus/child-name-past-pool.table'))
  const { outcomes, crashed, stderr } = checkInChild([bad, found])
  t.notOk(crashed, `checkTable returns${crashed ? `, but the process was ${crashed}: ${stderr.slice(-2000)}` : ''}`)
  t.same(outcomes[0], { code: 'EINVAL', message: 'inode table entry 2: name [4294967280, 4294967281) outside the string pool (2 bytes)' })
  t.same(outcomes[1], { code: 'EINVAL', message: 'inode table entry 4: name [56, 57) outside the string pool (56 bytes)' })
})

t.test('what lib/table.ts writes is accepted; each malformed field is refused with where and what', async (t) => {
  const text = [
    `/|||root|root|755|4|5|6|`,
    `/bin/jsnet|${MD5A}|4857`,
    `/bin/sh|||root|root|777|1|7|8|busybox`,
    `/dev/null|||root|root|666|5|1|2|1,3`,
    `/run/fifo|||root|root|644|6|1|2|`,
    `/z/a|${MD5A}|1`,
    `/z/b|${MD5A}|2`,
  ].join('\n')
  // dev: the device stays in the table (without it, buildTable leaves devices out).
  const { buffer } = buildTable(mergeServices([parseFlist(Buffer.from(text), { name: 't', prefix: '/', uid: 0, gid: 0 })]), { dev: true })
  // Breadth first: / bin dev run z, then bin/jsnet bin/sh dev/null run/fifo z/a z/b.
  const index = { root: 0, bin: 1, dev: 2, run: 3, z: 4, jsnet: 5, sh: 6, null: 7, fifo: 8, a: 9, b: 10 }
  const at = (i: number, field: keyof typeof ENTRY): number => HEADER_SIZE + ENTRY_SIZE * i + ENTRY[field]
  const edit = (f: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(buffer)
    f(b)
    return b
  }
  const cases: Array<[string, Buffer, string | RegExp]> = [
    ['a regular file with device numbers', edit((b) => b.writeUInt32LE(1, at(index.jsnet, 'rdevMajor'))), 'inode table entry 5: device numbers on a non-device'],
    ['a directory with device numbers', edit((b) => b.writeUInt32LE(7, at(index.bin, 'rdevMinor'))), 'inode table entry 1: device numbers on a non-device'],
    ['a directory with an md5', edit((b) => (b[at(index.bin, 'md5') + 15] = 1)), 'inode table entry 1: an md5 on a non-regular file'],
    ['a fifo with a size', edit((b) => b.writeBigUInt64LE(4096n, at(index.fifo, 'size'))), 'inode table entry 8: size 4096 on a non-regular file'],
    ['a regular file past the largest off_t', edit((b) => b.writeBigUInt64LE(1n << 63n, at(index.jsnet, 'size'))), 'inode table entry 5: size 9223372036854775808 past the largest off_t'],
    ['sizes adding up past 2^64', edit((b) => {
      for (const i of [index.jsnet, index.a, index.b]) b.writeBigUInt64LE((1n << 63n) - 1n, at(i, 'size'))
    }), 'inode table entry 10: file sizes add up to more than 2^64 bytes'],
    ['a symlink whose size is not its target\'s length', edit((b) => b.writeBigUInt64LE(3n, at(index.sh, 'size'))), 'inode table entry 6: symlink size 3, its target has 7 bytes'],
    ['a target on a regular file', edit((b) => b.writeUInt32LE(1, at(index.jsnet, 'targetLength'))), 'inode table entry 5: a target on a non-symlink'],
    ['a symlink target outside the pool', edit((b) => b.writeUInt32LE(0xffffffff, at(index.sh, 'targetOffset'))), /^inode table entry 6: target \[4294967295, 4294967302\) outside the string pool \(\d+ bytes\)$/],
    ['a mode with no file type', edit((b) => b.writeUInt32LE(0o644, at(index.fifo, 'mode'))), 'inode table entry 8: mode 0644 is not a file type and permission bits'],
    ['a parent after its child', edit((b) => b.writeUInt32LE(9, at(index.jsnet, 'parent'))), 'inode table entry 5: parent 9 is not before it'],
    ['a child range that wraps around 2^32', edit((b) => {
      b.writeUInt32LE(0xffffffff, at(index.z, 'firstChild'))
      b.writeUInt32LE(2, at(index.z, 'childCount'))
    }), 'inode table entry 4: children [4294967295, 4294967297) out of range (after 4, before 11)'],
    ['children of a regular file', edit((b) => b.writeUInt32LE(1, at(index.a, 'childCount'))), 'inode table entry 9: a non-directory with children'],
    ['a root with a name', edit((b) => b.writeUInt32LE(1, at(index.root, 'nameLength'))), 'inode table entry 0: the root has a name'],
    ['children out of order', edit((b) => {
      const x = at(index.a, 'nameOffset')
      const y = at(index.b, 'nameOffset')
      const tmp = b.subarray(x, x + 8).toString('hex')
      b.copy(b, x, y, y + 8)
      b.write(tmp, y, 'hex')
    }), 'inode table entry 4: children not sorted or not unique at 10'],
    ['a child its directory does not list', edit((b) => b.writeUInt32LE(1, at(index.z, 'childCount'))), 'inode table entry 10: not among its parent\'s children'],
    ['a parent that is not a directory', edit((b) => {
      b.writeUInt32LE(1, at(index.z, 'childCount'))
      b.writeUInt32LE(index.jsnet, at(index.b, 'parent'))
    }), 'inode table entry 10: parent 5 is not a directory'],
    ['a child naming another parent', edit((b) => b.writeUInt32LE(index.bin, at(index.b, 'parent'))), 'inode table entry 4: child 10 has another parent'],
    ['two entries with one inode number', edit((b) => b.copy(b, at(index.b, 'ino'), at(index.a, 'ino'), at(index.a, 'ino') + 8)), /^inode table entry 10: duplicate inode number \d+$/],
    ['a count past the buffer', edit((b) => b.writeUInt32LE(12, HEADER.count)), 'inode table: stringsOffset 1088, expected 1184 for 12 entries'],
  ]
  const { outcomes, crashed, stderr } = checkInChild([buffer, ...cases.map((c) => c[1])])
  t.notOk(crashed, `checkTable returns${crashed ? `, but the process was ${crashed}: ${stderr.slice(-2000)}` : ''}`)
  t.same(outcomes[0], { entries: 11, bytes: 4857 + 1 + 2 }, 'the table lib/table.ts wrote is accepted')
  cases.forEach(([what, , want], k) => {
    const got = outcomes[k + 1]
    t.equal(got?.code, 'EINVAL', what)
    if (typeof want === 'string') t.equal(got?.message, want, what)
    else t.match(got?.message, want, what)
  })
})
