// Small files pushed whole into the kernel's page cache, so that reading them sends no READ: a
// file a lookup names, and a directory's files after two were read from the start in it.
// Larger files, blobs that are not there (or not of the entry's size), files the kernel has no
// inode for and pushFiles: 0 push nothing, and every reader still gets the bytes as stored.
// Also: an ioctl on a file (isatty) is answered ENOTTY and counted.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import tty from 'node:tty'
import t from 'tap'
import type { Engine } from '../../lib/engine'
import { fixtureFetcher, mountEngine, tmpdir } from '../helpers/mount'
import { EMPTY_MD5, md5, tableFor, type GenEntry } from '../helpers/tree'

const LIMIT = 128 << 10

interface File {
  name: string
  content: Buffer
  cached: 'yes' | 'no' | 'short'
}

async function setup(t: Parameters<typeof mountEngine>[0], files: File[], pushFiles?: number, dir_ = '') {
  const dir = tmpdir(t)
  const entries: GenEntry[] = dir_ ? [{ path: dir_, kind: 'dir', perms: 0o755, size: 0, md5: EMPTY_MD5, mtime: 1_700_000_000 }] : []
  const cacheDir = path.join(dir, 'cache')
  const sourceDir = path.join(dir, 'source')
  fs.mkdirSync(sourceDir)
  for (const f of files) {
    const hash = md5(f.content)
    fs.writeFileSync(path.join(sourceDir, hash), f.content)
    if (f.cached !== 'no') {
      fs.mkdirSync(path.join(cacheDir, hash[0]!, hash[1]!), { recursive: true })
      fs.writeFileSync(path.join(cacheDir, hash[0]!, hash[1]!, hash), f.cached === 'yes' ? f.content : f.content.subarray(1))
    }
    entries.push({ path: f.name.startsWith('/') ? f.name : `${dir_}/${f.name}`, kind: 'file', perms: 0o644, size: f.content.length, md5: hash, mtime: 1_700_000_000 })
  }
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor(entries),
    fetcher: fixtureFetcher({ cacheDir, mode: 'copy', sourceDir }),
    ...(pushFiles !== undefined ? { pushFiles } : {}),
  })
  return { engine, mnt, cacheDir }
}

function blobPath(cacheDir: string, content: Buffer): string {
  const hash = md5(content)
  return path.join(cacheDir, hash[0]!, hash[1]!, hash)
}

/** Waits until the engine has pushed `bytes` after lookups (the push runs on its own thread). */
async function pushed(engine: Engine, bytes: number): Promise<number> {
  const deadline = Date.now() + 5000
  while (engine.stats().pushedFiles < bytes && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
  return engine.stats().pushedFiles
}

t.test('small cached files: pushed at lookup, then read with no READ', async (t) => {
  const files: File[] = [1, 4095, 4096, 100_000, LIMIT].map((n, i) => ({ name: `f${i}`, content: crypto.randomBytes(n), cached: 'yes' }))
  const { engine, mnt } = await setup(t, files)
  for (const f of files) fs.statSync(path.join(mnt, f.name))
  const total = files.reduce((n, f) => n + f.content.length, 0)
  t.equal(await pushed(engine, total), total, 'every byte of every file pushed')
  const before = engine.stats()
  for (const f of files) t.ok(fs.readFileSync(path.join(mnt, f.name)).equals(f.content), `${f.name} as stored`)
  const after = engine.stats()
  t.equal(after.ops.read - before.ops.read, 0, 'no READ request')
})

t.test('too large, not cached, or the wrong size: nothing pushed, reads still exact', async (t) => {
  const files: File[] = [
    { name: 'large', content: crypto.randomBytes(LIMIT + 1), cached: 'yes' },
    { name: 'absent', content: crypto.randomBytes(5000), cached: 'no' },
    { name: 'short', content: crypto.randomBytes(5000), cached: 'short' },
    { name: 'sentinel', content: crypto.randomBytes(700), cached: 'yes' },
  ]
  const { engine, mnt } = await setup(t, files)
  for (const f of files) fs.statSync(path.join(mnt, f.name))
  // One pusher thread takes its queue in order: once the sentinel is pushed, the others were
  // decided.
  t.equal(await pushed(engine, 700), 700, 'only the sentinel pushed')
  const before = engine.stats().ops.read
  for (const f of files) t.ok(fs.readFileSync(path.join(mnt, f.name)).equals(f.content), `${f.name} as stored`)
  const s = engine.stats()
  t.equal(s.pushedFiles, 700, 'still only the sentinel')
  t.ok(s.ops.read - before >= 3, `${s.ops.read - before} READ requests for the other three`)
  t.equal(s.missCalls, 2, 'the absent and the short blob fetched')
})

t.test('pushFiles: 0 turns it off', async (t) => {
  const files: File[] = [{ name: 'small', content: crypto.randomBytes(3000), cached: 'yes' }]
  const { engine, mnt } = await setup(t, files, 0)
  fs.statSync(path.join(mnt, 'small'))
  // A wait to see that nothing happens, bounded: with pushFiles 0 the pusher of small files does
  // not even run, so there is no later push to wait for instead.
  await new Promise((r) => setTimeout(r, 50))
  t.ok(fs.readFileSync(path.join(mnt, 'small')).equals(files[0]!.content), 'as stored')
  const s = engine.stats()
  t.equal(s.pushedFiles, 0)
  t.equal(s.ops.read, 1, 'one READ')
})

t.test('isatty on a file of the mount: false, one ioctl request each', async (t) => {
  const files: File[] = [{ name: 'small', content: crypto.randomBytes(10), cached: 'yes' }]
  const { engine, mnt } = await setup(t, files)
  const fd = fs.openSync(path.join(mnt, 'small'), 'r')
  t.teardown(() => fs.closeSync(fd))
  const before = engine.stats().ops.ioctl
  t.equal(tty.isatty(fd), false)
  t.equal(tty.isatty(fd), false)
  t.equal(engine.stats().ops.ioctl - before, 2, 'the kernel asks every time')
})

t.test("a walk: after two small reads in a directory, its other files are pushed", async (t) => {
  const files: File[] = Array.from({ length: 10 }, (_, i) => ({ name: `f${i}`, content: crypto.randomBytes(100 + i * 3000), cached: 'yes' as const }))
  files.push({ name: 'g-large', content: crypto.randomBytes(LIMIT + 1), cached: 'yes' })
  files.push({ name: 'h-absent', content: crypto.randomBytes(2000), cached: 'no' })
  const mark: File = { name: '/mark', content: crypto.randomBytes(333), cached: 'yes' }
  const { engine, mnt } = await setup(t, [...files, mark], undefined, '/d')
  const d = path.join(mnt, 'd')
  t.equal(fs.readdirSync(d).length, files.length, 'listed: the kernel has every inode')
  const read = (f: File) => t.ok(fs.readFileSync(path.join(d, f.name)).equals(f.content), `${f.name} as stored`)
  read(files[0]!)
  // One pusher takes its queue in order: once the mark (outside /d) is pushed after its lookup,
  // a push the read had queued would be done.
  fs.statSync(path.join(mnt, 'mark'))
  t.equal(await pushed(engine, 333), 333, 'one read pushes nothing (the mark alone pushed)')
  read(files[1]!)
  const rest = files.slice(2, 10).reduce((n, f) => n + f.content.length, 0)
  t.equal(await pushed(engine, 333 + rest), 333 + rest, 'the small cached files after it pushed, nothing else')
  const before = engine.stats()
  for (const f of files.slice(2)) read(f)
  const after = engine.stats()
  t.equal(after.ops.read - before.ops.read, 2, 'READs for the large and the absent file only')
  t.equal(after.pushedFiles, 333 + rest)
})

t.test('a walk pushes nothing the kernel has no inode for', async (t) => {
  const files: File[] = Array.from({ length: 4 }, (_, i) => ({ name: `f${i}`, content: crypto.randomBytes(1000 + i), cached: 'yes' as const }))
  const marks = [333, 444].map((n, i): File => ({ name: `/mark${i}`, content: crypto.randomBytes(n), cached: 'yes' }))
  const { engine, mnt, cacheDir } = await setup(t, [...files, ...marks], undefined, '/d')
  // One pusher takes its queue in order: once a mark (outside /d) is pushed after its lookup,
  // the jobs queued before it are done.
  const mark = async (f: File, total: number) => {
    fs.statSync(path.join(mnt, f.name))
    return await pushed(engine, total)
  }
  // f0 and f1 looked up while their blobs are away (nothing to push), then read as hits: the
  // walk that follows finds no inode for f2 and f3, which were never listed or looked up.
  const away = files.slice(0, 2).map((f) => blobPath(cacheDir, f.content))
  for (const p of away) fs.renameSync(p, `${p}.away`)
  for (const f of files.slice(0, 2)) fs.statSync(path.join(mnt, 'd', f.name))
  t.equal(await mark(marks[0]!, 333), 333, 'nothing pushed for f0 and f1')
  for (const p of away) fs.renameSync(`${p}.away`, p)
  for (const f of files.slice(0, 2)) t.ok(fs.readFileSync(path.join(mnt, 'd', f.name)).equals(f.content))
  t.equal(engine.stats().ops.read, 2, 'two READs: a walk')
  t.equal(await mark(marks[1]!, 777), 777, 'nothing pushed for f2 and f3')
  for (const f of files.slice(2)) t.ok(fs.readFileSync(path.join(mnt, 'd', f.name)).equals(f.content), `${f.name} as stored`)
})
