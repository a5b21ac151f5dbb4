// Misses: one fetch for many readers, failures as EIO, and the backstop.
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { fixtureFetcher, mountEngine, tmpdir, type FixtureData } from '../helpers/mount'
import { until } from '../helpers/wait'
import { md5, tableFor, type GenEntry } from '../helpers/tree'

function fileEntry(p: string, content: Buffer): GenEntry {
  return { path: p, kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000 }
}

async function setup(t: Test, mode: FixtureData['mode'], extra: Partial<FixtureData> = {}, stallTimeoutMs?: number) {
  const dir = tmpdir(t)
  const a = crypto.randomBytes(3 << 20)
  const b = Buffer.from('a small file that always works\n')
  fs.mkdirSync(path.join(dir, 'blobs'))
  for (const c of [a, b]) fs.writeFileSync(path.join(dir, 'blobs', md5(c)), c)
  const cacheDir = path.join(dir, 'cache')
  // b is in the cache already: reads of it never miss.
  fs.mkdirSync(path.join(cacheDir, md5(b)[0]!, md5(b)[1]!), { recursive: true })
  fs.writeFileSync(path.join(cacheDir, md5(b)[0]!, md5(b)[1]!, md5(b)), b)
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor([fileEntry('/a.bin', a), fileEntry('/b.txt', b)]),
    fetcher: fixtureFetcher({ cacheDir, mode, sourceDir: path.join(dir, 'blobs'), ...extra }),
    ...(stallTimeoutMs ? { stallTimeoutMs } : {}),
  })
  return { dir, mnt, engine, a, b }
}

/** The error `fn` throws, or undefined. */
function errorOf(fn: () => unknown): (Error & { code?: string }) | undefined {
  try {
    fn()
    return undefined
  } catch (err) {
    return err as Error & { code?: string }
  }
}

function catFile(file: string): Promise<{ code: number | null; out: Buffer; err: string }> {
  return new Promise((resolve) => {
    const child = spawn('cat', [file])
    const out: Buffer[] = []
    let err = ''
    child.stdout.on('data', (d: Buffer) => out.push(d))
    child.stderr.on('data', (d: Buffer) => (err += d))
    child.on('close', (code) => resolve({ code, out: Buffer.concat(out), err }))
  })
}

t.test('32 concurrent readers of one missing blob: one JS call, the same bytes for all', async (t) => {
  const { mnt, engine, a } = await setup(t, 'copy', { delayMs: 500 })
  const results = await Promise.all(Array.from({ length: 32 }, () => catFile(path.join(mnt, 'a.bin'))))
  t.same(results.map((r) => r.code), Array(32).fill(0), 'every reader succeeded')
  t.equal(results.filter((r) => r.out.equals(a)).length, 32, 'every reader got the right bytes')
  const s = engine.stats()
  // The kernel itself lets one reader fill a page while the others wait on it, so fewer
  // requests than readers may park; what matters is that one fetch served them all.
  t.equal(s.missCalls, 1, 'exactly one JS call')
  t.equal(s.errors, 0)
})

t.test('a rejecting fetch gives EIO and the mount stays healthy', async (t) => {
  const { mnt, engine, b } = await setup(t, 'reject')
  const read = () => fs.readFileSync(path.join(mnt, 'a.bin'))
  t.throws(read, { code: 'EIO' }, 'EIO for the blob no source has')
  // The kernel retries a failed readahead at once; that retry shares the failure instead of
  // asking again, so the read asked exactly once.
  t.equal(engine.stats().missCalls, 1, 'the failed read asked once')
  t.same(fs.readFileSync(path.join(mnt, 'b.txt')), b, 'a cached file still reads')
  // The failure is remembered for a moment (250 ms) only: reads fail at once without asking
  // until one asks again. (The memory's length is the engine's own; no clock to move.)
  const codes = new Set<string>()
  const askedAgain = await until(
    () => {
      const err = errorOf(read)
      codes.add(err?.code ?? 'no error')
      return engine.stats().missCalls > 1
    },
    10_000,
    20,
  )
  t.ok(askedAgain, 'a retry after the failure memory asks again')
  t.same([...codes], ['EIO'], 'and every read failed with EIO')
  const s = engine.stats()
  t.equal(s.missCalls, 2, 'which asked once, its readahead retry sharing the failure')
  t.equal(s.missFailures, s.missCalls, 'and every ask failed')
  t.equal(s.parked, 0, 'nothing left parked')
})

t.test('a fetch that never settles gives EIO at the backstop (no progress)', async (t) => {
  const { mnt, engine, b } = await setup(t, 'never', {}, 1500)
  const start = Date.now()
  const r = await catFile(path.join(mnt, 'a.bin'))
  const took = Date.now() - start
  t.not(r.code, 0, 'the read failed')
  t.match(r.err, /Input\/output error/, 'with EIO')
  t.ok(took >= 1400 && took < 5000, `after the deadline (${took} ms)`)
  t.equal(engine.stats().missTimeouts, 1)
  t.same(fs.readFileSync(path.join(mnt, 'b.txt')), b, 'the mount is still healthy')
})

t.test('zero-size files never miss', async (t) => {
  const dir = tmpdir(t)
  const cacheDir = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor([fileEntry('/empty', Buffer.alloc(0))]),
    fetcher: fixtureFetcher({ cacheDir, mode: 'reject' }),
  })
  t.equal(fs.readFileSync(path.join(mnt, 'empty')).length, 0)
  t.equal(engine.stats().missCalls, 0)
})

async function setupEarly(t: Test, mode: 'early' | 'early-short') {
  const dir = tmpdir(t)
  const c = crypto.randomBytes(100_000)
  fs.mkdirSync(path.join(dir, 'blobs'))
  fs.writeFileSync(path.join(dir, 'blobs', md5(c)), c)
  const cacheDir = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor([fileEntry('/c.bin', c)]),
    fetcher: fixtureFetcher({ cacheDir, mode, sourceDir: path.join(dir, 'blobs') }),
    stallTimeoutMs: 1500,
  })
  return { mnt, engine, c, cached: path.join(cacheDir, md5(c)[0]!, md5(c)[1]!, md5(c)) }
}

t.test('checked bytes handed over early answer the waiting readers before the blob is cached', async (t) => {
  const { mnt, engine, c, cached } = await setupEarly(t, 'early')
  const r = await catFile(path.join(mnt, 'c.bin'))
  t.equal(r.code, 0, 'the reader succeeded')
  t.ok(r.out.equals(c), 'with the right bytes')
  t.notOk(fs.existsSync(cached), 'from memory: the fetch never settled, nothing is in the cache')
  const s = engine.stats()
  t.equal(s.errors, 0)
  t.equal(s.bytesRead, c.length, 'counted as read')
})

t.test('early bytes that do not fit the entry are never served', async (t) => {
  const { mnt, engine } = await setupEarly(t, 'early-short')
  const r = await catFile(path.join(mnt, 'c.bin'))
  t.not(r.code, 0, `the reader failed (${r.err.trim()})`)
  t.equal(r.out.length, 0, 'and got no byte')
  t.ok(engine.stats().errors > 0, 'counted as an error')
})
