// The mounting process reads its own mount: the miss path needs neither the main thread nor
// libuv's threadpool.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fixtureFetcher, mountEngine, tmpdir } from '../helpers/mount'
import { md5, tableFor, type GenEntry } from '../helpers/tree'

t.test('the mounting process reads its own uncached files from every kind of thread', async (t) => {
  const dir = tmpdir(t)
  const blobs = path.join(dir, 'blobs')
  fs.mkdirSync(blobs)
  const entries: GenEntry[] = []
  const add = (p: string, content: Buffer): void => {
    fs.writeFileSync(path.join(blobs, md5(content)), content)
    entries.push({ path: p, kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000, content })
  }
  add('/sync.bin', crypto.randomBytes(100_000))
  for (let i = 0; i < 16; i++) add(`/p/${i}.bin`, crypto.randomBytes(50_000 + i))
  add('/node_modules/answer/index.js', Buffer.from("module.exports = { answer: 42, dep: require('./dep') }\n"))
  add('/node_modules/answer/dep.js', Buffer.from("module.exports = 'from the mount'\n"))
  const cacheDir = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor(entries),
    fetcher: fixtureFetcher({ cacheDir, mode: 'copy', sourceDir: blobs, delayMs: 100 }),
    stallTimeoutMs: 20_000,
  })

  const sync = fs.readFileSync(path.join(mnt, 'sync.bin'))
  t.equal(md5(sync), entries[0]!.md5, 'a synchronous read from the main thread')

  // 16 at once fill libuv's threadpool (4 threads) with reads parked on misses.
  const files = entries.filter((e) => e.path.startsWith('/p/'))
  const read = await Promise.all(files.map((e) => fs.promises.readFile(path.join(mnt, e.path))))
  t.same(read.map((b) => md5(b)), files.map((e) => e.md5), '16 concurrent fs.promises.readFile')

  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(path.join(mnt, 'node_modules/answer')) as { answer: number; dep: string }
  t.same(mod, { answer: 42, dep: 'from the mount' }, 'require() of a module on the mount')
  t.equal(engine.stats().missCalls, 19)
})
