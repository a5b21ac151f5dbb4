// Summaries and the printed table of the benchmark.

/** min, median and max of a set of runs, plus the runs themselves. */
export interface Summary {
  min: number
  median: number
  max: number
  runs: number[]
}

export function summarize(runs: number[]): Summary {
  const s = [...runs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  const median = s.length === 0 ? NaN : s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
  return { min: s[0] ?? NaN, median, max: s[s.length - 1] ?? NaN, runs }
}

/** A target: the figure compared (`ratio` or the mount's median) and the bound it must keep. */
export interface Target {
  /** `ratio`: mount/reference medians; `value`: the mount's median itself. */
  of: 'ratio' | 'value'
  op: '<=' | '>='
  bound: number
}

/** One row of the result. */
export interface WorkloadResult {
  id: string
  title: string
  /** Unit of the summaries: `s`, `MB/s`, `B/entry`. */
  unit: string
  mount: Summary
  /** The same work done natively (or by the reference tool, e.g. curl); absent for absolutes. */
  reference?: Summary
  /** What the reference is: `native`, `curl`. */
  referenceName?: string
  /** mount/reference medians (for throughputs too: below 1 is slower). */
  ratio?: number
  target: Target
  met: boolean
  /** Extra facts: request counts, entries, bytes. */
  info?: Record<string, unknown>
}

export function judge(target: Target, mount: Summary, reference?: Summary): { ratio?: number; met: boolean } {
  const ratio = reference ? mount.median / reference.median : undefined
  const x = target.of === 'ratio' ? ratio : mount.median
  if (x === undefined || !Number.isFinite(x)) return { ratio, met: false }
  return { ratio, met: target.op === '<=' ? x <= target.bound : x >= target.bound }
}

function fmt(x: number, unit: string): string {
  if (!Number.isFinite(x)) return '-'
  if (unit === 's') return x < 1 ? `${(x * 1000).toFixed(x < 0.01 ? 2 : 1)}ms` : `${x.toFixed(2)}s`
  if (unit === 'MB/s') return x.toFixed(0)
  return x.toFixed(x < 10 ? 2 : 0)
}

function triple(s: Summary | undefined, unit: string): string {
  if (!s) return ''
  return `${fmt(s.min, unit)} / ${fmt(s.median, unit)} / ${fmt(s.max, unit)}`
}

/** The results as a fixed-width text table. */
export function table(results: WorkloadResult[]): string {
  const head = ['workload', 'unit', 'mount min / median / max', 'reference min / median / max', 'ratio', 'target', 'met']
  const rows = results.map((r) => [
    r.title,
    r.unit,
    triple(r.mount, r.unit),
    r.reference ? `${r.referenceName}: ${triple(r.reference, r.unit)}` : '',
    r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}x`,
    `${r.target.of === 'ratio' ? 'ratio' : 'value'} ${r.target.op} ${r.target.bound}${r.target.of === 'ratio' ? 'x' : ''}`,
    r.met ? 'yes' : 'NO',
  ])
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(width[i]!)).join('  ').trimEnd()
  return [line(head), width.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

/** What a WAN row (bench/wan.ts) carries in `info.wan`. */
export interface WanInfo {
  rttMs: number
  rateMbit: number
  neededBlobs: number
  neededBytes: number
  fetchedBlobs: number
  fetchedBytes: number
  /** Fetched blobs the workload does not need: speculation's cost. */
  extraBlobs: number
  extraBytes: number
  /** Needed blobs the mount never fetched (0 unless the workload read something else). */
  missingBlobs: number
  /** Needed blobs x RTT, s. */
  floorSeconds: number
  floorRatio: number
  /** Downloads the program's reads had to start themselves (median; `pipeline.started`). */
  started?: number
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(bytes < 1e6 ? 2 : 1)} MB`
}

/** The WAN rows' fetched and needed blobs and their floor, as a second table ('' if none). */
export function wanTable(results: WorkloadResult[]): string {
  const wan = results.filter((r) => r.info?.wan !== undefined)
  if (wan.length === 0) return ''
  const head = ['WAN row', 'link', 'needed blobs / bytes', 'fetched blobs / bytes (median)', 'speculative', 'started by reads', 'per-file floor', 'mount / floor']
  const rows = wan.map((r) => {
    const w = r.info!.wan as WanInfo
    return [
      r.id,
      `${w.rttMs} ms, ${w.rateMbit} Mbit/s`,
      `${w.neededBlobs} / ${mb(w.neededBytes)}`,
      `${w.fetchedBlobs} / ${mb(w.fetchedBytes)}${w.missingBlobs > 0 ? ` (${w.missingBlobs} needed never fetched)` : ''}`,
      `${w.extraBlobs} / ${mb(w.extraBytes)}`,
      w.started === undefined ? '' : String(w.started),
      fmt(w.floorSeconds, 's'),
      `${w.floorRatio.toFixed(2)}x`,
    ]
  })
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(width[i]!)).join('  ').trimEnd()
  return [line(head), width.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}
