// One file larger than the local cache can ever hold: its reads fail with EIO and one log line
// says why, and the rest of the cache stays. Evicting for it would empty the cache and still fail.
// Once against the quota (main.cache_size), once against a small file system (a tmpfs as the
// cache), where what could ever be freed is the free space plus every cached blob.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { cacheBlobs, config, files, md5, mountChild, until, writeStore, type Child, type File } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'
import { randomBytes } from '../helpers/store'

const MiB = 1024 * 1024

/** A large file at `/<name>`: a 64 KiB random block repeated (distinct per seed, and cheap to make). */
function bigFile(name: string, size: number, seed: number): File {
  const data = Buffer.alloc(size).fill(randomBytes(64 * 1024, seed))
  return { path: `/${name}`, data, md5: md5(data) }
}

/** The mount's JSON log lines so far. */
function logLines(child: Child): { level: number; msg: string; md5?: string }[] {
  return child
    .stderr()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { level: number; msg: string; md5?: string })
}

/** The mount's counters (the mounter prints them on SIGUSR2). */
async function stats(child: Child): Promise<Record<string, any>> {
  const seen = child.messages.length
  child.proc.kill('SIGUSR2')
  await until(() => child.messages.slice(seen).some((m) => m.type === 'stats'), 10_000)
  return child.messages.slice(seen).find((m) => m.type === 'stats')!.stats as Record<string, any>
}

/** Reads every small file, then waits until their blobs are all in the cache. */
async function warm(t: Test, mnt: string, cache: string, small: File[]): Promise<string[]> {
  for (const f of small) t.ok(fs.readFileSync(path.join(mnt, f.path)).equals(f.data), `${f.path} reads right`)
  const want = small.map((f) => f.md5).sort()
  const names = () => cacheBlobs(cache).map((b) => b.name).sort()
  t.ok(await until(() => want.every((m) => names().includes(m)), 10_000), 'the small blobs are all cached')
  return want
}

/** Reads `big` twice (EIO both times) and checks that the cache still holds every small blob. */
function readFails(t: Test, mnt: string, cache: string, big: File, small: string[]): void {
  t.throws(() => fs.readFileSync(path.join(mnt, big.path)), { code: 'EIO' }, `${big.path} (${big.data.length} bytes): EIO`)
  t.throws(() => fs.readFileSync(path.join(mnt, big.path)), { code: 'EIO' }, 'and again')
  const names = cacheBlobs(cache).map((b) => b.name)
  t.same(small.filter((m) => !names.includes(m)), [], 'every small blob is still cached')
  t.notOk(names.includes(big.md5), 'the big one is not')
}

/** Exactly one error line about `big`, matching `why`. */
async function oneLine(t: Test, child: Child, big: File, why: RegExp): Promise<void> {
  // The child's stderr arrives through the event loop, which the sync reads held up.
  await until(() => logLines(child).some((l) => l.md5 === big.md5), 5000)
  const lines = logLines(child).filter((l) => l.md5 === big.md5 && l.level >= 40)
  t.equal(lines.length, 1, `one log line about ${big.path}`)
  t.match(lines[0], { level: 50, msg: new RegExp(`^local cache .*: blob ${big.md5} \\(${big.data.length} bytes\\) can never fit: `) })
  t.match(lines[0]!.msg, why)
  t.match(lines[0]!.msg, /reads of it fail with EIO, and no other blob was evicted for it/)
}

t.test('a blob larger than cache_size: EIO, one log line, the cache stays', async (t) => {
  const dir = tmpdir(t)
  const cache = path.join(dir, 'cache')
  const small = files(8, 256 * 1024, 31)
  const big = bigFile('big', 40 * MiB, 32)
  writeStore(path.join(dir, 'store'), [...small, big])
  const mnt = path.join(dir, 'mnt')
  const child = await mountChild(t, { mountpoint: mnt, config: config(cache, [path.join(dir, 'store')], { cache_size: '16MiB' }), log: { level: 'info', format: 'json' } })

  const cached = await warm(t, mnt, cache, small)
  readFails(t, mnt, cache, big, cached)
  await oneLine(t, child, big, /it is larger than main\.cache_size \(16777216 bytes, 16\.0 MiB\)/)
  const s = await stats(child)
  t.ok(s.pipeline.tooLarge >= 1, `counted in status (pipeline.tooLarge ${s.pipeline.tooLarge})`)
  t.equal(s.pipeline.cache.evicted, 0, 'nothing evicted')
  t.equal(s.pipeline.sources[0].bytes, 8 * 256 * 1024, 'and nothing of it downloaded: refused before its download')
  if (!t.passing()) t.comment(`the mount's log:\n${child.stderr()}`)
})

t.test('a blob larger than the cache file system can ever free: EIO, one log line, the cache stays', async (t) => {
  const dir = tmpdir(t)
  const cache = path.join(dir, 'cache')
  fs.mkdirSync(cache)
  // A 16 MiB file system; the cache is its root (mode=0700: a tmpfs root is 1777 by default).
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0700', 'tmpfs', cache])
  t.teardown(() => execFileSync('umount', ['-l', cache])) // after the mount's own teardown (LIFO)
  // Another program's 8 MiB on the same file system: not ours to evict.
  fs.writeFileSync(path.join(cache, 'ballast'), Buffer.alloc(8 * MiB, 1))

  const small = files(8, 256 * 1024, 33)
  // 10 MiB: less than the file system, more than its free space (about 6 MiB) plus every blob (2 MiB).
  const mid = bigFile('mid', 10 * MiB, 34)
  // 40 MiB: more than the whole file system.
  const huge = bigFile('huge', 40 * MiB, 35)
  writeStore(path.join(dir, 'store'), [...small, mid, huge])
  const mnt = path.join(dir, 'mnt')
  const child = await mountChild(t, { mountpoint: mnt, config: config(cache, [path.join(dir, 'store')]), log: { level: 'info', format: 'json' } })

  const cached = await warm(t, mnt, cache, small)
  readFails(t, mnt, cache, mid, cached)
  await oneLine(t, child, mid, /the file system of the cache has \d+ bytes free \(.* MiB\), and every cached blob and download in flight takes \d+ more/)
  readFails(t, mnt, cache, huge, cached)
  await oneLine(t, child, huge, /it is larger than the whole file system of the cache \(16777216 bytes, 16\.0 MiB\)/)

  const s = await stats(child)
  t.equal(s.pipeline.cache.evicted, 0, 'nothing evicted')
  t.ok(s.pipeline.tooLarge >= 2, `counted in status (pipeline.tooLarge ${s.pipeline.tooLarge})`)
  t.same(fs.readdirSync(path.join(cache, 'tmp')), [], 'no temp file left')
  t.ok(fs.readFileSync(path.join(mnt, small[3]!.path)).equals(small[3]!.data), 'small files still read')
  if (!t.passing()) t.comment(`the mount's log:\n${child.stderr()}`)
})
