// Chunked files through a real mount: a flist whose regular files carry key=value entries in the
// extended field (a chunk index, keys this version does not know) mounts and serves them; reads of
// a chunked file fetch only the chunks they cover, each checked, once, from the next source when
// one has it wrong; a SIGKILL leaves nothing unchecked; chunks are evicted like blobs.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import type { AysfsMount } from '../../lib/index'
import type { FetcherStats } from '../../lib/pipeline'
import { checkConfig } from '../../lib/config'
import { prefetch } from '../../lib/prefetch'
import { publish } from '../../lib/publish'
import { startFaultServer, type FaultServer } from '../helpers/faults'
import { PREFIX, SERVICE, cacheBlobs, config, files, md5, mountChild, mountHere, readAsync, until, writeStore } from '../helpers/hardening'
import { clearMounts, tmpdir } from '../helpers/mount'
import { memLog, randomBytes } from '../helpers/store'

t.test('a flist with chunks= and unknown extended keys mounts and serves its files', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const [a, b] = files(2, 5000, 181)
  writeStore(store, [a!, b!])
  // No index blob is in the store: the whole blob serves the read.
  const lines = [
    `${PREFIX}/a|${a!.md5}|${a!.data.length}|root|root|644|2|1|2|chunks=${'0'.repeat(32)},later=1`,
    `${PREFIX}/b|${b!.md5}|${b!.data.length}|root|root|644|2|1|2|some.future-key=x=y`,
  ]
  fs.writeFileSync(path.join(store, 'md', `${SERVICE}.flist`), lines.join('\n') + '\n')
  const mnt = path.join(dir, 'mnt')
  await mountHere(t, mnt, config(path.join(dir, 'cache'), [store]))
  t.same(fs.readFileSync(path.join(mnt, 'a')), a!.data) // a directory store: no server on this thread
  t.same(fs.readFileSync(path.join(mnt, 'b')), b!.data)
  t.equal(fs.statSync(path.join(mnt, 'a')).mode & 0o7777, 0o644)
})

// ---- Chunked reads: only the chunks a read covers, each checked; stores published by publish --chunks.

const MiB = 1024 * 1024
const CHUNK = 1 * MiB

/** A store holding `data` at `${PREFIX}/big`, published with --chunks (1 MiB chunks). */
async function chunkedStore(dir: string, data: Buffer, opts: { whole?: boolean; chunkSize?: number } = {}): Promise<{ store: string; index: string; chunks: { md5: string; size: number }[] }> {
  const src = path.join(dir, 'src')
  fs.mkdirSync(src, { recursive: true })
  fs.writeFileSync(path.join(src, 'big'), data)
  const store = path.join(dir, 'store')
  await publish({ dir: src, id: SERVICE, store, prefix: PREFIX, chunks: true, chunkSize: opts.chunkSize ?? CHUNK, whole: opts.whole ?? false, progress: false, fsync: false })
  const flist = fs.readFileSync(path.join(store, 'md', `${SERVICE}.flist`), 'utf8')
  const index = /chunks=([0-9a-f]{32})/.exec(flist)![1]!
  const text = fs.readFileSync(path.join(store, 'files', index[0]!, index[1]!, index), 'utf8')
  const chunks = text.trim().split('\n').map((l) => ({ md5: l.slice(0, 32), size: Number(l.slice(33)) }))
  return { store, index, chunks }
}

function pipelineOf(m: AysfsMount): FetcherStats {
  return m.stats().pipeline as unknown as FetcherStats
}

/** Blob names a fault server was asked for (`files/h0/h1/<md5>` under any mode), in order. */
function asked(server: FaultServer): string[] {
  return server.requests.filter((r) => r.method === 'GET' && r.rel.startsWith('files/')).map((r) => path.basename(r.rel))
}

/** `len` bytes at `off`, read async: the fault server answers on this thread meanwhile. */
async function readAt(file: string, off: number, len: number): Promise<Buffer> {
  const fh = await fs.promises.open(file, 'r')
  try {
    const buf = Buffer.alloc(len)
    const { bytesRead } = await fh.read(buf, 0, len, off)
    return buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
}

t.test('a read in the middle of a chunked file downloads only the chunks it covers', async (t) => {
  const dir = tmpdir(t)
  const data = randomBytes(24 * MiB + 4321, 183)
  const { store, index, chunks } = await chunkedStore(dir, data)
  const server = await startFaultServer({ store })
  t.teardown(() => server.close())
  const cache = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const m = await mountHere(t, mnt, config(cache, [server.base('good')]))
  const big = path.join(mnt, 'big')
  t.equal(fs.statSync(big).size, data.length)

  const off = 10 * MiB + MiB / 2
  t.same(await readAt(big, off, 4096), data.subarray(off, off + 4096), 'the bytes of the middle')
  t.same(asked(server), [index, chunks[10]!.md5], 'the index, then the one chunk: not the file')
  const W = md5(data) // (24 MiB: hashed once)
  t.notOk(fs.existsSync(path.join(cache, W[0]!, W[1]!, W)), 'no whole blob in the cache')

  // Ten random 4 KiB reads: only the chunks they touch, each once.
  // (Not at offset 0: a read there starts a sequential reader's read-ahead.)
  const offsets = [1, 3, 3, 7, 15, 22, 24, 0, 10, 7].map((c) => Math.min(c * CHUNK + ((c * 7919 + 4096) % (CHUNK - 4096)), data.length - 4096))
  for (const o of offsets) t.same(await readAt(big, o, 4096), data.subarray(o, o + 4096), `4 KiB at ${o}`)
  const want = new Set([10, ...offsets.map((o) => Math.floor(o / CHUNK))].map((i) => chunks[i]!.md5))
  const got = asked(server).slice(1)
  t.same(new Set(got), want, 'exactly the chunks touched')
  t.equal(got.length, want.size, 'each once')
  const stats = m.stats()
  t.ok(stats.engine.chunkReads > 0, 'answered from chunks')
  t.match(stats.pipeline, { chunks: { indexes: 1, badIndexes: 0 } })

  // A reader that streams the whole file gets every byte, the same.
  t.same(await readAsync(big), data, 'a full read is byte-identical')
  t.equal(asked(server).length, 1 + chunks.length, 'every chunk once, the index once, never the whole blob')
  // Every chunk cached: the file is put together into its whole blob, checked.
  t.ok(await until(() => pipelineOf(m).chunks.assembled === 1, 20_000), 'put together into the whole blob')
  const whole = path.join(cache, W[0]!, W[1]!, W)
  t.equal(md5(fs.readFileSync(whole)), W, 'the whole blob is the file')
  const before = m.stats().engine.chunkReads
  t.same(await readAt(big, 20 * MiB, 4096), data.subarray(20 * MiB, 20 * MiB + 4096))
  t.equal(m.stats().engine.chunkReads, before, 'now served from the whole blob')
})

t.test('an index that fails its checks is not used: the file is fetched whole, logged once', async (t) => {
  const dir = tmpdir(t)
  const data = randomBytes(5 * MiB + 10, 184)
  const { store, index, chunks } = await chunkedStore(dir, data, { whole: true })
  const indexIn = (root: string): string => path.join(root, 'files', index[0]!, index[1]!, index)
  const cases: [string, (root: string) => void][] = [
    ['tampered (its MD5 is not the one the flist names)', (root) => fs.writeFileSync(indexIn(root), fs.readFileSync(indexIn(root), 'utf8').replace(chunks[1]!.md5, chunks[2]!.md5))],
    ['sizes that do not sum to the file', (root) => replaceIndex(root, index, chunks.map((c, i) => `${c.md5}|${i === 5 ? c.size - 1 : c.size}\n`).join(''))],
    ['chunks of unequal sizes', (root) => replaceIndex(root, index, `${chunks[0]!.md5}|${MiB - 1}\n${chunks[1]!.md5}|${MiB + 1}\n` + chunks.slice(2).map((c) => `${c.md5}|${c.size}\n`).join(''))],
  ]
  for (const [what, spoil] of cases) {
    await t.test(what, async (t) => {
      const sub = fs.mkdtempSync(path.join(dir, 'case-'))
      const copy = path.join(sub, 'store')
      fs.cpSync(store, copy, { recursive: true })
      spoil(copy)
      const server = await startFaultServer({ store: copy })
      t.teardown(() => server.close())
      const mnt = path.join(sub, 'mnt')
      const m = await mountHere(t, mnt, config(path.join(sub, 'cache'), [server.base('good')]))
      const off = 3 * MiB + 5
      t.same(await readAt(path.join(mnt, 'big'), off, 4096), data.subarray(off, off + 4096), 'the right bytes')
      t.ok(asked(server).includes(md5(data)), 'from the whole blob')
      t.notOk(asked(server).some((n) => chunks.some((c) => c.md5 === n)), 'no chunk fetched')
      t.match(m.stats().pipeline, { chunks: { indexes: 0, badIndexes: 1 } })
    })
  }
})

/** Stores `text` as the index of the flist: under its own MD5, and the flist points at it. */
function replaceIndex(store: string, oldIndex: string, text: string): void {
  const m = md5(Buffer.from(text))
  fs.mkdirSync(path.join(store, 'files', m[0]!, m[1]!), { recursive: true })
  fs.writeFileSync(path.join(store, 'files', m[0]!, m[1]!, m), text)
  const flist = path.join(store, 'md', `${SERVICE}.flist`)
  fs.writeFileSync(flist, fs.readFileSync(flist, 'utf8').replace(`chunks=${oldIndex}`, `chunks=${m}`))
}

t.test('a corrupted chunk is never served: the next source is tried; none right: EIO', async (t) => {
  const dir = tmpdir(t)
  const data = randomBytes(6 * MiB, 185)
  const { store, chunks } = await chunkedStore(dir, data)
  const bad = path.join(dir, 'bad')
  fs.cpSync(store, bad, { recursive: true })
  const c3 = chunks[3]!.md5
  const c3file = (root: string): string => path.join(root, 'files', c3[0]!, c3[1]!, c3)
  const spoilt = fs.readFileSync(c3file(bad))
  spoilt.writeUInt8(spoilt.readUInt8(1000) ^ 0xff, 1000)
  fs.writeFileSync(c3file(bad), spoilt)
  const server = await startFaultServer({ store })
  t.teardown(() => server.close())
  const mnt = path.join(dir, 'mnt')
  const m = await mountHere(t, mnt, config(path.join(dir, 'cache'), [bad, server.base('good')]))
  const off = 3 * MiB + 500
  t.same(await readAt(path.join(mnt, 'big'), off, 4096), data.subarray(off, off + 4096), 'the right bytes, from the second store')
  t.same(asked(server), [c3], 'only the chunk the first store had wrong')
  // The miss worker's counters reach stats() as a snapshot it posts: wait for the count to land.
  await until(() => pipelineOf(m).sources[0]?.errorKinds.md5 === 1, 10_000)
  const first = pipelineOf(m).sources[0]!
  t.match(first, { errorKinds: { md5: 1 } }, 'the first store\'s wrong chunk is counted')

  // The second store loses it too: a read of another chunk both have wrong fails with EIO.
  const c4 = chunks[4]!.md5
  for (const root of [bad, store]) {
    const f = path.join(root, 'files', c4[0]!, c4[1]!, c4)
    const b = fs.readFileSync(f)
    b.writeUInt8(b.readUInt8(0) ^ 1, 0)
    fs.writeFileSync(f, b)
  }
  await t.rejects(readAt(path.join(mnt, 'big'), 4 * MiB + 10, 4096), { code: 'EIO' }, 'no source has it right: EIO')
  t.notOk(fs.existsSync(path.join(dir, 'cache', c4[0]!, c4[1]!, c4)), 'nothing of it cached')
})

t.test('concurrent readers of one chunk cause one download', async (t) => {
  const dir = tmpdir(t)
  const data = randomBytes(4 * MiB, 186)
  const { store, chunks } = await chunkedStore(dir, data)
  const server = await startFaultServer({ store, delayMs: 200 })
  t.teardown(() => server.close())
  const mnt = path.join(dir, 'mnt')
  await mountHere(t, mnt, config(path.join(dir, 'cache'), [server.base('slow')]))
  const big = path.join(mnt, 'big')
  const offs = Array.from({ length: 8 }, (_, i) => 2 * MiB + i * 100_000)
  const got = await Promise.all(offs.map((o) => readAt(big, o, 4096)))
  offs.forEach((o, i) => t.same(got[i], data.subarray(o, o + 4096), `reader ${i}`))
  t.equal(asked(server).filter((n) => n === chunks[2]!.md5).length, 1, 'one download of the chunk')
})

t.test('SIGKILL during a chunked download: the remount serves only checked bytes, and goes on', async (t) => {
  const dir = tmpdir(t)
  const data = randomBytes(8 * MiB, 187)
  // Chunks over 1 MiB stream to a temp file as they arrive (smaller ones are collected in memory
  // and written whole at commit, too briefly to be caught in the act).
  const { store, chunks } = await chunkedStore(dir, data, { chunkSize: 2 * MiB })
  // 256 KiB/s: a chunk takes seconds, so the kill lands in the middle of one.
  const server = await startFaultServer({ store, trickleBps: 256 * 1024 })
  t.teardown(() => server.close())
  const cache = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const child = await mountChild(t, { mountpoint: mnt, config: config(cache, [server.base('trickle')], { timeout: '30s' }) })
  // A reader in another process (it blocks until the kill).
  const reader = spawn(process.execPath, ['-e', `require('fs').readFileSync(${JSON.stringify(path.join(mnt, 'big'))})`], { stdio: 'ignore' })
  const readerDone = new Promise((resolve) => reader.on('exit', resolve))
  t.ok(await until(() => asked(server).length >= 2, 20_000), 'the chunk download started')
  t.ok(await until(() => fs.existsSync(path.join(cache, 'tmp')) && fs.readdirSync(path.join(cache, 'tmp')).length > 0, 20_000), 'a chunk is half written')
  process.kill(child.pid, 'SIGKILL')
  await child.exited
  await readerDone
  clearMounts(mnt)
  // Nothing in the cache's blob tree is unchecked.
  for (const b of cacheBlobs(cache)) t.equal(b.md5, b.name, `cached ${b.name} is what its name says`)
  const server2 = await startFaultServer({ store })
  t.teardown(() => server2.close())
  await mountHere(t, mnt, config(cache, [server2.base('good')]))
  t.same(await readAsync(path.join(mnt, 'big')), data, 'after the remount: every byte right')
  t.ok(asked(server2).length <= 1 + chunks.length)
})

t.test('quota: chunks of a file larger than the cache are evicted like blobs, the file still readable range by range', async (t) => {
  const dir = tmpdir(t)
  const data = randomBytes(12 * MiB, 188)
  const { store } = await chunkedStore(dir, data)
  const server = await startFaultServer({ store })
  t.teardown(() => server.close())
  const cache = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const m = await mountHere(t, mnt, config(cache, [server.base('good')], { cache_size: '4MiB' }))
  const big = path.join(mnt, 'big')
  for (let c = 0; c < 12; c++) {
    const o = c * MiB + 777
    t.same(await readAt(big, o, 4096), data.subarray(o, o + 4096), `chunk ${c}`)
  }
  t.ok(await until(() => pipelineOf(m).cache.evicted > 0, 20_000), 'chunks were evicted')
  const onDisk = (): number => cacheBlobs(cache).reduce((n, b) => n + b.bytes, 0)
  t.ok(await until(() => onDisk() <= 4 * MiB, 20_000), `within the quota (${onDisk()} bytes)`)
  t.same(await readAt(big, 5 * MiB + 3, 4096), data.subarray(5 * MiB + 3, 5 * MiB + 4099), 'an evicted chunk is fetched again')
})

t.test('prefetch fills the cache with the chunks of a file whose store has no whole blob; a mount then reads it offline', async (t) => {
  const dir = tmpdir(t)
  const data = randomBytes(5 * MiB + 99, 189)
  const { store, index, chunks } = await chunkedStore(dir, data)
  const cache = path.join(dir, 'cache')
  const r = await prefetch({ config: checkConfig(config(cache, [store])), log: memLog(), progress: false })
  t.match(r, { blobs: 1, fetched: 1, failed: 0 })
  const cached = new Set(cacheBlobs(cache).map((b) => b.name))
  for (const c of chunks) t.ok(cached.has(c.md5), `chunk ${c.md5} cached`)
  t.ok(cached.has(index), 'the index cached')
  const W = md5(data)
  t.ok(await until(() => cacheBlobs(cache).some((b) => b.name === W && b.md5 === W), 20_000), 'every chunk cached: the whole blob put together, checked')
  // The store loses its content (the flist stays): the mount reads from the cache alone.
  fs.rmSync(path.join(store, 'files'), { recursive: true, force: true })
  const mnt = path.join(dir, 'mnt')
  await mountHere(t, mnt, config(cache, [store]))
  t.same(fs.readFileSync(path.join(mnt, 'big')), data, 'served from the cached chunks, no store needed')
})
