// A store over HTTP for the speculation tests: it serves a store directory, records every blob
// request (starts and ends numbered in one sequence: their order, never their time), and can
// delay every answer or hold the answers of chosen blobs until the test releases them.
import * as fs from 'node:fs'
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import * as path from 'node:path'
import { PREFIX, SERVICE, md5 } from './hardening'
import { randomBytes } from './store'

export interface Served {
  md5: string
  start: number
  end: number
}

/** A store over HTTP: every blob request recorded; some held until released, each delayed. */
export interface TestStore {
  url: string
  /** Blob requests, in arrival order (end -1 while running). */
  log: Served[]
  /** Blob requests running now, and the most at once. */
  inFlight: number
  maxInFlight: number
  /** TCP connections accepted. */
  connections: number
  /** Requests of these blobs (by MD5), or of these other paths (`md/<id>.flist`), are held (no answer) until {@link release}. */
  hold: Set<string>
  /** Requests held now. */
  held: number
  /** Answers every held request, and holds no more. */
  release(): void
  /** Answers the oldest held request. */
  releaseOne(): void
  close(): Promise<void>
}

export async function startStore(t: { teardown(fn: () => unknown): void }, root: string, delayMs = 0): Promise<TestStore> {
  const waiting: (() => void)[] = []
  // Starts and ends numbered in one sequence: their order, never their time.
  let seq = 0
  const s: TestStore = {
    url: '',
    log: [],
    inFlight: 0,
    maxInFlight: 0,
    connections: 0,
    hold: new Set(),
    held: 0,
    release() {
      s.hold.clear()
      for (const w of waiting.splice(0)) w()
    },
    releaseOne() {
      waiting.shift()?.()
    },
    close: () => new Promise<void>((resolve) => {
      s.release()
      server.closeAllConnections()
      server.close(() => resolve())
    }),
  }
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/^\/+/, '')
    const file = path.join(root, rel)
    const blob = /^files\/[0-9a-f]\/[0-9a-f]\/([0-9a-f]{32})$/.exec(rel)?.[1]
    let entry: Served | undefined
    if (blob) {
      entry = { md5: blob, start: seq++, end: -1 }
      s.log.push(entry)
      s.inFlight++
      s.maxInFlight = Math.max(s.maxInFlight, s.inFlight)
      res.on('close', () => {
        s.inFlight--
        entry!.end = seq++
      })
    }
    const answer = (): void => {
      let data: Buffer
      try {
        data = fs.readFileSync(file)
      } catch {
        res.writeHead(404).end()
        return
      }
      res.writeHead(200, { 'Content-Length': data.length }).end(data)
    }
    const go = (): void => (delayMs > 0 ? void setTimeout(answer, delayMs) : answer())
    if (s.hold.has(blob ?? rel)) {
      s.held++
      waiting.push(() => {
        s.held--
        go()
      })
    } else go()
  })
  server.on('connection', () => s.connections++)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  s.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.teardown(() => s.close())
  return s
}

export interface TreeFile {
  rel: string
  data: Buffer
  md5: string
}

/** Files at `rel` (below the service's prefix) with the given sizes, distinct content. */
export function makeFiles(rels: string[], size: (i: number) => number, seed: number): TreeFile[] {
  return rels.map((rel, i) => {
    const data = randomBytes(size(i), seed * 1_000_003 + i)
    return { rel, data, md5: md5(data) }
  })
}

/** A store directory with the blobs and the flist (seed lines); `corrupt` blobs hold other bytes. */
export function writeTree(root: string, list: TreeFile[], corrupt: Set<string> = new Set()): void {
  for (const f of list) {
    const dir = path.join(root, 'files', f.md5[0]!, f.md5[1]!)
    fs.mkdirSync(dir, { recursive: true })
    const data = corrupt.has(f.md5) ? Buffer.from(f.data).fill(0x41) : f.data
    fs.writeFileSync(path.join(dir, f.md5), data)
  }
  fs.mkdirSync(path.join(root, 'md'), { recursive: true })
  fs.writeFileSync(path.join(root, 'md', `${SERVICE}.flist`), list.map((f) => `${PREFIX}/${f.rel}|${f.md5}|${f.data.length}\n`).join(''))
}

/**
 * Round trips a reader waited through, as the server saw them: the requests that arrived while
 * no other was running (each one started a new "wave" after the last one ended).
 */
export function waves(log: Served[]): number {
  let n = 0
  let open = 0
  // Replay starts and ends in their sequence numbers.
  const events: [number, number][] = []
  for (const x of log) {
    events.push([x.start, +1])
    if (x.end >= 0) events.push([x.end, -1])
  }
  events.sort((a, b) => a[0] - b[0])
  for (const [, d] of events) {
    if (d > 0 && open === 0) n++
    open += d
  }
  return n
}

