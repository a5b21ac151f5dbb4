// The bounds of speculation (lib/pipeline/speculate.ts) on the pipeline itself, against an HTTP
// store of the test's own that holds the guesses' answers: guesses at once, guessed bytes not
// read yet, and the budget paid back by a read. Counted at the server and in the counters.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { mergeServices, parseFlist } from '../../lib/flist'
import { createFetcher } from '../../lib/pipeline'
import { buildLocality } from '../../lib/pipeline/locality'
import type { SpeculationStats } from '../../lib/pipeline/speculate'
import { makeFiles, startStore, writeTree } from '../helpers/counting-store'
import { PREFIX, SERVICE, until } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'
import { makeConfig, memLog } from '../helpers/store'

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
