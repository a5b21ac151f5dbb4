/**
 * Prometheus metrics of one mount (`main.metrics`, `--metrics ADDR`, `AysfsMount.metrics()`): the
 * text exposition format, made by prom-client's registry from values read at scrape time.
 *
 * Nothing here runs on the path of a read: a scrape reads the native counters (one addon call),
 * the snapshot of the pipeline's counters the miss worker already publishes in the status
 * document, and the mount's own facts (revisions, refreshes), all on the main thread. The miss
 * worker never loads this module, and prom-client keeps its registry per thread anyway.
 *
 * The engine's metric families are generated from the native list (native/counters.h, the
 * addon's `statMeta`): a counter added there is exported here with no edit. Labels are the op,
 * the source's config key (`store[0]`, never its URL: a URL may hold credentials), the fault
 * kind, the service id and the refresh result; every family has the `mountpoint` label, so the
 * metrics of two mounts in one process never clash.
 */
import * as http from 'node:http'
import { Registry } from 'prom-client'
import type { MissLatency, NativeStats } from '../binding'
import { splitListenAddress } from './config'
import { AysfsError } from './errors'
import type { FetcherStats } from './pipeline'
import type { RefreshResult } from './refresh'

/** One sample of a family. */
interface Sample {
  labels?: Record<string, string | number>
  value: number
  /** For a histogram's `_bucket`, `_sum` and `_count` lines. */
  metricName?: string
}

/** A family whose samples are computed at each scrape (prom-client's custom metric shape). */
class Family {
  readonly aggregator = 'sum'
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge' | 'histogram',
    private readonly samples: () => Sample[],
  ) {}

  get(): { name: string; help: string; type: string; values: Sample[]; aggregator: string } {
    return { name: this.name, help: this.help, type: this.type, values: this.samples(), aggregator: this.aggregator }
  }
}

/** What a scrape reads; everything is called on the main thread, at scrape time. */
export interface MetricsSource {
  mountpoint: string
  /** The native counters (`Engine.stats()`). */
  engine(): NativeStats
  /** The miss-latency histogram (native buckets). */
  missLatency(): MissLatency
  /** The engine's counters and gauges (the addon's `statMeta`, with their `stats()` keys). */
  meta: readonly EngineStatMeta[]
  /** The pipeline's counters as the miss worker last published them; undefined before it did. */
  pipeline(): FetcherStats | undefined
  /** Per service: the revision in force (signed mounts) and the last refresh. */
  services(): { id: string; revision?: number; refresh?: { result: RefreshResult; checkedAt: string } }[]
  /** Refreshes run, by result, since the mount. */
  refreshes(): Partial<Record<RefreshResult, number>>
  /** Signed flists refused as older than the revision in force (rollbacks), since the mount. */
  rollbacksRefused(): number
}

/** One counter or gauge of the native list (native/counters.h). */
export interface EngineStatMeta {
  /** The C++ name (snake_case). */
  name: string
  /** Its key in `stats()`. */
  js: string
  kind: 'counter' | 'gauge'
  help: string
}

/** The results a refresh can have, for zero-valued samples (a series should exist before it moves). */
const REFRESH_RESULTS: readonly RefreshResult[] = ['unchanged', 'applied', 'refused', 'unreachable', 'failed']

/** The Prometheus name of an engine stat: `aysfs_<c++ name>`, `_total` for counters. */
export function engineMetricName(meta: { name: string; kind: 'counter' | 'gauge' }): string {
  return `aysfs_${meta.name}${meta.kind === 'counter' ? '_total' : ''}`
}

/** The registry of one mount's metrics. */
export function createRegistry(src: MetricsSource): Registry {
  const registry = new Registry()
  registry.setDefaultLabels({ mountpoint: src.mountpoint })
  const add = (name: string, help: string, type: 'counter' | 'gauge' | 'histogram', samples: () => Sample[]): void =>
    registry.registerMetric(new Family(name, help, type, samples) as never)
  // One engine read per scrape, shared by the engine's families.
  let engine: NativeStats | undefined
  let pipeline: FetcherStats | undefined
  add('aysfs_requests_total', 'FUSE requests answered, by operation (rejected: write-type requests answered EROFS)', 'counter', () => {
    engine = src.engine()
    pipeline = src.pipeline()
    return Object.entries(engine.ops).map(([op, value]) => ({ labels: { op }, value }))
  })
  const stats = (): Record<string, number> => (engine ?? (engine = src.engine())) as unknown as Record<string, number>
  // Generated from the native list.
  for (const m of src.meta) add(engineMetricName(m), m.help, m.kind, () => [{ value: stats()[m.js] ?? 0 }])

  add('aysfs_miss_latency_seconds', 'how long reads of uncached blobs waited until they were answered (served, or EIO)', 'histogram', () => {
    const h = src.missLatency()
    const out: Sample[] = []
    let cumulative = 0
    h.boundsUs.forEach((us, i) => {
      cumulative += h.counts[i] ?? 0
      out.push({ metricName: 'aysfs_miss_latency_seconds_bucket', labels: { le: us / 1e6 }, value: cumulative })
    })
    cumulative += h.counts[h.boundsUs.length] ?? 0
    out.push({ metricName: 'aysfs_miss_latency_seconds_bucket', labels: { le: '+Inf' }, value: cumulative })
    out.push({ metricName: 'aysfs_miss_latency_seconds_sum', value: h.sumUs / 1e6 })
    out.push({ metricName: 'aysfs_miss_latency_seconds_count', value: cumulative })
    return out
  })

  const sources = (): FetcherStats['sources'] => (pipeline ?? src.pipeline())?.sources ?? []
  const perSource = (name: string, help: string, type: 'counter' | 'gauge', value: (s: FetcherStats['sources'][number]) => number): void =>
    add(name, help, type, () => sources().map((s) => ({ labels: { source: s.key, role: s.role }, value: value(s) })))
  perSource('aysfs_source_hits_total', 'blobs a source served (verified)', 'counter', (s) => s.hits)
  perSource('aysfs_source_misses_total', 'blobs a source did not have (404, no such file)', 'counter', (s) => s.misses)
  perSource('aysfs_source_bytes_total', 'bytes of verified content a source served', 'counter', (s) => s.bytes)
  perSource('aysfs_source_pushes_total', 'blobs pushed to a grid cache', 'counter', (s) => s.pushes)
  perSource('aysfs_source_push_errors_total', 'pushes to a grid cache that failed', 'counter', (s) => s.pushErrors)
  perSource('aysfs_source_backoff_failures', 'consecutive failures of a source (0: healthy)', 'gauge', (s) => s.backoff.failures)
  perSource('aysfs_source_in_backoff', '1 while a source is skipped after failures, until its retry time', 'gauge', (s) => (s.backoff.retryAt !== undefined ? 1 : 0))
  add('aysfs_source_errors_total', 'failures of a source, by kind (timeout, http-500, md5, net:ECONNREFUSED, ...)', 'counter', () =>
    sources().flatMap((s) => Object.entries(s.errorKinds).map(([kind, value]) => ({ labels: { source: s.key, role: s.role, kind }, value }))),
  )

  const fetcher = (): FetcherStats | undefined => pipeline ?? src.pipeline()
  const fetcherCounter = (name: string, help: string, value: (p: FetcherStats) => number, type: 'counter' | 'gauge' = 'counter'): void =>
    add(name, help, type, () => {
      const p = fetcher()
      return p ? [{ value: value(p) }] : []
    })
  fetcherCounter('aysfs_fetches_total', 'blob fetches asked of the pipeline', (p) => p.fetches)
  fetcherCounter('aysfs_fetches_merged_total', 'fetches that joined a download of the same blob in flight', (p) => p.merged)
  fetcherCounter('aysfs_fetches_started_total', 'downloads a read had to start itself (the blob neither cached nor in flight as a download or guess)', (p) => p.started)
  fetcherCounter('aysfs_fetches_served_total', 'downloads that ended with the blob in the local cache', (p) => p.served)
  fetcherCounter('aysfs_fetches_failed_total', 'downloads that failed (EIO to their readers)', (p) => p.failed)
  fetcherCounter('aysfs_downloads_active', 'downloads running now', (p) => p.downloads.active, 'gauge')
  fetcherCounter('aysfs_downloads_queued', 'downloads waiting for a slot now', (p) => p.downloads.queued, 'gauge')
  fetcherCounter('aysfs_cache_used_bytes', 'bytes the local cache takes on disk (at the last quota pass, plus what came since)', (p) => p.cache.used ?? 0, 'gauge')
  fetcherCounter('aysfs_cache_quota_bytes', 'main.cache_size in bytes (0: unbounded)', (p) => p.cache.limit, 'gauge')
  fetcherCounter('aysfs_cache_evictions_total', 'blobs evicted from the local cache', (p) => p.cache.evicted)
  fetcherCounter('aysfs_cache_evicted_bytes_total', 'bytes evicted from the local cache', (p) => p.cache.evictedBytes)

  add('aysfs_service_revision', 'the signed revision in force per service (with main.trusted_keys)', 'gauge', () =>
    src.services().flatMap((s) => (s.revision !== undefined ? [{ labels: { service: s.id }, value: s.revision }] : [])),
  )
  add('aysfs_service_last_refresh_timestamp_seconds', 'when a refresh last asked the stores about a service (Unix time)', 'gauge', () =>
    src.services().flatMap((s) => (s.refresh ? [{ labels: { service: s.id }, value: Math.floor(Date.parse(s.refresh.checkedAt) / 1000) }] : [])),
  )
  add('aysfs_refresh_results_total', 'service checks by refreshes, by result', 'counter', () => {
    const r = src.refreshes()
    return REFRESH_RESULTS.map((result) => ({ labels: { result }, value: r[result] ?? 0 }))
  })
  add('aysfs_rollbacks_refused_total', 'signed flists refused as older than the revision in force', 'counter', () => [{ value: src.rollbacksRefused() }])
  return registry
}

/** The text of a scrape (prom-client's text format 0.0.4). */
export async function scrape(registry: Registry): Promise<string> {
  return registry.metrics()
}

/** A listener serving `GET /metrics` of a registry. */
export interface MetricsServer {
  /** `host:port` it listens on (the port filled in). */
  address: string
  close(): Promise<void>
}

/**
 * Serves `GET /metrics` at `addr` (`host:port`) on this thread; anything else is 404 (or 405
 * for another method). Rejects with `EADDRINUSE` (key `main.metrics`) when it cannot listen.
 */
export async function serveMetrics(addr: string, registry: Registry): Promise<MetricsServer> {
  const { host, port } = splitListenAddress(addr)
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0]
    if (url !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found: metrics are at /metrics\n')
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end()
      return
    }
    scrape(registry).then(
      (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (err: Error) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`${err.message}\n`),
    )
  })
  // A scrape is small; a client that holds a connection open must not hold the process.
  server.keepAliveTimeout = 5000
  server.headersTimeout = 10_000
  server.requestTimeout = 10_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new AysfsError(err.code ?? 'EIO', `main.metrics: cannot listen on ${addr}: ${err.message}`, { key: 'main.metrics', cause: err })),
    )
    server.listen({ host, port }, () => resolve())
  })
  server.unref()
  const bound = server.address()
  const where = typeof bound === 'object' && bound !== null ? `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}` : addr
  return {
    address: where,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
