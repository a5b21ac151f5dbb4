// Recorded start-up sets on real mounts (`md/<id>.startup`, lib/pipeline/startup.ts): the listed
// blobs are fetched at mount before anything reads them, behind any read, only those the tree
// names, checked like any blob; a signed service takes only a list its keys signed. Against an
// HTTP store of the test's own that counts and holds requests: counted at the server, never timed.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import type { Logger } from '../../lib/log'
import type { StartupStats } from '../../lib/pipeline/speculate'
import { generateKeyPair, signFlist, signStartup } from '../../lib/sign'
import { formatStartupList } from '../../lib/startup'
import { formatStatus } from '../../lib/status'
import { makeFiles, startStore, writeTree, type TreeFile } from '../helpers/counting-store'
import { cacheBlobs, config, errorOf, md5, mountHere, readAsync, SERVICE, until } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'

function startupOf(m: { stats(): { pipeline?: unknown } }): StartupStats | undefined {
  return (m.stats().pipeline as { startup?: StartupStats } | undefined)?.startup
}

/** Puts a start-up list naming `md5s` in the store (and its signature, when given one). */
function writeList(store: string, md5s: string[], sig?: (data: Buffer) => Buffer): Buffer {
  const data = formatStartupList(md5s)
  const file = path.join(store, 'md', `${SERVICE}.startup`)
  fs.writeFileSync(file, data)
  if (sig) fs.writeFileSync(`${file}.sig`, sig(data))
  else fs.rmSync(`${file}.sig`, { force: true })
  return data
}

/** A logger mount() takes that keeps its warnings. */
function warnings(): { log: Logger; lines: string[] } {
  const lines: string[] = []
  const skip = (): void => undefined
  const log = { level: 'warn', trace: skip, debug: skip, info: skip, warn: (_o: object, msg?: string) => void lines.push(msg ?? ''), error: skip, fatal: skip, child: () => log }
  return { log: log as unknown as Logger, lines }
}

const files = (n: number, seed: number): TreeFile[] => makeFiles(Array.from({ length: n }, (_, i) => `d${i % 3}/f${i}.py`), (i) => 1500 + i, seed)

t.test('a published list is fetched at mount, before anything reads it; the kept copy serves an offline start', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const list = files(10, 1)
  writeTree(store, list)
  const listed = [list[7]!, list[2]!, list[4]!, list[0]!, list[9]!, list[5]!]
  const data = writeList(store, listed.map((f) => f.md5))
  const srv = await startStore(t, store)
  const cache = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const m = await mountHere(t, mnt, config(cache, [srv.url]))
  t.ok(await until(() => startupOf(m)?.fetched === 6, 20_000), 'the six listed blobs fetched, nothing read')
  t.same(new Set(srv.log.map((e) => e.md5)), new Set(listed.map((f) => f.md5)), 'exactly the listed blobs asked for')
  t.match(startupOf(m), { enabled: true, listed: 6, dropped: 0, alreadyCached: 0, started: 6, fetched: 6, joined: 0, failed: 0, bytes: listed.reduce((n, f) => n + f.data.length, 0), active: 0, queued: 0 })
  t.match(formatStatus(m.stats()), /start-up set +6 listed \(0 not in the tree\), 6 fetched \(.*\), 0 already cached, 0 failed, 0 queued/, '`status` shows it')
  t.match(formatStatus(m.stats()), new RegExp(`started by reads +${m.stats().pipeline!.started}\n`), 'and the downloads reads started themselves')
  const kept = path.join(cache, 'md', `${SERVICE}.startup`)
  t.same(fs.readFileSync(kept), data, 'a copy kept beside the flist')
  t.equal(fs.statSync(kept).mode & 0o777, 0o600)
  t.equal(m.stats().engine.misses, 0, 'no read yet')
  for (const f of listed) t.ok((await readAsync(path.join(mnt, f.rel))).equals(f.data), `${f.rel} served from the cache`)
  t.equal(srv.log.length, 6, 'reading them asked the store for nothing')
  t.equal(m.stats().engine.misses, 0, 'and missed nothing')
  t.ok((await readAsync(path.join(mnt, list[1]!.rel))).equals(list[1]!.data))
  t.equal(srv.log.length, 7, 'a file not listed is fetched when read')
  await m.unmount()

  // No store answers: the kept flist and the kept list; every listed blob is in the cache.
  await srv.close()
  const w = warnings()
  const again = await mountHere(t, path.join(dir, 'mnt2'), config(cache, [srv.url]), { log: w.log })
  t.match(startupOf(again), { listed: 6, alreadyCached: 6, started: 0 })
  t.ok(w.lines.some((l) => /using the copy kept in/.test(l)), 'the kept flist, with its warning')
  t.notOk(w.lines.some((l) => /start-up/.test(l)), 'the kept list, without one')
})

t.test('a read never waits behind the list: it takes a slot the list holds, or joins its download', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const list = files(6, 2)
  writeTree(store, list)
  const listed = list.slice(0, 4)
  writeList(store, listed.map((f) => f.md5))
  const srv = await startStore(t, store)
  for (const f of listed) srv.hold.add(f.md5) // the list's requests hang (no answer, no timeout soon)
  const mnt = path.join(dir, 'mnt')
  // One download slot, which the list may fill alone: only a read that takes it back gets through.
  const m = await mountHere(t, mnt, config(path.join(dir, 'cache'), [srv.url], { max_downloads: 1, timeout: '60s' }))
  t.ok(await until(() => srv.held === 1 && startupOf(m)?.active === 1, 20_000), 'a blob of the list holds the only slot')
  const other = list[5]!
  t.ok((await readAsync(path.join(mnt, other.rel))).equals(other.data), 'a read of a file not listed is answered while the list waits')
  t.equal(srv.held, 1, 'the list\'s download still runs (held, not cut)')
  t.match(startupOf(m), { started: 1, queued: 3 })
  // A read of the blob being fetched for the list joins that download: one request.
  const heldMd5 = srv.log.find((e) => srv.hold.has(e.md5))!.md5
  const joined = listed.find((f) => f.md5 === heldMd5)!
  const y = readAsync(path.join(mnt, joined.rel))
  t.ok(await until(() => m.stats().engine.fetching === 1 && m.stats().engine.parked >= 1, 20_000), 'the read waits on that download')
  srv.release()
  t.ok((await y).equals(joined.data))
  t.ok(await until(() => startupOf(m)?.fetched === 4, 20_000), 'then the rest of the list')
  t.equal(srv.log.filter((e) => e.md5 === heldMd5).length, 1, 'one request for the joined blob')
  t.equal(startupOf(m)!.joined, 1)
})

t.test('a hostile list changes no byte served and fetches nothing the tree does not name', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const list = files(5, 3)
  const bad = list[3]!
  writeTree(store, list, new Set([bad.md5])) // the store holds other bytes under bad's name
  // A blob the store has but the flist does not name.
  const stray = makeFiles(['x/stray.py'], () => 900, 4)[0]!
  fs.mkdirSync(path.join(store, 'files', stray.md5[0]!, stray.md5[1]!), { recursive: true })
  fs.writeFileSync(path.join(store, 'files', stray.md5[0]!, stray.md5[1]!, stray.md5), stray.data)
  writeList(store, [stray.md5, bad.md5, list[0]!.md5, md5(Buffer.from('nothing'))])
  const srv = await startStore(t, store)
  const cache = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const m = await mountHere(t, mnt, config(cache, [srv.url]))
  t.ok(await until(() => startupOf(m)?.started === 2 && startupOf(m)?.active === 0, 20_000))
  t.match(startupOf(m), { listed: 4, dropped: 2, fetched: 1, failed: 1 })
  t.notOk(srv.log.some((e) => e.md5 === stray.md5), 'the blob the flist does not name never asked for')
  t.same(cacheBlobs(cache).map((b) => b.md5), [list[0]!.md5], 'only the good blob kept: the wrong bytes failed their MD5')
  for (const f of list) {
    if (f === bad) t.equal((await errorOf(() => readAsync(path.join(mnt, f.rel))))?.code, 'EIO', 'the corrupt blob is never served')
    else t.ok((await readAsync(path.join(mnt, f.rel))).equals(f.data), `${f.rel}: its own bytes`)
  }
})

t.test('a signed service takes only a list its keys signed: any other is ignored with one warning', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const key = generateKeyPair(path.join(dir, 'keys'))
  const stranger = generateKeyPair(path.join(dir, 'stranger'))
  const list = files(4, 5)
  writeTree(store, list)
  const flist = path.join(store, 'md', `${SERVICE}.flist`)
  fs.writeFileSync(`${flist}.sig`, signFlist(fs.readFileSync(flist), key.privateKey, { id: SERVICE, revision: 1 }))
  const srv = await startStore(t, store)
  const mountWith = async (name: string): Promise<{ m: Awaited<ReturnType<typeof mountHere>>; lines: string[] }> => {
    const w = warnings()
    const m = await mountHere(t, path.join(dir, name), config(path.join(dir, `cache-${name}`), [srv.url], { trusted_keys: [key.publicKey] }), { log: w.log })
    return { m, lines: w.lines }
  }
  const md5s = list.map((f) => f.md5)
  const cases: [string, ((d: Buffer) => Buffer) | undefined, RegExp][] = [
    ['unsigned', undefined, /start-up list from store\[0\] .* refused: it has no signature \(hard__svc\.startup\.sig\).*; the start-up list is ignored$/],
    ['stranger', (d) => signStartup(d, stranger.privateKey, { id: SERVICE, revision: 1 }), /refused: signed by key [0-9a-f]{32}, which is not trusted/],
    ['other-bytes', () => signStartup(formatStartupList(md5s.slice(1)), key.privateKey, { id: SERVICE, revision: 1 }), /refused: bad signature/],
    ['as-a-flist', (d) => signFlist(d, key.privateKey, { id: SERVICE, revision: 1 }), /refused: bad signature/],
  ]
  for (const [name, sig, why] of cases) {
    writeList(store, md5s, sig)
    const { m, lines } = await mountWith(name)
    t.match(startupOf(m), { enabled: true, listed: 0, started: 0 }, `${name}: no set`)
    t.equal(lines.length, 1, `${name}: one warning`)
    t.match(lines[0], why)
    t.notOk(fs.existsSync(path.join(dir, `cache-${name}`, 'md', `${SERVICE}.startup`)), `${name}: no copy kept`)
  }
  t.equal(srv.log.length, 0, 'no blob asked for')
  writeList(store, md5s, (d) => signStartup(d, key.privateKey, { id: SERVICE, revision: 1 }))
  const { m, lines } = await mountWith('signed')
  t.ok(await until(() => startupOf(m)?.fetched === 4, 20_000), 'a list the key signed is fetched')
  t.same(lines, [])
  t.ok(fs.existsSync(path.join(dir, 'cache-signed', 'md', `${SERVICE}.startup.sig`)), 'its signature kept with it')
})

t.test('main.startup = false fetches no list; a reload brings the new tree\'s list', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const first = files(3, 6)
  writeTree(store, first)
  writeList(store, first.map((f) => f.md5))
  const srv = await startStore(t, store)
  const off = await mountHere(t, path.join(dir, 'off'), config(path.join(dir, 'cache-off'), [srv.url], { startup: false }))
  t.match(startupOf(off), { enabled: false, listed: 0, started: 0 })
  t.notOk(fs.existsSync(path.join(dir, 'cache-off', 'md', `${SERVICE}.startup`)), 'not even fetched')
  t.equal(srv.log.length, 0)
  await off.unmount()

  const m = await mountHere(t, path.join(dir, 'mnt'), config(path.join(dir, 'cache'), [srv.url]))
  t.ok(await until(() => startupOf(m)?.fetched === 3, 20_000))
  const added = files(5, 7).slice(3)
  writeTree(store, [...first, ...added])
  writeList(store, [...added, ...first].map((f) => f.md5))
  await m.reload()
  t.ok(await until(() => startupOf(m)?.fetched === 5, 20_000), 'the new blobs of the new list fetched')
  t.match(startupOf(m), { listed: 5, alreadyCached: 3, started: 5 }, 'what was cached skipped')
  t.equal(srv.log.length, 5)
})
