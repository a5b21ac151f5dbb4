// publish --revision: always above the store's revision, by default the current Unix time; and
// a new flist gets an mtime later than the old one's, so that nginx's ETag changes even for a
// same-size flist published within the same second.
import * as fs from 'node:fs'
import * as http from 'node:http'
import * as path from 'node:path'
import t from 'tap'
import { publish } from '../../lib/publish'
import { generateKeyPair, parseSignature } from '../../lib/sign'
import { startNginx } from '../helpers/nginx'
import { publishDirs, tmpdir } from '../helpers/tmp'

const ID = 'svc'

function sigOf(store: string) {
  return parseSignature(fs.readFileSync(path.join(store, 'md', `${ID}.flist.sig`)))
}

t.test('the revision: default the time, always above the store, an explicit one checked', async (t) => {
  const { dir, src, store } = publishDirs(t, { a: 'a\n' })
  const key = generateKeyPair(path.join(dir, 'keys'))
  const now = () => 1_800_000_000_500
  const base = { dir: src, id: ID, store, prefix: '/x', sign: key.privateKey, progress: false as const, fsync: false, now }

  const r1 = await publish(base)
  t.equal(r1.revision, 1_800_000_000, 'the current Unix time in seconds')
  t.match(sigOf(store), { version: 2, id: ID, revision: 1_800_000_000 })
  const r2 = await publish(base)
  t.equal(r2.revision, 1_800_000_001, 'the same second again: the store revision + 1')
  await t.rejects(publish({ ...base, revision: 1_800_000_001 }), {
    code: 'EUSAGE',
    message: `--revision 1800000001: the store has revision 1800000001 of ${ID} (${path.join(store, 'md', `${ID}.flist`)}.sig); a new revision must be greater, or nodes that have revision 1800000001 refuse it (leave --revision out for the current time in seconds)`,
  })
  await t.rejects(publish({ ...base, revision: 5 }), { code: 'EUSAGE', message: /must be greater/ })
  t.equal(sigOf(store).revision, 1_800_000_001, 'nothing written')
  t.equal((await publish({ ...base, revision: 1_900_000_000 })).revision, 1_900_000_000)
  t.equal((await publish(base)).revision, 1_900_000_001, 'the default stays above a revision set by hand')
  await t.rejects(publish({ ...base, sign: undefined, revision: 2_000_000_000 }), { code: 'EUSAGE', message: '--revision needs --sign: the revision is carried by the signature' })
  await t.rejects(publish({ ...base, revision: -1 }), { code: 'EUSAGE', message: /--revision -1: expected an integer/ })
})

/** A GET of `url` with `headers`: the status and the ETag. */
function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; etag?: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        res.resume()
        res.on('end', () => resolve({ status: res.statusCode ?? 0, etag: res.headers.etag }))
      })
      .on('error', reject)
  })
}

t.test('a same-size flist published within the same second gets a new ETag from nginx', async (t) => {
  const dir = tmpdir(t)
  const key = generateKeyPair(path.join(dir, 'keys'))
  const src = path.join(dir, 'src')
  fs.mkdirSync(src)
  const store = path.join(dir, 'store')
  const n = await startNginx({ store })
  t.teardown(() => n.stop())
  const file = path.join(src, 'a')
  // Same size, other bytes, same mtime: the flist has the same length both times.
  fs.writeFileSync(file, 'one\n')
  fs.utimesSync(file, 1_700_000_000, 1_700_000_000)
  const now = () => Date.now()
  await publish({ dir: src, id: ID, store, prefix: '/x', sign: key.privateKey, progress: false, fsync: false, now })
  const flistUrl = `${n.url}/store/md/${ID}.flist`
  const first = await get(flistUrl)
  const firstSig = await get(`${flistUrl}.sig`)
  const size1 = fs.statSync(path.join(store, 'md', `${ID}.flist`)).size
  fs.writeFileSync(file, 'two\n')
  fs.utimesSync(file, 1_700_000_000, 1_700_000_000)
  await publish({ dir: src, id: ID, store, prefix: '/x', sign: key.privateKey, progress: false, fsync: false, now })
  t.equal(fs.statSync(path.join(store, 'md', `${ID}.flist`)).size, size1, 'the same size')
  const second = await get(flistUrl, { 'If-None-Match': first.etag! })
  t.equal(second.status, 200, 'nginx says it changed')
  t.not(second.etag, first.etag)
  t.equal((await get(`${flistUrl}.sig`, { 'If-None-Match': firstSig.etag! })).status, 200, 'and so did the signature')
  t.equal((await get(flistUrl, { 'If-None-Match': second.etag! })).status, 304, 'unchanged since: 304')
})

t.test('the new flist and signature are always later than the old ones, even against a clock that lags', async (t) => {
  const { dir, src, store } = publishDirs(t, { a: 'one\n' })
  const key = generateKeyPair(path.join(dir, 'keys'))
  const opts = { dir: src, id: ID, store, prefix: '/x', sign: key.privateKey, progress: false as const, fsync: false }
  await publish(opts)
  const flist = path.join(store, 'md', `${ID}.flist`)
  // The old pair is dated in the future of this clock (written by a host whose clock runs ahead,
  // or in this very second): the new one must still be later, or validators would not change.
  const ahead = Math.floor(Date.now() / 1000) + 100
  fs.utimesSync(flist, ahead, ahead)
  fs.utimesSync(`${flist}.sig`, ahead, ahead)
  fs.writeFileSync(path.join(src, 'a'), 'two\n')
  await publish(opts)
  t.equal(Math.floor(fs.statSync(flist).mtimeMs / 1000), ahead + 1, 'the flist: a second after the old one')
  t.equal(Math.floor(fs.statSync(`${flist}.sig`).mtimeMs / 1000), ahead + 1, 'the signature too')
})

t.test('prefetch never takes an older signed revision than the cache accepted (nor keeps it)', async (t) => {
  const { prefetch } = await import('../../lib/prefetch')
  const { checkConfig } = await import('../../lib/config')
  const { Revisions, sha256 } = await import('../../lib/revisions')
  const { createLogger } = await import('../../lib/log')
  const dir = tmpdir(t)
  const key = generateKeyPair(path.join(dir, 'keys'))
  const src = path.join(dir, 'src')
  fs.mkdirSync(src)
  fs.writeFileSync(path.join(src, 'a'), 'a\n')
  const store = path.join(dir, 'store')
  await publish({ dir: src, id: ID, store, prefix: '/x', sign: key.privateKey, revision: 1, progress: false, fsync: false })
  const cache = path.join(dir, 'cache')
  fs.mkdirSync(cache, { mode: 0o700 })
  const log = createLogger({ level: 'silent' })
  // A mount of this cache accepted revision 2.
  new Revisions({ cacheDir: cache, log }).accept(ID, 2, sha256(Buffer.from('revision 2')))
  const config = checkConfig({ main: { cache, prefix: '/x', trusted_keys: [key.publicKey] }, ays: [{ id: ID }], store: [{ url: store }] })
  await t.rejects(prefetch({ config, log, progress: false }), { code: 'EACCES', message: /rollback refused: store\[0\] .* offers revision 1, older than revision 2/ })
  t.notOk(fs.existsSync(path.join(cache, 'md', `${ID}.flist`)), 'the older flist is not kept')
})
