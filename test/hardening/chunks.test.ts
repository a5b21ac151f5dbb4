// Chunked files through a real mount: a flist whose regular files carry key=value entries in the
// extended field (a chunk index, keys this version does not know) mounts and serves them.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { PREFIX, SERVICE, config, files, mountHere, writeStore } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'

t.test('a flist with chunks= and unknown extended keys mounts and serves its files', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const [a, b] = files(2, 5000, 181)
  writeStore(store, [a!, b!])
  // No index blob is in the store: the whole blob serves the read.
  const lines = [
    `${PREFIX}/a|${a!.md5}|${a!.data.length}|root|root|644|2|1|2|chunks=${'0'.repeat(32)},later=1`,
    `${PREFIX}/b|${b!.md5}|${b!.data.length}|root|root|644|2|1|2|some.future-key=x=y`,
  ]
  fs.writeFileSync(path.join(store, 'md', `${SERVICE}.flist`), lines.join('\n') + '\n')
  const mnt = path.join(dir, 'mnt')
  await mountHere(t, mnt, config(path.join(dir, 'cache'), [store]))
  t.same(fs.readFileSync(path.join(mnt, 'a')), a!.data)
  t.same(fs.readFileSync(path.join(mnt, 'b')), b!.data)
  t.equal(fs.statSync(path.join(mnt, 'a')).mode & 0o7777, 0o644)
})
