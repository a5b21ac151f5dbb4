// Name and path bounds at a real mount: a directory holding the longest allowed name (255 bytes)
// lists, stats and reads fine; a flist with a longer name (a 5,000-byte one made listing its
// directory fail with EIO) is refused at mount, naming the flist and the line.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { PREFIX, SERVICE, config, files, mountHere, writeStore } from '../helpers/hardening'
import { mountsBelow, tmpdir } from '../helpers/mount'
import { mount } from '../../lib/index'

t.test('a 255-byte name: listed, looked up, read; a 256-byte one: the flist is refused', async (t) => {
  const dir = tmpdir(t)
  const root = path.join(dir, 'store')
  const [f, g] = files(2, 1000, 97)
  writeStore(root, [f!, g!])
  const dname = 'd'.repeat(255)
  // 85 × "日" is 255 bytes of UTF-8 (85 characters).
  const fname = '日'.repeat(85)
  t.equal(Buffer.byteLength(fname), 255)
  fs.writeFileSync(
    path.join(root, 'md', `${SERVICE}.flist`),
    [`${PREFIX}/${dname}/${fname}|${f!.md5}|1000`, `${PREFIX}/${dname}/short|${g!.md5}|1000`, `${PREFIX}/${'s'.repeat(255)}|||root|root|777|1|0|0|${dname}/short`].join('\n') + '\n',
  )
  const m = await mountHere(t, path.join(dir, 'mnt'), config(path.join(dir, 'cache'), [root]))
  t.same(fs.readdirSync(m.mountpoint).sort(), [dname, 's'.repeat(255)], 'the root lists')
  t.same(fs.readdirSync(path.join(m.mountpoint, dname)).sort(), ['short', fname].sort(), 'the directory of the longest name lists')
  const ls = execFileSync('ls', ['-la', path.join(m.mountpoint, dname)], { encoding: 'utf8' })
  t.match(ls, fname, 'ls -la too')
  t.ok(fs.statSync(path.join(m.mountpoint, dname, fname)).isFile())
  t.ok(fs.readFileSync(path.join(m.mountpoint, dname, fname)).equals(f!.data), 'it reads')
  t.ok(fs.readFileSync(path.join(m.mountpoint, 's'.repeat(255))).equals(g!.data), 'through a symlink of a 255-byte name too')

  // One byte more: refused at mount, naming the flist and the line; nothing mounted.
  const root2 = path.join(dir, 'store2')
  writeStore(root2, [f!])
  fs.writeFileSync(path.join(root2, 'md', `${SERVICE}.flist`), `${PREFIX}/ok|${f!.md5}|1000\n${PREFIX}/${'x'.repeat(5000)}|${f!.md5}|1000\n`)
  const mnt2 = path.join(dir, 'mnt2')
  fs.mkdirSync(mnt2)
  await t.rejects(mount({ mountpoint: mnt2, config: config(path.join(dir, 'cache2'), [root2]), log: { level: 'silent' } }), {
    code: 'EINVAL',
    line: 2,
    message: new RegExp(`^flist ${SERVICE} \\(${SERVICE}\\.flist\\) line 2: path ".*"\\.\\.\\. has a component of 5000 bytes: at most 255 \\(NAME_MAX\\)`),
  })
  t.same(mountsBelow(mnt2), [], 'nothing mounted')
})
