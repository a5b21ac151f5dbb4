// The soak: a real mount (in a process of its own) serving >= 50,000 files from a store that
// fails at random (bench/faults.ts `random`: 5xx, resets, truncation, wrong bytes, bodies too
// long, Content-Encoding bombs, silence, redirect loops) in front of a good one, with a cache
// quota small enough to evict all the time, read for a long while by several processes every
// way programs read (whole files, ranges, stat, readdir, files held open). It checks:
//   - zero wrong bytes, and no read that fails (a good store is always there);
//   - the mounting process's RSS and open fds flat after warm-up (the last stretch within 10%
//     of the stretch just after warm-up: their medians for RSS, their floors for fds).
//
//   npm run soak                       # 10 minutes, 50,000 files
//   node dist/bench/soak/run.js --seconds 60 --files 50000 --readers 4 --concurrency 8
//
// Half the reads are O_DIRECT, so they reach the engine (and its cache files) every time.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { writeSoakStore } from './content'
import type { ReaderResult } from './reader'

export interface SoakOptions {
  /** Default 600,000 (10 minutes). */
  durationMs?: number
  /** Default 50,000. */
  files?: number
  /** Reader processes; default 4. */
  readers?: number
  /** Operations in flight per reader; default 8. */
  concurrency?: number
  seed?: number
  /** Share of requests the faulty store answers with a fault; default 0.2. */
  faultRate?: number
  /** `cache_size` as a share of the store's bytes; default 0.1 (evictions all along). */
  cacheShare?: number
  /**
   * Drop the whole system's page cache this often (root only); default 0, never: the readers'
   * O_DIRECT reads reach the engine anyway, and a soak should not disturb the rest of the host.
   */
  dropCachesEveryMs?: number
  /** The share of the run before RSS and fds must be flat: default 0.3, and at least 10 s. */
  warmupShare?: number
  /** Progress lines; default none. */
  log?: (line: string) => void
  /** Work directory (kept); default a temp directory, removed at the end. */
  dir?: string
  /**
   * Keep the store and the cache on a tmpfs of the soak's own (root only; default true): writing
   * and removing 50,000 files on a disk can take longer than a short soak itself.
   */
  tmpfs?: boolean
}

export interface Sample {
  /** ms since the readers started */
  t: number
  rss: number
  fds: number
}

export interface Flatness {
  /** Median just after warm-up, median of the last stretch, the largest sample after warm-up. */
  baseline: number
  final: number
  max: number
  /** final / baseline - 1 */
  growth: number
}

/** The readers' results summed (`ops`, `bytes`, `wrong`, `errors`, …), and the run's own. */
export interface SoakResult extends Omit<ReaderResult, 'id'> {
  ok: boolean
  failures: string[]
  files: number
  storeBytes: number
  cacheSize: number
  durationMs: number
  rss: Flatness
  fds: Flatness
  samples: Sample[]
  faults: Record<string, number>
  /** The mount's own counters at the end (engine and pipeline). */
  mount?: Record<string, unknown>
}

const PREFIX = '/soak'
const ID = 'soak__svc'

/** The compiled path of a soak script (children run plain JavaScript from dist/). */
function compiled(name: string): string {
  if (__filename.endsWith('.js')) return path.join(__dirname, `${name}.js`)
  return path.resolve(__dirname, '../../dist/bench/soak', `${name}.js`)
}

/** The q-quantile (0..1) of some numbers. */
function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(s.length * q))]!
}

/**
 * Growth between the stretch just after warm-up and the last stretch (each 20% of what follows
 * the warm-up), as the q-quantile of each: the median for RSS (a GC sawtooth around a level),
 * the 10th percentile for fds (sockets and the committer's temp files come and go with the work
 * in flight, up to a dozen at a time; a leak raises the floor as well as the top).
 */
function flatness(samples: number[], warmupShare: number, q: number): Flatness {
  const post = samples.slice(Math.floor(samples.length * warmupShare))
  const k = Math.max(3, Math.floor(post.length * 0.2))
  const baseline = quantile(post.slice(0, k), q)
  const final = quantile(post.slice(-k), q)
  return { baseline, final, max: Math.max(...post), growth: final / baseline - 1 }
}

function usage(pid: number): { rss: number; fds: number } | undefined {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN) * 1024
    return { rss, fds: fs.readdirSync(`/proc/${pid}/fd`).length }
  } catch {
    return undefined
  }
}

/** Aborts the FUSE connection of the mount at `mnt` (root): every request in it ends with an error. */
function abortFuse(mnt: string): void {
  try {
    const line = fs
      .readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .find((l) => l.split(' ')[4] === mnt)
    const minor = line?.split(' ')[2]?.split(':')[1]
    if (minor !== undefined) fs.writeFileSync(`/sys/fs/fuse/connections/${minor}/abort`, '1')
  } catch {
    // not root, or already gone
  }
}

/** A child that prints JSON lines; `next(type)` waits for one of that type. */
function jsonChild(script: string, arg: unknown, env?: NodeJS.ProcessEnv): { proc: ChildProcess; next(type: string, ms: number): Promise<Record<string, unknown> | undefined>; stderr(): string; exited: Promise<number | string> } {
  const proc = spawn(process.execPath, [compiled(script), JSON.stringify(arg)], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env })
  const messages: Record<string, unknown>[] = []
  let waiters: (() => void)[] = []
  lines(proc.stdout!, (line) => {
    try {
      messages.push(JSON.parse(line) as Record<string, unknown>)
    } catch {
      // not ours
    }
    const w = waiters
    waiters = []
    for (const f of w) f()
  })
  let err = ''
  proc.stderr!.on('data', (d: Buffer) => {
    if (err.length < 1 << 20) err += d.toString()
  })
  const exited = new Promise<number | string>((resolve) => proc.on('exit', (code, sig) => resolve(code ?? sig ?? -1)))
  const next = (type: string, ms: number) =>
    new Promise<Record<string, unknown> | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), ms)
      const look = () => {
        const i = messages.findIndex((x) => x.type === type || x.type === 'error')
        if (i >= 0) {
          clearTimeout(timer)
          resolve(messages.splice(i, 1)[0])
        } else waiters.push(look)
      }
      look()
    })
  return { proc, next, stderr: () => err, exited }
}

function lines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buf = ''
  stream.on('data', (d: Buffer) => {
    buf += d.toString()
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, nl))
      buf = buf.slice(nl + 1)
    }
  })
}

export async function runSoak(opts: SoakOptions = {}): Promise<SoakResult> {
  const durationMs = opts.durationMs ?? 600_000
  const nFiles = opts.files ?? 50_000
  const nReaders = opts.readers ?? 4
  const concurrency = opts.concurrency ?? 8
  const seed = opts.seed ?? 1
  // The mounting process reaches its working size in about 20 s (a 75 s run: 150 MiB at 10 s,
  // 170 MiB at 20 s, then flat within 1 MiB): what comes before is warm-up, not growth.
  const warmupShare = opts.warmupShare ?? Math.min(0.5, Math.max(0.3, 20_000 / durationMs))
  const dropEvery = opts.dropCachesEveryMs ?? 0
  const log = opts.log ?? (() => {})
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-soak-'))
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt, { recursive: true })
  let data = dir
  if ((opts.tmpfs ?? true) && process.getuid?.() === 0) {
    data = path.join(dir, 'data')
    fs.mkdirSync(data, { recursive: true })
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4g,mode=0755', 'aysfs-soak', data])
  }
  const store = path.join(data, 'store')

  const t0 = Date.now()
  const { bytes: storeBytes } = writeSoakStore(store, ID, PREFIX, seed, nFiles)
  const cacheSize = Math.floor(storeBytes * (opts.cacheShare ?? 0.1))
  log(`store: ${nFiles} files, ${(storeBytes / 2 ** 20).toFixed(0)} MiB, written in ${Date.now() - t0} ms; cache_size ${(cacheSize / 2 ** 20).toFixed(0)} MiB`)

  const failures: string[] = []
  const children: ChildProcess[] = []
  const server = jsonChild('server', { store, random: { rate: opts.faultRate ?? 0.2, seed } })
  children.push(server.proc)
  try {
    const up = await server.next('ready', 30_000)
    if (up?.type !== 'ready') throw new Error(`the fault server did not start: ${server.stderr()}`)
    const base = (mode: string) => `${String(up.url)}/${mode}`
    // The mount.
    const mountArgs = {
      mountpoint: mnt,
      log: { level: 'warn', format: 'json' },
      config: {
        main: { cache: path.join(data, 'cache'), prefix: PREFIX, timeout: '1s', cache_size: cacheSize, max_downloads: 16 },
        ays: [{ id: ID }],
        store: [{ url: base('random') }, { url: base('good') }],
      },
    }
    const mounter = jsonChild('mounter', mountArgs)
    children.push(mounter.proc)
    const m = mounter.proc
    const ready = await mounter.next('ready', 60_000)
    if (ready?.type !== 'ready') throw new Error(`the mount did not start: ${JSON.stringify(ready)} ${mounter.stderr()}`)
    log(`mounted at ${mnt} (pid ${m.pid})`)

    // The readers.
    const results: ReaderResult[] = []
    const readersDone = Array.from({ length: nReaders }, (_, id) => {
      const r = spawn(process.execPath, [compiled('reader'), JSON.stringify({ mnt, files: nFiles, seed, durationMs, concurrency, id })], {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, UV_THREADPOOL_SIZE: String(Math.max(4, concurrency)) },
      })
      children.push(r)
      lines(r.stdout!, (line) => results.push(JSON.parse(line) as ReaderResult))
      return new Promise<void>((resolve) => r.on('exit', () => resolve()))
    })

    // Samples of the mount's RSS and fds; page cache drops.
    const samples: Sample[] = []
    const start = Date.now()
    const sampleEvery = Math.max(250, Math.min(2000, durationMs / 120))
    let lastDrop = start
    let lastLog = start
    const sampler = setInterval(() => {
      const u = usage(m.pid!)
      if (u) samples.push({ t: Date.now() - start, ...u })
      if (dropEvery > 0 && Date.now() - lastDrop >= dropEvery && process.getuid?.() === 0) {
        // In a child: the write takes as long as the kernel needs to drop the pages.
        lastDrop = Date.now()
        spawn('sh', ['-c', 'echo 1 > /proc/sys/vm/drop_caches'], { stdio: 'ignore' })
      }
      if (Date.now() - lastLog >= Math.max(10_000, durationMs / 20) && u) {
        lastLog = Date.now()
        log(`${((Date.now() - start) / 1000).toFixed(0)} s: rss ${(u.rss / 2 ** 20).toFixed(1)} MiB, fds ${u.fds}`)
      }
    }, sampleEvery)
    // A reader that outlives the run by a minute is stuck in the mount: say so, and stop.
    let overdue: NodeJS.Timeout | undefined
    const finished = await Promise.race([
      Promise.all(readersDone).then(() => true),
      new Promise<boolean>((resolve) => (overdue = setTimeout(() => resolve(false), durationMs + 60_000))),
    ])
    clearTimeout(overdue)
    clearInterval(sampler)
    if (!finished) {
      failures.push('readers were still blocked in the mount a minute after the end: it hangs')
      m.kill('SIGUSR2')
      const stuck = (await mounter.next('stats', 5000))?.stats as { engine?: Record<string, unknown> } | undefined
      if (stuck?.engine) failures.push(`engine counters then: ${JSON.stringify(stuck.engine)}`)
      abortFuse(mnt)
      for (const c of children) if (c !== m && c !== server.proc) c.kill('SIGKILL')
    }

    m.kill('SIGUSR2')
    const stats = (await mounter.next('stats', 5000))?.stats as Record<string, unknown> | undefined
    m.kill('SIGTERM')
    let late: NodeJS.Timeout | undefined
    const code = await Promise.race([mounter.exited, new Promise((resolve) => (late = setTimeout(() => resolve('timeout'), 10_000)))])
    clearTimeout(late)
    if (code !== 0) failures.push(`the mount exited with ${String(code)}`)
    const errorLines = mounter
      .stderr()
      .split('\n')
      .filter((l) => /"level":(50|60)/.test(l))
    if (errorLines.length > 0) failures.push(`the mount logged errors: ${errorLines.slice(0, 3).join(' ')}`)
    server.proc.kill('SIGUSR2')
    const faults = ((await server.next('faults', 5000))?.served as Record<string, number> | undefined) ?? {}

    const sum = (pick: (r: ReaderResult) => Record<string, number>) => {
      const out: Record<string, number> = {}
      for (const r of results) for (const [k, v] of Object.entries(pick(r))) out[k] = (out[k] ?? 0) + v
      return out
    }
    const result: SoakResult = {
      ok: false,
      failures,
      files: nFiles,
      storeBytes,
      cacheSize,
      durationMs: Date.now() - start,
      ops: sum((r) => r.ops),
      bytes: results.reduce((n, r) => n + r.bytes, 0),
      wrong: results.reduce((n, r) => n + r.wrong, 0),
      wrongCases: results.flatMap((r) => r.wrongCases).slice(0, 10),
      errors: sum((r) => r.errors),
      rss: flatness(samples.map((s) => s.rss), warmupShare, 0.5),
      fds: flatness(samples.map((s) => s.fds), warmupShare, 0.1),
      samples,
      faults,
      mount: stats,
    }
    if (results.length !== nReaders) failures.push(`${nReaders - results.length} readers did not report`)
    if (result.wrong > 0) failures.push(`${result.wrong} wrong results: ${result.wrongCases.join('; ')}`)
    const errorCount = Object.values(result.errors).reduce((a, b) => a + b, 0)
    if (errorCount > 0) failures.push(`${errorCount} failed operations: ${JSON.stringify(result.errors)}`)
    const engine = (stats as { engine?: { missTimeouts?: number } } | undefined)?.engine
    if (engine?.missTimeouts) failures.push(`${engine.missTimeouts} fetches hit the engine's backstop deadline (a stalled miss)`)
    if (!(result.rss.growth <= 0.1)) failures.push(`RSS grew ${(result.rss.growth * 100).toFixed(1)}% after warm-up`)
    if (!(result.fds.growth <= 0.1)) failures.push(`open fds grew ${(result.fds.growth * 100).toFixed(1)}% after warm-up`)
    if (samples.length < 10) failures.push(`only ${samples.length} samples`)
    result.ok = failures.length === 0
    return result
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    // A mount a killed mounter left behind must not outlive the soak; nor the tmpfs.
    const mounts = fs.readFileSync('/proc/self/mounts', 'utf8')
    for (const mp of [mnt, data]) {
      if (mp !== dir && mounts.includes(` ${mp} `)) {
        try {
          execFileSync('umount', ['-l', mp], { stdio: 'ignore' })
        } catch {
          // gone meanwhile
        }
      }
    }
    if (opts.dir === undefined) fs.rmSync(dir, { recursive: true, force: true })
  }
}

function mib(n: number): string {
  return `${(n / 2 ** 20).toFixed(1)} MiB`
}

/** A human summary of a result. */
export function summary(r: SoakResult): string {
  const ops = Object.entries(r.ops)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')
  const total = Object.values(r.ops).reduce((a, b) => a + b, 0)
  const cache = (r.mount as { pipeline?: { cache?: { evicted?: number }; fetches?: number } } | undefined)?.pipeline
  return [
    `soak: ${r.ok ? 'PASS' : 'FAIL'} — ${r.files} files (${mib(r.storeBytes)}), cache_size ${mib(r.cacheSize)}, ${(r.durationMs / 1000).toFixed(0)} s`,
    `  operations: ${total} (${(total / (r.durationMs / 1000)).toFixed(0)}/s): ${ops}; ${mib(r.bytes)} read`,
    `  wrong bytes: ${r.wrong}; failed operations: ${JSON.stringify(r.errors)}`,
    `  faults served by the bad store: ${JSON.stringify(r.faults)}`,
    `  fetches ${cache?.fetches ?? '?'}, evictions ${cache?.cache?.evicted ?? '?'}`,
    `  RSS after warm-up: ${mib(r.rss.baseline)} -> ${mib(r.rss.final)} (${(r.rss.growth * 100).toFixed(1)}%), max ${mib(r.rss.max)}`,
    `  open fds after warm-up: ${r.fds.baseline} -> ${r.fds.final} (${(r.fds.growth * 100).toFixed(1)}%), max ${r.fds.max}`,
    ...r.failures.map((f) => `  FAILED: ${f}`),
  ].join('\n')
}

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : dflt
}

if (require.main === module) {
  const opts: SoakOptions = {
    durationMs: arg('seconds', Number(process.env.AYSFS_SOAK_SECONDS ?? 600)) * 1000,
    files: arg('files', 50_000),
    readers: arg('readers', 4),
    concurrency: arg('concurrency', 8),
    seed: arg('seed', 1),
    log: (line) => process.stdout.write(`${line}\n`),
  }
  runSoak(opts).then(
    (r) => {
      process.stdout.write(summary(r) + '\n')
      if (process.argv.includes('--json')) fs.writeFileSync('soak-result.json', JSON.stringify(r, null, 2))
      process.exit(r.ok ? 0 : 1)
    },
    (err: Error) => {
      process.stderr.write(`soak: ${err.stack ?? err.message}\n`)
      process.exit(1)
    },
  )
}
