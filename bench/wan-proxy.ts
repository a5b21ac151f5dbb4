// A WAN in a box: a TCP proxy of our own that adds latency each way and caps the bandwidth, for
// the cold-start benchmark (bench/wan.ts) and its tests. The kernel here has no netem, so the
// link is emulated in user space, in a process of its own so that it never shares an event loop
// with the mount under test:
//
//   node dist/bench/wan-proxy.js --target 127.0.0.1:PORT [--rtt 40ms] [--rate 100mbit]
//        [--up-delay D] [--down-delay D] [--up-rate R] [--down-rate R] [--burst BYTES]
//        [--listen PORT] [--trace FILE]
//
// prints `{"port":N}` on stdout once it listens on 127.0.0.1:N, and on SIGTERM or SIGINT prints
// `{"stats":{...}}`, writes the trace (if asked) and exits. It listens on and connects to
// 127.0.0.1 only.
//
// The link it models, each direction on its own ("up" is client to server):
// - Propagation: a chunk read from one side is written to the other `delay` ms later (half the
//   RTT each way unless set apart), in the order it was read.
// - Bandwidth: one token bucket per direction, shared by every connection, refilled at the rate
//   and holding at most `burst` bytes. A chunk passes when the bucket has paid for it, in the
//   order chunks arrived from all connections (a FIFO link); its propagation starts then. Chunks
//   are cut into slices of at most 16 KiB first, so a large body streams out as it passes.
// - Handshake: the kernel completes a client's connect() at once, before the proxy even
//   accepts. Instead, nothing either side sends is treated as sent before one RTT after the
//   connection was accepted, which is when TCP's handshake would have let the client send: a
//   new connection's first request is answered after two RTTs, as over a real link.
// - Half-closes: a FIN travels like data (after the bytes before it, with the same delay);
//   each direction closes on its own. A reset or an error on one side destroys the other at
//   once (with a reset where Node can send one).
// - Back-pressure: a direction holding more than `highWater` bytes (queued in the proxy plus
//   unwritten in the receiving socket) stops reading its sender until it is down to half, so a
//   large body or a slow reader costs bounded memory.
import { spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as path from 'node:path'
import { performance } from 'node:perf_hooks'
import * as readline from 'node:readline'

/** Largest piece a chunk is cut into before it enters the bucket. */
const SLICE = 16 << 10
/** Bytes the bucket holds when full, by default: one slice. */
export const DEFAULT_BURST = SLICE
const LOOPBACK = '127.0.0.1'

/** The time and timers a {@link Lane} runs on: the real ones, or a test's. */
export interface Clock {
  /** Milliseconds, monotonic, fractional. */
  now(): number
  /** Calls `fn` after at least `ms` milliseconds. */
  setTimer(fn: () => void, ms: number): unknown
  clearTimer(handle: unknown): void
}

/** performance.now() and Node's timers. */
export const REAL_CLOCK: Clock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => setTimeout(fn, ms),
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
}

/**
 * A token bucket that may go into debt: a reservation larger than the tokens left is granted at
 * once, and its bytes pass when the debt has been paid off at the rate. Reservations are served
 * in the order they are made, so this is a FIFO link of that rate with a burst allowance.
 */
export class TokenBucket {
  private tokens: number
  private at: number

  /**
   * @param bytesPerMs the rate; `Infinity` for no cap.
   * @param burst bytes the bucket holds when full (what passes at once after a quiet spell).
   * @param now the clock's time now.
   */
  constructor(
    readonly bytesPerMs: number,
    readonly burst: number,
    now: number,
  ) {
    if (!(bytesPerMs > 0)) throw new RangeError(`rate must be positive: ${bytesPerMs}`)
    if (!(burst >= 0)) throw new RangeError(`burst must be >= 0: ${burst}`)
    this.tokens = burst
    this.at = now
  }

  /** Reserves `bytes` offered at time `t`; returns the time their last byte has passed. */
  take(bytes: number, t: number): number {
    if (this.bytesPerMs === Infinity) return t
    if (t > this.at) {
      this.tokens = Math.min(this.burst, this.tokens + (t - this.at) * this.bytesPerMs)
      this.at = t
    }
    this.tokens -= bytes
    return this.tokens >= 0 ? this.at : this.at - this.tokens / this.bytesPerMs
  }
}

/** What a {@link Lane} reads from: a socket's flow control. */
export interface LaneSource {
  pause(): unknown
  resume(): unknown
}

/** What a {@link Lane} writes to. */
export interface LaneSink {
  write(data: Buffer): unknown
  end(): unknown
  readonly writableLength: number
  /** Held writes go out together at uncork (one writev), when the sink can. */
  cork?(): void
  uncork?(): void
}

/** One event of the trace (`--trace`): times in ms since the proxy started. */
export interface TraceEvent {
  /** Connection number, from 1. */
  c: number
  /** `open`: accepted; `up`/`down`: a chunk read from the client/server; `fin-up`/`fin-down`: a FIN; `close`. */
  e: 'open' | 'up' | 'down' | 'fin-up' | 'fin-down' | 'close'
  /** When the proxy read it. */
  t: number
  /** Bytes of the chunk. */
  n?: number
  /** When it is written to the other side (the last slice of a chunk). */
  due?: number
  /** The request line, for an `up` chunk that starts with one. */
  req?: string
}

/**
 * One direction of one connection: the chunks read from `src`, each written to `dst` once it has
 * passed the shared bucket and its delay is over, in order, and then the FIN.
 */
export class Lane {
  private readonly queue: { data: Buffer | null; due: number }[] = []
  private head = 0
  private queued = 0
  private lastDue = -Infinity
  private timer: unknown
  private timerAt = Infinity
  private paused = false
  private finished = false
  private cancelled = false

  /**
   * @param readyAt nothing counts as sent before this time (the end of the handshake).
   * @param highWater bytes held (queued here plus unwritten in `dst`) above which `src` is paused.
   */
  constructor(
    private readonly src: LaneSource,
    private readonly dst: LaneSink,
    private readonly delay: number,
    private readonly bucket: TokenBucket,
    private readonly readyAt: number,
    private readonly highWater: number,
    private readonly clock: Clock,
  ) {}

  /** Bytes read and not yet written to `dst`. */
  get pending(): number {
    return this.queued
  }

  /** True once the FIN was passed on to `dst`. */
  get ended(): boolean {
    return this.finished
  }

  /** True once the FIN was read from `src`. */
  sawEnd = false

  /** A chunk read from `src`; returns when its last byte will be written. */
  push(data: Buffer): number {
    if (this.cancelled) return this.lastDue
    const now = this.clock.now()
    // Without a cap a chunk passes whole; with one, in slices that stream out as they pass.
    const step = this.bucket.bytesPerMs === Infinity ? data.length : SLICE
    for (let off = 0; off < data.length; off += step) {
      const slice = data.length <= step ? data : data.subarray(off, off + step)
      this.enqueue(slice, this.bucket.take(slice.length, now))
    }
    if (!this.paused && this.queued + this.dst.writableLength > this.highWater) {
      this.paused = true
      this.src.pause()
    }
    this.pump()
    return this.lastDue
  }

  /** The FIN read from `src`: passed on after everything before it. */
  end(): number {
    if (this.cancelled || this.sawEnd) return this.lastDue
    this.sawEnd = true
    this.enqueue(null, this.clock.now())
    this.pump()
    return this.lastDue
  }

  /** Drops what is queued (the connection is gone). */
  cancel(): void {
    this.cancelled = true
    this.queue.length = 0
    this.head = 0
    this.queued = 0
    if (this.timer !== undefined) this.clock.clearTimer(this.timer)
    this.timer = undefined
  }

  /** `dst` drained: reading may go on. */
  drained(): void {
    this.maybeResume()
  }

  private enqueue(data: Buffer | null, passed: number): void {
    const due = Math.max(Math.max(passed, this.readyAt) + this.delay, this.lastDue)
    this.lastDue = due
    this.queue.push({ data, due })
    if (data) this.queued += data.length
  }

  private pump(): void {
    if (this.cancelled) return
    const now = this.clock.now()
    const q = this.queue
    // Slices due together leave in one writev.
    const corked = this.head + 1 < q.length && q[this.head + 1]!.due <= now && this.dst.cork !== undefined
    if (corked) this.dst.cork!()
    while (this.head < q.length && q[this.head]!.due <= now) {
      const { data } = q[this.head]!
      this.head++
      if (data) {
        this.queued -= data.length
        this.dst.write(data)
      } else {
        this.finished = true
        this.dst.end()
      }
    }
    if (corked) this.dst.uncork!()
    if (this.head === q.length) {
      q.length = 0
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > q.length) {
      q.splice(0, this.head)
      this.head = 0
    }
    if (this.head < q.length) this.schedule(q[this.head]!.due, now)
    this.maybeResume()
  }

  private schedule(at: number, now: number): void {
    if (this.timer !== undefined && this.timerAt <= at) return
    if (this.timer !== undefined) this.clock.clearTimer(this.timer)
    this.timerAt = at
    this.timer = this.clock.setTimer(
      () => {
        this.timer = undefined
        this.timerAt = Infinity
        this.pump()
      },
      Math.max(1, Math.ceil(at - now)),
    )
  }

  private maybeResume(): void {
    if (this.paused && !this.cancelled && this.queued + this.dst.writableLength <= this.highWater / 2) {
      this.paused = false
      this.src.resume()
    }
  }
}

/** The link's settings. */
export interface LinkOptions {
  /** One-way delay client to server, ms. */
  upDelay: number
  /** One-way delay server to client, ms. */
  downDelay: number
  /** Client to server, bytes/ms; Infinity for no cap. */
  upRate: number
  /** Server to client, bytes/ms; Infinity for no cap. */
  downRate: number
  /** Bytes each bucket holds when full; default {@link DEFAULT_BURST}. */
  burst?: number
  /** Bytes a direction may hold before its sender is paused; default 1 MiB plus a round trip's worth at the rate. */
  highWater?: number
}

/** Counters of a proxy. */
export interface ProxyStats {
  connections: number
  active: number
  /** Bytes read from clients (and passed to the server). */
  bytesUp: number
  /** Bytes read from the server (and passed to clients). */
  bytesDown: number
  /** Connections that ended in an error or a reset. */
  errors: number
  /** CPU time of the proxy's process so far, ms (set by the CLI when it prints the counters). */
  cpuMs?: number
}

/** The proxy in this process (the CLI below runs one in a process of its own). */
export class WanProxy {
  private readonly server: net.Server
  private readonly up: TokenBucket
  private readonly down: TokenBucket
  private readonly sockets = new Set<net.Socket>()
  private readonly started: number
  private readonly highWater: number
  private readonly clock: Clock
  private next = 0
  readonly stats: ProxyStats = { connections: 0, active: 0, bytesUp: 0, bytesDown: 0, errors: 0 }
  /** The trace, when asked for (every chunk: keep it to benchmark runs). */
  readonly trace: TraceEvent[] | undefined

  /**
   * @param targetPort the server's port on 127.0.0.1.
   * @param opts `trace`: keep {@link trace}; `clock`: the time the link runs on (default the real one).
   */
  constructor(
    private readonly targetPort: number,
    private readonly link: LinkOptions,
    opts: { trace?: boolean; clock?: Clock } = {},
  ) {
    const clock = opts.clock ?? REAL_CLOCK
    this.clock = clock
    this.started = clock.now()
    const burst = link.burst ?? DEFAULT_BURST
    this.up = new TokenBucket(link.upRate, burst, this.started)
    this.down = new TokenBucket(link.downRate, burst, this.started)
    const rtt = link.upDelay + link.downDelay
    const fastest = Math.min(link.upRate, link.downRate)
    this.highWater = link.highWater ?? (1 << 20) + (Number.isFinite(fastest) ? Math.ceil(fastest * rtt) : 0)
    this.trace = opts.trace ? [] : undefined
    this.server = net.createServer({ allowHalfOpen: true, noDelay: true }, (c) => this.accept(c))
  }

  /** Listens on 127.0.0.1:`port` (0: any free port); resolves to the port. */
  listen(port = 0): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, LOOPBACK, () => {
        this.server.off('error', reject)
        resolve((this.server.address() as net.AddressInfo).port)
      })
    })
  }

  /** Stops listening and destroys every connection. */
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }

  private time(): number {
    return Math.round((this.clock.now() - this.started) * 1000) / 1000
  }

  private accept(client: net.Socket): void {
    const id = ++this.next
    this.stats.connections++
    this.stats.active++
    const link = this.link
    const acceptedAt = this.clock.now()
    const readyAt = acceptedAt + link.upDelay + link.downDelay
    const trace = this.trace
    trace?.push({ c: id, e: 'open', t: this.time() })
    const server = net.connect({ host: LOOPBACK, port: this.targetPort, allowHalfOpen: true, noDelay: true })
    this.sockets.add(client)
    this.sockets.add(server)
    const up = new Lane(client, server, link.upDelay, this.up, readyAt, this.highWater, this.clock)
    const down = new Lane(server, client, link.downDelay, this.down, readyAt, this.highWater, this.clock)
    const rel = (t: number): number => Math.round((t - this.started) * 1000) / 1000
    let failed = false
    let closed = 0
    const fail = (): void => {
      if (failed) return
      failed = true
      this.stats.errors++
      up.cancel()
      down.cancel()
      for (const s of [client, server]) {
        if (s.destroyed) continue
        // A reset where Node can send one (the peer sees ECONNRESET, as it would have).
        if (s.readyState === 'open' || s.readyState === 'readOnly' || s.readyState === 'writeOnly') s.resetAndDestroy()
        else s.destroy()
      }
    }
    const wire = (from: net.Socket, lane: Lane, into: Lane, dir: 'up' | 'down'): void => {
      from.on('data', (d: Buffer) => {
        if (dir === 'up') this.stats.bytesUp += d.length
        else this.stats.bytesDown += d.length
        const due = lane.push(d)
        if (trace) {
          const ev: TraceEvent = { c: id, e: dir, t: this.time(), n: d.length, due: rel(due) }
          if (dir === 'up' && /^[A-Z]+ /.test(d.subarray(0, 16).toString('latin1'))) {
            const nl = d.indexOf('\r\n')
            ev.req = d.subarray(0, nl < 0 ? Math.min(d.length, 200) : Math.min(nl, 200)).toString('latin1')
          }
          trace.push(ev)
        }
      })
      from.on('end', () => {
        const due = lane.end()
        trace?.push({ c: id, e: dir === 'up' ? 'fin-up' : 'fin-down', t: this.time(), due: rel(due) })
      })
      from.on('drain', () => into.drained())
      from.on('error', fail)
      from.on('close', () => {
        // Nothing can be written into it any more; a close before its FIN is an abort.
        into.cancel()
        if (!lane.sawEnd) fail()
        this.sockets.delete(from)
        if (++closed === 2) {
          this.stats.active--
          trace?.push({ c: id, e: 'close', t: this.time() })
        }
      })
    }
    wire(client, up, down, 'up')
    wire(server, down, up, 'down')
  }
}

/** Parses `40ms`, `0.04s`, `500us` or a plain number of ms; returns ms. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(us|ms|s)?$/.exec(s.trim())
  if (!m) throw new Error(`not a duration: ${JSON.stringify(s)} (say e.g. 40ms, 0.04s, 500us)`)
  const v = Number(m[1])
  return m[2] === 's' ? v * 1000 : m[2] === 'us' ? v / 1000 : v
}

/**
 * Parses a rate: `100mbit`, `1gbit`, `512kbit`, `800bit` (bits/s, decimal units as tc says them),
 * `12.5MB/s`, `64KiB/s`, `1000B/s` (bytes/s), or `0`/`none` for no cap. Returns bytes/ms.
 */
export function parseRate(s: string): number {
  const t = s.trim()
  if (t === '0' || t === 'none') return Infinity
  const bits = /^(\d+(?:\.\d+)?)([kmg]?)bit$/i.exec(t)
  const scale: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9, ki: 1024, mi: 1 << 20, gi: 1 << 30 }
  if (bits) {
    const v = (Number(bits[1]) * scale[bits[2]!.toLowerCase()]!) / 8 / 1000
    if (v > 0) return v
  }
  const bytes = /^(\d+(?:\.\d+)?)([KMG]i?)?B\/s$/.exec(t)
  if (bytes) {
    const v = (Number(bytes[1]) * scale[(bytes[2] ?? '').toLowerCase()]!) / 1000
    if (v > 0) return v
  }
  throw new Error(`not a rate: ${JSON.stringify(s)} (say e.g. 100mbit, 1gbit, 12.5MB/s, or none)`)
}

/** The command line of the proxy, as {@link spawnWanProxy} builds it. */
export interface WanProxyArgs {
  /** nginx's (or any server's) port on 127.0.0.1. */
  target: number
  /** Round trip added, ms (half each way); default 0. */
  rttMs?: number
  /** One-way delays, ms, when they differ (override `rttMs`). */
  upDelayMs?: number
  downDelayMs?: number
  /** Both directions' cap, bits/s; default none. */
  rateBits?: number
  upRateBits?: number
  downRateBits?: number
  burst?: number
  /** Write the trace here at exit. */
  trace?: string
}

/** A proxy in a process of its own. */
export interface WanProxyProcess {
  port: number
  /** `http://127.0.0.1:<port>` */
  url: string
  /** SIGTERM; resolves to its counters once it is gone (and its trace written). Idempotent. */
  stop(): Promise<ProxyStats | undefined>
}

const children = new Set<ChildProcess>()
let exitHook = false

/** The compiled CLI: this file when running from dist/, else its copy in dist/. */
function script(): string {
  return __filename.endsWith('.js') ? __filename : path.resolve(__dirname, '../dist/bench/wan-proxy.js')
}

/** Starts the proxy in its own process; rejects if it does not listen within 10 s. */
export async function spawnWanProxy(a: WanProxyArgs): Promise<WanProxyProcess> {
  if (!exitHook) {
    exitHook = true
    process.on('exit', () => {
      for (const c of children) c.kill('SIGKILL')
    })
  }
  const args = [script(), '--target', `${LOOPBACK}:${a.target}`, '--rtt', `${a.rttMs ?? 0}ms`]
  if (a.upDelayMs !== undefined) args.push('--up-delay', `${a.upDelayMs}ms`)
  if (a.downDelayMs !== undefined) args.push('--down-delay', `${a.downDelayMs}ms`)
  if (a.rateBits !== undefined) args.push('--rate', `${a.rateBits}bit`)
  if (a.upRateBits !== undefined) args.push('--up-rate', `${a.upRateBits}bit`)
  if (a.downRateBits !== undefined) args.push('--down-rate', `${a.downRateBits}bit`)
  if (a.burst !== undefined) args.push('--burst', String(a.burst))
  if (a.trace !== undefined) args.push('--trace', a.trace)
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  const lines = readline.createInterface({ input: child.stdout! })
  const linesClosed = new Promise<void>((resolve) => lines.once('close', resolve))
  let stats: ProxyStats | undefined
  const exited = new Promise<void>((resolve) => child.once('exit', () => (children.delete(child), resolve())))
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`wan-proxy did not listen within 10 s: ${stderr}`)), 10_000)
    child.once('exit', (code, sig) => reject(new Error(`wan-proxy exited (${code ?? sig}): ${stderr}`)))
    lines.on('line', (l) => {
      let msg: { port?: number; stats?: ProxyStats }
      try {
        msg = JSON.parse(l) as typeof msg
      } catch {
        return // not one of its messages
      }
      if (msg.port !== undefined) {
        clearTimeout(timer)
        resolve(msg.port)
      }
      if (msg.stats) stats = msg.stats
    })
  }).catch((err: Error) => {
    child.kill('SIGKILL')
    throw err
  })
  let stopping: Promise<ProxyStats | undefined> | undefined
  return {
    port,
    url: `http://${LOOPBACK}:${port}`,
    stop: () =>
      (stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM')
          const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
          await exited
          clearTimeout(timer)
        }
        // The last line (the counters) may be read after the exit event.
        await linesClosed
        return stats
      })()),
  }
}

const USAGE = `usage: node dist/bench/wan-proxy.js --target [127.0.0.1:]PORT [options]
  --rtt D          round trip added (half each way), e.g. 40ms; default 0
  --up-delay D     client-to-server delay (overrides half of --rtt)
  --down-delay D   server-to-client delay
  --rate R         cap of each direction, shared by all connections, e.g. 100mbit, 12.5MB/s; default none
  --up-rate R      client-to-server cap
  --down-rate R    server-to-client cap
  --burst BYTES    what a bucket holds when full (default ${DEFAULT_BURST})
  --listen PORT    port on 127.0.0.1 (default: any free one, printed as {"port":N})
  --trace FILE     write every chunk's times there (JSON lines) at exit`

function mainCli(argv: string[]): void {
  let target: number | undefined
  let rtt = 0
  let upDelay: number | undefined
  let downDelay: number | undefined
  let rate = Infinity
  let upRate: number | undefined
  let downRate: number | undefined
  let burst = DEFAULT_BURST
  let listen = 0
  let traceFile: string | undefined
  const port = (s: string, what: string): number => {
    const m = /^(?:127\.0\.0\.1:)?(\d+)$/.exec(s)
    const p = m ? Number(m[1]) : NaN
    if (!(p >= 0 && p <= 65535)) throw new Error(`${what}: want a port on 127.0.0.1, got ${JSON.stringify(s)}`)
    return p
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const val = (): string => {
      const v = argv[++i]
      if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`)
      return v
    }
    if (a === '--target') target = port(val(), a)
    else if (a === '--listen') listen = port(val(), a)
    else if (a === '--rtt') rtt = parseDuration(val())
    else if (a === '--up-delay') upDelay = parseDuration(val())
    else if (a === '--down-delay') downDelay = parseDuration(val())
    else if (a === '--rate') rate = parseRate(val())
    else if (a === '--up-rate') upRate = parseRate(val())
    else if (a === '--down-rate') downRate = parseRate(val())
    else if (a === '--burst') {
      burst = Number(val())
      if (!Number.isSafeInteger(burst) || burst < 0) throw new Error(`--burst: want bytes, got ${argv[i]}`)
    } else if (a === '--trace') traceFile = path.resolve(val())
    else if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE + '\n')
      return
    } else throw new Error(`unknown option ${a}\n${USAGE}`)
  }
  if (target === undefined || target === 0) throw new Error(`--target PORT is needed\n${USAGE}`)
  const proxy = new WanProxy(
    target,
    { upDelay: upDelay ?? rtt / 2, downDelay: downDelay ?? rtt / 2, upRate: upRate ?? rate, downRate: downRate ?? rate, burst },
    { trace: traceFile !== undefined },
  )
  const stop = (): void => {
    const cpu = process.cpuUsage()
    process.stdout.write(JSON.stringify({ stats: { ...proxy.stats, cpuMs: Math.round((cpu.user + cpu.system) / 1000) } }) + '\n')
    if (traceFile && proxy.trace) fs.writeFileSync(traceFile, proxy.trace.map((e) => JSON.stringify(e)).join('\n') + '\n')
    void proxy.close()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  proxy.listen(listen).then(
    (p) => process.stdout.write(JSON.stringify({ port: p }) + '\n'),
    (err: Error) => {
      process.stderr.write(`wan-proxy: ${err.message}\n`)
      process.exit(1)
    },
  )
}

if (require.main === module) {
  try {
    mainCli(process.argv.slice(2))
  } catch (err) {
    process.stderr.write(`wan-proxy: ${(err as Error).message}\n`)
    process.exit(2)
  }
}
