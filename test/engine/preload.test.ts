// The miss worker calls its fetcher's preload() before it answers a miss: at start, and for the
// new fetcher of a reconfigure (lib/miss-worker.ts; the pipeline loads its HTTP clients there).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fixtureFetcher, mountEngine, tmpdir, type FixtureData } from '../helpers/mount'
import { md5, tableFor } from '../helpers/tree'

t.test('each fetcher is preloaded before its first fetch: at start and after reconfigure', async (t) => {
  const dir = tmpdir(t)
  const content = crypto.randomBytes(4096)
  fs.mkdirSync(path.join(dir, 'blobs'))
  fs.writeFileSync(path.join(dir, 'blobs', md5(content)), content)
  const cacheDir = path.join(dir, 'cache')
  const preloadFile = path.join(dir, 'preloads')
  const callsFile = path.join(dir, 'calls')
  const data: FixtureData = { cacheDir, mode: 'copy', sourceDir: path.join(dir, 'blobs'), preloadFile, callsFile }
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor([{ path: '/a.bin', kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000 }]),
    fetcher: fixtureFetcher(data),
  })
  t.same(fs.readFileSync(path.join(mnt, 'a.bin')), content, 'the miss was served')
  t.equal(fs.readFileSync(callsFile, 'utf8').split('\n').filter(Boolean).length, 1, 'by one fetch')
  t.equal(fs.readFileSync(preloadFile, 'utf8'), 'preload 0\n', 'preloaded once, before any fetch')
  await engine.reconfigure({ ...data })
  t.equal(fs.readFileSync(preloadFile, 'utf8'), 'preload 0\npreload 0\n', 'the new fetcher too, before it took over')
})

t.test('a fetcher that cannot be made at reconfigure: reconfigure rejects, the old one keeps serving', async (t) => {
  const dir = tmpdir(t)
  const contents = [crypto.randomBytes(4096), crypto.randomBytes(4096)]
  fs.mkdirSync(path.join(dir, 'blobs'))
  for (const c of contents) fs.writeFileSync(path.join(dir, 'blobs', md5(c)), c)
  const cacheDir = path.join(dir, 'cache')
  const data: FixtureData = { cacheDir, mode: 'copy', sourceDir: path.join(dir, 'blobs') }
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor(contents.map((c, i) => ({ path: `/f${i}.bin`, kind: 'file' as const, perms: 0o644, size: c.length, md5: md5(c), mtime: 1_700_000_000 }))),
    fetcher: fixtureFetcher(data),
  })
  t.same(fs.readFileSync(path.join(mnt, 'f0.bin')), contents[0])
  await t.rejects(engine.reconfigure({ ...data, throwOnCreate: true }), { message: 'fixture: no fetcher', code: 'EINVAL' })
  // One made, whose preload fails: refused the same way, and closed (its sockets and timers go).
  const closedFile = path.join(dir, 'closed')
  await t.rejects(engine.reconfigure({ ...data, throwOnPreload: true, closedFile }), { message: 'fixture: preload failed', code: 'EINVAL' })
  t.equal(fs.readFileSync(closedFile, 'utf8'), 'closed\n', 'the fetcher that failed its preload was closed')
  t.same(fs.readFileSync(path.join(mnt, 'f1.bin')), contents[1], 'a later miss is served')
})
