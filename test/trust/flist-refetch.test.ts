// A signed node that fetches an flist and a signature that do not match fetches the pair once more
// from the same store before it refuses that store's copy: `publish` renames the new flist, then
// its signature, and a node can read the pair between the two. The store here is a small HTTP
// server in the test that can answer the first request for the signature with the previous one
// (the state between the renames), or keep answering it (a pair that stays bad).
import fs from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import t, { type Test } from 'tap'
import { mount } from '../../lib/index'
import type { Logger } from '../../lib/log'
import { publish } from '../../lib/publish'
import { generateKeyPair } from '../../lib/sign'
import { clearMounts } from '../helpers/mount'
import { tmpdir } from '../helpers/tmp'

const ID = 'svc'
const PREFIX = '/opt/app'

interface Store {
  url: string
  /** Request paths, in order. */
  requests: string[]
}

/**
 * Serves `root` over HTTP; the first `stale.length` requests for the signature get those bytes
 * instead of the file's.
 */
async function serve(t: Test, root: string, stale: Buffer[]): Promise<Store> {
  const requests: string[] = []
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)
    requests.push(rel)
    if (rel === `/md/${ID}.flist.sig` && stale.length > 0) return void res.end(stale.shift())
    const file = path.join(root, ...rel.split('/').filter((c) => c !== '' && c !== '..'))
    fs.readFile(file, (err, data) => {
      if (err) {
        res.statusCode = 404
        return void res.end()
      }
      res.end(data)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests }
}

function memLog(): { log: Logger; lines: { level: string; msg: string }[] } {
  const lines: { level: string; msg: string }[] = []
  const mk = (level: string) => (_obj: object, msg?: string) => void lines.push({ level, msg: msg ?? '' })
  const log = { level: 'debug', trace: mk('trace'), debug: mk('debug'), info: mk('info'), warn: mk('warn'), error: mk('error'), fatal: mk('fatal'), child: () => log }
  return { log: log as unknown as Logger, lines }
}

/** A store with version 1 published and signed, then version 2: the signature of version 1 too. */
async function twoVersions(t: Test): Promise<{ dir: string; store: string; pub: string; oldSig: Buffer }> {
  const dir = tmpdir(t, 'aysfs-refetch-')
  const src = path.join(dir, 'src')
  fs.mkdirSync(src)
  const keys = generateKeyPair(path.join(dir, 'keys'))
  const store = path.join(dir, 'store')
  fs.writeFileSync(path.join(src, 'app.conf'), 'version one\n')
  await publish({ dir: src, id: ID, store, prefix: PREFIX, sign: keys.privateKey, progress: false })
  const oldSig = fs.readFileSync(path.join(store, 'md', `${ID}.flist.sig`))
  fs.writeFileSync(path.join(src, 'app.conf'), 'version two\n')
  fs.writeFileSync(path.join(src, 'new.conf'), 'new in two\n')
  await publish({ dir: src, id: ID, store, prefix: PREFIX, sign: keys.privateKey, progress: false })
  return { dir, store, pub: keys.publicKey, oldSig }
}

function config(dir: string, url: string, pub: string): Record<string, unknown> {
  return { main: { cache: path.join(dir, 'cache'), prefix: PREFIX, timeout: '2s', trusted_keys: [pub] }, ays: [{ id: ID }], store: [{ url }] }
}

const count = (s: Store, rel: string): number => s.requests.filter((r) => r === rel).length

t.test('the new flist with the old signature (a publish between its renames): fetched once more, verified, mounted', async (t) => {
  const v = await twoVersions(t)
  const s = await serve(t, v.store, [v.oldSig])
  const { log, lines } = memLog()
  const mountpoint = path.join(v.dir, 'mnt')
  fs.mkdirSync(mountpoint)
  const m = await mount({ mountpoint, log, config: config(v.dir, s.url, v.pub) })
  t.teardown(async () => {
    await m.unmount()
    clearMounts(mountpoint)
  })
  t.equal(count(s, `/md/${ID}.flist`), 2, 'the flist was fetched twice')
  t.equal(count(s, `/md/${ID}.flist.sig`), 2, 'and its signature')
  t.match(m.stats().mount!.services, [{ id: ID, source: 'store[0]' }])
  // Async reads: the store is served by this thread, which must stay free to answer the miss.
  t.equal(await fs.promises.readFile(path.join(mountpoint, 'app.conf'), 'utf8'), 'version two\n', 'the new tree')
  t.equal(await fs.promises.readFile(path.join(mountpoint, 'new.conf'), 'utf8'), 'new in two\n')
  t.ok(
    lines.some((l) => l.level === 'info' && /refused: bad signature.*; fetched once more from store\[0\], the pair verified/.test(l.msg)),
    'the first refusal is logged as information',
  )
  t.notOk(
    lines.some((l) => l.level === 'warn'),
    'no warning: nothing was refused in the end',
  )
})

t.test('a pair that stays bad is refused after the one refetch: said once (the error), never kept', async (t) => {
  const v = await twoVersions(t)
  const s = await serve(t, v.store, [v.oldSig, v.oldSig, v.oldSig])
  const { log, lines } = memLog()
  const mountpoint = path.join(v.dir, 'mnt')
  fs.mkdirSync(mountpoint)
  await t.rejects(mount({ mountpoint, log, config: config(v.dir, s.url, v.pub) }), {
    code: 'EACCES',
    message: new RegExp(`^service ${ID}: flist from store\\[0\\] \\(.*\\) refused: bad signature`),
  })
  t.notOk(fs.readFileSync('/proc/self/mounts', 'utf8').includes(` ${mountpoint} `), 'nothing mounted')
  t.equal(count(s, `/md/${ID}.flist`), 2, 'fetched once more, not more')
  t.equal(count(s, `/md/${ID}.flist.sig`), 2)
  // The refusal is the error the caller gets (the command line's one FATAL line), not also a warning.
  t.equal(lines.filter((l) => /refused: bad signature/.test(l.msg) && l.level !== 'debug').length, 0, 'the refusal is not logged besides')
  t.notOk(fs.existsSync(path.join(v.dir, 'cache', 'md', `${ID}.flist`)), 'a refused flist is never kept')
})

t.test('the refusal is counted once per store, after the refetch (untrusted)', async (t) => {
  const { createFetcher } = await import('../../lib/pipeline')
  const { checkConfig } = await import('../../lib/config')
  const { loadTrustedKeys, verifyThenParse } = await import('../../lib/sign')
  const v = await twoVersions(t)
  const check = verifyThenParse(loadTrustedKeys([v.pub]), ID, (data) => data.length)
  for (const [stale, untrusted] of [[[v.oldSig], undefined], [[v.oldSig, v.oldSig], 1]] as const) {
    const s = await serve(t, v.store, [...stale])
    const f = createFetcher({ config: checkConfig(config(v.dir, s.url, v.pub)), log: memLog().log })
    t.teardown(() => f.close())
    const r = await f.fetchFlist(ID, check, { signature: true }).catch((err: Error) => err)
    t.equal(r instanceof Error, untrusted !== undefined, untrusted ? 'refused' : 'accepted')
    t.equal(f.stats().sources[0]!.errorKinds.untrusted, untrusted)
  }
})
