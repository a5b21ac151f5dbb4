// A refresh against a real nginx picks up a new start-up list (`md/<id>.startup`) when the flist
// itself did not change: `publish --startup` of an unchanged tree leaves the flist as it is (its
// conditional GET says 304) and replaces only the list. Unsigned and signed services; while
// nothing changes, the list costs a conditional request (304) like the flist.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { mount, type AysfsMount } from '../../lib/index'
import type { Logger } from '../../lib/log'
import type { StartupStats } from '../../lib/pipeline/speculate'
import { publish } from '../../lib/publish'
import { generateKeyPair, signStartup, type KeyPairFiles } from '../../lib/sign'
import { formatStartupList } from '../../lib/startup'
import { until } from '../helpers/hardening'
import { clearMounts } from '../helpers/mount'
import { startNginx, type Nginx } from '../helpers/nginx'
import { md5hex } from '../helpers/store'
import { tmpdir } from '../helpers/tmp'

const PREFIX = '/opt/app'
const ID = 'app__main'
const FILES = Array.from({ length: 6 }, (_, i) => ({ rel: `lib/m${i}.py`, data: Buffer.from(`module ${i}\n`.repeat(100 + i)) }))

function memLog() {
  const lines: { level: string; msg: string }[] = []
  const mk = (level: string) => (_obj: object, msg?: string) => void lines.push({ level, msg: msg ?? '' })
  const log = { level: 'info', trace: mk('trace'), debug: mk('debug'), info: mk('info'), warn: mk('warn'), error: mk('error'), fatal: mk('fatal'), child: () => log }
  return { log: log as unknown as Logger, lines }
}

function startupOf(m: AysfsMount): StartupStats | undefined {
  return (m.stats().pipeline as { startup?: StartupStats } | undefined)?.startup
}

interface Fleet {
  dir: string
  store: string
  n: Nginx
  key: KeyPairFiles
  /** `publish` of the same tree with a start-up list naming the first `count` files. */
  release(count: number, sign: boolean): ReturnType<typeof publish>
}

async function fleet(t: Test): Promise<Fleet> {
  const dir = tmpdir(t, 'aysfs-fleet-')
  const store = path.join(dir, 'store')
  const src = path.join(dir, 'src')
  fs.mkdirSync(store)
  for (const f of FILES) {
    fs.mkdirSync(path.dirname(path.join(src, f.rel)), { recursive: true })
    fs.writeFileSync(path.join(src, f.rel), f.data)
  }
  const key = generateKeyPair(path.join(dir, 'keys'))
  const n = await startNginx({ store })
  t.teardown(() => n.stop())
  let seq = 0
  const release = (count: number, sign: boolean) => {
    const list = path.join(dir, `list-${++seq}.startup`)
    fs.writeFileSync(list, formatStartupList(FILES.slice(0, count).map((f) => md5hex(f.data))))
    return publish({ dir: src, id: ID, store, prefix: PREFIX, startup: list, progress: false, fsync: false, ...(sign ? { sign: key.privateKey } : {}) })
  }
  return { dir, store, n, key, release }
}

async function node(t: Test, f: Fleet, o: { signed: boolean; log: Logger }): Promise<AysfsMount> {
  const mountpoint = path.join(f.dir, 'mnt')
  fs.mkdirSync(mountpoint, { recursive: true })
  const config = {
    main: { cache: path.join(f.dir, 'cache'), prefix: PREFIX, timeout: '2s', ...(o.signed ? { trusted_keys: [f.key.publicKey] } : {}) },
    ays: [{ id: ID }],
    store: [{ url: `${f.n.url}/store` }],
  }
  const m = await mount({ mountpoint, config, log: o.log })
  t.teardown(async () => {
    await m.unmount()
    clearMounts(mountpoint)
  })
  return m
}

const md = (r: { uri: string }) => r.uri.startsWith('/store/md/')

/** The md/ requests of one refresh: what it asked and how nginx answered. */
async function refreshRequests(m: AysfsMount, n: Nginx): Promise<string[]> {
  const seen = n.requests().filter(md).length
  await m.refresh()
  return n
    .requests()
    .filter(md)
    .slice(seen)
    .map((r) => `${r.uri.replace(/^.*\//, '')} ${r.status}`)
}

t.test('unsigned: a new start-up list beside an unchanged flist is picked up by a refresh, a 304 while it stays', async (t) => {
  const f = await fleet(t)
  await f.release(2, false)
  const { log, lines } = memLog()
  const m = await node(t, f, { signed: false, log })
  t.ok(await until(() => startupOf(m)?.fetched === 2, 20_000), 'the two listed blobs fetched at mount')

  const r = await f.release(5, false)
  t.ok(r.unchanged, 'publish left the flist as it was: only the list is new')
  const asked = await refreshRequests(m, f.n)
  t.same(asked.slice(0, 2), [`${ID}.flist 304`, `${ID}.startup 200`], `the flist: a 304; the list: changed (${JSON.stringify(asked)})`)
  t.match(m.stats().mount!.services, [{ id: ID, refresh: { result: 'unchanged' } }], 'the flist in force is unchanged')
  t.ok(await until(() => startupOf(m)?.listed === 5 && startupOf(m)?.fetched === 5, 20_000), `the new list in force and its new blobs fetched: ${JSON.stringify(startupOf(m))}`)
  t.ok(lines.some((l) => l.level === 'info' && /new start-up lists/.test(l.msg)), 'said at info')

  t.same(await refreshRequests(m, f.n), [`${ID}.flist 304`, `${ID}.startup 304`], 'nothing changed: two 304s')
  t.same(await refreshRequests(m, f.n), [`${ID}.flist 304`, `${ID}.startup 304`], 'and again')

  // The list removed from the store: a refresh sees its 404 and stops using it.
  fs.rmSync(path.join(f.store, 'md', `${ID}.startup`))
  t.ok((await refreshRequests(m, f.n)).includes(`${ID}.startup 404`))
  t.ok(await until(() => startupOf(m)?.listed === 0, 20_000), 'no list in force')
  t.same(await refreshRequests(m, f.n), [`${ID}.flist 304`, `${ID}.startup 404`], 'no list: its 404, nothing else')
})

t.test('signed: a list re-signed alone is picked up; a list its signature does not vouch for is not used', async (t) => {
  const f = await fleet(t)
  const pub = await f.release(2, true)
  const { log, lines } = memLog()
  const m = await node(t, f, { signed: true, log })
  t.ok(await until(() => startupOf(m)?.fetched === 2, 20_000), 'the signed list used at mount')
  t.same(
    await refreshRequests(m, f.n),
    [`${ID}.flist 304`, `${ID}.flist.sig 304`, `${ID}.startup 304`, `${ID}.startup.sig 304`],
    'nothing changed: four 304s',
  )

  // A new list signed for the same revision, the flist and its signature left alone.
  const file = path.join(f.store, 'md', `${ID}.startup`)
  const list = formatStartupList(FILES.slice(0, 4).map((x) => md5hex(x.data)))
  fs.writeFileSync(file, list)
  fs.writeFileSync(`${file}.sig`, signStartup(list, f.key.privateKey, { id: ID, revision: pub.revision! }))
  await m.refresh()
  t.ok(await until(() => startupOf(m)?.listed === 4, 20_000), 'the re-signed list in force')

  // Other bytes under that signature: fetched, refused with its warning, not used.
  const forged = formatStartupList(FILES.map((x) => md5hex(x.data)))
  fs.writeFileSync(file, forged)
  await m.refresh()
  t.ok(await until(() => startupOf(m)?.listed === 0, 20_000), 'a list its signature does not vouch for is not used')
  t.ok(lines.some((l) => l.level === 'warn' && /start-up list from store\[0\] .* refused: bad signature/.test(l.msg)), 'refused with a warning')
  const warned = lines.filter((l) => l.level === 'warn').length
  t.same(
    await refreshRequests(m, f.n),
    [`${ID}.flist 304`, `${ID}.flist.sig 304`, `${ID}.startup 304`, `${ID}.startup.sig 304`],
    'the refused list stays refused at the cost of 304s',
  )
  t.equal(lines.filter((l) => l.level === 'warn').length, warned, 'and no new warning')
})
