// Hostile flists, through mount(): path traversal, NUL bytes, lines over 64 KiB, non-hex hashes,
// sizes past 2^53 are rejected with the line, and nothing is mounted. No blob name can leave
// the cache directory. A directory of 1,000,000 entries is served in under 1 GiB.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { mount } from '../../lib/index'
import { createFetcher } from '../../lib/pipeline'
import { EMPTY_MD5 } from '../../lib/flist'
import { PREFIX, SERVICE, config, files, md5, mountChild, mountHere, writeStore } from '../helpers/hardening'
import { mountsBelow, tmpdir } from '../helpers/mount'
import { makeConfig, memLog } from '../helpers/store'

const GOOD = files(1, 100, 61)[0]!
const OK_LINE = `${PREFIX}/ok|${GOOD.md5}|${GOOD.data.length}`

t.test('hostile lines reject the whole flist, naming the line; nothing is mounted', async (t) => {
  const cases: [string, string | Buffer, RegExp][] = [
    ['traversal with ..', `${PREFIX}/../../etc/passwd|${GOOD.md5}|100`, /line 2: path .* has an empty, "\." or "\.\." component/],
    ['traversal inside', `${PREFIX}/a/../../../etc/shadow|${GOOD.md5}|100`, /line 2: .*component/],
    ['a . component', `${PREFIX}/./x|${GOOD.md5}|100`, /line 2: .*component/],
    ['an empty component', `${PREFIX}//x|${GOOD.md5}|100`, /line 2: .*component/],
    ['a relative path', `etc/passwd|${GOOD.md5}|100`, /line 2: path must be absolute/],
    ['a NUL byte', Buffer.from(`${PREFIX}/a\0b|${GOOD.md5}|100`), /line 2: NUL byte in line/],
    ['a line over 64 KiB', `${PREFIX}/${'x'.repeat(70_000)}|${GOOD.md5}|100`, /line 2: line longer than 64 KiB/],
    ['a non-hex hash', `${PREFIX}/a|zz${GOOD.md5.slice(2)}|100`, /line 2: bad md5/],
    ['a hash that is a path', `${PREFIX}/a|../../../../../etc/passwd/.....|100`, /line 2: bad md5/],
    ['a short hash', `${PREFIX}/a|${GOOD.md5.slice(1)}|100`, /line 2: bad md5/],
    ['a size past 2^53', `${PREFIX}/a|${GOOD.md5}|9007199254740993`, /line 2: bad size/],
    ['a size of 2^64', `${PREFIX}/a|${GOOD.md5}|18446744073709551616`, /line 2: bad size/],
    ['a negative size', `${PREFIX}/a|${GOOD.md5}|-1`, /line 2: bad size/],
    ['a device number past u32', `${PREFIX}/dev||0|root|root|644|3|0|0|4294967296,1`, /line 2: bad device numbers/],
    ['a symlink target with CR', `${PREFIX}/l|||root|root|777|1|0|0|a\rb`, /line 2: stray CR/],
    ['bad UTF-8', Buffer.from([...Buffer.from(`${PREFIX}/a`), 0xff, 0xfe, ...Buffer.from(`|${GOOD.md5}|100`)]), /line 2: not valid UTF-8/],
  ]
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  writeStore(store, [GOOD])
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  for (const [what, line, re] of cases) {
    const flist = Buffer.concat([Buffer.from(`${OK_LINE}\n`), Buffer.from(line), Buffer.from(`\n${OK_LINE}\n`)])
    fs.writeFileSync(path.join(store, 'md', `${SERVICE}.flist`), flist)
    const err = await mount({ mountpoint: mnt, config: config(path.join(dir, 'cache'), [store]), log: { level: 'silent' } }).then(
      (m) => m.unmount().then(() => undefined),
      (e: Error & { code?: string }) => e,
    )
    t.match(err, { code: 'EINVAL', message: re }, `${what}: rejected`)
    t.match(err?.message, new RegExp(`flist ${SERVICE}`), `${what}: the message names the flist`)
    t.same(mountsBelow(mnt), [], `${what}: nothing mounted`)
  }
})

t.test('no blob name can reach outside the cache directory', async (t) => {
  const cache = tmpdir(t)
  const f = createFetcher({ config: makeConfig({ cache }), log: memLog() })
  t.teardown(() => f.close())
  for (const bad of ['../../../../etc/passwd', '/etc/passwd', `${'a'.repeat(31)}/`, `..${'0'.repeat(30)}`, `${'0'.repeat(31)}\0`, 'g'.repeat(32)]) {
    await t.rejects(f.fetch(bad, 1), TypeError, `fetch(${JSON.stringify(bad)}) is refused`)
  }
  t.same(fs.readdirSync(cache), ['tmp'], 'nothing was created')
})

t.test('symlinks pointing anywhere are served as links, not followed by the file system', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  writeStore(store, [GOOD])
  fs.writeFileSync(
    path.join(store, 'md', `${SERVICE}.flist`),
    [`${PREFIX}||0|root|root|755|4|0|0|`, OK_LINE, `${PREFIX}/escape|||root|root|777|1|0|0|../../../../../../etc/shadow`, `${PREFIX}/abs|||root|root|777|1|0|0|/etc/shadow`].join('\n') + '\n',
  )
  const m = await mountHere(t, path.join(dir, 'mnt'), config(path.join(dir, 'cache'), [store]))
  t.equal(fs.readlinkSync(path.join(m.mountpoint, 'escape')), '../../../../../../etc/shadow', 'readlink gives the target as written')
  t.ok(fs.lstatSync(path.join(m.mountpoint, 'abs')).isSymbolicLink())
  t.same(fs.readdirSync(m.mountpoint).sort(), ['abs', 'escape', 'ok'])
  t.ok(fs.readFileSync(path.join(m.mountpoint, 'ok')).equals(GOOD.data))
})

t.test('1,000,000 entries in one directory: served in under 1 GiB', async (t) => {
  const N = 1_000_000
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  // Ten real files, the rest empty (an empty file never needs a blob).
  const real = files(10, 4096, 62)
  writeStore(store, real)
  const lines: string[] = real.map((f, i) => `${PREFIX}/big/r${i}|${f.md5}|4096`)
  for (let i = 0; i < N - real.length; i++) lines.push(`${PREFIX}/big/e${String(i).padStart(7, '0')}|${EMPTY_MD5}|0`)
  fs.writeFileSync(path.join(store, 'md', `${SERVICE}.flist`), lines.join('\n') + '\n')
  t.comment(`flist: ${(fs.statSync(path.join(store, 'md', `${SERVICE}.flist`)).size / 2 ** 20).toFixed(0)} MiB`)

  const mnt = path.join(dir, 'mnt')
  const start = Date.now()
  const child = await mountChild(t, { mountpoint: mnt, config: config(path.join(dir, 'cache'), [store]) })
  const mounted = child.usage()
  t.comment(`mounted in ${Date.now() - start} ms; peak RSS ${(mounted.hwm / 2 ** 20).toFixed(0)} MiB, now ${(mounted.rss / 2 ** 20).toFixed(0)} MiB`)

  const t0 = Date.now()
  // `ls -f`: getdents in big batches, no sorting, no stat (node's readdir would hold 1M strings).
  const count = Number(execFileSync('sh', ['-c', `ls -f "${path.join(mnt, 'big')}" | wc -l`], { encoding: 'utf8', maxBuffer: 1 << 20 }).trim())
  t.equal(count, N + 2, 'every entry listed (with . and ..)')
  t.comment(`listed in ${Date.now() - t0} ms`)
  for (const i of [0, 1, 499_999, N - real.length - 1]) {
    const st = fs.statSync(path.join(mnt, 'big', `e${String(i).padStart(7, '0')}`))
    t.equal(st.size, 0, `e${i}: found by name`)
  }
  for (const [i, f] of real.entries()) t.equal(md5(fs.readFileSync(path.join(mnt, 'big', `r${i}`))), f.md5, `r${i} reads right`)
  const after = child.usage()
  t.comment(`after listing and reads: peak RSS ${(after.hwm / 2 ** 20).toFixed(0)} MiB, now ${(after.rss / 2 ** 20).toFixed(0)} MiB`)
  t.ok(after.hwm < 1024 * 2 ** 20, `the mounting process peaked at ${(after.hwm / 2 ** 20).toFixed(0)} MiB (< 1 GiB)`)
})
