// The WAN proxy (bench/wan-proxy.ts): its link model on an injected clock (exact), then the
// real proxy in its own process between sockets of this test (generous bounds: the machine is
// shared; the proxy is checked never to deliver early, and its own added time is reported).
import * as crypto from 'node:crypto'
import * as net from 'node:net'
import { performance } from 'node:perf_hooks'
import t from 'tap'
import { Lane, TokenBucket, parseDuration, parseRate, spawnWanProxy, type Clock, type LaneSink, type WanProxyProcess } from '../../bench/wan-proxy'

type Test = { teardown(fn: () => unknown): void }

/** A clock a test moves by hand; timers fire in time order as it passes them. */
class FakeClock implements Clock {
  t = 0
  private timers: { at: number; fn: () => void; id: number }[] = []
  private ids = 0
  now(): number {
    return this.t
  }
  setTimer(fn: () => void, ms: number): unknown {
    const id = ++this.ids
    this.timers.push({ at: this.t + ms, fn, id })
    return id
  }
  clearTimer(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h)
  }
  /** Moves to `to`, firing every timer due on the way at its own time. */
  advance(to: number): void {
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id)
      const next = this.timers[0]
      if (!next || next.at > to) break
      this.timers.shift()
      this.t = Math.max(this.t, next.at)
      next.fn()
    }
    this.t = to
  }
}

/** A sink that records what was written and when. */
class Sink implements LaneSink {
  writes: { t: number; data: string }[] = []
  endedAt: number | undefined
  writableLength = 0
  constructor(private readonly clock: FakeClock) {}
  write(data: Buffer): boolean {
    if (this.endedAt !== undefined) throw new Error('write after end')
    this.writes.push({ t: this.clock.now(), data: data.toString('latin1') })
    return true
  }
  end(): void {
    this.endedAt = this.clock.now()
  }
}

class Source {
  paused = 0
  resumed = 0
  pause(): void {
    this.paused++
  }
  resume(): void {
    this.resumed++
  }
}

function lane(clock: FakeClock, opts: { delay?: number; rate?: number; burst?: number; readyAt?: number; highWater?: number; bucket?: TokenBucket } = {}) {
  const src = new Source()
  const dst = new Sink(clock)
  const bucket = opts.bucket ?? new TokenBucket(opts.rate ?? Infinity, opts.burst ?? 0, clock.now())
  const l = new Lane(src, dst, opts.delay ?? 0, bucket, opts.readyAt ?? 0, opts.highWater ?? 1 << 20, clock)
  return { src, dst, l }
}

t.test('parseDuration and parseRate', async (t) => {
  t.equal(parseDuration('40ms'), 40)
  t.equal(parseDuration('0.04s'), 40)
  t.equal(parseDuration('500us'), 0.5)
  t.equal(parseDuration('25'), 25)
  t.throws(() => parseDuration('fast'), /not a duration: "fast"/)
  t.equal(parseRate('100mbit'), 12_500, '100 Mbit/s = 12,500 bytes/ms')
  t.equal(parseRate('1gbit'), 125_000)
  t.equal(parseRate('12.5MB/s'), 12_500)
  t.equal(parseRate('1KiB/s'), 1.024)
  t.equal(parseRate('none'), Infinity)
  t.equal(parseRate('0'), Infinity)
  t.throws(() => parseRate('100mbps'), /not a rate: "100mbps"/)
  t.throws(() => parseRate('0mbit'), /not a rate/)
})

t.test('TokenBucket: a FIFO link of the rate, with a burst after a quiet spell', async (t) => {
  const b = new TokenBucket(10, 100, 0) // 10 bytes/ms, holds 100
  t.equal(b.take(100, 0), 0, 'a full bucket passes its burst at once')
  t.equal(b.take(50, 0), 5, 'then bytes pass at the rate')
  t.equal(b.take(50, 0), 10, 'in the order they were offered')
  t.equal(b.take(10, 5), 11, 'a later offer waits for the debt before it')
  t.equal(b.take(10, 1000), 1000, 'after a quiet spell the bucket is full again')
  t.equal(b.take(200, 1000), 1011, 'but never holds more than its burst')
  const free = new TokenBucket(Infinity, 0, 0)
  t.equal(free.take(1 << 30, 7), 7, 'no cap: passes at once')
  t.throws(() => new TokenBucket(0, 0, 0), /rate must be positive/)
})

t.test('Lane: each chunk is written `delay` after it was read, in order', async (t) => {
  const c = new FakeClock()
  const { dst, l } = lane(c, { delay: 20 })
  l.push(Buffer.from('a'))
  c.advance(5)
  l.push(Buffer.from('b'))
  c.advance(19)
  t.same(dst.writes, [], 'nothing before the delay')
  c.advance(20)
  t.same(dst.writes, [{ t: 20, data: 'a' }])
  c.advance(100)
  t.same(dst.writes, [
    { t: 20, data: 'a' },
    { t: 25, data: 'b' },
  ])
  t.equal(l.pending, 0)
})

t.test('Lane: the FIN follows the data, with the same delay', async (t) => {
  const c = new FakeClock()
  const { dst, l } = lane(c, { delay: 10, rate: 1, burst: 0 })
  l.push(Buffer.alloc(30, 'x'))
  l.end()
  c.advance(39)
  t.equal(dst.endedAt, undefined, 'not before the data it follows')
  c.advance(100)
  t.equal(dst.writes.length, 1)
  t.equal(dst.writes[0]!.t, 40, '30 bytes at 1 byte/ms, then 10 ms')
  t.equal(dst.endedAt, 40, 'the FIN right after the data')
  t.ok(l.ended)
})

t.test('Lane: a new connection sends nothing before its handshake is done', async (t) => {
  const c = new FakeClock()
  const { dst, l } = lane(c, { delay: 20, readyAt: 40 })
  l.push(Buffer.from('GET /'))
  c.advance(59)
  t.same(dst.writes, [])
  c.advance(60)
  t.same(dst.writes, [{ t: 60, data: 'GET /' }], 'one RTT (40) plus the one-way delay (20)')
  c.advance(100)
  l.push(Buffer.from('GET /2'))
  c.advance(120)
  t.same(dst.writes[1], { t: 120, data: 'GET /2' }, 'later chunks pay the delay only')
})

t.test('Lane: large chunks stream out in slices as the bucket passes them', async (t) => {
  const c = new FakeClock()
  const { dst, l } = lane(c, { delay: 5, rate: 16, burst: 0 }) // 16 bytes/ms: a 16 KiB slice per 1024 ms
  const data = crypto.randomBytes(40 << 10)
  l.push(data)
  c.advance(100_000)
  t.same(
    dst.writes.map((w) => w.t),
    [1029, 2053, 2565],
    'slices of 16, 16 and 8 KiB, each written when it has passed, plus the delay',
  )
  t.equal(Buffer.from(dst.writes.map((w) => w.data).join(''), 'latin1').equals(data), true, 'the bytes, in order')
})

t.test('Lane: chunks due together leave in one corked write', async (t) => {
  const c = new FakeClock()
  const { dst, l } = lane(c, { delay: 10 })
  const calls: string[] = []
  Object.assign(dst, { cork: () => calls.push('cork'), uncork: () => calls.push('uncork') })
  const write = dst.write.bind(dst)
  dst.write = (d: Buffer) => (calls.push(d.toString()), write(d))
  l.push(Buffer.from('a'))
  l.push(Buffer.from('b'))
  c.advance(10)
  t.same(calls, ['cork', 'a', 'b', 'uncork'])
  l.push(Buffer.from('c'))
  c.advance(20)
  t.same(calls.slice(4), ['c'], 'a lone chunk is written as it is')
})

t.test('Lane: connections share one bucket per direction', async (t) => {
  const c = new FakeClock()
  const bucket = new TokenBucket(1, 0, 0)
  const a = lane(c, { bucket, delay: 10 })
  const b = lane(c, { bucket, delay: 10 })
  a.l.push(Buffer.alloc(100))
  b.l.push(Buffer.alloc(100))
  c.advance(1000)
  t.equal(a.dst.writes[0]!.t, 110)
  t.equal(b.dst.writes[0]!.t, 210, 'the second waits for the first: the rate is shared')
})

t.test('Lane: stops reading its sender above the high-water mark, resumes at half', async (t) => {
  const c = new FakeClock()
  const { src, dst, l } = lane(c, { delay: 10, highWater: 100 })
  l.push(Buffer.alloc(60))
  t.equal(src.paused, 0)
  l.push(Buffer.alloc(60))
  t.equal(src.paused, 1, 'paused at 120 bytes held')
  dst.writableLength = 1000 // the receiver does not read
  c.advance(10)
  t.equal(dst.writes.length, 2, 'written to the socket')
  t.equal(src.resumed, 0, 'still held in the socket: not resumed')
  dst.writableLength = 0
  l.drained()
  t.equal(src.resumed, 1, 'resumed once drained')
})

t.test('Lane: cancel drops what is queued', async (t) => {
  const c = new FakeClock()
  const { dst, l } = lane(c, { delay: 10 })
  l.push(Buffer.from('x'))
  l.cancel()
  c.advance(100)
  t.same(dst.writes, [])
  l.push(Buffer.from('y'))
  c.advance(200)
  t.same(dst.writes, [], 'and anything after')
})

// ---------------------------------------------------------------------------------------------
// The proxy in its own process.

interface Server {
  port: number
  sockets: net.Socket[]
  close(): Promise<void>
}

async function server(t: Test, onConn: (s: net.Socket) => void): Promise<Server> {
  const sockets: net.Socket[] = []
  const srv = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    sockets.push(s)
    s.on('error', () => {})
    onConn(s)
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const close = (): Promise<void> => {
    for (const s of sockets) s.destroy()
    return new Promise((r) => srv.close(() => r()))
  }
  t.teardown(close)
  return { port: (srv.address() as net.AddressInfo).port, sockets, close }
}

async function proxy(t: Test, args: Parameters<typeof spawnWanProxy>[0]): Promise<WanProxyProcess> {
  const p = await spawnWanProxy(args)
  t.teardown(() => p.stop())
  return p
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true })
    s.once('connect', () => resolve(s))
    s.once('error', reject)
  })
}

function once(s: net.Socket, ev: 'data'): Promise<Buffer> {
  return new Promise((resolve) => s.once(ev, resolve))
}

t.test('the proxy adds each direction its own delay; a new connection pays one RTT more', async (t) => {
  const UP = 30
  const DOWN = 60
  let arrived = 0
  const srv = await server(t, (s) => {
    s.on('data', (d) => {
      arrived = performance.now()
      s.write(d) // echo at once
    })
  })
  const p = await proxy(t, { target: srv.port, upDelayMs: UP, downDelayMs: DOWN })
  const t0 = performance.now()
  const c = await connect(p.port)
  t.teardown(() => c.destroy())
  const got = once(c, 'data')
  c.write('x')
  await got
  const tFirst = arrived - t0
  t.ok(tFirst >= UP + DOWN + UP - 0.5, `a new connection's first byte reaches the server after RTT + up (${tFirst.toFixed(1)} ms >= ${UP + DOWN + UP})`)
  t.ok(tFirst < UP + DOWN + UP + 500, 'and not much later')
  const ups: number[] = []
  const downs: number[] = []
  for (let i = 0; i < 5; i++) {
    const reply = once(c, 'data')
    const sent = performance.now()
    c.write('y')
    await reply
    const back = performance.now()
    ups.push(arrived - sent)
    downs.push(back - arrived)
  }
  t.comment(`up ${ups.map((x) => x.toFixed(1)).join(' ')} ms, down ${downs.map((x) => x.toFixed(1)).join(' ')} ms`)
  t.ok(Math.min(...ups) >= UP - 0.5, `up: never early (${Math.min(...ups).toFixed(1)} >= ${UP})`)
  t.ok(Math.min(...downs) >= DOWN - 0.5, `down: never early (${Math.min(...downs).toFixed(1)} >= ${DOWN})`)
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  // The proxy's own time (timers, two hops on loopback), generous for a loaded 2-CPU machine.
  t.ok(median(ups) < UP + 40, `up: the delay plus little (median ${median(ups).toFixed(1)})`)
  t.ok(median(downs) < DOWN + 40, `down: the delay plus little (median ${median(downs).toFixed(1)})`)
  t.ok(median(ups) < median(downs), 'the two directions are told apart')
})

t.test('the proxy keeps to the rate, and all connections share it', async (t) => {
  const SIZE = 1 << 20
  const RATE = 16e6 // bits/s: 2 MB/s
  const body = crypto.randomBytes(SIZE)
  const srv = await server(t, (s) => {
    s.once('data', (d) => {
      const n = Number(d.toString())
      s.end(body.subarray(0, n))
    })
  })
  const p = await proxy(t, { target: srv.port, rateBits: RATE })
  const fetch = async (n: number): Promise<Buffer> => {
    const c = await connect(p.port)
    const parts: Buffer[] = []
    c.on('data', (d) => parts.push(d))
    const done = new Promise<void>((r) => c.on('end', r))
    c.end(String(n))
    await done
    c.destroy()
    return Buffer.concat(parts)
  }
  const bytesPerS = RATE / 8
  let t0 = performance.now()
  const one = await fetch(SIZE)
  const single = (performance.now() - t0) / 1000
  t.ok(one.equals(body), 'the body, whole')
  t.comment(`1 MiB alone: ${single.toFixed(3)} s (${((SIZE * 8) / single / 1e6).toFixed(1)} Mbit/s)`)
  t.ok(single >= (SIZE - (16 << 10)) / bytesPerS - 0.005, `not faster than the rate (${single.toFixed(3)} s)`)
  t.ok(single < (3 * SIZE) / bytesPerS, 'nor much slower')

  t0 = performance.now()
  const both = await Promise.all([fetch(SIZE / 2), fetch(SIZE / 2)])
  const shared = (performance.now() - t0) / 1000
  t.ok(both.every((b) => b.equals(body.subarray(0, SIZE / 2))), 'both halves, whole')
  t.comment(`2 x 512 KiB at once: ${shared.toFixed(3)} s`)
  t.ok(shared >= (SIZE - (16 << 10)) / bytesPerS - 0.005, `two connections share one rate (${shared.toFixed(3)} s for 1 MiB in all)`)
  t.ok(shared < (3 * SIZE) / bytesPerS, 'and do not take much longer together')
})

t.test('many connections at once: keep-alive exchanges, large bodies, half-closes, order kept', async (t) => {
  // A length-prefixed echo: each message is answered with its bytes reversed, on the same
  // connection, as many times as the client asks; after the client's FIN the server sends a
  // last word and closes its side.
  const srv = await server(t, (s) => {
    let buf = Buffer.alloc(0)
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const n = buf.readUInt32BE(0)
        const msg = Buffer.from(buf.subarray(4, 4 + n)).reverse()
        buf = buf.subarray(4 + n)
        const head = Buffer.alloc(4)
        head.writeUInt32BE(n)
        s.write(Buffer.concat([head, msg]))
      }
    })
    s.on('end', () => s.end(Buffer.from('bye')))
  })
  const p = await proxy(t, { target: srv.port, rttMs: 10, rateBits: 400e6 })
  const CONNS = 24
  const ROUNDS = 4
  const run = async (k: number): Promise<void> => {
    const c = await connect(p.port)
    let buf = Buffer.alloc(0)
    let waiting: (() => void) | undefined
    let ended = false
    c.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      waiting?.()
    })
    c.on('end', () => {
      ended = true
      waiting?.()
    })
    const need = (n: number): Promise<void> => (buf.length >= n || ended ? Promise.resolve() : new Promise<void>((r) => (waiting = () => (buf.length >= n || ended) && r())))
    for (let r = 0; r < ROUNDS; r++) {
      // Sizes from a few bytes to 4 MiB (one large body per connection).
      const n = r === 0 && k % 4 === 0 ? 4 << 20 : 1 + ((k * 7919 + r * 104_729) % (256 << 10))
      const msg = crypto.randomBytes(n)
      const head = Buffer.alloc(4)
      head.writeUInt32BE(n)
      c.write(Buffer.concat([head, msg]))
      await need(4 + n)
      t.equal(buf.readUInt32BE(0), n)
      if (!buf.subarray(4, 4 + n).equals(Buffer.from(msg).reverse())) t.fail(`connection ${k}, round ${r}: bytes out of order or lost`)
      buf = buf.subarray(4 + n)
    }
    // Half-close: the server still answers after our FIN.
    c.end()
    await need(Infinity)
    t.equal(buf.toString(), 'bye', `connection ${k}: the reply after the half-close`)
    c.destroy()
  }
  await Promise.all(Array.from({ length: CONNS }, (_, k) => run(k)))
  const stats = await p.stop()
  t.equal(stats?.connections, CONNS, 'one upstream connection per client connection')
  t.equal(stats?.errors, 0, 'no connection failed')
})

t.test('a reset on one side reaches the other; a refused upstream closes the client', async (t) => {
  const srv = await server(t, (s) => s.once('data', () => s.resetAndDestroy()))
  const p = await proxy(t, { target: srv.port, rttMs: 10 })
  const c = await connect(p.port)
  const closed = new Promise<Error | undefined>((r) => {
    let err: Error | undefined
    c.on('error', (e) => (err = e))
    c.on('close', () => r(err))
  })
  c.write('hello')
  const err = await closed
  t.match(err, { code: 'ECONNRESET' }, 'the client sees the reset')

  // Nothing listens on the target: the client's connection is closed, not left hanging.
  const dead = net.createServer()
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r))
  const port = (dead.address() as net.AddressInfo).port
  await new Promise<void>((r) => dead.close(() => r()))
  const p2 = await proxy(t, { target: port })
  // The reset may come before this side has seen its connect complete: either way, it closes.
  const c2 = net.connect({ host: '127.0.0.1', port: p2.port })
  c2.on('error', () => {})
  await new Promise<void>((r) => c2.on('close', () => r()))
  t.pass('closed')
})

t.test('the CLI refuses targets off 127.0.0.1 and bad values, clearly', async (t) => {
  const { spawnSync } = await import('node:child_process')
  const path = await import('node:path')
  const cli = path.resolve(__dirname, '../../dist/bench/wan-proxy.js')
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' })
  let r = run('--target', '10.1.2.3:80')
  t.equal(r.status, 2)
  t.match(r.stderr, /--target: want a port on 127\.0\.0\.1, got "10\.1\.2\.3:80"/)
  r = run('--target', '8080', '--rtt', 'soon')
  t.match(r.stderr, /not a duration: "soon"/)
  r = run('--target', '8080', '--rate', '5 mbit')
  t.match(r.stderr, /not a rate: "5 mbit"/)
  r = run('--rtt', '40ms')
  t.match(r.stderr, /--target PORT is needed/)
})
