/**
 * A source at an `http://` or `https://` URL: a store (any static web server or object store
 * serving GET) or a grid cache (GET, and PUT for pushes: nginx with `dav_methods PUT`).
 *
 * Runs on the miss worker, so nothing here may touch libuv's threadpool:
 * - host names go through `./resolve` (the agents' `lookup`), never `dns.lookup`;
 * - bodies are never decompressed by axios (`decompress: false`, `Accept-Encoding: identity`):
 *   its decompression is async zlib, which runs on the threadpool;
 * - token and CA files are read with `readFileSync`; PUT bodies come from `readSync`.
 *
 * The timeout is a speed floor, not a deadline: a request that moves fewer than 1 KiB per second
 * of `timeoutMs` over any `timeoutMs`-long window (from the first byte of the request: waiting for
 * the connection, the headers and every part of the body count) is aborted. A silent server
 * fails after `timeoutMs`, one that stalls mid-body `timeoutMs` after its last burst, a trickle
 * after `timeoutMs`; a big download at a decent speed is never cut.
 *
 * Three clients, one behaviour. A GET that goes straight to its server (no proxy variable set for
 * its scheme, or a loopback URL) is made directly, redirects followed here: to the source's own
 * origin on a keep-alive pool of undici's (`dispatch`: no streams, no per-request agent
 * bookkeeping; the same resolver and CA), a hop to another origin with `node:http(s)`. A blob
 * download is the miss path's hottest code: axios's request pipeline cost 3.6x the CPU of a plain
 * `node:http` request per blob (355 against 97 µs), and undici's dispatch about half of
 * `node:http`'s (docs/benchmarks.md). Everything else (a proxied request, a redirect to one,
 * PUTs) goes through axios. None of them has a timer of its own: the watchdog below is the one.
 *
 * Proxies: axios applies `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (upper or lower
 * case) to every request, with our agents: plain HTTP through the proxy's absolute-URL form on our
 * http agent, HTTPS through a CONNECT tunnel whose socket to the proxy inherits our agent's
 * `lookup` and `ca`. Loopback URLs (`localhost`, `127.0.0.0/8`, `::1`) are never proxied.
 *
 * Redirects: at most {@link MAX_REDIRECTS} hops, to http(s) URLs only. Credentials go only to
 * the source's own origin (scheme, host and port): every configured header (`headers`: they are
 * secrets, whatever their names), the token (`token_file`'s `Authorization`) and the URL's
 * user:password are dropped at the first hop to another origin, and stay dropped for the rest of
 * the chain, even if it comes back. Both clients do this: the direct one in {@link
 * HttpSource.request}, axios (follow-redirects) in a `beforeRedirect` hook that runs after its own.
 */
import * as fs from 'node:fs'
import * as http from 'node:http'
import * as https from 'node:https'
import * as net from 'node:net'
import * as tls from 'node:tls'
import { Readable } from 'node:stream'
import type { AxiosInstance, AxiosResponse, AxiosStatic, CreateAxiosDefaults } from 'axios'
import type { Client, Dispatcher } from 'undici'
import { redactUrl, type SourceConfig } from '../config'
import { AysfsError } from '../errors'
import { lazyRequire } from '../lazy'
import { lookup as defaultLookup, type LookupFunction } from './resolve'
import { SourceFault, type GetResult, type RevalidateResult, type Sink, type Source, type SourceRole, type Validators } from './source'

// Each loaded at its first use (lib/lazy.ts), or by HttpSource.preload on the miss worker:
// undici for direct GETs, axios for proxied requests and PUTs.
const loadUndici = lazyRequire<{ Client: typeof Client }>('undici')
const loadAxios = lazyRequire<AxiosStatic>('axios')

/** Bytes per second below which a source has failed (`main.timeout`). */
const SPEED_FLOOR = 1024
/** Redirects followed for one GET. */
export const MAX_REDIRECTS = 5
/** Error bodies up to this size are read to the end so the connection can be reused. */
const DRAIN_LIMIT = 64 * 1024
const PUT_CHUNK = 256 * 1024
const USER_AGENT = 'aysfs-native'

export interface HttpSourceOptions {
  /** The speed-floor window (`main.timeout`), in ms. */
  timeoutMs: number
  /** Host name resolution; default the threadpool-free resolver of `./resolve`. */
  lookup?: LookupFunction
  /** Connections per host at once; default unlimited (the pipeline bounds downloads itself). */
  maxSockets?: number
  /** The clock of the token file's re-reads (at most one a second); default `Date.now` (tests
   * pass their own). */
  now?: () => number
}

/**
 * Calls `tick` every `ms` milliseconds until the function it returns is called. The default is
 * {@link sharedTicker}; a test passes one it drives by hand instead of waiting.
 */
export type Ticker = (ms: number, tick: () => void) => () => void

/** The watchdogs of one tick length: one interval for all of them. */
interface TickGroup {
  timer: NodeJS.Timeout
  /** Each watchdog's tick, and whether it is still to skip the group's first beat. */
  ticks: Map<() => void, boolean>
}
const tickGroups = new Map<number, TickGroup>()

/**
 * One `setInterval` per tick length for every watchdog that runs, not one per transfer (making
 * and clearing an interval per blob was a measurable part of a download's CPU on the miss path).
 * A new tick skips the group's next beat, which comes at any phase: its first call comes after
 * more than `ms` and at most `2 × ms`, its next ones every `ms`, as an interval of its own would
 * give them but for that phase.
 */
export const sharedTicker: Ticker = (ms, tick) => {
  let group = tickGroups.get(ms)
  if (!group) {
    const ticks = new Map<() => void, boolean>()
    const timer = setInterval(() => {
      for (const [t, skip] of ticks) {
        if (skip) ticks.set(t, false)
        else t()
      }
    }, ms)
    group = { timer, ticks }
    tickGroups.set(ms, group)
  }
  group.ticks.set(tick, true)
  const g = group
  return () => {
    if (!g.ticks.delete(tick) || g.ticks.size > 0) return
    clearInterval(g.timer)
    if (tickGroups.get(ms) === g) tickGroups.delete(ms)
  }
}

/**
 * Aborts a transfer that moves fewer than {@link SPEED_FLOOR} bytes per second over any window of
 * `timeoutMs`. It samples a byte counter 8 times per window, so it fires between `timeoutMs` and
 * `timeoutMs × 9/8` after the last byte that mattered.
 */
export class Watchdog {
  /** Bytes moved so far; the transfer adds to it. */
  bytes = 0
  private readonly stopTicks: () => void
  private readonly samples: number[] = [0]

  /** `ticker`: what samples the counter; default `setInterval` (tests drive their own). */
  constructor(timeoutMs: number, onSlow: () => void, ticker: Ticker = sharedTicker) {
    const tick = Math.max(5, Math.floor(timeoutMs / 8))
    const window = Math.max(1, Math.round(timeoutMs / tick))
    const floor = (SPEED_FLOOR * timeoutMs) / 1000
    this.stopTicks = ticker(tick, () => {
      this.samples.push(this.bytes)
      const n = this.samples.length
      if (n <= window) return
      if (this.bytes - this.samples[n - 1 - window] < floor) {
        this.stop()
        onSlow()
      } else if (n > 4 * window) {
        this.samples.splice(0, n - window - 1)
      }
    })
  }

  stop(): void {
    this.stopTicks()
  }
}

function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase()
  if (h === 'localhost' || h.endsWith('.localhost') || h === '::1') return true
  return net.isIPv4(h) && h.startsWith('127.')
}

/** Map what axios/Node threw to a fault kind. */
function faultFrom(err: unknown, what: string): SourceFault {
  if (err instanceof SourceFault) return err
  const e = err as Error & { code?: string; cause?: { code?: string } }
  const code = e.code ?? e.cause?.code
  if (code === 'ERR_FR_TOO_MANY_REDIRECTS') return new SourceFault('redirects', `${what}: more than ${MAX_REDIRECTS} redirects`, err)
  if (code === 'ERR_FR_REDIRECTION_FAILURE' || code === 'ERR_INVALID_URL') return new SourceFault('bad-redirect', `${what}: ${e.message}`, err)
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return new SourceFault(`net:${code}`, `${what}: ${e.message}`, err)
  if (typeof code === 'string' && /CERT|SSL|TLS|SELF_SIGNED|VERIFY/.test(code)) return new SourceFault(`tls:${code}`, `${what}: ${e.message}`, err)
  return new SourceFault('http', `${what}: ${e.message}`, err)
}

/** Whether a request to `u` goes through a proxy (axios's rule, conservatively: any proxy
 * variable for its scheme, unless the host is loopback; axios then applies `NO_PROXY`). */
function mayBeProxied(u: URL): boolean {
  return !isLoopback(u.hostname) && proxyEnvFor(u.protocol)
}

/** Whether a proxy variable is set for `protocol` (`http:` or `https:`). */
function proxyEnvFor(protocol: string): boolean {
  const scheme = protocol.slice(0, -1)
  const env = process.env
  return Boolean(env[`${scheme}_proxy`] || env[`${scheme.toUpperCase()}_PROXY`] || env.all_proxy || env.ALL_PROXY)
}

const REDIRECTS = new Set([301, 302, 303, 307, 308])

/** A copy of `headers` without `Authorization` (in any case). */
function withoutAuthorization(headers: Record<string, string>): Record<string, string> {
  const h: Record<string, string> = {}
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() !== 'authorization') h[k] = v
  return h
}

/** Headers every request carries: nothing secret in them, so they survive any redirect. */
const BASE_HEADERS: Readonly<Record<string, string>> = { 'User-Agent': USER_AGENT, 'Accept-Encoding': 'identity' }

/** A response body not read yet, as every client gives it. */
interface Body {
  /** Feeds the body to `onData` (a throw there stops it: `done(err, true)`); `done` once, at its
   * end (no argument) or its failure. Called at most once. */
  read(onData: (chunk: Buffer) => void, done: (err?: unknown, fromSink?: boolean) => void): void
  /** Throws it away; a small one is read to the end so the connection can be reused. */
  discard(): void
  /** Stops it now (the connection is closed); a read in progress ends with `err`. */
  destroy(err?: Error): void
}

/** A response as every client gives it. */
interface Response {
  status: number
  headers: Record<string, unknown>
  body: Body
}

/** What a GET's watchdog stops: the request in flight, whichever client runs it, and its body. */
class Transfer {
  /** The watchdog fired (with this fault). */
  slow?: SourceFault
  private ac?: AbortController
  /** The pooled request in flight, if any. */
  pooled?: PooledRequest
  body?: Body

  /** For node:http and axios (made on first use: the pooled path needs none). */
  get signal(): AbortSignal {
    this.ac ??= new AbortController()
    if (this.slow) this.ac.abort(this.slow)
    return this.ac.signal
  }

  stop(fault: SourceFault): void {
    this.slow = fault
    this.ac?.abort(fault)
    this.pooled?.abort(fault)
    this.body?.destroy(fault)
  }
}

/** An error with an axios/follow-redirects code, so {@link faultFrom} maps both clients alike. */
function coded(code: string, message: string): Error {
  return Object.assign(new Error(message), { code })
}

/** Whether a body of these headers is small enough to read to the end rather than close its
 * connection. */
function drainable(headers: Record<string, unknown>): boolean {
  const len = Number(headers['content-length'])
  return Number.isFinite(len) && len <= DRAIN_LIMIT
}

/** A body of node:http or axios: a stream. */
class StreamBody implements Body {
  constructor(
    private readonly stream: Readable,
    private readonly headers: Record<string, unknown>,
    private readonly timeoutMs: number,
    private readonly what: () => string,
  ) {}

  read(onData: (chunk: Buffer) => void, done: (err?: unknown, fromSink?: boolean) => void): void {
    const stream = this.stream
    let settled = false
    const settle = (err?: unknown, fromSink = false): void => {
      if (settled) return
      settled = true
      stream.off('data', data)
      done(err, fromSink)
    }
    const data = (chunk: Buffer): void => {
      try {
        onData(chunk)
      } catch (err) {
        // A body longer than allowed is cut here, at the first chunk past the limit.
        stream.destroy()
        settle(err, true)
      }
    }
    stream.on('data', data)
    stream.once('end', () => settle())
    stream.once('error', (err) => settle(err))
    // 'close' also follows every good 'end': build the fault (and its stack) only when it is one.
    stream.once('close', () => settled || settle(new SourceFault('truncated', `${this.what()}: connection closed before the end of the body`)))
  }

  discard(): void {
    const stream = this.stream
    if (!drainable(this.headers)) {
      stream.destroy()
      return
    }
    const timer = setTimeout(() => stream.destroy(), this.timeoutMs)
    timer.unref()
    stream.on('error', () => {})
    stream.on('close', () => clearTimeout(timer))
    stream.resume()
  }

  destroy(err?: Error): void {
    this.stream.destroy(err)
  }
}

/** The headers {@link HttpSource} looks at, from undici's raw list (name, value, ...): the first
 * of each, as node:http keeps them. */
const WANTED = new Set(['content-length', 'location', 'etag', 'last-modified'])
function headersOf(raw: Buffer[] | string[] | null): Record<string, string> {
  const h: Record<string, string> = {}
  if (!raw) return h
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1').toLowerCase()
    if (WANTED.has(name) && h[name] === undefined) h[name] = raw[i + 1]!.toString('latin1')
  }
  return h
}

/** Body bytes a pooled response keeps before it is read; past them its parser waits. */
const QUEUE_MAX = 256 * 1024

/**
 * One GET on a source's keep-alive pool (undici's `dispatch`, no streams): the head resolves
 * {@link head}; body bytes that come before the body is read or discarded (those of the same
 * socket read, as a rule) are kept, up to {@link QUEUE_MAX}, then the parser waits. A response
 * that ended lets go of its connection at once. Also the response's {@link Body}.
 */
class PooledRequest implements Dispatcher.DispatchHandlers, Body {
  status = 0
  headers: Record<string, string> = {}
  readonly head: Promise<PooledRequest>
  private resolveHead!: (r: PooledRequest) => void
  private rejectHead!: (err: unknown) => void
  private abortRequest?: (err: Error) => void
  private resume?: () => void
  /** Why it was stopped (before it connected, or since). */
  private stopped?: Error
  private answered = false
  private consumer?: (chunk: Buffer) => void
  /** Chunks that came before read(), and their bytes. */
  private queued: Buffer[] | undefined
  private queuedBytes = 0
  /** The parser waits (QUEUE_MAX reached) for read() or discard(). */
  private paused = false
  private discarding = false
  private done?: (err?: unknown, fromSink?: boolean) => void
  private finished = false
  /** Called once when the request is over (its connection free for the next one). */
  onEnd?: () => void
  /** How it ended before anyone read it (the connection failed while paused). */
  private outcome?: { err?: unknown }
  private timer?: NodeJS.Timeout

  constructor(
    private readonly timeoutMs: number,
    private readonly what: () => string,
  ) {
    this.head = new Promise((resolve, reject) => {
      this.resolveHead = resolve
      this.rejectHead = reject
    })
  }

  /** Stops the request (its connection is closed); idempotent. */
  abort(err: Error): void {
    if (this.finished || this.stopped) return
    this.stopped = err
    // Not answered yet (maybe not even connected): whoever waits for the head hears of it now.
    if (!this.answered) this.rejectHead(err)
    this.abortRequest?.(err)
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.stopped) abort(this.stopped)
    else this.abortRequest = abort
  }

  onHeaders(status: number, raw: Buffer[] | string[] | null, resume: () => void): boolean {
    if (status < 200) return true // informational: the response follows
    this.status = status
    this.headers = headersOf(raw)
    this.resume = resume
    this.answered = true
    this.resolveHead(this)
    return true
  }

  onData(chunk: Buffer): boolean {
    if (!this.consumer) {
      if (this.discarding || this.stopped) return true
      ;(this.queued ??= []).push(chunk)
      this.queuedBytes += chunk.length
      if (this.queuedBytes < QUEUE_MAX) return true
      this.paused = true
      return false
    }
    try {
      this.consumer(chunk)
      return true
    } catch (err) {
      this.settle(err, true)
      this.abort(err as Error)
      return false
    }
  }

  onComplete(): void {
    this.finished = true
    clearTimeout(this.timer)
    this.end()
    this.settle()
  }

  onError(err: Error): void {
    this.finished = true
    clearTimeout(this.timer)
    this.end()
    const e = err as Error & { code?: string }
    if (!this.answered) {
      // Closed before the response: what node:http calls a hang-up (ECONNRESET).
      this.rejectHead(this.stopped ?? (e.code === 'UND_ERR_SOCKET' ? Object.assign(coded('ECONNRESET', `socket hang up (${e.message})`), { cause: err }) : err))
      return
    }
    // The connection ended before the end of the body: undici's "other side closed" or its
    // check of the Content-Length.
    if (e.code === 'UND_ERR_SOCKET' || e.code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
      this.settle(this.stopped ?? new SourceFault('truncated', `${this.what()}: connection closed before the end of the body`, err))
    } else this.settle(this.stopped ?? err)
  }

  private end(): void {
    const onEnd = this.onEnd
    this.onEnd = undefined
    onEnd?.()
  }

  private settle(err?: unknown, fromSink = false): void {
    const done = this.done
    if (!done) {
      this.outcome ??= { err }
      return
    }
    this.done = undefined
    this.consumer = undefined
    done(err, fromSink)
  }

  read(onData: (chunk: Buffer) => void, done: (err?: unknown, fromSink?: boolean) => void): void {
    const queued = this.queued
    this.queued = undefined
    for (const chunk of queued ?? []) {
      try {
        onData(chunk)
      } catch (err) {
        this.abort(err as Error)
        done(err, true)
        return
      }
    }
    if (this.outcome) {
      done(this.outcome.err)
      return
    }
    this.consumer = onData
    this.done = done
    this.unpause()
  }

  discard(): void {
    this.queued = undefined
    if (this.finished) return
    if (!drainable(this.headers)) {
      this.abort(new Error('discarded'))
      return
    }
    this.discarding = true
    this.timer = setTimeout(() => this.abort(new Error('discarded')), this.timeoutMs)
    this.timer.unref()
    this.unpause()
  }

  private unpause(): void {
    if (!this.paused) return
    this.paused = false
    this.resume?.()
  }

  destroy(err?: Error): void {
    this.abort(err ?? new Error('destroyed'))
  }
}

/** The validators of a response: its `ETag` and `Last-Modified`, when present and sane. */
function validatorsOf(headers: Record<string, unknown>): Validators {
  const v: Validators = {}
  const ok = (x: unknown): x is string => typeof x === 'string' && x.length > 0 && x.length <= 256 && !/[\r\n\0]/.test(x)
  if (ok(headers.etag)) v.etag = headers.etag
  if (ok(headers['last-modified'])) v.lastModified = headers['last-modified']
  return v
}

/**
 * Keep-alive connections to one origin: one undici `Client` each (one connection, no
 * pipelining). A request takes an idle one, or makes one, and gives it back as soon as its
 * response has ended, so there are never more connections than requests at once ever were.
 * (undici's `Pool` marks a connection free only an event-loop turn after its response ended: a
 * request made in between opened a new one; here it waits that turn on the connection.)
 */
class ConnPool {
  private readonly idle: Client[] = []
  private readonly clients = new Set<Client>()
  /** Requests waiting for a connection when `max` are open. */
  private readonly waiting: (() => void)[] = []

  constructor(
    private readonly origin: string,
    private readonly max: number,
    private readonly options: Client.Options,
  ) {}

  dispatch(opts: Dispatcher.DispatchOptions, req: PooledRequest): void {
    const client = this.idle.pop() ?? (this.clients.size < this.max ? this.make() : undefined)
    if (!client) {
      this.waiting.push(() => this.dispatch(opts, req))
      return
    }
    req.onEnd = () => this.release(client)
    client.dispatch(opts, req)
  }

  private make(): Client {
    const client = new (loadUndici().Client)(this.origin, this.options)
    this.clients.add(client)
    return client
  }

  private release(client: Client): void {
    if (!this.clients.has(client)) return // destroyed
    this.idle.push(client)
    this.waiting.shift()?.()
  }

  /** Closes every connection; requests in flight fail. */
  destroy(): void {
    const clients = [...this.clients]
    this.clients.clear()
    this.idle.length = 0
    for (const c of clients) void c.destroy().catch(() => undefined)
  }
}

export class HttpSource implements Source {
  readonly key: string
  readonly url: string
  readonly push: boolean
  private readonly base: string
  private readonly auth?: { username: string; password: string }
  private readonly headers: Record<string, string>
  /** Names (lower case) of what goes to the origin only: every configured header, `authorization`. */
  private readonly secretHeaders: ReadonlySet<string>
  private readonly tokenFile?: string
  private token?: { value: string; mtimeMs: number; checkedAt: number }
  private readonly httpAgent: http.Agent
  private readonly httpsAgent: https.Agent
  /** axios's settings for this source; its clients are made at their first use. */
  private readonly axiosDefaults: CreateAxiosDefaults
  private client?: AxiosInstance
  /** The same without the URL's user:password, after a redirect to another host. */
  private anonClient?: AxiosInstance
  private readonly timeoutMs: number
  private readonly now: () => number
  /** The source's own origin and path, for its pooled GETs. */
  private readonly origin: string
  private readonly basePath: string
  private readonly search: string
  private readonly protocol: string
  private readonly loopback: boolean
  /** Keep-alive connections to the source's own origin, for direct GETs (undici). */
  private readonly pool: ConnPool

  constructor(
    cfg: SourceConfig,
    readonly role: SourceRole,
    opts: HttpSourceOptions,
  ) {
    const u = new URL(cfg.url)
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError(`HttpSource: not an http(s) URL: ${redactUrl(cfg.url)}`)
    if (u.username !== '' || u.password !== '') {
      this.auth = { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) }
      u.username = ''
      u.password = ''
    }
    this.base = u.toString()
    this.key = cfg.key
    this.url = redactUrl(cfg.url)
    this.push = role === 'cache' && cfg.push
    this.timeoutMs = opts.timeoutMs
    this.now = opts.now ?? Date.now
    this.tokenFile = cfg.tokenFile
    this.headers = { 'User-Agent': USER_AGENT, ...cfg.headers, 'Accept-Encoding': 'identity' }
    this.secretHeaders = new Set([...Object.keys(cfg.headers).map((k) => k.toLowerCase()), 'authorization'])
    if (this.tokenFile !== undefined) this.readToken() // fail at start, not at the first miss
    const lookup = opts.lookup ?? defaultLookup
    const maxSockets = opts.maxSockets ?? Infinity
    let ca: string[] | undefined
    if (cfg.ca !== undefined) {
      let pem: string
      try {
        pem = fs.readFileSync(cfg.ca, 'utf8')
      } catch (err) {
        throw new AysfsError('EINVAL', `${cfg.key}.ca: cannot read ${cfg.ca}: ${(err as Error).message}`, { key: `${cfg.key}.ca`, cause: err })
      }
      // Added to Node's bundled roots, not instead of them: a store that redirects to a public
      // CDN keeps working.
      ca = [...tls.rootCertificates, pem]
    }
    this.origin = u.origin
    this.basePath = u.pathname.replace(/\/+$/, '')
    this.search = u.search
    this.protocol = u.protocol
    this.loopback = isLoopback(u.hostname)
    this.pool = new ConnPool(u.origin, maxSockets, {
      pipelining: 1,
      // The watchdog is the only timer (the speed floor above); undici's own are off.
      headersTimeout: 0,
      bodyTimeout: 0,
      connectTimeout: 0,
      // Like the agents': the threadpool-free resolver, the configured CA (undici passes these
      // to net/tls.connect).
      connect: { lookup: lookup as never, ...(ca ? { ca } : {}) },
    })
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets, lookup: lookup as never })
    this.httpsAgent = new https.Agent({ keepAlive: true, maxSockets, lookup: lookup as never, ca })
    this.axiosDefaults = {
      httpAgent: this.httpAgent,
      httpsAgent: this.httpsAgent,
      // false: never proxied; undefined: axios reads HTTP(S)_PROXY / NO_PROXY per request.
      proxy: isLoopback(u.hostname) ? (false as const) : undefined,
      decompress: false,
      maxRedirects: MAX_REDIRECTS,
      maxContentLength: -1,
      maxBodyLength: Infinity,
      validateStatus: () => true,
      responseType: 'stream' as const,
    }
  }

  /**
   * Loads now the modules this source's requests can need (the miss worker, before it answers a
   * miss: lib/miss-worker.ts): undici unless a proxy applies to its own URL, axios when it pushes
   * or any proxy variable is set (a redirect may lead to a proxied URL). Elsewhere they are
   * loaded at their first use.
   */
  preload(): void {
    if (!this.proxiedBase()) loadUndici()
    if (this.push || proxyEnvFor('http:') || proxyEnvFor('https:')) loadAxios()
  }

  /** axios with the URL's user:password (`credentials`) or without; made at the first use. */
  private axiosClient(credentials: boolean): AxiosInstance {
    if (credentials) return (this.client ??= loadAxios().create({ ...this.axiosDefaults, auth: this.auth }))
    return (this.anonClient ??= loadAxios().create(this.axiosDefaults))
  }

  private readToken(): string {
    const file = this.tokenFile!
    const now = this.now()
    if (this.token && now - this.token.checkedAt < 1000) return this.token.value
    try {
      const mtimeMs = fs.statSync(file).mtimeMs
      if (this.token?.mtimeMs !== mtimeMs) {
        this.token = { value: fs.readFileSync(file, 'utf8').trim(), mtimeMs, checkedAt: now }
      } else {
        this.token.checkedAt = now
      }
      return this.token.value
    } catch (err) {
      throw new SourceFault('token', `${this.key}: cannot read token_file ${file}: ${(err as Error).message}`, err)
    }
  }

  private requestHeaders(): Record<string, string> {
    if (this.tokenFile === undefined) return { ...this.headers }
    return { ...withoutAuthorization(this.headers), Authorization: `Bearer ${this.readToken()}` }
  }

  /** The headers of a direct request: with credentials (as axios sends `auth`), or without any
   * (after a redirect to another origin: no configured header at all, no token, no Basic). */
  private directHeaders(credentials: boolean): Record<string, string> {
    if (!credentials) return { ...BASE_HEADERS }
    if (!this.auth) return this.requestHeaders()
    const basic = Buffer.from(`${this.auth.username}:${this.auth.password}`).toString('base64')
    return { ...withoutAuthorization(this.requestHeaders()), Authorization: `Basic ${basic}` }
  }

  /** One direct request; resolves with the response head (the body not read yet). */
  private requestOnce(u: URL, signal: AbortSignal, credentials: boolean, extra: Record<string, string>): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const https_ = u.protocol === 'https:'
      const req = (https_ ? https : http).request({
        protocol: u.protocol,
        hostname: u.hostname.replace(/^\[|\]$/g, ''),
        port: u.port === '' ? undefined : Number(u.port),
        path: `${u.pathname}${u.search}`,
        method: 'GET',
        headers: { ...this.directHeaders(credentials), ...extra },
        agent: https_ ? this.httpsAgent : this.httpAgent,
        signal,
      })
      req.once('response', resolve)
      req.once('error', reject)
      req.end()
    })
  }

  /** A GET on the source's pool (its own origin, no proxy, with credentials); resolves with the
   * response head, the body paused until it is read or discarded. */
  private pooled(path: string, t: Transfer, what: () => string, extra: Record<string, string>): Promise<PooledRequest> {
    const req = new PooledRequest(this.timeoutMs, what)
    t.pooled = req
    if (t.slow) req.abort(t.slow)
    const headers = this.directHeaders(true)
    for (const k in extra) headers[k] = extra[k]!
    this.pool.dispatch({ path, method: 'GET', headers }, req)
    return req.head
  }

  /** A GET, direct where no proxy may apply, following redirects; else (or from a hop that may
   * be proxied) through axios. `rel` is the path under the source's URL; the first hop goes to
   * the source's keep-alive pool when nothing proxies it. */
  private async request(rel: string, t: Transfer, what: () => string, extra: Record<string, string> = {}): Promise<Response> {
    let current: URL
    let credentials = true
    let hop = 0
    if (!this.proxiedBase()) {
      const path = this.pathFor(rel)
      const res = await this.pooled(path, t, what, extra)
      const location = res.headers.location
      if (!REDIRECTS.has(res.status) || location === undefined) return { status: res.status, headers: res.headers, body: res }
      res.discard()
      current = this.next(location, new URL(this.origin + path))
      if (current.origin !== this.origin) credentials = false
      hop = 1
    } else current = new URL(this.urlFor(rel))
    for (; ; hop++) {
      if (mayBeProxied(current)) return this.viaAxios(current.toString(), t, what, MAX_REDIRECTS - hop, credentials, extra)
      const res = await this.requestOnce(current, t.signal, credentials, extra)
      const status = res.statusCode ?? 0
      const location = res.headers.location
      const body = new StreamBody(res, res.headers, this.timeoutMs, what)
      if (!REDIRECTS.has(status) || location === undefined) return { status, headers: res.headers, body }
      body.discard()
      if (hop >= MAX_REDIRECTS) throw coded('ERR_FR_TOO_MANY_REDIRECTS', `more than ${MAX_REDIRECTS} redirects`)
      const next = this.next(location, current)
      // Another scheme, host or port: no credentials from here on. (URL.origin is normalised:
      // lower-case host, no default port.)
      if (next.origin !== current.origin) credentials = false
      current = next
    }
  }

  /** The target of a redirect from `from`, without user:password; throws for a bad one. */
  private next(location: string, from: URL): URL {
    let next: URL
    try {
      next = new URL(location, from)
    } catch {
      throw coded('ERR_FR_REDIRECTION_FAILURE', `redirected to an invalid URL (${location.slice(0, 200)})`)
    }
    if (next.protocol !== 'http:' && next.protocol !== 'https:') {
      throw coded('ERR_FR_REDIRECTION_FAILURE', `redirected to an unsupported protocol ${next.protocol}`)
    }
    next.username = ''
    next.password = ''
    return next
  }

  /** Whether a request to the source's own URL may go through a proxy. */
  private proxiedBase(): boolean {
    return !this.loopback && proxyEnvFor(this.protocol)
  }

  private async viaAxios(url: string, t: Transfer, what: () => string, maxRedirects: number, credentials: boolean, extra: Record<string, string> = {}): Promise<Response> {
    const client = this.axiosClient(credentials)
    const res = await client.get<Readable>(url, {
      signal: t.signal,
      maxRedirects,
      headers: { ...(credentials ? this.requestHeaders() : this.directHeaders(false)), ...extra },
      beforeRedirect: this.redirectGuard(url),
    })
    return { status: res.status, headers: res.headers, body: new StreamBody(res.data, res.headers, this.timeoutMs, what) }
  }

  /**
   * follow-redirects' hook for one axios GET from `url`: at the first hop to another origin, and
   * on every hop after it, the request loses every configured header, `Authorization` and the
   * Basic credentials (`auth`). axios runs it after its own hooks (one of which puts `auth` back
   * when a chain returns to the origin), so it has the last word. The target is `href`: with a
   * proxy, `hostname` and `port` are the proxy's.
   */
  private redirectGuard(url: string): (options: Record<string, any>) => void {
    const origin = new URL(url).origin
    let left = false
    return (options) => {
      let to: string | undefined
      try {
        to = new URL(String(options.href)).origin
      } catch {
        // unparsable: treated as another origin
      }
      if (to !== origin) left = true
      if (!left) return
      delete options.auth
      const headers = options.headers as Record<string, unknown> | undefined
      for (const name of Object.keys(headers ?? {})) if (this.secretHeaders.has(name.toLowerCase())) delete headers![name]
    }
  }

  /** The full URL of `rel` (credentials are passed apart, as `auth`; a query string stays last). */
  urlFor(rel: string): string {
    const u = new URL(this.base)
    u.pathname = `${u.pathname.replace(/\/+$/, '')}/${rel.split('/').map(encodeURIComponent).join('/')}`
    return u.toString()
  }

  /** The path (and query) of `rel` on the source's origin. Each segment percent-encoded: an ays
   * id with `%2f`, `?` or `#` in it must name one file under md/, never a path the server
   * decodes into another place. */
  private pathFor(rel: string): string {
    let p = this.basePath
    for (const seg of rel.split('/')) {
      // A dot segment: as URL resolves it (what urlFor sends).
      if (seg === '.' || seg === '..') return new URL(this.urlFor(rel)).pathname + this.search
      p += `/${encodeURIComponent(seg)}`
    }
    return p + this.search
  }

  async get(rel: string, sink: Sink): Promise<GetResult> {
    const what = (): string => `GET ${redactUrl(this.urlFor(rel))}`
    const t = new Transfer()
    const slowFault = (): SourceFault => new SourceFault('timeout', `${what()}: under ${SPEED_FLOOR} bytes/s for ${this.timeoutMs} ms`)
    const dog = new Watchdog(this.timeoutMs, () => t.stop(slowFault()))
    try {
      let res: Response
      try {
        res = await this.request(rel, t, what)
      } catch (err) {
        throw t.slow ?? faultFrom(err, what())
      }
      const body = (t.body = res.body)
      if (t.slow) {
        body.destroy()
        throw t.slow
      }
      if (res.status === 404 || res.status === 410) {
        body.discard()
        return 'absent'
      }
      if (res.status !== 200) {
        body.discard()
        throw new SourceFault(`http-${res.status}`, `${what()}: HTTP ${res.status}`)
      }
      const declared = res.headers['content-length']
      if (declared !== undefined && declared !== null && declared !== '') {
        const len = Number(declared)
        if (sink.exactBytes !== undefined && len !== sink.exactBytes) {
          body.destroy()
          throw new SourceFault(len > sink.exactBytes ? 'too-long' : 'too-short', `${what()}: Content-Length ${len}, expected ${sink.exactBytes}`)
        }
        if (len > sink.maxBytes) {
          body.destroy()
          throw new SourceFault('too-long', `${what()}: Content-Length ${len}, more than ${sink.maxBytes}`)
        }
      }
      sink.validators?.(validatorsOf(res.headers))
      await new Promise<void>((resolve, reject) => {
        body.read(
          (chunk) => {
            dog.bytes += chunk.length
            sink.write(chunk)
          },
          (err, fromSink) => {
            if (err === undefined) resolve()
            // The sink's own errors pass as they are: a fault (too long) or a local disk
            // failure, which must not be blamed on the source.
            else reject(fromSink ? err : (t.slow ?? faultFrom(err, what())))
          },
        )
      })
      sink.end()
      return 'ok'
    } finally {
      dog.stop()
    }
  }

  /** A conditional GET (`If-None-Match`, else `If-Modified-Since`); a 200's body is not read. */
  async revalidate(rel: string, v: Validators): Promise<RevalidateResult> {
    const what = (): string => `GET ${redactUrl(this.urlFor(rel))} (conditional)`
    const extra: Record<string, string> = v.etag !== undefined ? { 'If-None-Match': v.etag } : v.lastModified !== undefined ? { 'If-Modified-Since': v.lastModified } : {}
    const t = new Transfer()
    const dog = new Watchdog(this.timeoutMs, () => t.stop(new SourceFault('timeout', `${what()}: no answer for ${this.timeoutMs} ms`)))
    try {
      let res: Response
      try {
        res = await this.request(rel, t, what, extra)
      } catch (err) {
        throw t.slow ?? faultFrom(err, what())
      }
      if (res.status === 200) {
        res.body.destroy()
        return 'changed'
      }
      res.body.discard()
      if (res.status === 304) return 'unchanged'
      if (res.status === 404 || res.status === 410) return 'absent'
      throw new SourceFault(`http-${res.status}`, `${what()}: HTTP ${res.status}`)
    } finally {
      dog.stop()
    }
  }

  /** `PUT` the file at `rel`, streamed with `readSync` (no threadpool), no redirects. */
  async put(rel: string, file: string, size: number): Promise<void> {
    const url = this.urlFor(rel)
    const what = `PUT ${redactUrl(url)}`
    const ac = new AbortController()
    let slow = false
    const dog = new Watchdog(this.timeoutMs, () => {
      slow = true
      ac.abort()
      body.destroy()
    })
    let fd: number | undefined
    const body = new Readable({
      highWaterMark: PUT_CHUNK,
      read() {
        try {
          fd ??= fs.openSync(file, 'r')
          const buf = Buffer.allocUnsafe(PUT_CHUNK)
          const n = fs.readSync(fd, buf, 0, PUT_CHUNK, null)
          dog.bytes += n
          this.push(n === 0 ? null : buf.subarray(0, n))
        } catch (err) {
          this.destroy(err as Error)
        }
      },
      destroy(err, cb) {
        if (fd !== undefined) fs.closeSync(fd)
        fd = undefined
        cb(err)
      },
    })
    try {
      let res: AxiosResponse<Readable>
      try {
        res = await this.axiosClient(true).put<Readable>(url, body, {
          signal: ac.signal,
          maxRedirects: 0, // a redirect would need the body again
          headers: { ...this.requestHeaders(), 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) },
        })
      } catch (err) {
        throw slow ? new SourceFault('timeout', `${what}: under ${SPEED_FLOOR} bytes/s for ${this.timeoutMs} ms`) : faultFrom(err, what)
      }
      new StreamBody(res.data, res.headers, this.timeoutMs, () => what).discard()
      if (res.status !== 200 && res.status !== 201 && res.status !== 204) {
        throw new SourceFault(`http-${res.status}`, `${what}: HTTP ${res.status}`)
      }
    } finally {
      dog.stop()
      body.destroy()
    }
  }

  close(): void {
    this.pool.destroy()
    this.httpAgent.destroy()
    this.httpsAgent.destroy()
  }
}
