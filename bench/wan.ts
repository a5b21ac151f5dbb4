// The cold-start workloads over a WAN (`npm run bench -- --only wan`): a real program starting
// from a fresh mount with an empty local cache, every blob it needs coming from nginx through
// the WAN proxy (bench/wan-proxy.ts, its own process, default 40 ms RTT and 100 Mbit/s), against
// curl fetching exactly the blobs that program needs through the same proxy, 16 at once, and
// against the per-file floor (one round trip per needed blob, one after another).
//
// The trees are real ones from this machine, published to a store of their own:
// - the Python interpreter's standard library (`sysconfig`'s stdlib directory under
//   `sys.prefix`, site-packages left out), run by the machine's interpreter with PYTHONHOME in
//   the mount;
// - npm's own tree (`npm root -g`/npm), run by the machine's node.
//
// What each workload needs is found without the mount: the same command runs under `strace` on
// the native tree, and the regular files it opened are mapped to their blobs through the flist
// (cached per tree and command in the data dir). The parallel tree read needs every file.
import { spawnSync, execFileSync } from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { mount, type AysfsMount } from '../lib/index'
import { readStartupFile, storeStartupList } from '../lib/publish'
import { startNginx } from './nginx'
import { judge, summarize, type Summary, type WanInfo, type WorkloadResult } from './report'
import { blobPath, publishTree, pythonExecutable, type Blob } from './tree'
import { spawnWanProxy, type ProxyStats, type TraceEvent, type WanProxyProcess } from './wan-proxy'

/** The Python start-up's imports: 18 modules of the standard library, ~200 files. */
export const PY_MODULES = [
  'asyncio',
  'json',
  'email.parser',
  'http.server',
  'urllib.request',
  'logging.handlers',
  'argparse',
  'decimal',
  'unittest',
  'dataclasses',
  'xml.etree.ElementTree',
  'zipfile',
  'tarfile',
  'sqlite3',
  'csv',
  'uuid',
  'multiprocessing.pool',
  'concurrent.futures',
] as const

/** Downloads curl runs at once. */
export const CURL_PARALLEL = 16
/** Readers of the parallel tree read. */
export const TREE_READERS = 8

/**
 * Issue 17's targets: the mount's median over curl's. `recorded` is the target with a recorded
 * start-up set published beside the flist (the `-recorded` rows of {@link VARIANTS}).
 */
export const WAN_TARGETS = {
  python: { default: 2, recorded: 1.3 },
  node: { default: 3, recorded: 1.3 },
  tree: { default: 1.5 },
} as const

/**
 * How a workload's mount is set up: the default config, `speculate = false` for the ratios of the
 * same run, and the default config with a recorded start-up set published beside the flist (the
 * set the `record` command wrote for the workload before the runs; only for workloads with a
 * `recorded` target: the start-ups). Every variant is judged against the same curl and reports
 * the same fetched / needed figures.
 */
interface Variant {
  /** Appended to the row's id. */
  suffix: string
  /** Said in the row's title. */
  title: string
  /** Which of {@link WAN_TARGETS}' bounds judges it. */
  target: 'default' | 'recorded'
  /** `main` keys added to the mount's config. */
  main?: Record<string, unknown>
  /** The store has the workload's recorded start-up list (`md/<id>.startup`) for these runs only. */
  startup?: boolean
}

const VARIANTS: Variant[] = [
  { suffix: '', title: 'default config', target: 'default' },
  // The engine as it was before speculation, measured in the same run for the ratios.
  { suffix: '-nospec', title: 'speculate = false', target: 'default', main: { speculate: false } },
  { suffix: '-recorded', title: 'recorded start-up set, default config', target: 'recorded', startup: true },
]

/** The aysfs-native command, built beside this file (dist/bench -> dist/lib). */
const CLI = path.resolve(__dirname, '..', 'lib', 'cli.js')

/** The link and the runs. */
export interface WanOptions {
  work: string
  runs: number
  rttMs: number
  rateBits: number
  progress(msg: string): void
}

/** A published tree. */
interface Tree {
  key: 'python' | 'npm'
  /** The flist's id in the store. */
  id: string
  prefix: string
  /** The native tree: the mount shows what `include` keeps of it, at the same paths. */
  root: string
  /** md5 of the flist: the needed sets are cached under it. */
  flistMd5: string
  /** Regular files (relative to `root`) and their blobs. */
  files: Map<string, Blob>
}

/** What a workload runs, in `root` (the native tree or the mount). */
interface Command {
  file: string
  args: string[]
  env: Record<string, string>
  cwd: string
}

interface Workload {
  key: keyof typeof WAN_TARGETS
  id: string
  title: string
  tree: Tree['key']
  command(root: string): Command
  /** `strace`: what the command opens natively; `all`: every file of the tree. */
  needed: 'strace' | 'all'
}

/** The blobs a workload reads, in the order it first opens them. */
interface Needed {
  key: string
  files: string[]
  blobs: Blob[]
}

const PYTHON_ID = 'wan-python'
const NPM_ID = 'wan-npm'

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}

function sum(blobs: Iterable<Blob>): number {
  let n = 0
  for (const b of blobs) n += b.size
  return n
}

/** The interpreter's prefix and its standard library directory, relative to it. */
function pythonLayout(): { prefix: string; stdlib: string } {
  const out = execFileSync(pythonExecutable(), ['-c', 'import sys, sysconfig; print(sys.prefix); print(sysconfig.get_path("stdlib"))'], { encoding: 'utf8' }).trim().split('\n')
  const prefix = fs.realpathSync(out[0]!)
  const stdlib = path.relative(prefix, fs.realpathSync(out[1]!))
  if (stdlib.startsWith('..') || path.isAbsolute(stdlib)) throw new Error(`wan: the standard library ${out[1]} is not below sys.prefix ${prefix}`)
  return { prefix, stdlib }
}

/** Keeps `dir` (relative) and what is below it, and the directories above it. */
function subtree(dir: string, except: string[] = []): (rel: string) => boolean {
  return (rel) => (dir === rel || dir.startsWith(rel + '/') || rel.startsWith(dir + '/')) && !except.some((x) => rel === x || rel.startsWith(x + '/'))
}

/** Publishes the two trees to `<work>/wan/store` (hard links: cheap to redo every run). */
function publish(dir: string, progress: (m: string) => void): Record<Tree['key'], Tree> {
  const store = path.join(dir, 'store')
  const py = pythonLayout()
  const npmRoot = fs.realpathSync(execFileSync('npm', ['root', '-g'], { encoding: 'utf8' }).trim())
  if (!fs.existsSync(path.join(npmRoot, 'npm', 'bin', 'npm-cli.js'))) throw new Error(`wan: no npm/bin/npm-cli.js in ${npmRoot} (npm root -g)`)
  const specs = [
    { key: 'python' as const, id: PYTHON_ID, root: py.prefix, include: subtree(py.stdlib, [`${py.stdlib}/site-packages`]) },
    { key: 'npm' as const, id: NPM_ID, root: npmRoot, include: subtree('npm') },
  ]
  const trees = {} as Record<Tree['key'], Tree>
  for (const s of specs) {
    progress(`wan: publishing ${s.root} (${s.key}) to ${store}`)
    const prefix = `/opt/${s.id}`
    publishTree(s.root, store, s.id, prefix, s.include)
    const flist = fs.readFileSync(path.join(store, 'md', `${s.id}.flist`))
    const files = new Map<string, Blob>()
    for (const line of flist.toString('utf8').split('\n')) {
      const f = line.split('|')
      if (f.length >= 7 && f[6] === '2') files.set(f[0]!.slice(prefix.length + 1), { md5: f[1]!, size: Number(f[2]) })
    }
    trees[s.key] = { key: s.key, id: s.id, prefix, root: s.root, flistMd5: crypto.createHash('md5').update(flist).digest('hex'), files }
  }
  return trees
}

function workloads(dir: string): Workload[] {
  const home = path.join(dir, 'home')
  const cwd = path.join(dir, 'cwd')
  const list = path.join(dir, 'tree.list')
  const base = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, LC_ALL: 'C.UTF-8' }
  const python = pythonExecutable()
  return [
    {
      key: 'python',
      id: 'wan-python',
      title: `Python start-up over the WAN: ${PY_MODULES.length} stdlib modules`,
      tree: 'python',
      // -S: no site (no site-packages); -s: no user site; -B: never write byte code (read-only
      // mount; and the native run must not touch the machine's tree). Only PYTHONHOME set, so
      // the whole stdlib, the start-up's own modules included, comes from `root`.
      command: (root) => ({ file: python, args: ['-S', '-s', '-B', '-c', `import ${PY_MODULES.join(', ')}`], env: { ...base, PYTHONHOME: root }, cwd }),
      needed: 'strace',
    },
    {
      key: 'node',
      id: 'wan-node',
      title: 'Node start-up over the WAN: npm --version',
      tree: 'npm',
      // An empty HOME: no user config, no logs; no update check (it would go to the network).
      command: (root) => ({ file: process.execPath, args: [path.join(root, 'npm', 'bin', 'npm-cli.js'), '--version'], env: { ...base, npm_config_update_notifier: 'false' }, cwd }),
      needed: 'strace',
    },
    {
      key: 'tree',
      id: 'wan-tree',
      title: `${TREE_READERS} parallel cat over the npm tree over the WAN`,
      tree: 'npm',
      command: (root) => ({ file: '/bin/sh', args: ['-c', `xargs -0 -P ${TREE_READERS} -n 32 -a ${q(list)} cat > /dev/null`], env: base, cwd: root }),
      needed: 'all',
    },
  ]
}

/** Runs a command; returns its wall time in seconds (throws on a failure). */
function timed(c: Command): number {
  const t0 = process.hrtime.bigint()
  const r = spawnSync(c.file, c.args, { cwd: c.cwd, env: c.env, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 16 << 20 })
  const s = Number(process.hrtime.bigint() - t0) / 1e9
  if (r.status !== 0) throw new Error(`wan: ${c.file} ${c.args.join(' ')} (in ${c.cwd}) failed (${r.status ?? r.signal ?? r.error}): ${r.stderr?.toString() ?? ''}`)
  return s
}

/**
 * A successful open in `strace -f -y` output, its result decoded to the path the kernel opened
 * (`= 3</real/path>`); a call another thread interrupted ends on a `<... openat resumed>` line.
 */
const OPENED = /^\d+ +(?:open(?:at)?\(|<\.\.\. open(?:at)? resumed>).*\) = \d+<(.*)>$/

/** Paths below `root` (which ends in `/`) that `strace -f -y` output shows opened, relative, first open first. */
export function openedBelow(strace: string, root: string): string[] {
  const out: string[] = []
  const seen = new Set<string>()
  for (const line of strace.split('\n')) {
    const m = OPENED.exec(line)
    if (!m || !m[1]!.startsWith(root)) continue
    const rel = m[1]!.slice(root.length)
    if (!seen.has(rel)) {
      seen.add(rel)
      out.push(rel)
    }
  }
  return out
}

/**
 * The blobs `c` opens in the native tree `tree.root`, first open first: `strace -f -y` of the
 * command, every path it opened that is a regular file of the tree (resolved by the kernel, so
 * symlinks and relative names are followed), mapped through the flist. Empty files are left out:
 * nothing is fetched for them.
 */
function straceNeeded(c: Command, tree: Tree, out: string): { files: string[]; blobs: Blob[] } {
  const probe = spawnSync('strace', ['-V'], { stdio: 'ignore' })
  if (probe.error || probe.status !== 0) throw new Error('wan: strace is needed to find what the start-ups read (apt-get install strace)')
  const r = spawnSync('strace', ['-f', '-qq', '-y', '-s', '4096', '-e', 'trace=open,openat', '-e', 'status=successful', '-o', out, '--', c.file, ...c.args], {
    cwd: c.cwd,
    env: c.env,
    stdio: ['ignore', 'ignore', 'pipe'],
    maxBuffer: 16 << 20,
  })
  if (r.status !== 0) throw new Error(`wan: strace of ${c.file} ${c.args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr?.toString() ?? ''}`)
  const files: string[] = []
  const blobs = new Map<string, Blob>()
  for (const rel of openedBelow(fs.readFileSync(out, 'utf8'), fs.realpathSync(tree.root) + '/')) {
    const b = tree.files.get(rel)
    if (!b || b.size === 0 || blobs.has(b.md5)) continue
    files.push(rel)
    blobs.set(b.md5, b)
  }
  fs.rmSync(out, { force: true })
  return { files, blobs: [...blobs.values()] }
}

/** The needed set of `w`, from the cache in `dir` when the tree and the command are the same. */
function neededSet(dir: string, w: Workload, tree: Tree, progress: (m: string) => void): Needed {
  const c = w.command(tree.root)
  const key = crypto.createHash('md5').update(JSON.stringify({ flist: tree.flistMd5, how: w.needed, file: c.file, args: c.args, env: c.env })).digest('hex')
  const file = path.join(dir, `needed-${w.key}.json`)
  try {
    const cached = JSON.parse(fs.readFileSync(file, 'utf8')) as Needed
    if (cached.key === key) return cached
  } catch {
    // none yet
  }
  let found: { files: string[]; blobs: Blob[] }
  if (w.needed === 'all') {
    const files = [...tree.files.keys()].sort()
    const blobs = new Map<string, Blob>()
    for (const f of files) {
      const b = tree.files.get(f)!
      if (b.size > 0) blobs.set(b.md5, b)
    }
    found = { files, blobs: [...blobs.values()] }
  } else {
    progress(`wan: finding what ${w.id} reads (strace on the native tree)`)
    found = straceNeeded(c, tree, path.join(dir, `strace-${w.key}.out`))
    if (found.blobs.length === 0) throw new Error(`wan: strace saw ${w.id} open nothing below ${tree.root}`)
  }
  const needed: Needed = { key, ...found }
  fs.writeFileSync(file, JSON.stringify(needed))
  return needed
}

/**
 * The workload's start-up set as a staging host makes it: `aysfs-native record` of the command on
 * a mount of the tree straight from the store directory (no WAN), then stored beside the flist
 * the way `publish --startup` stores it. Returns the list's path in the store, and its bytes.
 */
function recordStartup(dir: string, w: Workload, tree: Tree, store: string, mnt: string, progress: (m: string) => void): { file: string; data: Buffer; blobs: number } {
  progress(`wan: recording the start-up set of ${w.id} (aysfs-native record)`)
  const c = w.command(mnt)
  const config = path.join(dir, `record-${w.key}.toml`)
  fs.writeFileSync(config, `[main]\nprefix = ${JSON.stringify(tree.prefix)}\n\n[[ays]]\nid = ${JSON.stringify(tree.id)}\n\n[[store]]\nurl = ${JSON.stringify(store)}\n`)
  const out = path.join(dir, `startup-${w.key}.list`)
  const r = spawnSync(process.execPath, [CLI, 'record', '--config', config, '--ays', tree.id, '--mount', mnt, '--out', out, '--', c.file, ...c.args], {
    cwd: c.cwd,
    env: c.env,
    stdio: ['ignore', 'ignore', 'pipe'],
    maxBuffer: 16 << 20,
  })
  if (r.status !== 0) throw new Error(`wan: record of ${w.id} failed (${r.status ?? r.signal}): ${r.stderr?.toString() ?? ''}`)
  const named = new Set([...tree.files.values()].map((b) => b.md5))
  const stored = storeStartupList(store, tree.id, readStartupFile(out), named, undefined, false, Date.now())
  return { file: stored.file, data: fs.readFileSync(stored.file), blobs: stored.blobs }
}

/** Blobs in a local cache directory (`h0/h1/md5`). */
function cachedBlobs(cache: string): Set<string> {
  const out = new Set<string>()
  for (const h0 of '0123456789abcdef') {
    for (const h1 of '0123456789abcdef') {
      let names: string[]
      try {
        names = fs.readdirSync(path.join(cache, h0, h1))
      } catch {
        continue
      }
      for (const n of names) if (/^[0-9a-f]{32}$/.test(n)) out.add(n)
    }
  }
  return out
}

/** Polls `fn` every 20 ms until it holds or `ms` pass. */
async function until(fn: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  for (;;) {
    if (fn()) return true
    if (Date.now() > end) return false
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** One HTTP exchange seen by the proxy, times in ms of its clock. */
interface Exchange {
  conn: number
  /** The request read from the client. */
  start: number
  /** The response's last byte written to the client. */
  end: number
  /** The response's first byte written to the client. */
  first: number
  /** The first request of its connection (it paid the handshake's round trip). */
  fresh: boolean
  /** The request line. */
  req: string
}

/** Where a mount run's network time went, from the proxy's trace. */
export interface TraceProfile {
  /** Blob requests (`/files/`); the flist's and others are left out of every figure below. */
  requests: number
  /** Other requests (the flist at mount). */
  otherRequests: number
  connections: number
  /** Requests that were the first of a new connection (one more RTT each). */
  newConnectionRequests: number
  /** Most requests in flight at once. */
  maxInFlight: number
  /** Requests sent while no other was in flight: each waited for the one before to come back. */
  sequential: number
  /** Client time between one response's end and a sequential request (median, p90), ms. */
  gapMs: { median: number; p90: number }
  /** Request to last response byte (median, p90), ms, and the same in RTTs. */
  latencyMs: { median: number; p90: number }
  roundTripsPerRequest: number
  /** Time with at least one request in flight / from the first request to the last response, s. */
  busySeconds: number
  spanSeconds: number
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!
}

/** Pairs the trace's requests with their responses (HTTP/1.1: one at a time per connection). */
export function exchanges(trace: TraceEvent[]): Exchange[] {
  const byConn = new Map<number, TraceEvent[]>()
  for (const e of trace) {
    if (e.e !== 'up' && e.e !== 'down') continue
    let l = byConn.get(e.c)
    if (!l) byConn.set(e.c, (l = []))
    l.push(e)
  }
  const out: Exchange[] = []
  for (const [conn, evs] of byConn) {
    let cur: Exchange | undefined
    let first = true
    for (const e of evs) {
      if (e.e === 'up' && e.req !== undefined) {
        if (cur && cur.end >= 0) out.push(cur)
        cur = { conn, start: e.t, end: -1, first: -1, fresh: first, req: e.req }
        first = false
      } else if (e.e === 'down' && cur) {
        if (cur.first < 0) cur.first = e.due!
        cur.end = Math.max(cur.end, e.due!)
      }
    }
    if (cur && cur.end >= 0) out.push(cur)
  }
  return out.sort((a, b) => a.start - b.start)
}

/** The profile of a trace's blob requests, for a link of `rttMs`. */
export function profile(trace: TraceEvent[], rttMs: number): TraceProfile {
  const all = exchanges(trace)
  const xs = all.filter((x) => / \/store\/files\//.test(x.req))
  const gaps: number[] = []
  const lat: number[] = []
  let sequential = 0
  let maxInFlight = 0
  let lastEnd = -Infinity
  let busy = 0
  let busyFrom = NaN
  // Requests in start order; ends of those in flight kept sorted (small: at most the downloads).
  const open: number[] = []
  for (const x of xs) {
    while (open.length > 0 && open[0]! <= x.start) open.shift()
    if (open.length === 0) {
      sequential++
      if (Number.isFinite(lastEnd)) gaps.push(x.start - lastEnd)
      if (!Number.isNaN(busyFrom)) busy += lastEnd - busyFrom
      busyFrom = x.start
    }
    open.push(x.end)
    open.sort((a, b) => a - b)
    maxInFlight = Math.max(maxInFlight, open.length)
    lastEnd = Math.max(lastEnd, x.end)
    lat.push(x.end - x.start)
  }
  if (!Number.isNaN(busyFrom)) busy += lastEnd - busyFrom
  const round = (x: number): number => Math.round(x * 10) / 10
  return {
    requests: xs.length,
    otherRequests: all.length - xs.length,
    connections: new Set(xs.map((x) => x.conn)).size,
    newConnectionRequests: xs.filter((x) => x.fresh).length,
    maxInFlight,
    sequential,
    gapMs: { median: round(pct(gaps, 0.5)), p90: round(pct(gaps, 0.9)) },
    latencyMs: { median: round(pct(lat, 0.5)), p90: round(pct(lat, 0.9)) },
    roundTripsPerRequest: rttMs > 0 ? Math.round((pct(lat, 0.5) / rttMs) * 100) / 100 : NaN,
    busySeconds: busy / 1000,
    spanSeconds: xs.length ? (lastEnd - xs[0]!.start) / 1000 : 0,
  }
}

function readTrace(file: string): TraceEvent[] {
  try {
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as TraceEvent)
  } catch {
    return []
  }
}

/** What one mount run fetched. */
interface MountRun {
  seconds: number
  mountSeconds: number
  fetchedBlobs: number
  fetchedBytes: number
  /** Fetched blobs the workload does not need (speculation). */
  extraBlobs: number
  extraBytes: number
  /** Needed blobs the mount never fetched (0 unless the workload differs from the strace run). */
  missingBlobs: number
  misses: number
  /** Downloads the program's reads had to start themselves (`pipeline.started`): each a round trip it waited on. */
  started: number
  /** The pipeline's speculation and start-up counters at the end of the run. */
  speculation?: Record<string, unknown>
  startup?: Record<string, unknown>
  proxy?: ProxyStats
  profile: TraceProfile
}

/**
 * Runs the `wan` rows: for each workload and each variant, `runs` times alternately a fresh
 * mount with an empty cache behind a fresh proxy, then curl behind a fresh proxy.
 */
export async function runWan(o: WanOptions): Promise<WorkloadResult[]> {
  const dir = path.join(o.work, 'wan')
  for (const d of ['home', 'cwd', 'mnt']) fs.mkdirSync(path.join(dir, d), { recursive: true })
  const trees = publish(dir, o.progress)
  const store = path.join(dir, 'store')
  const list = path.join(dir, 'tree.list')
  fs.writeFileSync(list, [...trees.npm.files.keys()].sort().map((f) => `${f}\0`).join(''))
  const nginx = await startNginx({ store, accessLog: false })
  const mnt = path.join(dir, 'mnt')
  const trashDir = path.join(dir, 'trash')
  let trashed = 0
  // A directory of this run moved away at once and deleted at the end (see Bench.trash in run.ts:
  // creating files beside thousands just deleted is slow on this VM's ext4).
  const trash = (d: string): void => {
    if (!fs.existsSync(d)) return
    fs.mkdirSync(trashDir, { recursive: true })
    fs.renameSync(d, path.join(trashDir, `${path.basename(d)}.${process.pid}.${++trashed}`))
  }
  const proxyArgs = { target: nginx.port, rttMs: o.rttMs, rateBits: o.rateBits }
  const results: WorkloadResult[] = []
  let m: AysfsMount | undefined
  let proxy: WanProxyProcess | undefined
  try {
    for (const w of workloads(dir)) {
      const tree = trees[w.tree]
      const needed = neededSet(dir, w, tree, o.progress)
      const neededMd5 = new Set(needed.blobs.map((b) => b.md5))
      const neededBytes = sum(needed.blobs)
      const sizes = new Map([...tree.files.values()].map((b) => [b.md5, b.size]))
      // nginx reads the store from the page cache, like the mount's runs read the tree's files.
      const warm = (): void => {
        for (const b of needed.blobs) fs.readFileSync(blobPath(store, b.md5, 'store'))
      }
      const variants = VARIANTS.filter((v) => v.target in WAN_TARGETS[w.key])
      const recorded = variants.some((v) => v.startup) ? recordStartup(dir, w, tree, store, mnt, o.progress) : undefined
      // The variants alternate run by run (a loaded machine drifts): run 1 of each, then run 2, …
      const perVariant = variants.map(() => ({ mountRuns: [] as MountRun[], curlRuns: [] as number[], curlProxy: [] as (ProxyStats | undefined)[] }))
      for (let i = 0; i < o.runs; i++) {
        for (const [vi, v] of variants.entries()) {
          const { mountRuns, curlRuns, curlProxy } = perVariant[vi]!
          o.progress(`${w.id}${v.suffix}: run ${i + 1} of ${o.runs}`)
          // The published list is there for the runs of its variant only.
          if (recorded && v.startup) fs.writeFileSync(recorded.file, recorded.data)
          else if (recorded) fs.rmSync(recorded.file, { force: true })
          warm()
          const cache = path.join(dir, 'cache')
          trash(cache)
          const traceFile = path.join(dir, `trace-${w.key}.jsonl`)
          fs.rmSync(traceFile, { force: true })
          proxy = await spawnWanProxy({ ...proxyArgs, trace: traceFile })
          const t0 = process.hrtime.bigint()
          m = await mount({
            mountpoint: mnt,
            config: { main: { cache, prefix: tree.prefix, ...v.main }, ays: [{ id: tree.id }], store: [{ url: `${proxy.url}/store` }] },
            log: { level: 'warn' },
          })
          const mountSeconds = Number(process.hrtime.bigint() - t0) / 1e9
          const seconds = timed(w.command(mnt))
          // The counters are published at most every 100 ms, and blobs land in the cache as the
          // committer finishes them: wait for both to settle before counting.
          const mm = m
          await until(() => {
            const p = mm.stats().pipeline
            return p !== undefined && p.downloads.active === 0 && p.downloads.queued === 0 && cachedBlobs(cache).size >= p.served
          }, 5000)
          const got = cachedBlobs(cache)
          const st = m.stats()
          await m.unmount()
          m = undefined
          const stats = await proxy.stop()
          proxy = undefined
          let extraBlobs = 0
          let extraBytes = 0
          for (const md5 of got) {
            if (neededMd5.has(md5)) continue
            extraBlobs++
            extraBytes += sizes.get(md5) ?? 0
          }
          let missingBlobs = 0
          for (const md5 of neededMd5) if (!got.has(md5)) missingBlobs++
          mountRuns.push({
            seconds,
            mountSeconds,
            fetchedBlobs: got.size,
            fetchedBytes: [...got].reduce((a, md5) => a + (sizes.get(md5) ?? 0), 0),
            extraBlobs,
            extraBytes,
            missingBlobs,
            misses: st.engine.misses,
            started: st.pipeline?.started ?? NaN,
            speculation: st.pipeline?.speculation as Record<string, unknown> | undefined,
            startup: v.startup ? (st.pipeline?.startup as unknown as Record<string, unknown> | undefined) : undefined,
            proxy: stats,
            profile: profile(readTrace(traceFile), o.rttMs),
          })
          fs.rmSync(traceFile, { force: true })

          // curl: the same blobs, 16 at once, through a fresh proxy.
          warm()
          const dest = path.join(dir, 'curl')
          trash(dest)
          proxy = await spawnWanProxy(proxyArgs)
          const cfg = path.join(dir, 'curl.cfg')
          fs.writeFileSync(cfg, needed.blobs.map((b) => `url = "${proxy!.url}/store/files/${b.md5[0]}/${b.md5[1]}/${b.md5}"\noutput = "${blobPath(dest, b.md5, 'cache')}"\n`).join(''))
          curlRuns.push(timed({ file: 'curl', args: ['--parallel', '--parallel-max', String(CURL_PARALLEL), '--create-dirs', '-s', '--no-progress-meter', '--fail', '-K', cfg], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, cwd: dir }))
          curlProxy.push(await proxy.stop())
          proxy = undefined
          const fetched = cachedBlobs(dest).size
          if (fetched !== needed.blobs.length) throw new Error(`wan: curl fetched ${fetched} of ${needed.blobs.length} blobs`)
        }
      }
      trash(path.join(dir, 'cache'))
      trash(path.join(dir, 'curl'))
      if (recorded) fs.rmSync(recorded.file, { force: true })
      for (const [vi, v] of variants.entries()) {
        const { mountRuns, curlRuns, curlProxy } = perVariant[vi]!
        results.push(row(w, v, needed, neededBytes, mountRuns, curlRuns, curlProxy, o, v.startup ? recorded : undefined))
      }
    }
  } finally {
    if (m?.mounted) await m.unmount()
    await proxy?.stop()
    await nginx.stop()
    fs.rmSync(trashDir, { recursive: true, force: true })
  }
  return results
}

function row(w: Workload, v: Variant, needed: Needed, neededBytes: number, runs: MountRun[], curl: number[], curlProxy: (ProxyStats | undefined)[], o: WanOptions, recorded?: { blobs: number }): WorkloadResult {
  const bound = (WAN_TARGETS[w.key] as Record<string, number>)[v.target]
  if (bound === undefined) throw new Error(`wan: no ${v.target} target for ${w.key}`)
  const target = { of: 'ratio' as const, op: '<=' as const, bound }
  const mountS: Summary = summarize(runs.map((r) => r.seconds))
  const curlS: Summary = summarize(curl)
  const { ratio, met } = judge(target, mountS, curlS)
  const floorSeconds = (needed.blobs.length * o.rttMs) / 1000
  const med = (f: (r: MountRun) => number): number => summarize(runs.map(f)).median
  const wan: WanInfo & Record<string, unknown> = {
    rttMs: o.rttMs,
    rateMbit: o.rateBits / 1e6,
    curlParallel: CURL_PARALLEL,
    neededBlobs: needed.blobs.length,
    neededBytes,
    fetchedBlobs: med((r) => r.fetchedBlobs),
    fetchedBytes: med((r) => r.fetchedBytes),
    extraBlobs: med((r) => r.extraBlobs),
    extraBytes: med((r) => r.extraBytes),
    missingBlobs: Math.max(...runs.map((r) => r.missingBlobs)),
    floorSeconds,
    floorRatio: mountS.median / floorSeconds,
    curlFloorRatio: curlS.median / floorSeconds,
    mountSeconds: summarize(runs.map((r) => r.mountSeconds)),
    // Downloads the program's reads started themselves (median): the round trips it waited on.
    started: med((r) => r.started),
    // The recorded start-up list's blobs (the `-recorded` rows).
    ...(recorded ? { startupBlobs: recorded.blobs } : {}),
  }
  const info = {
    wan,
    runs: runs.map((r) => ({ seconds: r.seconds, misses: r.misses, started: r.started, fetchedBlobs: r.fetchedBlobs, fetchedBytes: r.fetchedBytes, extraBlobs: r.extraBlobs, extraBytes: r.extraBytes, speculation: r.speculation, startup: r.startup, wireBytesDown: r.proxy?.bytesDown, connections: r.proxy?.connections, proxyCpuMs: r.proxy?.cpuMs, profile: r.profile })),
    curlRuns: curl.map((seconds, i) => ({ seconds, wireBytesDown: curlProxy[i]?.bytesDown, connections: curlProxy[i]?.connections, proxyCpuMs: curlProxy[i]?.cpuMs })),
  }
  const title = `${w.title} (${needed.blobs.length} blobs), ${v.title}`
  o.progress(`${title}: mount ${mountS.median.toPrecision(3)}s, curl ${curlS.median.toPrecision(3)}s, ratio ${ratio!.toFixed(2)}, floor ${floorSeconds.toPrecision(3)}s, started by reads ${wan.started}`)
  return { id: `${w.id}${v.suffix}`, title, unit: 's', mount: mountS, reference: curlS, referenceName: 'curl', ...(ratio !== undefined ? { ratio } : {}), target, met, info }
}
