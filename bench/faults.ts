// A misbehaving HTTP server of our own, on 127.0.0.1:<random>: one behaviour per path prefix,
// `/<mode>/<path in the store dir>`. Content comes from `store` (a store or cache root); only
// sync fs, so it also works while a test has blocked libuv's threadpool. It lives in bench/
// because the soak (bench/soak/) drives it too, and bench code never imports from test/.
import { prng } from './prng'
import * as fs from 'node:fs'
import * as http from 'node:http'
import type * as net from 'node:net'
import * as path from 'node:path'
import * as zlib from 'node:zlib'

/**
 * - `good`: the file (and `.bro` when present), 404 otherwise; PUT stores the body (atomically).
 * - `e500`: HTTP 500. `e404`: HTTP 404. `e401`: HTTP 401 unless `Authorization: Bearer <token>`,
 *   then like `good`.
 * - `wrong`: 200 with the right length but wrong bytes.
 * - `truncated`: Content-Length of the whole file, half of it sent, then the connection closed.
 * - `stall`: half the body sent, then nothing (connection held open).
 * - `silent`: the request is read and never answered.
 * - `reset`: the connection is reset (RST) as soon as the request arrives.
 * - `trickle`: the right body at `trickleBps` bytes/s (default 100: under the 1 KiB/s floor).
 * - `loop`: 302 to itself forever. `redirect`: 302 to the same path under `good`.
 * - `long`: the file followed by 1000 more bytes, chunked (no Content-Length).
 * - `longcl`: the same with a Content-Length saying so.
 * - `endless`: 200 chunked, bytes forever (until the client hangs up).
 * - `bomb`: plain 404; `.bro` is a small brotli stream of 64 MiB of zeros.
 * - `slow`: like `good` after `delayMs` (to watch concurrency).
 * - `drip`: the right Content-Length, then one byte a second (far under the speed floor).
 * - `cebomb`: 200 with `Content-Encoding: gzip` and a gzip stream of 64 MiB of zeros, cut or
 *   padded to the blob's length: a client that decoded it would see 64 MiB.
 * - `random`: each request gets a mode drawn from `random.modes` with probability `random.rate`,
 *   else `good` (a seeded draw: the same seed, the same sequence of requests, the same faults).
 */
export type FaultMode =
  | 'good' | 'e500' | 'e404' | 'e401' | 'wrong' | 'truncated' | 'stall' | 'silent' | 'reset' | 'trickle'
  | 'loop' | 'redirect' | 'long' | 'longcl' | 'endless' | 'bomb' | 'slow' | 'drip' | 'cebomb' | 'random'

export const FAULT_MODES: readonly FaultMode[] = [
  'good', 'e500', 'e404', 'e401', 'wrong', 'truncated', 'stall', 'silent', 'reset', 'trickle',
  'loop', 'redirect', 'long', 'longcl', 'endless', 'bomb', 'slow', 'drip', 'cebomb', 'random',
]

export interface FaultRequest {
  method: string
  mode: string
  /** The path after the mode, e.g. `files/a/b/ab…`. */
  rel: string
  authorization?: string
  headers: http.IncomingHttpHeaders
  /** The request target as sent (absolute form when it came through as a proxy request). */
  target: string
}

export interface FaultServerOptions {
  /** Directory whose files are the content (layout is the client's business). */
  store?: string
  /** Delay of `slow`, in ms; default 300. */
  delayMs?: number
  /** Speed of `trickle`, bytes/s; default 100. */
  trickleBps?: number
  /** Token `e401` wants; default `test-token`. */
  token?: string
  /** What `random` does: a fault from `modes` with probability `rate` (default 0.2), else `good`. */
  random?: { rate?: number; modes?: FaultMode[]; seed?: number }
  /** Keep every request in `requests` (default true; a soak's millions would not fit). */
  keepRequests?: boolean
}

/** Modes `random` draws from by default: every fault a store can show, none slower than a timeout. */
export const RANDOM_FAULTS: readonly FaultMode[] = ['e500', 'e404', 'wrong', 'truncated', 'stall', 'silent', 'reset', 'loop', 'long', 'longcl', 'cebomb']

export interface FaultServer {
  /** `http://127.0.0.1:<port>` */
  url: string
  port: number
  /** `url/<mode>`: the root URL of a source with that behaviour. */
  base(mode: FaultMode): string
  /** Every request so far, in arrival order. */
  requests: FaultRequest[]
  count(pred?: (r: FaultRequest) => boolean): number
  /** What `random` served, by mode. */
  randomServed: Record<string, number>
  /** Requests being answered now, and the most there ever were at once. */
  readonly active: number
  readonly maxActive: number
  /** Close the server and every connection it holds (stalled ones included). */
  close(): Promise<void>
}

let bombCache: Buffer | undefined
function bomb(): Buffer {
  bombCache ??= zlib.brotliCompressSync(Buffer.alloc(64 * 1024 * 1024), { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 5 } })
  return bombCache
}

let gzipBombCache: Buffer | undefined
function gzipBomb(): Buffer {
  gzipBombCache ??= zlib.gzipSync(Buffer.alloc(64 * 1024 * 1024), { level: 9 })
  return gzipBombCache
}

export function startFaultServer(opts: FaultServerOptions = {}): Promise<FaultServer> {
  const store = opts.store
  const delayMs = opts.delayMs ?? 300
  const trickleBps = opts.trickleBps ?? 100
  const token = opts.token ?? 'test-token'
  const keepRequests = opts.keepRequests ?? true
  const draw = prng(opts.random?.seed ?? 1)
  const randomRate = opts.random?.rate ?? 0.2
  const randomModes = opts.random?.modes ?? RANDOM_FAULTS
  /** Faults `random` served, by mode. */
  const randomServed: Record<string, number> = {}
  // Built now, not at the first request: building one holds this thread for about a second,
  // which would stall every other answer (a soak's good store included) into timeouts.
  if (opts.random) {
    if (randomModes.includes('cebomb')) gzipBomb()
    if (randomModes.includes('bomb')) bomb()
  }
  const requests: FaultRequest[] = []
  const sockets = new Set<net.Socket>()
  const timers = new Set<NodeJS.Timeout>()
  let active = 0
  let maxActive = 0

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t)
      fn()
    }, ms)
    timers.add(t)
  }

  const content = (rel: string): Buffer | undefined => {
    if (store === undefined || rel.split('/').includes('..')) return undefined
    try {
      return fs.readFileSync(path.join(store, rel))
    } catch {
      return undefined
    }
  }

  const notFound = (res: http.ServerResponse) => {
    res.writeHead(404, { 'Content-Type': 'text/plain', 'Content-Length': '10' })
    res.end('not found\n')
  }

  const serveGood = (req: http.IncomingMessage, res: http.ServerResponse, rel: string) => {
    if (req.method === 'PUT') {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        if (store === undefined) {
          res.writeHead(500).end()
          return
        }
        const file = path.join(store, rel)
        fs.mkdirSync(path.dirname(file), { recursive: true })
        fs.writeFileSync(`${file}.put-tmp`, Buffer.concat(chunks))
        fs.renameSync(`${file}.put-tmp`, file)
        res.writeHead(201).end()
      })
      return
    }
    const body = content(rel)
    if (body === undefined) return notFound(res)
    res.writeHead(200, { 'Content-Length': String(body.length), 'Content-Type': 'application/octet-stream' })
    res.end(body)
  }

  const handle = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x')
    const [, asked = '', ...rest] = url.pathname.split('/')
    const rel = rest.join('/')
    let mode = asked
    if (asked === 'random') {
      mode = draw() < randomRate ? randomModes[Math.floor(draw() * randomModes.length)]! : 'good'
      randomServed[mode] = (randomServed[mode] ?? 0) + 1
      // (`loop` redirects to url.pathname: through `random` again, a fresh draw each hop.)
    }
    if (keepRequests) requests.push({ method: req.method ?? '', mode, rel, authorization: req.headers.authorization, headers: req.headers, target: req.url ?? '' })
    active++
    maxActive = Math.max(maxActive, active)
    res.once('close', () => active--)
    const body = content(rel)
    const size = body?.length ?? 1024
    switch (mode as FaultMode) {
      case 'good':
        return serveGood(req, res, rel)
      case 'slow':
        return later(delayMs, () => serveGood(req, res, rel))
      case 'e500':
        res.writeHead(500, { 'Content-Length': '6' })
        return res.end('oops!\n')
      case 'e404':
        return notFound(res)
      case 'e401':
        if (req.headers.authorization === `Bearer ${token}`) return serveGood(req, res, rel)
        res.writeHead(401, { 'Content-Length': '0' })
        return res.end()
      case 'wrong': {
        const bad = Buffer.from(body ?? Buffer.alloc(size))
        for (let i = 0; i < bad.length; i += 97) bad[i] ^= 0xff
        res.writeHead(200, { 'Content-Length': String(bad.length) })
        return res.end(bad)
      }
      case 'truncated': {
        const b = body ?? Buffer.alloc(size, 1)
        res.writeHead(200, { 'Content-Length': String(b.length) })
        res.write(b.subarray(0, Math.floor(b.length / 2)))
        return later(50, () => res.socket?.destroy())
      }
      case 'stall': {
        const b = body ?? Buffer.alloc(size, 1)
        res.writeHead(200, { 'Content-Length': String(b.length) })
        res.write(b.subarray(0, Math.floor(b.length / 2)))
        return // and nothing more
      }
      case 'silent':
        return
      case 'reset':
        return req.socket.resetAndDestroy()
      case 'trickle': {
        const b = body ?? Buffer.alloc(size, 1)
        res.writeHead(200, { 'Content-Length': String(b.length) })
        const step = Math.max(1, Math.floor(trickleBps / 10))
        let off = 0
        const tick = () => {
          if (res.destroyed) return
          res.write(b.subarray(off, off + step))
          off += step
          if (off >= b.length) res.end()
          else later(100, tick)
        }
        return tick()
      }
      case 'loop':
        res.writeHead(302, { Location: url.pathname, 'Content-Length': '0' })
        return res.end()
      case 'redirect':
        res.writeHead(302, { Location: `/good/${rel}`, 'Content-Length': '0' })
        return res.end()
      case 'long':
      case 'longcl': {
        const b = Buffer.concat([body ?? Buffer.alloc(size, 1), Buffer.alloc(1000, 0x41)])
        res.writeHead(200, mode === 'longcl' ? { 'Content-Length': String(b.length) } : {})
        return res.end(b)
      }
      case 'endless': {
        res.writeHead(200, {})
        const chunk = Buffer.alloc(64 * 1024, 0x42)
        const pump = () => {
          while (!res.destroyed && res.write(chunk)) {
            // until the socket buffer is full
          }
        }
        res.on('drain', pump)
        return pump()
      }
      case 'bomb':
        if (!rel.endsWith('.bro')) return notFound(res)
        res.writeHead(200, { 'Content-Length': String(bomb().length) })
        return res.end(bomb())
      case 'drip': {
        const b = body ?? Buffer.alloc(size, 1)
        res.writeHead(200, { 'Content-Length': String(b.length) })
        let off = 0
        const tick = () => {
          if (res.destroyed || off >= b.length) return
          res.write(b.subarray(off, ++off))
          later(1000, tick)
        }
        return tick()
      }
      case 'cebomb': {
        if (body === undefined) return notFound(res)
        const g = gzipBomb()
        const out = Buffer.alloc(body.length)
        g.copy(out, 0, 0, Math.min(g.length, out.length))
        res.writeHead(200, { 'Content-Length': String(out.length), 'Content-Encoding': 'gzip' })
        return res.end(out)
      }
      default:
        return notFound(res)
    }
  }

  const server = http.createServer(handle)
  server.keepAliveTimeout = 30_000
  server.on('connection', (s: net.Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port
      const url = `http://127.0.0.1:${port}`
      let closed: Promise<void> | undefined
      resolve({
        url,
        port,
        base: (mode) => `${url}/${mode}`,
        requests,
        randomServed,
        count: (pred) => (pred ? requests.filter(pred).length : requests.length),
        get active() {
          return active
        },
        get maxActive() {
          return maxActive
        },
        close() {
          closed ??= new Promise<void>((done) => {
            for (const t of timers) clearTimeout(t)
            timers.clear()
            server.close(() => done())
            for (const s of sockets) s.destroy()
          })
          return closed
        },
      })
    })
  })
}
