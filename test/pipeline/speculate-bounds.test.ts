// The bounds of speculation (lib/pipeline/speculate.ts) on the pipeline itself, against an HTTP
// store of the test's own that holds the guesses' answers: guesses at once, guessed bytes not
// read yet, and the budget paid back by a read; a start-up set within the same bounds. Counted at
// the server and in the counters.
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { mergeServices, parseFlist } from '../../lib/flist'
import { createFetcher } from '../../lib/pipeline'
import type { FetcherData } from '../../lib/pipeline/fetcher'
import { buildLocality } from '../../lib/pipeline/locality'
import { FAR_MS, type SpeculationStats, type StartupStats } from '../../lib/pipeline/speculate'
import { startupSet } from '../../lib/pipeline/startup'
import { makeFiles, startStore, writeTree, type TreeFile } from '../helpers/counting-store'
import { PREFIX, SERVICE, md5, until } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'
import { PYC } from '../helpers/pyc'
import { makeConfig, memLog } from '../helpers/store'

/** The store's one service as a tree, and a fetcher (cache in `dir`) guessing from it with `speculation`. */
function speculating(t: Test, dir: string, store: string, url: string, speculation: FetcherData['speculation']) {
  const tree = mergeServices([parseFlist(fs.readFileSync(path.join(store, 'md', `${SERVICE}.flist`)), { name: SERVICE, prefix: PREFIX })])
  const f = createFetcher({
    config: makeConfig({ cache: path.join(dir, 'cache'), stores: [url], timeoutMs: 60_000 }),
    log: memLog(),
    fsync: false,
    locality: buildLocality(tree),
    speculation,
  })
  t.teardown(() => f.close())
  return { tree, f }
}

/** A file of the tree to publish, with its MD5. */
function file(rel: string, content: string | Buffer): TreeFile {
  const data = typeof content === 'string' ? Buffer.from(content) : content
  return { rel, data, md5: crypto.createHash('md5').update(data).digest('hex') }
}

/**
 * A fetcher guessing from `list` published to a store that answers FAR_MS × 3 late, with the
 * first three files of `list` fetched: the store is measured far.
 */
async function farFetcher(t: Test, list: TreeFile[]) {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  writeTree(store, list)
  const srv = await startStore(t, store, FAR_MS * 3)
  const { f } = speculating(t, dir, store, srv.url, {})
  for (const x of list.slice(0, 3)) await f.fetch(x.md5, x.data.length)
  return f
}

/** The file of `list` at `rel`. */
function byRel(list: TreeFile[], rel: string): TreeFile {
  return list.find((x) => x.rel === rel)!
}

t.test('guesses at once and guessed bytes stay within their bounds; a read pays bytes back', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const list = makeFiles(Array.from({ length: 11 }, (_, i) => `pkg/m${String(i).padStart(2, '0')}.js`), () => 1000, 7)
  writeTree(store, list)
  const srv = await startStore(t, store)
  const trigger = list[0]!
  for (const f of list.slice(1)) srv.hold.add(f.md5)
  const tree = mergeServices([parseFlist(fs.readFileSync(path.join(store, 'md', `${SERVICE}.flist`)), { name: SERVICE, prefix: PREFIX })])
  const cache = path.join(dir, 'cache')
  const f = createFetcher({
    config: makeConfig({ cache, stores: [srv.url], timeoutMs: 60_000 }),
    log: memLog(),
    fsync: false,
    locality: buildLocality(tree),
    // 3.5 blobs of budget, 2 at once.
    speculation: { maxBytes: 3500, maxDownloads: 2 },
  })
  t.teardown(() => f.close())
  const spec = (): SpeculationStats => f.stats().speculation
  await f.fetch(trigger.md5, trigger.data.length)
  t.ok(await until(() => srv.held === 2, 20_000), 'two guesses asked for')
  t.match(spec(), { started: 2, active: 2 })
  t.ok(spec().queued > 0, 'more queued: only the bound holds them back')
  srv.releaseOne()
  t.ok(await until(() => spec().landed === 1 && srv.held === 2, 20_000), 'one landed, the next asked for')
  t.equal(spec().started, 3, 'the third: 3000 bytes of 3500')
  srv.release()
  t.ok(await until(() => spec().active === 0 && spec().landed === 3, 20_000))
  const guessRequests = (): number => srv.log.filter((e) => e.md5 !== trigger.md5).length
  t.equal(guessRequests(), 3, 'no fourth guess: 4000 bytes would pass the budget')
  t.ok(srv.maxInFlight <= 3, `at most the miss and two guesses at once at the server (${srv.maxInFlight})`)
  t.match(spec(), { used: 0, bytes: 3000, unusedBytes: 3000 })

  // A read of a landed guess (its atime moved past its mtime, as a read's does) pays its bytes
  // back: the next guess starts.
  const landed = srv.log.find((e) => e.md5 !== trigger.md5)!.md5
  const st = fs.statSync(f.path(landed))
  fs.utimesSync(f.path(landed), new Date(st.mtimeMs + 10_000), st.mtime)
  t.ok(await until(() => spec().used === 1 && guessRequests() === 4, 20_000), 'used, and one more guess')
  t.ok(await until(() => spec().active === 0, 20_000))
  t.match(spec(), { started: 4, landed: 4, used: 1, usedBytes: 1000, unusedBytes: 3000 })
})

t.test('started: a read that finds its blob neither cached nor downloading starts a download; joining one, or a landed guess, does not', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const list = makeFiles(['pkg/a.js', 'pkg/b.js', 'pkg/c.js', 'other/d.js'], () => 1000, 9)
  writeTree(store, list)
  const srv = await startStore(t, store)
  const [a, b, c, d] = list as [TreeFile, TreeFile, TreeFile, TreeFile]
  srv.hold.add(b.md5)
  // One guess at once: b (held at the store), then c.
  const { f } = speculating(t, dir, store, srv.url, { maxDownloads: 1 })
  await f.fetch(a.md5, a.data.length)
  t.match(f.stats(), { fetches: 1, started: 1, merged: 0 }, 'the first read started its download')
  t.ok(await until(() => srv.held === 1, 20_000), 'b guessed')
  const joined = f.fetch(b.md5, b.data.length)
  t.match(f.stats(), { fetches: 2, started: 1, merged: 1 }, 'a read of a guess in flight joins it')
  srv.release()
  await joined
  t.ok(await until(() => f.stats().speculation.landed === 1, 20_000), 'c landed')
  await f.fetch(c.md5, c.data.length)
  t.match(f.stats(), { fetches: 3, started: 1, alreadyCached: 1 }, 'a read of a landed guess finds it cached')
  const both = [f.fetch(d.md5, d.data.length), f.fetch(d.md5, d.data.length)]
  await Promise.all(both)
  t.match(f.stats(), { fetches: 5, started: 2, merged: 2 }, 'two reads of one blob: one download started')
})

t.test('no locality, or speculate = false: no guesses', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const list = makeFiles(['pkg/a.js', 'pkg/b.js', 'pkg/c.js'], () => 500, 8)
  writeTree(store, list)
  const srv = await startStore(t, store)
  const tree = mergeServices([parseFlist(fs.readFileSync(path.join(store, 'md', `${SERVICE}.flist`)), { name: SERVICE, prefix: PREFIX })])
  const off = createFetcher({ config: makeConfig({ cache: path.join(dir, 'c1'), stores: [srv.url], speculate: false }), log: memLog(), fsync: false, locality: buildLocality(tree) })
  t.teardown(() => off.close())
  await off.fetch(list[0]!.md5, 500)
  t.match(off.stats().speculation, { enabled: false, started: 0 })
  t.equal(srv.log.length, 1)
})

t.test('a start-up set: before any guess, within its bounds at once, not held to the byte budget', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const app = makeFiles(Array.from({ length: 7 }, (_, i) => `app/s${i}.so`), () => 1000, 11)
  // Of another kind: its miss guesses none of the others.
  const pre = makeFiles(['app/pre.dat'], () => 1000, 13)[0]!
  const pkg = makeFiles(Array.from({ length: 4 }, (_, i) => `pkg/m${i}.js`), () => 700, 12)
  writeTree(store, [...app, pre, ...pkg])
  const srv = await startStore(t, store)
    // A budget of guessed bytes smaller than the set: the set is not held to it.
  const { tree, f } = speculating(t, dir, store, srv.url, { maxBytes: 1500, maxDownloads: 2, startupDownloads: 2 })
  // One blob of the set is cached already: skipped.
  await f.fetch(pre.md5, 1000)
  for (const a of app) srv.hold.add(a.md5)
  f.setStartup(startupSet(tree, [[...app.map((a) => a.md5), pre.md5, md5(Buffer.from('not in the tree'))]]))
  const st = (): StartupStats => f.stats().startup
  t.ok(await until(() => srv.held === 2, 20_000), 'two of the set asked for at once')
  t.match(st(), { enabled: true, listed: 9, dropped: 1, alreadyCached: 0, started: 2, active: 2, queued: 6 })
  // A miss elsewhere: it is served at once, and its neighbours wait behind the set.
  await f.fetch(pkg[0]!.md5, 700)
  t.equal(f.stats().speculation.started, 0, 'no guess while the set has blobs left')
  for (let i = 1; i <= 7; i++) {
    srv.releaseOne()
    t.ok(await until(() => st().fetched === i && srv.held === Math.min(2, 7 - i), 20_000), `${i} fetched, the next asked for`)
    if (i === 6) t.equal(f.stats().speculation.started, 0, 'the last of the set downloading, none left to start: still no guess')
  }
  t.ok(await until(() => st().active === 0 && f.stats().speculation.active === 0 && f.stats().speculation.started >= 1, 20_000), 'then the guesses')
  t.match(st(), { started: 7, fetched: 7, alreadyCached: 1, failed: 0, bytes: 7000, queued: 0 }, "7000 bytes: more than the guesses' budget")
  const firstGuess = srv.log.findIndex((e) => pkg.slice(1).some((p) => p.md5 === e.md5))
  const lastOfSet = srv.log.map((e) => app.some((a) => a.md5 === e.md5)).lastIndexOf(true)
  t.ok(firstGuess > lastOfSet, 'the guesses came after the set')
  t.ok(srv.maxInFlight <= 3, `at most two of the set and the miss at once at the server (${srv.maxInFlight})`)
  t.equal(srv.log.filter((e) => e.md5 === pre.md5).length, 1, 'the cached one asked for once, by its own fetch')
})

t.test('a start-up set starts a blob while less than its byte bound is in flight: a large one goes with the others', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const list = makeFiles(['app/big.so', 'app/a.pyc', 'app/b.pyc', 'app/c.pyc'], (i) => (i === 0 ? 3000 : 1000), 14)
  writeTree(store, list)
  const srv = await startStore(t, store)
  srv.hold.add(list[0]!.md5)
  const tree = mergeServices([parseFlist(fs.readFileSync(path.join(store, 'md', `${SERVICE}.flist`)), { name: SERVICE, prefix: PREFIX })])
  const f = createFetcher({
    config: makeConfig({ cache: path.join(dir, 'cache'), stores: [srv.url], timeoutMs: 60_000 }),
    log: memLog(),
    fsync: false,
    speculation: { startupInFlightBytes: 2500 },
  })
  t.teardown(() => f.close())
  f.setStartup(startupSet(tree, [[list[1]!.md5, list[0]!.md5, list[2]!.md5, list[3]!.md5]]))
  t.ok(await until(() => srv.held === 1 && f.stats().startup.fetched === 1, 20_000), 'a 1000-byte blob, and the 3000-byte one beside it (1000 < 2500 in flight)')
  t.equal(srv.log.length, 2, 'no third while 3000 bytes are in flight')
  srv.release()
  t.ok(await until(() => f.stats().startup.fetched === 4, 20_000), 'then the last two')
  t.equal(srv.log.length, 4)
})

t.test('cousins (a name in sibling directories) are guessed once the sources answer slowly, within the byte budget', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const list = makeFiles(Array.from({ length: 8 }, (_, i) => `nm/p${i}/package.json`), () => 1000, 11)
  writeTree(store, list)
  // Every answer FAR_MS late or more: a far store, as over a WAN.
  const srv = await startStore(t, store, FAR_MS * 3)
    // 3.5 blobs of budget.
  const { tree, f } = speculating(t, dir, store, srv.url, { maxBytes: 3500 })
  const spec = (): SpeculationStats => f.stats().speculation
  // The first miss: nothing measured yet, no cousins then (its directory holds nothing else);
  // its download, the first of a connection, took FAR_AFTER_MS or more: its cousins once it came.
  await f.fetch(list[0]!.md5, 1000)
  t.ok(await until(() => spec().active === 0 && spec().landed === 3, 20_000), 'three package.json of the other packages landed')
  const guessed = srv.log.map((e) => e.md5).filter((m) => m !== list[0]!.md5)
  t.equal(guessed.length, 3, 'no fourth guess: the budget holds')
  t.ok(guessed.every((m) => list.slice(1).some((x) => x.md5 === m)), "only the other packages' package.json")
})

t.test('a near store (the fastest of the last demand downloads under FAR_MS): no cousins', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const list = makeFiles(Array.from({ length: 8 }, (_, i) => `nm/p${i}/package.json`), () => 1000, 13)
  writeTree(store, list)
  const srv = await startStore(t, store)
  const tree = mergeServices([parseFlist(fs.readFileSync(path.join(store, 'md', `${SERVICE}.flist`)), { name: SERVICE, prefix: PREFIX })])
  const f = createFetcher({ config: makeConfig({ cache: path.join(dir, 'cache'), stores: [srv.url], timeoutMs: 60_000 }), log: memLog(), fsync: false, locality: buildLocality(tree) })
  t.teardown(() => f.close())
  // Loopback: one of these answers in well under FAR_MS even on a loaded machine.
  for (const x of list.slice(0, 6)) await f.fetch(x.md5, 1000)
  t.equal(f.stats().speculation.started, 0, 'nothing guessed: each directory holds only its own file, and the cousins are not named')
  t.equal(srv.log.length, 6)
})

t.test("a far store: a package.json read names its package's entry file, and nothing outside", async (t) => {
  const list = [
    // Three misses of their own first, so that the store is measured far.
    ...makeFiles(['w0/a', 'w1/b', 'w2/c'], () => 1000, 17),
    file('nm/p/package.json', JSON.stringify({ main: './lib/main', exports: { './x': './x.js' } })),
    file('nm/p/lib/main.js', "module.exports = require('./util')\n"),
    file('nm/p/lib/util.js', 'module.exports = 1\n'),
    file('nm/p/lib/unused.js', '// a file nothing names, larger than util.js\n'.repeat(3)),
    // Not a cousin of nm/p/package.json (another parent's parent): guessed only when read.
    file('other/q/package.json', JSON.stringify({ main: '../../nm/p/lib/unused.js' })),
    file('other/q/index.js', 'q\n'),
  ]
  const f = await farFetcher(t, list)
  const pkg = byRel(list, 'nm/p/package.json')
  await f.fetch(pkg.md5, pkg.data.length)
  const main = byRel(list, 'nm/p/lib/main.js')
  t.ok(await until(() => f.has(main.md5, main.data.length), 20_000), 'its entry file (main: ./lib/main → lib/main.js) guessed and landed')
  const util = byRel(list, 'nm/p/lib/util.js')
  t.ok(await until(() => f.has(util.md5, util.data.length), 20_000), 'what the entry file requires, in turn (a level further)')
  const q = byRel(list, 'other/q/package.json')
  await f.fetch(q.md5, q.data.length)
  const qi = byRel(list, 'other/q/index.js')
  t.ok(await until(() => f.has(qi.md5, qi.data.length) && f.stats().speculation.active === 0, 20_000), "q's main climbs out of it: its index.js instead")
  t.notOk(f.has(byRel(list, 'nm/p/lib/unused.js').md5, byRel(list, 'nm/p/lib/unused.js').data.length), "never p's file through q's main")
  t.equal(f.stats().speculation.failed, 0)
})

t.test('a far store: a blob of the start-up set, read or not, names nothing (the set lists what is read next)', async (t) => {
  const list = [
    ...makeFiles(['w0/a', 'w1/b', 'w2/c'], () => 1000, 19),
    file('nm/p/package.json', JSON.stringify({ main: './main.js' })),
    file('nm/p/main.js', 'p\n'),
  ]
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  writeTree(store, list)
  const srv = await startStore(t, store, FAR_MS * 3)
  const { tree, f } = speculating(t, dir, store, srv.url, {})
  for (const x of list.slice(0, 3)) await f.fetch(x.md5, x.data.length)
  const pkg = byRel(list, 'nm/p/package.json')
  srv.hold.add(pkg.md5)
  f.setStartup(startupSet(tree, [[pkg.md5]]))
  t.ok(await until(() => srv.held === 1, 20_000), 'the set asked for')
  // A read joins its download: the bytes are read, but the set said what comes next.
  const read = f.fetch(pkg.md5, pkg.data.length)
  srv.release()
  await read
  t.ok(await until(() => f.stats().startup.fetched === 1 && f.stats().startup.joined === 1, 20_000), 'the set fetched, the read joined it')
  t.equal(f.stats().speculation.started, 0, 'its entry file not guessed')
})

t.test('a far store, readers at once: content names nothing (locality only); one reader again: it does', async (t) => {
  const list = [
    ...makeFiles(['w0/a', 'w1/b', 'w2/c', 'w3/d'], () => 1000, 19),
    file('a/p/package.json', JSON.stringify({ main: 'lib/main.js' })),
    file('a/p/lib/main.js', 'p\n'),
    file('b/q/package.json', JSON.stringify({ name: 'q', main: 'lib/main.js' })),
    file('b/q/lib/main.js', 'q\n'),
  ]
  const f = await farFetcher(t, list)
  const p = byRel(list, 'a/p/package.json')
  const other = byRel(list, 'w3/d')
  // Two reads waiting at once: p's package.json and another file.
  await Promise.all([f.fetch(p.md5, p.data.length), f.fetch(other.md5, other.data.length)])
  t.ok(await until(() => f.stats().speculation.active === 0, 20_000))
  t.notOk(f.has(byRel(list, 'a/p/lib/main.js').md5, 2), 'its entry file not named')
  const q = byRel(list, 'b/q/package.json')
  await f.fetch(q.md5, q.data.length)
  t.ok(await until(() => f.has(byRel(list, 'b/q/lib/main.js').md5, 2), 20_000), 'one reader: the entry file named')
})

t.test('a far store: a read whose download has answered (still committing) is not a second reader', async (t) => {
  const T = '.cpython-311.pyc'
  const list = [
    ...makeFiles(['w0/a', 'w1/b', 'w2/c', 'w3/d'], () => 1000, 23),
    file(`lib/pkg/__pycache__/mod${T}`, PYC),
    file(`lib/pkg/__pycache__/__init__${T}`, Buffer.from('a package')),
    file(`lib/__pycache__/os${T}`, Buffer.from('os byte code')),
  ]
  const f = await farFetcher(t, list)
  const first = byRel(list, 'w3/d')
  const mod = byRel(list, `lib/pkg/__pycache__/mod${T}`)
  let second: Promise<void> | undefined
  // The next miss comes as soon as the last one's reader has its bytes, as a start-up's does.
  await f.fetch(first.md5, first.data.length, () => {
    second = f.fetch(mod.md5, mod.data.length)
  })
  await second
  // os, outside its directory: only its content names it, and only for one reader.
  const os = byRel(list, `lib/__pycache__/os${T}`)
  t.ok(await until(() => f.has(os.md5, os.data.length) && f.stats().speculation.active === 0, 20_000), 'its import named: one reader')
})
