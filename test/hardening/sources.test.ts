// Dead sources, for real, through mounts: a closed port and a silent socket. Cached files keep
// working, uncached reads fail with EIO within the documented bound (timeout × sources + 1 s), a
// storm of misses does not hammer a dead server (backoff), and a server that comes back is
// retried and used again.
import * as fs from 'node:fs'
import * as http from 'node:http'
import type * as net from 'node:net'
import * as path from 'node:path'
import t from 'tap'
import { SourceHealth, isHealthFault } from '../../lib/health'
import { startFaultServer } from '../helpers/faults'
import { config, errorOf, files, mountHere, until, writeStore, type File } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'

const TIMEOUT_MS = 1000

async function closedPort(): Promise<number> {
  const s = http.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

/** A store over HTTP that can die (accept connections, answer nothing) and come back. */
async function toggleStore(root: string): Promise<{ url: string; alive: boolean; blobRequests: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const state = { alive: true, blobRequests: 0 }
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith('/files/')) state.blobRequests++
    if (!state.alive) return // silent
    const file = path.join(root, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname))
    fs.readFile(file, (err, data) => {
      if (err) {
        res.writeHead(404).end()
        return
      }
      res.writeHead(200, { 'Content-Length': String(data.length) }).end(data)
    })
  })
  server.on('connection', (s: net.Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
  return {
    url,
    get alive() {
      return state.alive
    },
    set alive(v: boolean) {
      state.alive = v
    },
    get blobRequests() {
      return state.blobRequests
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}

async function readRight(mnt: string, f: File): Promise<boolean> {
  return (await fs.promises.readFile(path.join(mnt, f.path))).equals(f.data)
}

t.test('backoff: exponential with jitter up to a minute, one probe at a time, any answer clears it', async (t) => {
  let now = 1_000_000
  let draws = 0
  const changes: string[] = []
  const h = new SourceHealth({ now: () => now, random: () => (draws++ % 2 === 0 ? 0 : 0.999), onChange: (k, up) => changes.push(`${k} ${up ? 'up' : 'down'}`) })
  t.equal(await h.admit('s'), 'try')
  h.settle('s', false)
  t.equal(h.down('s'), true)
  t.equal(await h.admit('s'), false, 'backed off')
  const delays: number[] = []
  for (let i = 0; i < 9; i++) {
    const until = Date.parse(h.state('s').retryAt!)
    delays.push(until - now)
    now = until
    t.equal(await h.admit('s'), 'probe', 'probed when the backoff ran out')
    h.settle('s', false, 'probe')
  }
  const nominal = delays.map((_, n) => Math.min(60_000, 1000 * 2 ** n))
  t.same(nominal, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000])
  t.ok(delays.every((d, n) => d >= nominal[n]! / 2 && d <= nominal[n]!), `jitter: between half and all of 1, 2, 4 … 60 s (${delays.join(', ')})`)
  t.ok(delays.some((d, n) => d === nominal[n]! / 2) && delays.some((d, n) => d > nominal[n]! * 0.99), 'the whole range is used')
  t.equal(h.state('s').skipped, 1)

  // While one probe runs, others wait for it instead of trying too.
  now = Date.parse(h.state('s').retryAt!)
  t.equal(await h.admit('s'), 'probe', 'the probe')
  let waited = false
  const other = h.admit('s', 60_000).then((v) => ((waited = true), v))
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(waited, false, 'a second miss waits for the probe')
  h.settle('s', true, 'probe')
  t.equal(await other, 'try', 'and goes ahead when it answered')
  t.equal(h.state('s').failures, 0)
  t.same(changes, ['s down', 's up'])

  // A probe that takes long (a big download at a fine speed) holds the others up to waitMs: real
  // time (admit's wait is a timer), with the clock moved by hand past the backoff.
  let skew = 0
  const slow = new SourceHealth({ random: () => 0.5, baseMs: 10, now: () => Date.now() + skew })
  t.equal(await slow.admit('p'), 'try')
  slow.settle('p', false)
  skew += 10 // the backoff (at most baseMs) ran out
  t.equal(await slow.admit('p'), 'probe')
  const t0 = Date.now()
  t.equal(await slow.admit('p', 100), 'try', 'after waitMs, a waiting miss tries too')
  t.ok(Date.now() - t0 >= 90 && Date.now() - t0 < 1000, `it waited ${Date.now() - t0} ms`)
  slow.settle('p', true, 'try')
  slow.settle('p', true, 'probe')
  t.equal(slow.state('p').failures, 0)

  // Failures of tries that were all running when the source died count once.
  const g = new SourceHealth({ now: () => now, random: () => 0.5 })
  for (let i = 0; i < 16; i++) t.equal(await g.admit('x'), 'try')
  for (let i = 0; i < 16; i++) g.settle('x', false)
  t.equal(g.state('x').failures, 1, '16 concurrent timeouts: one failure')

  t.ok(['timeout', 'net:ECONNREFUSED', 'net:ECONNRESET', 'http-500', 'http-503', 'http-429', 'truncated', 'tls:CERT_HAS_EXPIRED', 'io:EIO', 'redirects'].every(isHealthFault))
  t.notOk(['md5', 'too-long', 'too-short', 'bro-corrupt', 'http-404', 'http-401', 'http-403'].some(isHealthFault), 'wrong content or a refusal is not ill health')
})

t.test('every source dead (a closed port, a silent socket): cached files read, uncached fail fast', async (t) => {
  const dir = tmpdir(t)
  const list = files(30, 20_000, 41)
  const store = path.join(dir, 'store')
  writeStore(store, list)
  const cache = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  // Fill the cache with the first ten (and keep the flist) while the store is up.
  const up = await mountHere(t, mnt, config(cache, [store]))
  for (const f of list.slice(0, 10)) t.ok(await readRight(up.mountpoint, f))
  await up.unmount()

  const silent = await startFaultServer({ store })
  t.teardown(() => silent.close())
  const dead = `http://127.0.0.1:${await closedPort()}`
  const m = await mountHere(t, mnt, config(cache, [dead, silent.base('silent')]))
  t.equal(m.stats().mount?.services[0]?.source, 'kept', 'the flist came from the kept copy')

  for (const f of list.slice(0, 10)) t.ok(await readRight(m.mountpoint, f), `${f.path}: cached, reads right`)
  const bound = TIMEOUT_MS * 2 + 1000
  let start = Date.now()
  const err = await errorOf(() => fs.promises.readFile(path.join(m.mountpoint, list[10]!.path)))
  t.equal(err?.code, 'EIO', 'an uncached file: EIO')
  t.ok(Date.now() - start <= bound, `within timeout × 2 sources + 1 s (${Date.now() - start} ms)`)

  // A storm of misses: each fails within the bound, and the dead servers are hardly asked.
  const blobRequests = () => silent.count((r) => r.rel.startsWith('files/'))
  const before = blobRequests()
  start = Date.now()
  const storm = await Promise.all(
    list.slice(11).map(async (f) => {
      const t0 = Date.now()
      const e = await errorOf(() => fs.promises.readFile(path.join(m.mountpoint, f.path)))
      return { code: e?.code, ms: Date.now() - t0 }
    }),
  )
  t.ok(storm.every((r) => r.code === 'EIO'), `${storm.length} uncached reads: all EIO`)
  t.ok(Math.max(...storm.map((r) => r.ms)) <= bound, `each within the bound (slowest ${Math.max(...storm.map((r) => r.ms))} ms)`)
  t.ok(blobRequests() - before <= 2, `the silent store was asked ${blobRequests() - before} times for ${storm.length} misses`)
  const sources = m.stats().pipeline!.sources
  t.ok(sources.every((s) => s.backoff.failures > 0), 'both stores are backed off')
  t.ok(sources.some((s) => s.backoff.skipped > 0), 'and misses skipped them')
  for (const f of list.slice(0, 10)) t.ok(await readRight(m.mountpoint, f), `${f.path}: still reads right`)
})

t.test('a store that dies and comes back: skipped while backed off, used again after', async (t) => {
  const dir = tmpdir(t)
  const list = files(12, 10_000, 42)
  const store = path.join(dir, 'store')
  writeStore(store, list)
  const srv = await toggleStore(store)
  t.teardown(() => srv.close())
  const m = await mountHere(t, path.join(dir, 'mnt'), config(path.join(dir, 'cache'), [srv.url]))
  t.ok(await readRight(m.mountpoint, list[0]!), 'up: reads')

  srv.alive = false
  const e1 = await errorOf(() => fs.promises.readFile(path.join(m.mountpoint, list[1]!.path)))
  t.equal(e1?.code, 'EIO', 'dead: EIO after the timeout')
  const asked = srv.blobRequests
  const t0 = Date.now()
  const e2 = await errorOf(() => fs.promises.readFile(path.join(m.mountpoint, list[2]!.path)))
  t.equal(e2?.code, 'EIO')
  t.ok(Date.now() - t0 < 300, `backed off: EIO at once (${Date.now() - t0} ms)`)
  t.equal(srv.blobRequests, asked, 'without asking the dead store')

  srv.alive = true
  const retryAt = Date.parse(m.stats().pipeline!.sources[0]!.backoff.retryAt ?? new Date().toISOString())
  t.ok(retryAt - Date.now() <= 60_000, 'retried within a minute')
  await until(() => Date.now() >= retryAt, 61_000)
  t.ok(await readRight(m.mountpoint, list[3]!), 'back: the next miss after the backoff is served')
  t.same(m.stats().pipeline!.sources[0]!.backoff, { failures: 0, skipped: 1 }, 'and the backoff is cleared')
  for (const f of list.slice(4)) t.ok(await readRight(m.mountpoint, f))
})
