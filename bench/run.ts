// `npm run bench`: every workload of docs/benchmarks.md through the mount and natively, on the
// same files in the same run, with min/median/max, the ratio and whether each target is met.
//
//   node dist/bench/run.js [--quick] [--runs N] [--json] [--tree DIR] [--data DIR]
//                          [--only stat,read,big,rand,startup,cold,million,bro,quota,wan,chunks]
//                          [--rtt D] [--rate R]
//
// Data: a generated tree (or --tree DIR), published to a store that a local nginx serves
// (127.0.0.1 only). Kernel caches: every "first pass" runs on a fresh mount; the backing files
// (the local cache's blobs, the native tree) are read once before each run, since this kind of
// VM drops idle page cache within a minute.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { mount, type AysfsMount } from '../lib/index'
import { measureBro } from './bro'
import { measureQuota } from './quota'
import { startNginx, type Nginx } from './nginx'
import { judge, summarize, table, wanTable, type Summary, type Target, type WorkloadResult } from './report'
import { runWan } from './wan'
import { runChunks } from './chunks'
import { parseDuration, parseRate } from './wan-proxy'
import { blobPath, describeTree, makeTree, publishTree, pythonExecutable, writeSyntheticFlist, type Blob, type TreeInfo, type TreeSpec } from './tree'

const GROUPS = ['stat', 'read', 'big', 'rand', 'startup', 'cold', 'million', 'bro', 'quota', 'wan', 'chunks'] as const
type Group = (typeof GROUPS)[number]

interface Options {
  /** `main.speculate` of the mounts (`--speculate on|off`). */
  speculate: boolean
  quick: boolean
  runs: number
  json: boolean
  tree?: string
  data?: string
  only: Set<Group>
  spec: TreeSpec
  million: number
  /** Blob files of the cache quota's rows. */
  quotaBlobs: number
  randReads: number
  /** The WAN rows' link: round trip (ms) and rate (bits/s) of the proxy. */
  rttMs: number
  rateBits: number
}

const USAGE = `usage: node dist/bench/run.js [options]
  --quick          small sizes, 2 runs (the CI smoke run)
  --runs N         runs of each workload (default 5)
  --json           print the results as JSON on stdout (the table goes to stderr)
  --tree DIR       benchmark this tree instead of a generated one (its largest file is "the large file")
  --data DIR       make (or reuse) the generated data here and keep it
  --only LIST      comma-separated: ${GROUPS.join(',')}
  --files N        files in the generated tree (default 50000)
  --big-size B     bytes of the large file (default 1 GiB)
  --million N      entries of the synthetic flist (default 1000000)
  --quota-blobs N  blob files the cache quota's passes walk (default 100000)
  --rand-reads N   4 KiB random reads (default: every block of the large file once)
  --rtt D          round trip the WAN and chunks rows' proxy adds (default 40ms; 10ms with --quick)
  --rate R         the WAN rows' link, each way (default 100mbit)`

function parseArgs(argv: string[]): Options {
  const quick = argv.includes('--quick')
  const o: Options = {
    quick,
    runs: quick ? 2 : 5,
    json: false,
    only: new Set(GROUPS),
    spec: quick ? { files: 1500, mbFiles: 3, bigSize: 16 << 20, pyModules: 60, nodeModules: 60 } : { files: 50_000, mbFiles: 40, bigSize: 1 << 30, pyModules: 600, nodeModules: 600 },
    million: quick ? 20_000 : 1_000_000,
    quotaBlobs: quick ? 5_000 : 100_000,
    randReads: 0,
    rttMs: quick ? 10 : 40,
    rateBits: 100e6,
    speculate: true,
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const val = (): string => {
      const v = argv[++i]
      if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`)
      return v
    }
    const int = (): number => {
      const v = Number(val())
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${a} needs a positive integer`)
      return v
    }
    if (a === '--quick') continue
    else if (a === '--json') o.json = true
    else if (a === '--runs') o.runs = int()
    else if (a === '--tree') o.tree = path.resolve(val())
    else if (a === '--data') o.data = path.resolve(val())
    else if (a === '--files') o.spec.files = int()
    else if (a === '--big-size') o.spec.bigSize = int()
    else if (a === '--million') o.million = int()
    else if (a === '--quota-blobs') o.quotaBlobs = int()
    else if (a === '--rand-reads') o.randReads = int()
    else if (a === '--speculate') o.speculate = val() !== 'off'
    else if (a === '--rtt') o.rttMs = parseDuration(val())
    else if (a === '--rate') {
      o.rateBits = parseRate(val()) * 8000
      if (!Number.isFinite(o.rateBits)) throw new Error('--rate: the WAN rows need a finite rate')
    }
    else if (a === '--only') {
      o.only = new Set()
      for (const g of val().split(',')) {
        if (!(GROUPS as readonly string[]).includes(g)) throw new Error(`--only: unknown workload ${g} (${GROUPS.join(', ')})`)
        o.only.add(g as Group)
      }
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE + '\n')
      process.exit(0)
    } else throw new Error(`unknown option ${a}\n${USAGE}`)
  }
  return o
}

let quietProgress = false
function progress(msg: string): void {
  if (!quietProgress) process.stderr.write(`bench: ${msg}\n`)
}

/** Runs a shell command; returns its wall time in seconds. */
function sh(cmd: string, opts: { cwd?: string } = {}): number {
  const t0 = process.hrtime.bigint()
  const r = spawnSync('/bin/sh', ['-c', cmd], { cwd: opts.cwd, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 64 << 20 })
  const s = Number(process.hrtime.bigint() - t0) / 1e9
  if (r.status !== 0) throw new Error(`command failed (${r.status ?? r.signal}): ${cmd}\n${r.stderr?.toString() ?? ''}`)
  return s
}

function run(file: string, args: string[]): string {
  const r = spawnSync(file, args, { encoding: 'utf8', maxBuffer: 64 << 20 })
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${r.stderr}`)
  return r.stdout
}

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}

/** Reads every regular file below `dir` once: puts it in the page cache. */
function warm(dir: string): void {
  sh(`find ${q(dir)} -type f -print0 | xargs -0 -r cat > /dev/null`)
}

/** The machine, for the record. */
function machine(): Record<string, unknown> {
  const cpu = /model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]
  return {
    cpu,
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    libfuse: run('pkg-config', ['--modversion', 'fuse3']).trim() || undefined,
    fs: run('stat', ['-f', '-c', '%T', os.tmpdir()]).trim(),
    // Other sessions share this machine: the load at the end of the run, for the record.
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  }
}

interface Data {
  work: string
  root: string
  store: string
  tree: TreeInfo
  blobs: Blob[]
  /** Blob of each file of tree.files, in order. */
  fileBlobs: Map<string, Blob>
  temp: boolean
}

const SERVICE = 'bench'
const PREFIX = '/opt/bench'

/** Generates (or reuses) the tree and publishes it. */
function prepare(o: Options): Data {
  const temp = o.data === undefined
  const work = o.data ?? fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-bench-'))
  fs.mkdirSync(work, { recursive: true })
  const root = o.tree ?? path.join(work, 'tree')
  const store = path.join(work, 'store')
  const metaFile = path.join(work, 'meta.json')
  const key = JSON.stringify({ tree: o.tree ?? null, spec: o.tree ? null : o.spec })
  let meta: { key: string; tree: TreeInfo; blobs: Blob[] } | undefined
  try {
    meta = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as typeof meta
    if (meta!.key !== key) meta = undefined
  } catch {
    meta = undefined
  }
  if (!meta) {
    for (const d of [store, path.join(work, 'cache'), ...(o.tree ? [] : [root])]) fs.rmSync(d, { recursive: true, force: true })
    let tree: TreeInfo
    if (o.tree) {
      progress(`listing ${o.tree}`)
      tree = describeTree(o.tree, o.spec)
    } else {
      progress(`making a tree of ${o.spec.files} files and a ${o.spec.bigSize} byte file in ${root}`)
      tree = makeTree(root, o.spec)
    }
    progress(`publishing ${tree.entries} entries to ${store}`)
    const blobs = publishTree(root, store, SERVICE, PREFIX)
    meta = { key, tree, blobs }
    fs.writeFileSync(metaFile, JSON.stringify(meta))
  }
  // md5 of each file, from the flist just published.
  const fileBlobs = new Map<string, Blob>()
  for (const line of fs.readFileSync(path.join(store, 'md', `${SERVICE}.flist`), 'utf8').split('\n')) {
    const f = line.split('|')
    if (f.length >= 7 && f[6] === '2') fileBlobs.set(f[0]!.slice(PREFIX.length + 1), { md5: f[1]!, size: Number(f[2]) })
  }
  return { work, root, store, tree: meta.tree, blobs: meta.blobs, fileBlobs, temp }
}

/** One row of the table, judged against its target. */
function result(id: string, title: string, unit: string, target: Target, mount: number[], reference?: number[], referenceName = 'native', info?: Record<string, unknown>): WorkloadResult {
  const ms: Summary = summarize(mount)
  const rs = reference ? summarize(reference) : undefined
  const { ratio, met } = judge(target, ms, rs)
  progress(`${title}: mount ${ms.median.toPrecision(3)}${unit}${rs ? `, ${referenceName} ${rs.median.toPrecision(3)}${unit}, ratio ${ratio!.toFixed(2)}` : ''}`)
  return { id, title, unit, mount: ms, ...(rs ? { reference: rs, referenceName } : {}), ...(ratio !== undefined ? { ratio } : {}), target, met, ...(info ? { info } : {}) }
}

/**
 * The `.bro` decoder the pipeline uses (streaming, memory bounded by its window) against the
 * whole-body `brotliDecompressSync` it replaced: decompressed MB/s on the same body (bench/bro.ts).
 * In this process: it needs no mount and no data of the run.
 */
function broWorkload(o: Options): WorkloadResult {
  const size = o.quick ? 8 << 20 : 64 << 20
  progress(`decoding a .bro of ${size >> 20} MiB of text, ${o.runs} runs each way`)
  const t = measureBro(size, o.runs)
  const mbs = (xs: number[]): number[] => xs.map((x) => x / 1e6)
  return result('bro-decode', `.bro of ${size >> 20} MiB of text: streaming decode`, 'MB/s', { of: 'ratio', op: '>=', bound: 0.8 }, mbs(t.stream), mbs(t.sync), 'brotliDecompressSync', {
    bytes: size,
    compressedBytes: t.compressed,
    decoderPeakBytes: t.peakMemory,
  })
}

/**
 * The cache quota's passes (bench/quota.ts) over a cache of `quotaBlobs` blob files, against
 * `find` stat-ing the same files. No mount, no data of the run.
 */
function quotaWorkloads(o: Options): WorkloadResult[] {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-bench-'))
  try {
    progress(`cache quota: ${o.quotaBlobs} blobs, ${o.runs} runs`)
    const q = measureQuota(work, o.quotaBlobs, o.runs)
    const n = o.quotaBlobs.toLocaleString('en-US')
    const target: Target = { of: 'value', op: '<=', bound: 1 }
    return [
      result('quota-pass', `cache quota: a counting pass over ${n} blobs`, 's', target, q.count, q.find, 'find', { blobs: q.blobs, cpuSeconds: summarize(q.countCpu) }),
      result('quota-evict', `cache quota: a pass over ${n} blobs evicting to the low-water mark`, 's', target, q.evict, q.find, 'find', {
        blobs: q.blobs,
        evicted: summarize(q.evicted),
        cpuSeconds: summarize(q.evictCpu),
      }),
    ]
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}

class Bench {
  readonly results: WorkloadResult[] = []
  readonly mnt: string
  readonly cache: string
  readonly config: Record<string, unknown>
  readonly python = pythonExecutable()
  private m: AysfsMount | undefined
  private trashed = 0

  constructor(readonly o: Options, readonly d: Data, readonly nginx: Nginx) {
    this.mnt = path.join(d.work, 'mnt')
    this.cache = path.join(d.work, 'cache')
    fs.mkdirSync(this.mnt, { recursive: true })
    this.config = {
      main: { cache: this.cache, prefix: PREFIX, timeout: '30s', speculate: o.speculate },
      ays: [{ id: SERVICE }],
      store: [{ url: `${nginx.url}/store` }],
    }
  }

  async mount(): Promise<AysfsMount> {
    await this.unmount()
    this.m = await mount({ mountpoint: this.mnt, config: this.config, log: { level: 'warn' } })
    return this.m
  }

  async unmount(): Promise<void> {
    const m = this.m
    this.m = undefined
    if (m?.mounted) await m.unmount()
  }

  ops(): Record<string, number> {
    const e = this.m!.stats().engine
    return { ...e.ops, hits: e.hits, misses: e.misses, bytesRead: e.bytesRead, readAround: e.readAround, pushedFiles: e.pushedFiles }
  }

  add(id: string, title: string, unit: string, target: Target, mount: number[], reference?: number[], referenceName = 'native', info?: Record<string, unknown>): void {
    this.results.push(result(id, title, unit, target, mount, reference, referenceName, info))
  }

  /** Makes sure the local cache holds every blob (a copy from the store for any missing). */
  fillCache(): void {
    for (const b of this.d.blobs) {
      const dest = blobPath(this.cache, b.md5, 'cache')
      try {
        if (fs.statSync(dest).size === b.size) continue
      } catch {
        // missing
      }
      fs.mkdirSync(path.dirname(dest), { recursive: true })
      fs.copyFileSync(blobPath(this.d.store, b.md5, 'store'), dest)
    }
  }

  /**
   * Moves a directory of the run out of the way; `emptyTrash` deletes it all at the end. On an
   * ext4 without a journal (this VM's), creating a file next to tens of thousands deleted in the
   * last minute costs 100-350 µs (the allocator skips recently deleted inodes one by one), so a
   * cache deleted just before a cold run would slow that run's every download (and curl's).
   */
  trash(dir: string): void {
    if (!fs.existsSync(dir)) return
    const bin = path.join(this.d.work, 'trash')
    fs.mkdirSync(bin, { recursive: true })
    fs.renameSync(dir, path.join(bin, `${path.basename(dir)}.${process.pid}.${++this.trashed}`))
  }

  emptyTrash(): void {
    fs.rmSync(path.join(this.d.work, 'trash'), { recursive: true, force: true })
  }

  warmCache(): void {
    warm(this.cache)
  }

  /** Cold: empty local cache, 8 readers through the mount vs curl fetching the same blobs. */
  async cold(): Promise<void> {
    const files = this.d.tree.files
    const list = path.join(this.d.work, 'cold.list')
    fs.writeFileSync(list, files.map((f) => `${f}\0`).join(''))
    const blobs = new Map<string, Blob>()
    for (const f of files) {
      const b = this.d.fileBlobs.get(f)
      if (b) blobs.set(b.md5, b)
    }
    const dest = path.join(this.d.work, 'curl')
    const curlCfg = path.join(this.d.work, 'curl.cfg')
    fs.writeFileSync(
      curlCfg,
      [...blobs.values()].map((b) => `url = "${this.nginx.url}/store/files/${b.md5[0]}/${b.md5[1]}/${b.md5}"\noutput = "${blobPath(dest, b.md5, 'cache')}"\n`).join(''),
    )
    const perReader = Math.max(1, Math.min(256, Math.ceil(files.length / 64)))
    const mountRuns: number[] = []
    const curlRuns: number[] = []
    let info: Record<string, unknown> = {}
    for (let i = 0; i < this.o.runs; i++) {
      warm(path.join(this.d.store, 'files'))
      this.trash(this.cache)
      const m = await this.mount()
      mountRuns.push(sh(`xargs -0 -P 8 -n ${perReader} -a ${q(list)} cat > /dev/null`, { cwd: this.mnt }))
      info = { files: files.length, blobs: blobs.size, bytes: this.d.tree.bytes, pipeline: m.stats().pipeline, engine: this.ops() }
      await this.unmount()

      warm(path.join(this.d.store, 'files'))
      this.trash(dest)
      for (let h = 0; h < 256; h++) fs.mkdirSync(path.join(dest, h.toString(16).padStart(2, '0')[0]!, h.toString(16).padStart(2, '0')[1]!), { recursive: true })
      curlRuns.push(sh(`curl --parallel --parallel-max 8 -s --fail -K ${q(curlCfg)}`))
    }
    this.trash(dest)
    this.add('cold', 'cold: empty cache, 8 readers, every file from nginx', 's', { of: 'ratio', op: '<=', bound: 1.25 }, mountRuns, curlRuns, 'curl', info)
  }

  async warmWorkloads(): Promise<void> {
    const o = this.o
    const t = this.d.tree
    const mnt = this.mnt
    const root = this.d.root
    const big = t.big
    const bigBlob = this.d.fileBlobs.get(big)
    const bigBytes = bigBlob?.size ?? fs.statSync(path.join(root, big)).size
    const blocks = Math.floor(bigBytes / 4096)
    const randReads = o.randReads > 0 ? Math.min(o.randReads, blocks) : blocks
    const statCmd = 'find . -ls > /dev/null'
    const readCmd = `find . -type f ! -path ${q('./' + big)} -print0 | xargs -0 -r cat > /dev/null`
    const ddCmd = `dd if=${q(big)} of=/dev/null bs=1M status=none`
    const randScript = path.join(__dirname, 'randread.js')
    const randread = (dir: string): number => JSON.parse(run(process.execPath, [randScript, path.join(dir, big), String(randReads)])).seconds as number
    const py = (dir: string): number => {
      const code = `import sys; sys.path.insert(0, ${JSON.stringify(path.join(dir, t.pyPath))}); import ${t.pyPackage}`
      const t0 = process.hrtime.bigint()
      run(this.python, ['-I', '-c', code])
      return Number(process.hrtime.bigint() - t0) / 1e9
    }
    const nodeStart = (dir: string): number => {
      const t0 = process.hrtime.bigint()
      run(process.execPath, ['-e', `require(${JSON.stringify(path.join(dir, t.nodePackage))})`])
      return Number(process.hrtime.bigint() - t0) / 1e9
    }
    const mbps = (s: number): number => bigBytes / s / 1e6
    const has = (g: Group): boolean => o.only.has(g)
    // The start-ups: each run on a fresh mount twice (first, second start), natively after a
    // warm-up start.
    const starts = !has('startup')
      ? []
      : [
          ...(t.pyPackage !== '' ? [{ key: 'py', id: 'startup', title: 'Python start-up importing', modules: t.spec.pyModules, run: py }] : []),
          ...(t.nodePackage !== '' ? [{ key: 'node', id: 'node-startup', title: 'Node start-up requiring', modules: t.spec.nodeModules, run: nodeStart }] : []),
        ]
    const r: Record<string, number[]> = {}
    const push = (k: string, v: number): void => {
      ;(r[k] ??= []).push(v)
    }
    const info: Record<string, Record<string, unknown>> = {}

    for (let i = 0; i < o.runs; i++) {
      progress(`warm workloads, run ${i + 1} of ${o.runs}`)
      this.warmCache()
      if (has('stat')) {
        await this.mount()
        push('stat1', sh(statCmd, { cwd: mnt }))
        info.stat1 = this.ops()
        push('stat2', sh(statCmd, { cwd: mnt }))
      }
      if (has('read')) {
        await this.mount()
        push('read1', sh(readCmd, { cwd: mnt }))
        info.read1 = this.ops()
        push('read2', sh(readCmd, { cwd: mnt }))
      }
      if (has('big')) {
        await this.mount()
        warm(path.dirname(blobPath(this.cache, bigBlob!.md5, 'cache')))
        push('big1', mbps(sh(ddCmd, { cwd: mnt })))
        info.big1 = this.ops()
        push('big2', mbps(sh(ddCmd, { cwd: mnt })))
        info.big2 = this.ops()
      }
      if (has('rand')) {
        await this.mount()
        warm(path.dirname(blobPath(this.cache, bigBlob!.md5, 'cache')))
        push('rand1', randread(mnt))
        info.rand1 = this.ops()
      }
      for (const st of starts) {
        await this.mount()
        push(`${st.key}1`, st.run(mnt))
        info[`${st.key}1`] = this.ops()
        push(`${st.key}2`, st.run(mnt))
      }
      await this.unmount()

      // Natively: a warm-up pass first, then the same commands on the tree itself.
      warm(root)
      if (has('stat')) {
        sh(statCmd, { cwd: root })
        push('stat-native', sh(statCmd, { cwd: root }))
      }
      if (has('read')) push('read-native', sh(readCmd, { cwd: root }))
      if (has('big')) push('big-native', mbps(sh(ddCmd, { cwd: root })))
      if (has('rand')) push('rand-native', randread(root))
      for (const st of starts) {
        st.run(root)
        push(`${st.key}-native`, st.run(root))
      }
    }

    const entries = { entries: t.entries, files: t.files.length + 1, bytes: t.bytes }
    if (has('stat')) {
      this.add('stat-first', 'stat every entry, first pass after mount', 's', { of: 'ratio', op: '<=', bound: 2.7 }, r.stat1!, r['stat-native'], 'native', { ...entries, engine: info.stat1 })
      this.add('stat-second', 'stat every entry, second pass', 's', { of: 'ratio', op: '<=', bound: 1.0 }, r.stat2!, r['stat-native'])
    }
    if (has('read')) {
      this.add('read-first', 'read every file once, blobs local, first pass', 's', { of: 'ratio', op: '<=', bound: 2.75 }, r.read1!, r['read-native'], 'native', { ...entries, engine: info.read1 })
      this.add('read-second', 'read every file once, second pass', 's', { of: 'ratio', op: '<=', bound: 1.1 }, r.read2!, r['read-native'])
    }
    if (has('big')) {
      this.add('big-first', `${bigBytes >> 20} MiB file, first sequential read`, 'MB/s', { of: 'ratio', op: '>=', bound: 0.2 }, r.big1!, r['big-native'], 'native', { bytes: bigBytes, engine: info.big1 })
      // The second read's requests (none: it comes from the page cache) tell it is the kernel's.
      const reads2 = Number(info.big2?.read ?? 0) - Number(info.big1?.read ?? 0)
      this.add('big-second', `${bigBytes >> 20} MiB file, second read`, 'MB/s', { of: 'ratio', op: '>=', bound: 0.8 }, r.big2!, r['big-native'], 'native', { readRequests: reads2 })
    }
    if (has('rand')) {
      this.add('rand-first', `4 KiB random reads in the ${bigBytes >> 20} MiB file, first pass`, 's', { of: 'ratio', op: '<=', bound: 3 }, r.rand1!, r['rand-native'], 'native', { reads: randReads, engine: info.rand1 })
    }
    for (const st of starts) {
      const warmRuns = summarize(r[`${st.key}2`]!)
      this.add(st.id, `${st.title} a package from the mount, first after mount`, 's', { of: 'ratio', op: '<=', bound: 1.4 }, r[`${st.key}1`]!, r[`${st.key}-native`], 'native', {
        modules: st.modules,
        secondStart: warmRuns,
        secondStartRatio: warmRuns.median / summarize(r[`${st.key}-native`]!).median,
        engine: info[`${st.key}1`],
      })
    }
  }

  async million(): Promise<void> {
    const id = 'million'
    const flist = path.join(this.d.store, 'md', `${id}.flist`)
    const prefix = '/opt/million'
    const marker = `${flist}.entries`
    if (!fs.existsSync(marker) || fs.readFileSync(marker, 'utf8') !== String(this.o.million)) {
      progress(`writing a flist of ${this.o.million} entries`)
      writeSyntheticFlist(flist, prefix, this.o.million)
      fs.writeFileSync(marker, String(this.o.million))
    }
    const mnt = path.join(this.d.work, 'mnt-million')
    fs.mkdirSync(mnt, { recursive: true })
    const spec = {
      mountpoint: mnt,
      config: {
        main: { cache: path.join(this.d.work, 'cache-million'), prefix, timeout: '30s', max_flist_size: '1GiB', speculate: this.o.speculate },
        ays: [{ id }],
        store: [{ url: `${this.nginx.url}/store` }],
      },
    }
    const seconds: number[] = []
    const perEntry: number[] = []
    let last: Record<string, number> = {}
    for (let i = 0; i < this.o.runs; i++) {
      warm(path.join(this.d.store, 'md'))
      const out = JSON.parse(run(process.execPath, [path.join(__dirname, 'million.js'), JSON.stringify(spec)])) as Record<string, number>
      seconds.push(out.seconds!)
      perEntry.push(out.rss! / this.o.million)
      last = out
    }
    const info = { flistEntries: this.o.million, tableEntries: last.entries, rssBytes: last.rss, peakRssBytes: last.hwm, rssBeforeMount: last.before }
    this.add('million-mount', `flist of ${this.o.million} entries: mount until the tree is visible`, 's', { of: 'value', op: '<=', bound: 3 }, seconds, undefined, undefined, info)
    this.add('million-rss', `flist of ${this.o.million} entries: RSS of the process per entry`, 'B/entry', { of: 'value', op: '<=', bound: 250 }, perEntry)
  }
}

async function main(): Promise<void> {
  // Ctrl-C: exit through 'exit', where the mount and nginx are cleaned up.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130))
  const o = parseArgs(process.argv.slice(2))
  quietProgress = false
  const started = new Date()
  const results: WorkloadResult[] = []
  if (o.only.has('bro')) results.push(broWorkload(o))
  if (o.only.has('quota')) results.push(...quotaWorkloads(o))
  // Everything else but the WAN rows (trees of their own, bench/wan.ts) needs the data and nginx.
  const needsData = [...o.only].some((g) => g !== 'bro' && g !== 'quota' && g !== 'wan' && g !== 'chunks')
  const d = needsData ? prepare(o) : undefined
  if (d) {
    const nginx = await startNginx({ store: d.store, accessLog: false })
    const bench = new Bench(o, d, nginx)
    try {
      if (o.only.has('cold')) await bench.cold()
      if ((['stat', 'read', 'big', 'rand', 'startup'] as Group[]).some((g) => o.only.has(g))) {
        bench.fillCache()
        await bench.warmWorkloads()
      }
      if (o.only.has('million')) await bench.million()
    } finally {
      await bench.unmount()
      bench.emptyTrash()
      await nginx.stop()
      if (d.temp) fs.rmSync(d.work, { recursive: true, force: true })
    }
    results.push(...bench.results)
  }
  if (o.only.has('wan')) {
    const work = o.data ?? fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-bench-'))
    try {
      results.push(...(await runWan({ work, runs: o.runs, rttMs: o.rttMs, rateBits: o.rateBits, progress })))
    } finally {
      if (o.data === undefined) fs.rmSync(work, { recursive: true, force: true })
    }
  }
  if (o.only.has('chunks')) {
    const work = o.data ?? fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-bench-'))
    try {
      results.push(...(await runChunks({ work, runs: o.runs, quick: o.quick, rttMs: o.rttMs, rateBits: o.rateBits, progress })))
    } finally {
      if (o.data === undefined) fs.rmSync(work, { recursive: true, force: true })
    }
  }
  const doc = {
    version: 1,
    started: started.toISOString(),
    seconds: (Date.now() - started.getTime()) / 1000,
    machine: machine(),
    options: { quick: o.quick, runs: o.runs, tree: o.tree ?? null, spec: o.spec, million: o.million, quotaBlobs: o.quotaBlobs, wan: { rttMs: o.rttMs, rateBits: o.rateBits } },
    ...(d ? { tree: { entries: d.tree.entries, files: d.tree.files.length + 1, bytes: d.tree.bytes, big: d.tree.big } } : {}),
    results,
    allMet: results.every((r) => r.met),
  }
  const wanText = wanTable(results)
  const text = table(results) + (wanText ? `\n\n${wanText}` : '')
  if (o.json) {
    process.stderr.write(text + '\n')
    process.stdout.write(JSON.stringify(doc, null, 2) + '\n')
  } else {
    process.stdout.write(text + '\n')
  }
}

main().catch((err: Error) => {
  process.stderr.write(`bench: ${err.stack ?? err.message}\n`)
  process.exit(1)
})
