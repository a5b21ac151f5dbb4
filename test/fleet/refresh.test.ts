// A fleet against a real nginx: signed revisions that never go backwards (at mount, at refresh,
// after a restart, with a store that lags behind another) and the automatic refresh (conditional
// GETs answered 304 while nothing changed, a new revision applied in place, a store that is down
// changing nothing).
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { mount, type AysfsMount, type RefreshEvent } from '../../lib/index'
import type { Logger } from '../../lib/log'
import { publish } from '../../lib/publish'
import { generateKeyPair, type KeyPairFiles } from '../../lib/sign'
import { until } from '../helpers/hardening'
import { clearMounts } from '../helpers/mount'
import { startNginx, type Nginx } from '../helpers/nginx'
import { tmpdir } from '../helpers/tmp'

const PREFIX = '/opt/app'
const ID = 'app__main'

function memLog() {
  const lines: { level: string; msg: string }[] = []
  const mk = (level: string) => (_obj: object, msg?: string) => void lines.push({ level, msg: msg ?? '' })
  const log = { level: 'debug', trace: mk('trace'), debug: mk('debug'), info: mk('info'), warn: mk('warn'), error: mk('error'), fatal: mk('fatal'), child: () => log }
  return { log: log as unknown as Logger, lines }
}

interface Fleet {
  dir: string
  key: KeyPairFiles
  store: string
  n: Nginx
  /** Publish a tree whose files say `version` at `revision`; returns the pair's bytes. */
  release(version: string, revision: number, store?: string): Promise<{ flist: Buffer; sig: Buffer }>
}

async function fleet(t: Test): Promise<Fleet> {
  const dir = tmpdir(t, 'aysfs-fleet-')
  const key = generateKeyPair(path.join(dir, 'keys'))
  const store = path.join(dir, 'store')
  fs.mkdirSync(store)
  const n = await startNginx({ store })
  t.teardown(() => n.stop())
  const release = async (version: string, revision: number, to = store) => {
    const src = path.join(dir, `src-${version}`)
    fs.rmSync(src, { recursive: true, force: true })
    fs.mkdirSync(path.join(src, 'bin'), { recursive: true })
    fs.writeFileSync(path.join(src, 'bin', 'tool'), `tool ${version}\n`)
    fs.writeFileSync(path.join(src, `only-in-${version}`), `${version}\n`)
    await publish({ dir: src, id: ID, store: to, prefix: PREFIX, sign: key.privateKey, revision, progress: false, fsync: false })
    const md = path.join(to, 'md', `${ID}.flist`)
    return { flist: fs.readFileSync(md), sig: fs.readFileSync(`${md}.sig`) }
  }
  return { dir, key, store, n, release }
}

function config(f: Fleet, o: { stores?: string[]; refresh?: string; cache?: string } = {}): Record<string, unknown> {
  return {
    main: { cache: o.cache ?? path.join(f.dir, 'cache'), prefix: PREFIX, timeout: '2s', trusted_keys: [f.key.publicKey], ...(o.refresh ? { refresh: o.refresh } : {}) },
    ays: [{ id: ID }],
    store: (o.stores ?? [`${f.n.url}/store`]).map((url) => ({ url })),
  }
}

async function node(t: Test, f: Fleet, o: Parameters<typeof config>[1] & { log?: Logger; events?: RefreshEvent[]; name?: string } = {}): Promise<AysfsMount> {
  const mountpoint = path.join(f.dir, o.name ?? 'mnt')
  fs.mkdirSync(mountpoint, { recursive: true })
  const m = await mount({ mountpoint, config: config(f, o), log: o.log ?? { level: 'silent' }, onRefresh: (e) => o.events?.push(e) })
  t.teardown(async () => {
    await m.unmount()
    clearMounts(mountpoint)
  })
  return m
}

const md = (r: { uri: string }) => r.uri.startsWith('/store/md/')

t.test('refresh: a new revision appears in place, 304s while unchanged, an older one is refused, also after a restart', async (t) => {
  const f = await fleet(t)
  const r1 = await f.release('one', 1)
  const { log, lines } = memLog()
  const events: RefreshEvent[] = []
  const m = await node(t, f, { refresh: '1s', log, events })
  const tool = path.join(m.mountpoint, 'bin', 'tool')
  t.equal(fs.readFileSync(tool, 'utf8'), 'tool one\n')
  t.match(m.stats().mount!.services, [{ id: ID, revision: 1, key: f.key.keyId }])
  const held = fs.openSync(tool, 'r')
  t.teardown(() => fs.closeSync(held))

  await f.release('two', 2)
  t.ok(await until(() => fs.existsSync(path.join(m.mountpoint, 'only-in-two')), 20_000), 'revision 2 shows within a few refreshes, without an unmount')
  t.equal(fs.readFileSync(tool, 'utf8'), 'tool two\n')
  t.notOk(fs.existsSync(path.join(m.mountpoint, 'only-in-one')))
  const buf = Buffer.alloc(64)
  t.equal(buf.subarray(0, fs.readSync(held, buf, 0, 64, 0)).toString(), 'tool one\n', 'a file opened before keeps its bytes')
  t.match(m.stats().mount!.services, [{ id: ID, revision: 2, refresh: { result: 'applied' } }])
  t.match(events, [{ type: 'applied', services: [{ id: ID, revision: 2, previous: 1 }] }])

  // Nothing changes: only conditional requests answered 304 (the flist and its signature).
  const seen = f.n.requests().filter(md).length
  const checks = m.stats().mount!.refresh!.checks
  t.ok(await until(() => m.stats().mount!.refresh!.checks >= checks + 2, 20_000), 'two more refreshes ran')
  const quiet = f.n.requests().filter(md).slice(seen)
  t.ok(quiet.length >= 2, `requests while unchanged: ${JSON.stringify(quiet)}`)
  t.ok(quiet.every((r) => r.status === (r.uri.endsWith('.startup') ? 404 : 304)), 'every one a 304 (the start-up list, which this service has not: a 404)')
  t.same(new Set(quiet.map((r) => r.uri)), new Set([`/store/md/${ID}.flist`, `/store/md/${ID}.flist.sig`, `/store/md/${ID}.startup`]), 'the flist, its signature and the start-up list')
  t.match(m.stats().mount!.services, [{ id: ID, revision: 2, refresh: { result: 'unchanged' } }])

  // Revision 1's pair put back in the store: refused, the tree stays, said once in the log.
  const mdFile = path.join(f.store, 'md', `${ID}.flist`)
  fs.writeFileSync(mdFile, r1.flist)
  fs.writeFileSync(`${mdFile}.sig`, r1.sig)
  t.ok(await until(() => events.some((e) => e.type === 'refused'), 20_000), 'the refusal is reported to onRefresh')
  const checks2 = m.stats().mount!.refresh!.checks
  t.ok(await until(() => m.stats().mount!.refresh!.checks >= checks2 + 1, 20_000))
  t.equal(fs.readFileSync(tool, 'utf8'), 'tool two\n', 'revision 2 stays')
  const info = m.stats().mount!
  t.match(info.services, [{ id: ID, revision: 2, refresh: { result: 'refused', error: /rollback refused/ } }])
  t.match(info.rollbacks, [{ id: ID, have: 2, offered: 1, message: /^service app__main: rollback refused: store\[0\] .* offers revision 1, older than revision 2/ }])
  t.equal(lines.filter((l) => /rollback refused/.test(l.msg)).length, 1, 'logged once for the pair (2, 1)')
  t.notOk(lines.some((l) => l.level === 'error'), 'no error logged for a refusal')

  // The node restarts: the record in <cache>/md/ survived, revision 1 is still refused.
  await m.unmount()
  clearMounts(m.mountpoint)
  await t.rejects(node(t, f, { name: 'mnt2' }), { code: 'EACCES', message: /rollback refused: store\[0\] .* offers revision 1, older than revision 2/ })
  const rec = fs.readFileSync(path.join(f.dir, 'cache', 'md', `${ID}.flist.revision`), 'utf8')
  t.match(rec, /^revision: 2\n/)
  t.equal(fs.statSync(path.join(f.dir, 'cache', 'md', `${ID}.flist.revision`)).mode & 0o777, 0o600)
})

t.test('a store that lags behind another is skipped for the next one', async (t) => {
  const f = await fleet(t)
  await f.release('one', 1)
  await f.release('two', 2)
  const first = await node(t, f)
  t.match(first.stats().mount!.services, [{ source: 'store[0]', revision: 2 }])
  await first.unmount()
  clearMounts(first.mountpoint)

  // A mirror that still has revision 1, listed first: refused (it looks like an attack), and the
  // next store's revision 2 mounted.
  const mirror = path.join(f.dir, 'mirror')
  await f.release('one', 1, mirror)
  const { log, lines } = memLog()
  const m = await node(t, f, { name: 'mnt2', stores: [mirror, `${f.n.url}/store`], log })
  t.match(m.stats().mount!.services, [{ source: 'store[1]', revision: 2 }])
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'bin', 'tool'), 'utf8'), 'tool two\n')
  t.ok(lines.some((l) => l.level === 'warn' && /^service app__main: rollback refused: store\[0\] .* offers revision 1, older than revision 2/.test(l.msg)))
  t.match(m.stats().mount!.rollbacks, [{ have: 2, offered: 1 }])
})

t.test('a store that is down during a refresh changes nothing', async (t) => {
  const f = await fleet(t)
  await f.release('one', 1)
  const events: RefreshEvent[] = []
  const m = await node(t, f, { events })
  t.match(await m.refresh(), [{ id: ID, result: 'unchanged' }])
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'bin', 'tool'), 'utf8'), 'tool one\n', 'read (and cached) while the store is up')
  await f.n.stop()
  const results = await m.refresh()
  t.match(results, [{ id: ID, result: 'unreachable', error: /no store answered \(store\[0\]: net:ECONNREFUSED\)/ }])
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'bin', 'tool'), 'utf8'), 'tool one\n', 'the tree stays')
  t.match(m.stats().mount!.services, [{ revision: 1, refresh: { result: 'unreachable' } }])
  t.same(events, [], 'nothing to tell onRefresh')
})

t.test('a refused revision still offered costs two 304s a refresh, counted and told once; a new one there is fetched and judged', async (t) => {
  const f = await fleet(t)
  const r1 = await f.release('one', 1)
  await f.release('two', 2)
  const { log, lines } = memLog()
  const events: RefreshEvent[] = []
  const m = await node(t, f, { log, events })
  const refusedTotal = async () => Number(/^aysfs_rollbacks_refused_total(?:\{[^}]*\})? (\d+)$/m.exec(await m.metrics())?.[1])
  const mdFile = path.join(f.store, 'md', `${ID}.flist`)
  // A pair put in place as publish would: each file a later mtime (nginx's validators are the
  // mtime in seconds and the size, and these pairs have the same sizes).
  let stamp = Math.ceil(Date.now() / 1000) + 10
  const put = (pair: { flist: Buffer; sig: Buffer }) => {
    stamp += 10
    for (const [file, data] of [[mdFile, pair.flist], [`${mdFile}.sig`, pair.sig]] as const) {
      fs.writeFileSync(file, data)
      fs.utimesSync(file, stamp, stamp)
    }
  }
  put(r1)
  t.match(await m.refresh(), [{ id: ID, result: 'refused', error: /rollback refused: store\[0\] .* offers revision 1, older than revision 2/ }])
  t.equal(await refusedTotal(), 1)
  t.match(events, [{ type: 'refused' }])
  const firstAt = m.stats().mount!.rollbacks![0]!.at

  // The store still offers it: conditional requests with the refused responses' validators.
  for (let i = 0; i < 3; i++) {
    const seen = f.n.requests().filter(md).length
    t.match(await m.refresh(), [{ id: ID, result: 'refused', error: /rollback refused: store\[0\] .* offers revision 1, older than revision 2/ }])
    const asked = f.n.requests().filter(md).slice(seen).map((r) => `${r.uri.replace(/^.*\//, '')} ${r.status}`)
    t.same(asked, [`${ID}.flist 304`, `${ID}.flist.sig 304`], `refresh ${i + 1}: two 304s, no download`)
  }
  t.equal(await refusedTotal(), 1, 'the same refused flist is counted once')
  t.equal(events.length, 1, 'and told once')
  t.equal(lines.filter((l) => /rollback refused/.test(l.msg)).length, 1, 'and logged once')
  const info = m.stats().mount!
  t.match(info.rollbacks, [{ id: ID, have: 2, offered: 1 }], 'status still shows the refusal')
  t.ok(info.rollbacks![0]!.at >= firstAt, 'as of the last refresh')
  t.match(info.services, [{ id: ID, revision: 2, refresh: { result: 'refused' } }])
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'bin', 'tool'), 'utf8'), 'tool two\n', 'revision 2 stays')

  // Another old pair there (revision 1 of another tree): fetched, judged, refused and counted.
  const old = path.join(f.dir, 'old-store')
  const r1b = await f.release('uno', 1, old)
  put(r1b)
  const seen = f.n.requests().filter(md).length
  t.match(await m.refresh(), [{ id: ID, result: 'refused' }])
  t.ok(f.n.requests().filter(md).slice(seen).some((r) => r.uri.endsWith(`${ID}.flist`) && r.status === 200), 'the new one downloaded')
  t.equal(await refusedTotal(), 2, 'a new refused flist counts')
  t.equal(events.length, 2)

  // A new revision: applied as usual, the refusal gone.
  await f.release('three', 3)
  t.match(await m.refresh(), [{ id: ID, result: 'applied' }])
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'bin', 'tool'), 'utf8'), 'tool three\n')
  t.equal(m.stats().mount!.rollbacks, undefined)
  const seen2 = f.n.requests().filter(md).length
  t.match(await m.refresh(), [{ id: ID, result: 'unchanged' }])
  t.same(
    f.n.requests().filter(md).slice(seen2).filter((r) => r.uri.includes('.flist')).map((r) => r.status),
    [304, 304],
    'then 304s for the pair in force',
  )
})
