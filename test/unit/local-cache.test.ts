// lib/local-cache/: the layout it owns (blobs, md/, tmp/, bad/), temp files and their clean-up,
// putting checked blobs in place, the kept flists, and close() waiting for blobs already handed
// to the committer (no mount, no server: a directory store at most).
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { EMPTY_MD5 } from '../../lib/blob'
import { BAD_DIR, LocalCache, TMP_DIR, cachedBlobs, checkCachedBlob, cleanTmp } from '../../lib/local-cache'
import { blobPath, keptFlistPath } from '../../lib/local-cache/layout'
import { tempName } from '../../lib/local-cache/temp'
import { createFetcher } from '../../lib/pipeline'
import { blob, makeConfig, memLog, randomBytes, writeBlob } from '../helpers/store'
import { tmpdir } from '../helpers/tmp'

function cacheIn(t: Parameters<typeof tmpdir>[0], opts: { quota?: number } = {}): LocalCache {
  const c = new LocalCache({ dir: path.join(tmpdir(t), 'cache'), quota: opts.quota ?? 0, log: memLog() })
  t.teardown(() => c.close())
  return c
}

t.test('layout: <cache>/<h0>/<h1>/<md5>, md/<id>.flist, tmp/ and bad/', async (t) => {
  const md5 = '8a3e5e03a10ecc3601a1f14fbc371019'
  t.equal(blobPath('/c', md5), `/c/8/a/${md5}`)
  t.equal(keptFlistPath('/c', 'svc'), '/c/md/svc.flist')
  t.equal(TMP_DIR, 'tmp')
  t.equal(BAD_DIR, 'bad')
  const c = cacheIn(t)
  t.equal(c.path(md5.toUpperCase()), path.join(c.dir, '8', 'a', md5), 'a blob path is lower case')
  t.equal(c.path(md5), path.join(c.dir, '8', 'a', md5))
  // A directory given unnormalized: the blob paths are normalized all the same.
  const oddDir = path.join(tmpdir(t), 'odd')
  const odd = new LocalCache({ dir: oddDir + '//x/../', quota: 0, log: memLog() })
  t.teardown(() => odd.close())
  t.equal(odd.path(md5), path.join(oddDir, '8', 'a', md5))
  t.equal(odd.path(md5.toUpperCase()), path.join(oddDir, '8', 'a', md5))
  t.equal(odd.path('../../x'), path.join(oddDir, '.', '.', '../../x'), 'not an MD5: normalized as before')
  t.equal(c.tmpDir, path.join(c.dir, 'tmp'))
  t.equal(fs.statSync(c.dir).mode & 0o777, 0o700, 'the directory is 0700')
  t.equal(fs.statSync(c.tmpDir).mode & 0o777, 0o700, 'tmp/ is made, 0700')
})

t.test('a checked blob is put in place; has() wants a regular file of the right size', async (t) => {
  const c = cacheIn(t)
  for (const data of [Buffer.from('small blob\n'), randomBytes(3 << 20, 7)]) {
    const b = blob(data)
    t.notOk(c.has(b.md5, b.size), 'not there yet')
    const w = c.writer(b.md5, b.size)
    t.ok(w.tmpPath.startsWith(c.tmpDir + path.sep), 'its temp file is in tmp/')
    w.write(data)
    w.end()
    await c.commit(w)
    t.same(fs.readFileSync(c.path(b.md5)), data, `${b.size} bytes in place`)
    t.ok(c.has(b.md5, b.size))
    t.notOk(c.has(b.md5, b.size + 1), 'another size is not this blob')
    t.equal(fs.statSync(c.path(b.md5)).mode & 0o777, 0o600, 'the blob is 0600')
  }
  t.same(fs.readdirSync(c.tmpDir), [], 'no temp file is left')
  const link = blob('a link is not a blob\n')
  fs.mkdirSync(path.dirname(c.path(link.md5)), { recursive: true })
  fs.symlinkSync('/etc/passwd', c.path(link.md5))
  t.notOk(c.has(link.md5, fs.statSync('/etc/passwd').size), 'a symlink in the cache is not a blob')
})

t.test('the cache\'s own failures are EIO naming it', async (t) => {
  const c = cacheIn(t)
  const b = blob('x')
  const w = c.writer(b.md5, b.size)
  w.write(b.data)
  w.end()
  // The h0 directory's place taken by a file: the rename cannot happen.
  fs.writeFileSync(path.join(c.dir, b.md5[0]!), 'in the way')
  await t.rejects(c.commit(w), { code: 'EIO', message: new RegExp(`^local cache ${c.dir}: `) })
  t.match(c.failureOf(new Error('ECONNRESET'), c.writer(b.md5, b.size)), undefined, 'a source\'s error is not the cache\'s')
})

t.test('tmp/ removed under a running cache is made again for the next writer', async (t) => {
  const c = cacheIn(t)
  fs.rmSync(c.tmpDir, { recursive: true })
  const big = randomBytes(2 << 20, 3)
  const w = c.writer(blob(big).md5, big.length)
  t.ok(fs.existsSync(c.tmpDir))
  w.abort()
})

t.test('temp files: named for their writer; those of dead writers are removed at start', async (t) => {
  const dir = path.join(tmpdir(t), 'cache')
  fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true, mode: 0o700 })
  fs.chmodSync(dir, 0o700)
  const mine = tempName(path.join(dir, 'tmp'), EMPTY_MD5)
  t.match(path.basename(mine), new RegExp(`^${process.pid}\\.\\d+\\.[0-9a-f]{8}\\.\\d+\\.\\d+\\.${EMPTY_MD5}$`))
  fs.writeFileSync(mine, 'alive')
  // A pid that is not running (pid_max is at most 2^22), in our pid namespace: dead for sure.
  const dead = path.join(dir, 'tmp', path.basename(mine).replace(/^\d+/, String(2 ** 22 + 1)))
  fs.writeFileSync(dead, 'dead')
  const c = new LocalCache({ dir, quota: 0, log: memLog() })
  t.teardown(() => c.close())
  t.ok(fs.existsSync(mine), 'a live writer\'s temp file stays')
  t.notOk(fs.existsSync(dead), 'a dead writer\'s goes')
  t.equal(cleanTmp(c.tmpDir), 0, 'and nothing else is left to clean')
})

t.test('kept flists: replaced atomically, with or without their signature', async (t) => {
  const c = cacheIn(t)
  t.throws(() => c.readKeptFlist('svc', true), { code: 'ENOENT' }, 'none kept yet')
  c.keepFlist('svc', Buffer.from('one\n'), Buffer.from('sig one\n'))
  t.same(c.readKeptFlist('svc', true), { file: c.keptFlistFile('svc'), data: Buffer.from('one\n'), signature: Buffer.from('sig one\n') })
  t.equal(fs.statSync(c.keptFlistFile('svc')).mode & 0o777, 0o600)
  c.keepFlist('svc', Buffer.from('two\n'), null)
  t.same(c.readKeptFlist('svc', true).signature, Buffer.from('sig one\n'), 'null keeps the signature there')
  c.keepFlist('svc', Buffer.from('three\n'), undefined)
  t.same(c.readKeptFlist('svc', true), { file: c.keptFlistFile('svc'), data: Buffer.from('three\n') }, 'undefined removes a stale one')
  t.same(fs.readdirSync(c.tmpDir), [], 'no temp file is left')
})

t.test('kept start-up lists: beside the flist, 0600, removed with their signature; a link there is never read', async (t) => {
  const c = cacheIn(t)
  t.equal(c.readKeptStartup('svc', true, 1000), undefined, 'none kept yet')
  c.keepStartup('svc', Buffer.from('list\n'), Buffer.from('sig\n'))
  const file = path.join(c.dir, 'md', 'svc.startup')
  t.same(c.readKeptStartup('svc', true, 1000), { file, data: Buffer.from('list\n'), signature: Buffer.from('sig\n') })
  t.equal(fs.statSync(file).mode & 0o777, 0o600)
  t.throws(() => c.readKeptStartup('svc', false, 3), { code: 'EFBIG' }, 'larger than asked for')
  c.keepStartup('svc', undefined, null)
  t.notOk(fs.existsSync(file) || fs.existsSync(`${file}.sig`), 'both removed')
  const target = path.join(c.dir, 'elsewhere')
  fs.writeFileSync(target, 'not a list\n')
  fs.symlinkSync(target, file)
  t.throws(() => c.readKeptStartup('svc', false, 1000), { code: 'ELOOP' }, 'a link is not followed')
  c.keepStartup('svc', Buffer.from('new\n'), undefined)
  t.ok(fs.lstatSync(file).isFile(), 'a new copy replaces the link')
  t.equal(fs.readFileSync(target, 'utf8'), 'not a list\n', 'and never writes through it')
  t.same(fs.readdirSync(c.tmpDir), [], 'no temp file is left')
})

t.test('verify\'s helpers: every blob-named file, re-hashed; a bad one moved to bad/', async (t) => {
  const c = cacheIn(t)
  const good = writeBlob(c.dir, 'good\n', { layout: 'cache' })
  const bad = writeBlob(c.dir, 'bad\n', { layout: 'cache' })
  fs.writeFileSync(c.path(bad.md5), 'changed on disk\n')
  fs.writeFileSync(path.join(c.dir, 'not-a-blob'), '')
  t.same([...cachedBlobs(c.dir)].map((b) => b.md5).sort(), [good.md5, bad.md5].sort())
  t.equal(checkCachedBlob(c.dir, good.md5, { moveAside: true }), 'ok')
  t.equal(checkCachedBlob(c.dir, bad.md5, { moveAside: true }), 'bad')
  t.notOk(fs.existsSync(c.path(bad.md5)), 'moved away')
  t.match(fs.readdirSync(path.join(c.dir, 'bad')), [new RegExp(`^${bad.md5}\\.\\d+$`)])
  t.equal(checkCachedBlob(c.dir, bad.md5), 'missing')
})

t.test('close() waits for blobs already handed to the committer', async (t) => {
  const c = new LocalCache({ dir: path.join(tmpdir(t), 'cache'), quota: 0, log: memLog() })
  const blobs = Array.from({ length: 20 }, (_, i) => blob(`blob ${i}\n`))
  const commits = blobs.map((b) => {
    const w = c.writer(b.md5, b.size)
    w.write(b.data)
    w.end()
    return c.commit(w)
  })
  await c.close()
  for (const b of blobs) t.ok(fs.existsSync(c.path(b.md5)), `${b.md5} is in place when close() resolves`)
  await Promise.all(commits)
})

t.test('Pipeline.close() waits for the commit of a blob whose readers were answered', async (t) => {
  // Readers are answered from the checked bytes before the blob is in the cache (the committer
  // writes, fsyncs and renames it on its own threads). A close() right then must still leave the
  // blob in place, or gone, by the time it resolves: whoever removes the cache next (a test's
  // teardown after unmount()) must not race a late rename.
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const cache = path.join(dir, 'cache')
  const b = writeBlob(store, randomBytes(64 << 10, 11))
  const f = createFetcher({ config: makeConfig({ cache, stores: [store] }), log: memLog(), fsync: true })
  const file = path.join(cache, b.md5[0]!, b.md5[1]!, b.md5)
  let atClose: boolean | undefined
  const fetched = f.fetch(b.md5, b.size, () => {
    // The commit is handed to the committer right after this returns: close() the turn after.
    setImmediate(() => void f.close().then(() => (atClose = fs.existsSync(file))))
  })
  await fetched.catch(() => undefined)
  await until(() => atClose !== undefined)
  t.equal(atClose, true, 'the blob is in place when close() resolves')
  t.same(fs.readdirSync(path.join(cache, 'tmp')), [], 'and no temp file is left')
})

/** Polls `cond` every few ms until it holds (10 s at most). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((resolve) => setTimeout(resolve, 5))
  if (!cond()) throw new Error('timed out')
}
