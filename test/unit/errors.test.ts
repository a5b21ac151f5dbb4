// One error family: what reaches a user is an AysfsError with an errno-style code, whatever
// failed underneath (a source that cannot be made, a blob verify cannot read, a store publish
// cannot write to).
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { AysfsError, exitCodeFor, fromSystemError } from '../../lib/errors'
import { createFetcher } from '../../lib/pipeline'
import { publish } from '../../lib/publish'
import { verify } from '../../lib/verify'
import { makeConfig, memLog } from '../helpers/store'
import { tmpdir } from '../helpers/tmp'

t.test('fromSystemError keeps the code and the cause, and says what failed', async (t) => {
  const raw = Object.assign(new Error("EACCES: permission denied, open '/x'"), { code: 'EACCES' })
  const e = fromSystemError(raw, 'store /s', { key: 'store[0].url' })
  t.ok(e instanceof AysfsError)
  t.match(e, { code: 'EACCES', key: 'store[0].url', message: "store /s: EACCES: permission denied, open '/x'", cause: raw })
  t.equal(fromSystemError(new Error('odd'), 'x').code, 'EIO', 'no code: EIO')
  t.equal(exitCodeFor(e), 1)
})

t.test('a token_file that cannot be read fails the fetcher at start with EINVAL naming the key', async (t) => {
  const dir = tmpdir(t)
  const config = makeConfig({ cache: path.join(dir, 'cache'), stores: [{ url: 'http://127.0.0.1:1/store', tokenFile: path.join(dir, 'no-such-token') }] })
  let err: unknown
  try {
    await createFetcher({ config, log: memLog() }).close()
  } catch (e) {
    err = e
  }
  t.ok(err instanceof AysfsError, 'an AysfsError, not a source fault')
  t.match(err, { code: 'EINVAL', key: 'store[0].token_file', message: /cannot read token_file .*no-such-token/ })
  t.equal(exitCodeFor(err), 2, 'a configuration error')
})

t.test('verify: a blob it cannot read is an AysfsError naming it', async (t) => {
  const cache = path.join(tmpdir(t), 'cache')
  const md5 = '0123456789abcdef0123456789abcdef'
  // A directory where a blob should be: open works, read fails (EISDIR), even for root.
  fs.mkdirSync(path.join(cache, '0', '1', md5), { recursive: true })
  fs.chmodSync(cache, 0o700)
  await t.rejects(verify({ cache, progress: false }), { name: 'AysfsError', code: 'EISDIR', message: new RegExp(`^verify: ${cache}/0/1/${md5}: EISDIR`) })
})

t.test('publish: a store it cannot write the flist to is an AysfsError naming it', async (t) => {
  const dir = tmpdir(t)
  const tree = path.join(dir, 'tree')
  const store = path.join(dir, 'store')
  fs.mkdirSync(tree)
  fs.writeFileSync(path.join(tree, 'f'), 'content\n')
  fs.mkdirSync(store)
  fs.writeFileSync(path.join(store, 'md'), 'a file where md/ should be\n')
  // Found before any work: the store is checked before the first file is hashed.
  await t.rejects(publish({ dir: tree, id: 'svc', store, progress: false, fsync: false }), {
    name: 'AysfsError',
    code: 'ENOTDIR',
    message: `store ${store}: ${store}/md is not a directory`,
  })
  t.notOk(fs.existsSync(path.join(store, 'files')), 'no blob was written')
})
