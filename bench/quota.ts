// The cache quota's cost (`npm run bench -- --only quota`): a pass of lib/local-cache/quota.ts
// over a local cache of `blobs` blob files (100,000 in the full run), without a mount, against
// `find` stat-ing the same files (what a pass must do at least: one stat per blob). Two rows:
// - a counting pass (the first pass of a mount, and every re-arming pass);
// - a pass that finds the cache just over its quota and evicts down to the low-water mark
//   (LRU order: the victims are renamed into tmp/; here they are put back after each run).
// The bound is the one the quota was written to (docs/hardening.md): under a second for
// 100,000 blobs, evicting included. The CPU time of each pass is in the row's info.
import { spawnSync } from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { CacheQuota } from '../lib/local-cache/quota'
import type { Logger } from '../lib/log'

export interface QuotaTimes {
  blobs: number
  /** Counting passes: wall seconds, CPU seconds. */
  count: number[]
  countCpu: number[]
  /** Evicting passes: wall seconds, CPU seconds, blobs evicted. */
  evict: number[]
  evictCpu: number[]
  evicted: number[]
  /** `find` over the same files, wall seconds. */
  find: number[]
}

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} }

/** `n` blob files of 100..2099 bytes in `cache`, their atimes in arrival order (oldest first). */
export function fillBlobs(cache: string, n: number): void {
  const past = Date.now() / 1000 - 3600
  const made = new Set<string>()
  for (let i = 0; i < n; i++) {
    const name = crypto.createHash('md5').update(`blob ${i}`).digest('hex')
    const dir = path.join(cache, name[0]!, name[1]!)
    if (!made.has(dir)) {
      fs.mkdirSync(dir, { recursive: true })
      made.add(dir)
    }
    const file = path.join(dir, name)
    fs.writeFileSync(file, Buffer.alloc(100 + (i % 2000), i & 0xff))
    fs.utimesSync(file, past + i / 1000, past)
  }
}

function timed<T>(fn: () => T): { value: T; wall: number; cpu: number } {
  const c0 = process.cpuUsage()
  const t0 = process.hrtime.bigint()
  const value = fn()
  const wall = Number(process.hrtime.bigint() - t0) / 1e9
  const c = process.cpuUsage(c0)
  return { value, wall, cpu: (c.user + c.system) / 1e6 }
}

/** Runs `runs` counting passes, evicting passes and `find`s, alternated, over a cache in `work`. */
export function measureQuota(work: string, blobs: number, runs: number): QuotaTimes {
  const cache = path.join(work, 'quota-cache')
  fs.rmSync(cache, { recursive: true, force: true })
  fs.mkdirSync(path.join(cache, 'tmp'), { recursive: true })
  fillBlobs(cache, blobs)
  const q = new CacheQuota(cache, 0, silent)
  q.graceMs = 0
  let n = 0
  q.trashName = (label) => path.join(cache, 'tmp', `${process.pid}.0.${n++}.${label}`)
  const out: QuotaTimes = { blobs, count: [], countCpu: [], evict: [], evictCpu: [], evicted: [], find: [] }
  for (let i = 0; i < runs; i++) {
    q.limit = 0
    const c = timed(() => q.passSync())
    out.count.push(c.wall)
    out.countCpu.push(c.cpu)
    // Just over the quota, as a pass finds it in use: down to the low-water mark.
    q.limit = Math.floor(c.value.before * 0.99)
    const e = timed(() => q.passSync())
    out.evict.push(e.wall)
    out.evictCpu.push(e.cpu)
    out.evicted.push(e.value.evicted)
    // The victims (renamed into tmp/ as `…evicted.<seq>.<md5>`) go back: every run starts from
    // the same cache. (A mount unlinks them a slice per event-loop turn, off the pass.)
    for (const f of fs.readdirSync(path.join(cache, 'tmp'))) {
      const md5 = f.slice(f.lastIndexOf('.') + 1)
      fs.renameSync(path.join(cache, 'tmp', f), path.join(cache, md5[0]!, md5[1]!, md5))
    }
    const f = timed(() => spawnSync('find', [cache, '-type', 'f', '-printf', '%A@ %b\n'], { stdio: ['ignore', 'ignore', 'inherit'] }))
    if (f.value.status !== 0) throw new Error(`find ${cache} failed (${f.value.status ?? f.value.signal})`)
    out.find.push(f.wall)
  }
  fs.rmSync(cache, { recursive: true, force: true })
  return out
}
