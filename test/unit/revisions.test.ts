// Signed revisions without a mount: the version 2 signature (service id and revision bound with
// the bytes), the record of the highest revision accepted per service (lib/revisions.ts), and
// the refresh schedule with an injected timer (lib/refresh.ts).
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { checkConfig } from '../../lib/config'
import type { Logger } from '../../lib/log'
import { RefreshSchedule, refreshDelay } from '../../lib/refresh'
import { Revisions, sha256 } from '../../lib/revisions'
import { formatSignature, generateKeyPair, loadTrustedKeys, parseSignature, signFlist, verifyFlist } from '../../lib/sign'
import { tmpdir } from '../helpers/tmp'

const FLIST = Buffer.from('/opt/x/bin/tool|8a3e5e03a10ecc3601a1f14fbc371019|4857\n')
const OTHER = Buffer.from('/opt/x/bin/tool|d41d8cd98f00b204e9800998ecf8427e|0\n')
const ID = 'jumpscale__base'

function memLog() {
  const lines: { level: string; msg: string }[] = []
  const mk = (level: string) => (_obj: object, msg?: string) => void lines.push({ level, msg: msg ?? '' })
  const log = { level: 'debug', trace: mk('trace'), debug: mk('debug'), info: mk('info'), warn: mk('warn'), error: mk('error'), fatal: mk('fatal'), child: () => log }
  return { log: log as unknown as Logger, lines }
}

t.test('a version 2 signature binds the service id and the revision with the bytes', async (t) => {
  const dir = tmpdir(t)
  const kp = generateKeyPair(path.join(dir, 'keys'))
  const keys = loadTrustedKeys([kp.publicKey])
  const sig = signFlist(FLIST, kp.privateKey, { id: ID, revision: 1764657000 })
  t.match(sig.toString(), new RegExp(`^# aysfs-native flist signature\nversion: 2\nalgorithm: ed25519\nkey: ${kp.keyId}\nid: ${ID}\nrevision: 1764657000\nsignature: [A-Za-z0-9+/]{86}==\n$`))
  t.same(verifyFlist(FLIST, sig, keys, { id: ID, source: 's' }), { keyId: kp.keyId, revision: 1764657000 })

  const parsed = parseSignature(sig)
  const refused = (re: RegExp) => ({ code: 'EACCES', message: re })
  // Another service's flist, served under this id: its signature names the other service.
  t.throws(() => verifyFlist(FLIST, sig, keys, { id: 'other', source: 's' }), refused(/its signature was made for service "jumpscale__base", not other/))
  // The same signature bytes with the id or the revision edited: the signature no longer matches.
  t.throws(() => verifyFlist(FLIST, formatSignature({ ...parsed, id: 'other' }), keys, { id: 'other', source: 's' }), refused(/bad signature/))
  t.throws(() => verifyFlist(FLIST, formatSignature({ ...parsed, revision: 1764657001 }), keys, { id: ID, source: 's' }), refused(/bad signature/))
  t.throws(() => verifyFlist(OTHER, sig, keys, { id: ID, source: 's' }), refused(/bad signature/))
  // A version 1 signature (made before revisions) still verifies, as revision 0.
  t.same(verifyFlist(FLIST, signFlist(FLIST, kp.privateKey), keys, { id: ID, source: 's' }), { keyId: kp.keyId, revision: 0 })
  // Bad revision lines.
  for (const bad of ['-1', '01', '1.5', 'x', '99999999999999999']) {
    t.throws(() => parseSignature(Buffer.from(sig.toString().replace('revision: 1764657000', `revision: ${bad}`))), /"revision"/, `revision ${bad}`)
  }
  t.throws(() => parseSignature(Buffer.from(sig.toString().replace(/revision: .*\n/, ''))), /without a "revision" line/)
  t.throws(() => signFlist(FLIST, kp.privateKey, { id: ID, revision: -1 }), TypeError)
})

t.test('the record of the highest revision: refuses lower, and the same with other bytes', async (t) => {
  const cache = tmpdir(t)
  fs.chmodSync(cache, 0o700)
  const { log, lines } = memLog()
  const r = new Revisions({ cacheDir: cache, log })
  t.equal(r.highest(ID), undefined, 'nothing recorded: any revision is accepted')
  r.check(ID, 5, FLIST, 'store[0]')
  r.accept(ID, 5, sha256(FLIST))
  const file = path.join(cache, 'md', `${ID}.flist.revision`)
  t.equal(fs.readFileSync(file, 'utf8'), `revision: 5\nsha256: ${sha256(FLIST)}\n`)
  t.equal(fs.statSync(file).mode & 0o777, 0o600, 'the record is 0600')
  t.equal(fs.statSync(path.join(cache, 'md')).mode & 0o777, 0o700, 'in a 0700 md/')

  t.doesNotThrow(() => r.check(ID, 5, FLIST, 'store[0]'), 'the same revision, the same bytes')
  t.doesNotThrow(() => r.check(ID, 6, OTHER, 'store[0]'), 'a higher revision')
  t.throws(() => r.check(ID, 4, FLIST, 'store[1] (http://x)'), { code: 'EACCES', message: `service ${ID}: rollback refused: store[1] (http://x) offers revision 4, older than revision 5 this node has accepted` })
  t.throws(() => r.check(ID, 5, OTHER, 'store[0]'), { code: 'EACCES', message: /rollback refused/, refusal: { have: 5, offered: 5 } } as unknown as Error)
  t.throws(() => r.check(ID, 4, FLIST, 'store[1] (http://x)'), { code: 'EACCES', message: /rollback refused/, refusal: { have: 5, offered: 4 } } as unknown as Error)
  const warned = lines.filter((l) => l.level === 'warn' && /rollback refused/.test(l.msg))
  t.equal(warned.length, 2, 'logged once per pair of revisions (4 after 5, 5 with other bytes)')
  t.match(r.refusals(), [{ id: ID, have: 5, offered: 4 }])

  // A new process (the node restarted) reads the record back.
  const again = new Revisions({ cacheDir: cache, log })
  t.same(again.highest(ID), { revision: 5, sha256: sha256(FLIST) })
  t.throws(() => again.check(ID, 1, FLIST, 'store[0]'), { code: 'EACCES', message: /rollback refused/, refusal: { have: 5, offered: 1 } } as unknown as Error)
  again.accept(ID, 3, sha256(OTHER))
  t.equal(again.highest(ID)!.revision, 5, 'accept never lowers the record')
  again.accept(ID, 7, sha256(OTHER))
  t.equal(new Revisions({ cacheDir: cache, log }).highest(ID)!.revision, 7)
  t.same(again.refusals(), [], 'a newer accepted revision clears the refusal')

  // Revision 0 (signatures before revisions) keeps the old behaviour: any bytes, until a higher one.
  const zero = new Revisions({ cacheDir: cache, log })
  zero.accept('svc0', 0, sha256(FLIST))
  t.doesNotThrow(() => zero.check('svc0', 0, OTHER, 'store[0]'))
  zero.accept('svc0', 2, sha256(OTHER))
  t.throws(() => zero.check('svc0', 0, OTHER, 'store[0]'), { code: 'EACCES', message: /rollback refused/, refusal: { have: 2, offered: 0 } } as unknown as Error, 'revision 0 after a real one is a rollback')
})

t.test('refused flists are counted once each (source, revision, bytes); again() refuses without counting', async (t) => {
  const cache = tmpdir(t)
  fs.chmodSync(cache, 0o700)
  const { log, lines } = memLog()
  const r = new Revisions({ cacheDir: cache, log, now: () => new Date(1_000_000) })
  r.accept(ID, 5, sha256(OTHER))
  const refuse = (rev: number, data: Buffer, source: string) => t.throws(() => r.check(ID, rev, data, source), { code: 'EACCES', digest: sha256(data) } as unknown as Error)
  refuse(4, FLIST, 'store[0]')
  refuse(4, FLIST, 'store[0]')
  t.match(r, { refusedCount: 1, refusalEvents: 2 }, 'the same flist from the same store: counted once')
  refuse(4, OTHER, 'store[0]')
  refuse(4, FLIST, 'store[1]')
  t.match(r, { refusedCount: 3, refusalEvents: 4 }, 'other bytes, or another store: counted')
  const later = new Revisions({ cacheDir: cache, log, now: () => new Date(2_000_000) })
  const again = later.again(ID, 4, sha256(FLIST), 'store[0]')
  t.match(again, { code: 'EACCES', refusal: { have: 5, offered: 4, at: new Date(2_000_000).toISOString() } })
  t.match(later, { refusedCount: 1, refusalEvents: 1 })
  t.match(later.refusals(), [{ id: ID, offered: 4, at: new Date(2_000_000).toISOString() }], 'status shows it, as of now')
  t.equal(later.again(ID, 6, sha256(FLIST), 'store[0]'), undefined, 'not refused now: nothing')
  t.equal(lines.filter((l) => /rollback refused/.test(l.msg)).length, 2, 'logged once per pair of revisions and Revisions')
})

t.test('a record that is a symbolic link is not followed', async (t) => {
  const cache = tmpdir(t)
  const { log, lines } = memLog()
  fs.mkdirSync(path.join(cache, 'md'), { mode: 0o700 })
  const elsewhere = path.join(cache, 'elsewhere')
  fs.writeFileSync(elsewhere, `revision: 9\nsha256: ${sha256(FLIST)}\n`)
  fs.symlinkSync(elsewhere, path.join(cache, 'md', `${ID}.flist.revision`))
  const r = new Revisions({ cacheDir: cache, log })
  t.equal(r.highest(ID), undefined, 'the link is not read')
  t.ok(lines.some((l) => /not followed/.test(l.msg)))
  r.accept(ID, 2, sha256(FLIST))
  t.ok(fs.lstatSync(path.join(cache, 'md', `${ID}.flist.revision`)).isFile(), 'the link is replaced, not written through')
  t.equal(fs.readFileSync(elsewhere, 'utf8'), `revision: 9\nsha256: ${sha256(FLIST)}\n`, 'its target is untouched')

  // md/ itself a link: neither read nor written through.
  const cache2 = tmpdir(t)
  fs.mkdirSync(path.join(cache2, 'real-md'))
  fs.symlinkSync(path.join(cache2, 'real-md'), path.join(cache2, 'md'))
  const r2 = new Revisions({ cacheDir: cache2, log })
  r2.accept(ID, 2, sha256(FLIST))
  t.same(fs.readdirSync(path.join(cache2, 'real-md')), [], 'nothing written through a linked md/')
  t.equal(r2.highest(ID)!.revision, 2, 'the revision still holds in this process')
})

t.test('refresh and metrics keys', async (t) => {
  const base = { ays: [{ id: ID }] }
  t.equal(checkConfig({ ...base, main: { refresh: '5m' } }).main.refreshMs, 300_000)
  t.equal(checkConfig({ ...base, main: { refresh: '0s' } }).main.refreshMs, undefined, '0 is off')
  t.equal(checkConfig({ ...base, main: { refresh: 0 } }).main.refreshMs, undefined)
  t.equal(checkConfig(base).main.refreshMs, undefined, 'off by default')
  t.throws(() => checkConfig({ ...base, main: { refresh: 5 } }), { code: 'EINVAL', key: 'main.refresh', message: /expected a duration like "10s"/ })
  t.equal(checkConfig({ ...base, main: { metrics: '127.0.0.1:9469' } }).main.metrics, '127.0.0.1:9469')
  t.equal(checkConfig({ ...base, main: { metrics: '[::1]:9469' } }).main.metrics, '[::1]:9469')
  t.equal(checkConfig(base).main.metrics, undefined, 'off by default')
  for (const bad of ['9469', ':9469', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', 'http://127.0.0.1:9469', '1.2.3:80']) {
    t.throws(() => checkConfig({ ...base, main: { metrics: bad } }), { code: 'EINVAL', key: 'main.metrics' }, bad)
  }
})

t.test('the refresh schedule: interval plus up to 10% jitter, never two runs at once', async (t) => {
  t.equal(refreshDelay(60_000, 0), 60_000)
  t.equal(refreshDelay(60_000, 0.999999), 66_000)
  t.equal(refreshDelay(60_000, 0.5), 63_000)

  const armed: { fn: () => void; ms: number }[] = []
  const timers = { setTimeout: (fn: () => void, ms: number) => armed.push({ fn, ms }), clearTimeout: () => undefined, random: () => 0.5 }
  let running = 0
  let runs = 0
  let finish: () => void = () => undefined
  const s = new RefreshSchedule(
    1000,
    () => {
      running++
      runs++
      t.equal(running, 1, 'one run at a time')
      return new Promise<void>((resolve) => (finish = () => ((running -= 1), resolve())))
    },
    timers,
  )
  s.start()
  t.equal(armed.length, 1)
  t.equal(armed[0]!.ms, 1050)
  armed[0]!.fn()
  t.equal(runs, 1)
  await Promise.resolve()
  t.equal(armed.length, 1, 'the next run is not armed while this one runs')
  finish()
  await new Promise((r) => setImmediate(r))
  t.equal(armed.length, 2, 'armed again once it ended')
  s.stop()
  armed[1]!.fn() // a timer that fired as it was stopped
  finish()
  await new Promise((r) => setImmediate(r))
  t.equal(armed.length, 2, 'a stopped schedule does not arm again')
  const off = new RefreshSchedule(0, async () => undefined, timers)
  off.start()
  t.equal(armed.length, 2, 'interval 0: off')
})

t.test('status text: the revision in force, the last refresh, and a rollback refused', async (t) => {
  const { formatStatus } = await import('../../lib/status')
  const engine = { ops: { read: 1 }, bytesRead: 0, hits: 0, misses: 0, missCalls: 0, missFailures: 0, missTimeouts: 0, errors: 0, parked: 0, fetching: 0, entries: 3 }
  const message = `service ${ID}: rollback refused: store[0] (http://s) offers revision 1, older than revision 2 this node has accepted`
  const text = formatStatus({
    version: 1,
    mountpoint: '/mnt',
    engine: engine as never,
    mount: {
      prefix: '/opt',
      services: [{ id: ID, source: 'store[0]', entries: 3, ignored: 0, droppedDevices: 0, revision: 2, refresh: { checkedAt: '2026-01-01T00:00:00.000Z', result: 'refused', error: message } }],
      signed: true,
      flists: { fetched: 1, kept: 0, refused: 0 },
      mountedAt: '2026-01-01T00:00:00.000Z',
      reloads: 0,
      refresh: { intervalMs: 300_000, checks: 4, lastAt: '2026-01-01T00:00:00.000Z' },
      rollbacks: [{ id: ID, have: 2, offered: 1, source: 'store[0] (http://s)', at: '2026-01-01T00:00:00.000Z', message }],
    },
  })
  t.match(text, /refresh +every 300s; 4 run, last 2026-01-01T00:00:00.000Z/)
  t.match(text, new RegExp(`${ID} +store\\[0\\] +2 +3 +0 +refused at 2026-01-01`))
  t.match(text, /rollback refused: store\[0\] \(http:\/\/s\) offers revision 1, older than revision 2/)
})
