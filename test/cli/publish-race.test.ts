// `publish` against a tree that changes under it: a file swapped (between the walk and the open)
// for a link to a secret, a FIFO, or a directory link never reaches the store and is left out
// with a warning (--strict: exit 1); a file whose bytes change between hashing and storing is not
// stored.
//
// The swaps are deterministic: publish's test hook (AYSFS_PUBLISH_TEST_HOOK, a module it runs
// after the walk and before it opens any file) does them.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { Worker } from 'node:worker_threads'
import t, { type Test } from 'tap'
import type { HashJob, HashReply } from '../../lib/hash-worker'
import { ROOT, run } from '../helpers/cli'
import { tmpdir } from '../helpers/tmp'
import { md5 } from '../helpers/tree'

const SECRET = `root-only secret ${crypto.randomBytes(8).toString('hex')}\n`

interface Tree {
  dir: string
  src: string
  store: string
  /** A 0600 file outside the tree. */
  secret: string
  /** A directory outside the tree holding `etc/app.conf`'s name with the secret in it. */
  secretDir: string
  /** The file the hooks swap. */
  victim: string
}

function makeTree(t: Test): Tree {
  const dir = tmpdir(t, 'aysfs-race-')
  const src = path.join(dir, 'src')
  fs.mkdirSync(path.join(src, 'etc'), { recursive: true })
  fs.mkdirSync(path.join(src, 'bin'))
  fs.writeFileSync(path.join(src, 'etc', 'app.conf'), 'public config\n')
  fs.writeFileSync(path.join(src, 'etc', 'other.conf'), 'other config\n')
  fs.writeFileSync(path.join(src, 'bin', 'tool'), 'a tool\n')
  const secret = path.join(dir, 'secret')
  fs.writeFileSync(secret, SECRET, { mode: 0o600 })
  const secretDir = path.join(dir, 'private')
  fs.mkdirSync(secretDir)
  fs.writeFileSync(path.join(secretDir, 'app.conf'), SECRET, { mode: 0o600 })
  return { dir, src, store: path.join(dir, 'store'), secret, secretDir, victim: path.join(src, 'etc', 'app.conf') }
}

/** A hook module running `body` (CommonJS; `fs`, `path`, `cp` in scope) once, after the walk. */
function hook(tree: Tree, body: string): string {
  const file = path.join(tree.dir, `hook-${crypto.randomBytes(4).toString('hex')}.js`)
  fs.writeFileSync(file, `const fs = require('fs'); const path = require('path'); const cp = require('child_process')\nmodule.exports = (files) => {\n${body}\n}\n`)
  return file
}

/** Every file under `dir` (links not followed). */
function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return []
  return (fs.readdirSync(dir, { recursive: true, withFileTypes: true }) as fs.Dirent[]).filter((d) => d.isFile()).map((d) => path.join(d.parentPath, d.name))
}

function assertNoSecret(t: Test, store: string): void {
  const leaked = filesUnder(store).filter((f) => fs.readFileSync(f).includes(SECRET))
  t.same(leaked, [], "the secret's bytes are nowhere in the store")
  const m = md5(SECRET)
  t.notOk(fs.existsSync(path.join(store, 'files', m[0]!, m[1]!, m)), 'no blob named by its MD5')
}

function flistText(store: string): string {
  return fs.readFileSync(path.join(store, 'md', 'svc.flist'), 'utf8')
}

const publishArgs = (tree: Tree, ...extra: string[]): string[] => ['publish', tree.src, '--id', 'svc', '--store', tree.store, '--prefix', '/opt/app', ...extra]

t.test('a file swapped for a link to a secret after the walk: never followed, left out with a warning; --strict fails', async (t) => {
  const swap = (tree: Tree): string => hook(tree, `fs.rmSync(${JSON.stringify(tree.victim)}); fs.symlinkSync(${JSON.stringify(tree.secret)}, ${JSON.stringify(tree.victim)})`)

  const tree = makeTree(t)
  const r = await run(publishArgs(tree), { env: { AYSFS_PUBLISH_TEST_HOOK: swap(tree) }, timeout: 60_000 })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stderr, `warning: ${tree.victim} left out: it is a symbolic link now (not followed)`)
  t.match(r.stdout, 'left out 1 file(s) that changed while they were published')
  assertNoSecret(t, tree.store)
  const text = flistText(tree.store)
  t.notMatch(text, '/opt/app/etc/app.conf|', 'not in the flist')
  t.match(text, `/opt/app/etc/other.conf|${md5('other config\n')}|`, 'the rest is published')
  t.match(text, `/opt/app/bin/tool|${md5('a tool\n')}|`)

  const strict = makeTree(t)
  const s = await run(publishArgs(strict, '--strict'), { env: { AYSFS_PUBLISH_TEST_HOOK: swap(strict) }, timeout: 60_000 })
  t.equal(s.code, 1, 'exit status 1')
  t.match(s.stderr, /1 file\(s\) changed while they were published \(--strict\); the flist was not written/)
  t.match(s.stderr, `${strict.victim}: is a symbolic link now (not followed)`)
  t.notOk(fs.existsSync(path.join(strict.store, 'md', 'svc.flist')), 'no flist written')
  assertNoSecret(t, strict.store)
})

t.test('a directory above a file swapped for a link to elsewhere: the device/inode check catches it', async (t) => {
  const tree = makeTree(t)
  const etc = path.join(tree.src, 'etc')
  const h = hook(tree, `fs.renameSync(${JSON.stringify(etc)}, ${JSON.stringify(`${etc}.moved`)}); fs.symlinkSync(${JSON.stringify(tree.secretDir)}, ${JSON.stringify(etc)})`)
  const r = await run(publishArgs(tree), { env: { AYSFS_PUBLISH_TEST_HOOK: h }, timeout: 60_000 })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stderr, `warning: ${tree.victim} left out: it was replaced by another file`)
  t.match(r.stderr, `warning: ${path.join(etc, 'other.conf')} left out: it was removed`)
  assertNoSecret(t, tree.store)
  t.match(flistText(tree.store), `/opt/app/bin/tool|${md5('a tool\n')}|`)
})

t.test('a file swapped for a FIFO after the walk: never opened for a blocking read, left out; --strict fails', async (t) => {
  const swap = (tree: Tree): string => hook(tree, `fs.rmSync(${JSON.stringify(tree.victim)}); cp.execFileSync('mkfifo', [${JSON.stringify(tree.victim)}])`)

  const tree = makeTree(t)
  // Bounded: a publish that waited on the FIFO would be killed here, and fail the test.
  const r = await run(publishArgs(tree), { env: { AYSFS_PUBLISH_TEST_HOOK: swap(tree) }, timeout: 30_000 })
  t.equal(r.signal, null, 'publish finished by itself (it did not hang on the FIFO)')
  t.equal(r.code, 0, r.stderr)
  t.match(r.stderr, `warning: ${tree.victim} left out: it is not a regular file any more (a fifo now; not read)`)
  t.notMatch(flistText(tree.store), '/opt/app/etc/app.conf|')
  t.match(flistText(tree.store), '/opt/app/etc/other.conf|')

  const strict = makeTree(t)
  const s = await run(publishArgs(strict, '--strict'), { env: { AYSFS_PUBLISH_TEST_HOOK: swap(strict) }, timeout: 30_000 })
  t.equal(s.signal, null, 'did not hang')
  t.equal(s.code, 1)
  t.match(s.stderr, `${strict.victim}: is not a regular file any more (a fifo now; not read)`)
  t.notOk(fs.existsSync(path.join(strict.store, 'md', 'svc.flist')))
})

t.test('a file that changed size after the walk is left out; an untouched rerun publishes it', async (t) => {
  const tree = makeTree(t)
  const h = hook(tree, `fs.appendFileSync(${JSON.stringify(tree.victim)}, 'more\\n')`)
  const r = await run(publishArgs(tree), { env: { AYSFS_PUBLISH_TEST_HOOK: h }, timeout: 60_000 })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stderr, `warning: ${tree.victim} left out: it changed size (14 bytes when listed, 19 now)`)
  t.notMatch(flistText(tree.store), '/opt/app/etc/app.conf|')
  const again = await run(publishArgs(tree), { timeout: 60_000 })
  t.equal(again.code, 0, again.stderr)
  t.notMatch(again.stderr, 'warning')
  t.match(flistText(tree.store), `/opt/app/etc/app.conf|${md5('public config\nmore\n')}|19|`)
})

t.test('bytes that change between hashing and storing are not stored (the copy re-checks the MD5 of what it wrote)', async (t) => {
  const dir = tmpdir(t, 'aysfs-race-')
  const file = path.join(dir, 'f')
  fs.writeFileSync(file, 'original bytes\n')
  const st = fs.statSync(file, { bigint: true })
  const w = new Worker(path.join(ROOT, 'dist', 'lib', 'hash-worker.js'))
  t.teardown(() => w.terminate())
  const ask = (job: HashJob): Promise<HashReply> =>
    new Promise((resolve) => {
      w.once('message', resolve)
      w.postMessage(job)
    })
  const h = await ask({ id: 1, op: 'hash', files: [{ file, dev: st.dev, ino: st.ino, size: Number(st.size) }], store: path.join(dir, 'store') })
  t.match(h, { id: 1, results: [{ md5: md5('original bytes\n'), held: Number }] }, 'the store lacks it: the worker holds the file open for the copy')
  const handle = (h as unknown as { results: [{ held: number }] }).results[0].held
  fs.writeFileSync(file, 'replaced bytes\n') // same inode, same size, other bytes
  const dest = path.join(dir, 'store', 'files', 'x', 'y', 'blob')
  const c = await ask({ id: 2, op: 'copy', of: handle, dest, fsync: false })
  t.same(c, { id: 2, changed: 'changed between hashing and storing (its MD5 is not what was hashed)' })
  t.notOk(fs.existsSync(dest), 'nothing renamed into the store')
  t.same(fs.readdirSync(path.dirname(dest)), [], 'and no temp file left')
  t.match(await ask({ id: 3, op: 'release', of: handle }), { id: 3, error: { message: `release: no file is held as ${handle}` } }, 'the copy closed the file')
})
