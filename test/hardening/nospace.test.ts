// A full cache disk, for real: the local cache on a 2 MiB tmpfs. Blobs that do not fit make the
// mount evict least recently used ones and retry; a blob bigger than the disk fails with EIO and
// one clear log line, and evicts nothing. Never a half-written blob under its final name, never a
// wrong byte.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { cacheBlobs, childIdle, config, files, md5, mountChild, stopChild, writeStore } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'

t.test('the cache disk fills up: evict and retry, else EIO with one log line', async (t) => {
  const dir = tmpdir(t)
  const cache = path.join(dir, 'cache')
  fs.mkdirSync(cache)
  // mode=0700: a tmpfs root is 1777 by default, and a cache others can write in is refused.
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m,mode=0700', 'tmpfs', cache])
  t.teardown(() => execFileSync('umount', ['-l', cache])) // after the mount's own teardown (LIFO)

  // 12 files of 300 KiB (3.5 MiB: twice the disk), no cache_size: only the disk limits.
  const list = files(12, 300 * 1024, 21)
  const big = files(1, 3 * 1024 * 1024, 22).map((f) => ({ ...f, path: '/big' }))
  writeStore(path.join(dir, 'store'), [...list, ...big])
  const child = await mountChild(t, {
    mountpoint: path.join(dir, 'mnt'),
    config: config(cache, [path.join(dir, 'store')]),
    log: { level: 'info', format: 'json' },
  })
  const mnt = path.join(dir, 'mnt')

  // O_DIRECT reads: each reaches the engine (not the kernel's page cache of the mount), so the
  // second round needs the blobs evicted in the first one again.
  const readDirect = (p: string): Buffer => {
    const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_DIRECT)
    try {
      return fs.readFileSync(fd)
    } finally {
      fs.closeSync(fd)
    }
  }
  for (let round = 0; round < 2; round++) {
    for (const f of list) t.ok(readDirect(path.join(mnt, f.path)).equals(f.data), `round ${round}: ${f.path} reads right`)
  }
  // A read is answered from the checked bytes before its blob is committed (and before the
  // evictions that make room for it): the last one's commit may still change the cache.
  t.ok(await childIdle(child), 'every download and commit ended')
  const usedNow = cacheBlobs(cache)
  t.ok(usedNow.length < list.length, `the disk holds ${usedNow.length} of ${list.length}: others were evicted to make room`)

  // Bigger than the whole disk: nothing can make room, so nothing is evicted for it.
  const before = cacheBlobs(cache).map((b) => b.name).sort()
  t.throws(() => fs.readFileSync(path.join(mnt, 'big')), { code: 'EIO' }, 'a blob that cannot fit: EIO')
  t.throws(() => fs.readFileSync(path.join(mnt, 'big')), { code: 'EIO' }, 'and again')
  t.same(cacheBlobs(cache).map((b) => b.name).sort(), before, 'no blob was evicted for it')

  // Small files still work afterwards.
  t.ok(fs.readFileSync(path.join(mnt, list[0]!.path)).equals(list[0]!.data), 'small files still read')
  t.equal(md5(fs.readFileSync(path.join(mnt, list[5]!.path))), list[5]!.md5)
  t.ok(await childIdle(child), 'every download and commit ended')

  // Nothing half-written under a final name; no temp file left behind.
  const blobs = cacheBlobs(cache)
  t.same(blobs.filter((b) => b.md5 !== b.name), [], 'every blob in the cache is complete and checked')
  t.notOk(blobs.some((b) => b.name === big[0]!.md5), 'the big one is not there at all')
  const tmp = fs.readdirSync(path.join(cache, 'tmp'))
  t.same(tmp.filter((n) => !n.includes('.evicted.')), [], 'no temp file left in tmp/')

  // The whole log: the child unmounts and exits, its stderr closed.
  t.equal(await stopChild(child), 0, 'the mount ends cleanly')
  const log = child.stderr().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string })
  const full = log.filter((l) => /can never fit/.test(l.msg))
  t.equal(full.length, 1, 'one log line about the blob that cannot fit')
  t.match(full[0], { level: 50, msg: new RegExp(`local cache .*: blob ${big[0]!.md5} \\(3145728 bytes\\) can never fit: it is larger than the whole file system of the cache \\(2097152 bytes.*EIO`) })
  t.notOk(log.some((l) => l.level >= 50 && !/can never fit/.test(l.msg)), 'no other error')
  if (!t.passing()) t.comment(`the mount's log:\n${child.stderr()}`)
})
