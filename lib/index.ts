/**
 * aysfs-native: mount AYS flists from content-addressed stores as a read-only FUSE file system.
 *
 * ```ts
 * import { mount } from 'aysfs-native'
 * const fs = await mount({ mountpoint: '/opt/jumpscale7', config: '/etc/aysfs/config.toml' })
 * fs.stats()
 * await fs.reload()
 * await fs.unmount()
 * ```
 */
import path from 'node:path'
import type { NativeStats } from '../binding'
import { checkConfig, isCheckedConfig, loadConfig, parseListenAddress, type Config } from './config'
import { Engine, engineStatMeta, releaseMemory } from './engine'
import { AysfsError } from './errors'
import { mergeServices, parseFlist, type ParsedFlist } from './flist'
import { createLogger, formatOf, isLogger, levelOf, type Logger, type LogOptions } from './log'
import { runtimeModule } from './package-root'
import { checkMountpoint } from './mountpoint'
import { createFetcher, type FetcherData, type FetcherStats, type Pipeline } from './pipeline'
import { buildLocality, type LocalityData } from './pipeline/locality'
import type { RefusedOffers, StartupResult } from './pipeline/flists'
import { startupSet, startupValidator, type StartupSet } from './pipeline/startup'
import { prefixWarning } from './prefix-warning'
import type { MetricsServer } from './metrics'
import { AcceptedPairs, checkService, RefreshSchedule, type CheckOutcome, type PairValidators, type RefreshEvent, type RefreshResult, type ServiceRefresh } from './refresh'
import { Revisions, sha256, type RefusedOffer, type RollbackRefusal } from './revisions'
import type { Source } from './sources/source'
import { loadTrustedKeys, verifyThenParse } from './sign'
import { buildTable } from './table'

/** Tables at least this big (about 80,000 entries) are followed by {@link releaseMemory}. */
const RELEASE_AFTER_BYTES = 8 << 20

/**
 * The backstop of parked reads for sources with this `timeout`: `2 × timeout + 1 s` without
 * progress (docs/hardening.md, "The backstop of parked reads"). A stalled HTTP transfer is ended
 * by its own speed floor between `timeout` and `9/8 × timeout` after its last byte, and a wait
 * for a source's probe lasts at most `timeout`; either ends in a move to the next source, which
 * is progress. So the backstop only fires for a fetch stuck where no timeout of its own reaches.
 */
function stallTimeoutMs(timeoutMs: number): number {
  // At most what the engine takes (2^32 - 1 ms, 49 days): a timeout of weeks means no backstop.
  return Math.min(2 * timeoutMs + 1000, 0xffff_ffff)
}

export { AysfsError } from './errors'
export type { Config } from './config'
export type { FetcherStats, SourceStats } from './pipeline'
export type { NativeStats } from '../binding'
export type { LogOptions, LogLevel, LogFormat } from './log'
export type { RefreshEvent, RefreshResult, ServiceRefresh } from './refresh'
export type { RollbackRefusal } from './revisions'

/** Options of {@link mount}. */
export interface MountOptions {
  /**
   * An absolute path of an existing directory. Default: `main.mount` of the config. Flist paths
   * under the prefix (`main.prefix`, default this path) are exposed with the prefix stripped.
   */
  mountpoint?: string
  /**
   * The configuration: a TOML file's path, or an object of the file's shape
   * (`{ main: {...}, ays: [...], cache: [...], store: [...] }`), checked the same way; or a
   * `Config` the checker made (an {@link AysfsMount.config}), used as it is.
   */
  config: string | Record<string, unknown> | Config
  /** Let users other than the mounting one see the tree (`allow_other`; needs
   * `user_allow_other` in /etc/fuse.conf for non-root). Default false. */
  allowOther?: boolean
  /** How to log (stderr), or a logger to log to (a pino logger is one). Default: `info`, text. */
  log?: LogOptions | Logger
  /** libfuse's own debug output on stderr. */
  debug?: boolean
  /** Called when the mount goes away from outside (someone ran `umount`). */
  onExit?: () => void
  /**
   * Called on this thread with the MD5 of each blob a read found missing from the local cache,
   * in the order of the misses, once per fetch the file system asks for (a file read by chunks:
   * once per read that missed): with an empty cache and `main.speculate = false`, the order in
   * which a program first read its files. `aysfs-native record` writes them down. Every miss is
   * told before {@link AysfsMount.unmount} resolves.
   */
  onMiss?: (md5: string) => void
  /**
   * Called when a refresh (`main.refresh`, or {@link AysfsMount.refresh}) applies a new flist or
   * revision, refuses one (an older signed revision: "rollback refused"), or fails. Not called
   * for a refresh that found nothing new, nor for one whose stores did not answer.
   */
  onRefresh?: (event: RefreshEvent) => void
  /**
   * Serve Prometheus metrics at `http://<this>/metrics` (`host:port`, e.g. `127.0.0.1:9469`);
   * wins over `main.metrics`. Default: `main.metrics`, else no listener ({@link
   * AysfsMount.metrics} works either way).
   */
  metrics?: string
}

/** One service of a mount, as it was last loaded. */
export interface ServiceInfo {
  id: string
  /** `store[N]`, or `kept`: the copy in `<cache>/md/` (no store answered). */
  source: string
  /** Entries it contributed, implied directories included. */
  entries: number
  /** Lines outside the prefix, ignored. */
  ignored: number
  /**
   * Block and char devices of this service left out of the tree because `main.dev` is off (the
   * default): a device node served by the mount would let `cp -a` as root make, say, a
   * world-writable /dev/mem twin. 0 with `main.dev = true`.
   */
  droppedDevices: number
  /** Id of the trusted key whose signature was checked (only with `main.trusted_keys`). */
  key?: string
  /**
   * Set when most of the service's flist lines (or all) are outside the prefix and so not served
   * (published under another path): what is wrong, with a path of the flist. Also logged.
   */
  warning?: string
  /**
   * The revision in force, from its signature (only with `main.trusted_keys`; 0 for a signature
   * made before revisions existed).
   */
  revision?: number
  /** What the last refresh found for this service (once a refresh has run). */
  refresh?: ServiceRefresh
}

/** Flists fetched for the mount and its reloads (counted from the mount, over every reload). */
export interface FlistCounts {
  /** Flists fetched from a store and accepted. */
  fetched: number
  /** Copies kept in `<cache>/md/` used because no store answered. */
  kept: number
  /** Copies a store served that `main.trusted_keys` refused (after the one refetch). */
  refused: number
}

/** The mount's own facts in `status`. */
export interface MountInfo {
  prefix: string
  config?: string
  services: ServiceInfo[]
  /**
   * Whether flist signatures are checked (`main.trusted_keys` is set): when true, every service
   * mounted was signed by a trusted key (see {@link ServiceInfo.key}); when false, flists are
   * not verified and whoever can write to a store decides what is mounted.
   */
  signed: boolean
  mountedAt: string
  /** Flists of the mount and its reloads: where they came from, and those refused. */
  flists: FlistCounts
  reloads: number
  lastReload?: { at: string; ok: boolean; error?: string }
  /** `main.refresh` in ms, and refreshes run so far (present when refresh is on or one ran). */
  refresh?: { intervalMs: number; checks: number; lastAt?: string }
  /**
   * Signed flists refused because this node has accepted a higher revision, or the same one
   * with other bytes: the last refusal per service, until a newer revision is accepted.
   */
  rollbacks?: RollbackRefusal[]
}

/** What {@link AysfsMount.stats} and `aysfs-native status` report. */
export interface MountStats {
  version: 1
  mountpoint: string
  /** Counters kept in C++: requests by op, hits, misses, bytes. */
  engine: Omit<NativeStats, 'mounted'>
  /** The content pipeline: per source hits, misses, errors, bytes, pushes; downloads in flight. */
  pipeline?: FetcherStats
  mount?: MountInfo
}

/** What a reload changed. */
export interface ReloadResult {
  entries: number
  /** Kernel cache entries dropped for names that changed. */
  invalidated: number
  services: ServiceInfo[]
}

/** A mounted tree. */
export interface AysfsMount {
  readonly mountpoint: string
  /** The configuration in force (after the last successful reload). */
  readonly config: Config
  /** False once unmounted, by {@link unmount} or from outside. */
  readonly mounted: boolean
  /** The same counters as `aysfs-native status`. */
  stats(): MountStats
  /**
   * Re-reads the config (when it is a file) and the flists and swaps the tree in place, without
   * unmounting. All or nothing: if anything fails, the old tree stays and the promise rejects.
   * Files already open keep reading what they opened.
   */
  reload(): Promise<ReloadResult>
  /**
   * Asks the stores now whether a flist changed (what `main.refresh` does on its schedule) and
   * applies a change as {@link reload} does, without re-reading the config. Waits for a reload or
   * refresh that runs. Resolves with each service's result (also in `status`); never rejects for
   * a store or flist problem (that is a result).
   */
  refresh(): Promise<({ id: string } & ServiceRefresh)[]>
  /**
   * The mount's metrics in Prometheus' text format (what the `main.metrics` listener serves at
   * `/metrics`), for a Node service that serves its own `/metrics`. Read at the call, on this
   * thread; never enters the FUSE path.
   */
  metrics(): Promise<string>
  /** Where the metrics listener listens (`host:port`), when there is one. */
  readonly metricsAddress?: string
  /** Unmounts; returns within about a second even with files held open. */
  unmount(): Promise<void>
}

function readConfig(config: MountOptions['config']): Config {
  if (typeof config === 'string') return loadConfig(config)
  if (isCheckedConfig(config)) return config
  if (config === null || typeof config !== 'object') {
    throw new TypeError('config must be a file path or an object of the config file\'s shape')
  }
  return checkConfig(config)
}

/** The pair (flist and signature) a load accepted for one service. */
interface LoadedPair {
  id: string
  /** `store[N]` or `kept`. */
  source: string
  /** SHA-256 of the flist and of the signature (when checked). */
  flist: string
  signature?: string
  /** The start-up list that came with it, as offered (`main.startup`): SHA-256 of it and of its signature. */
  startup?: { list?: string; signature?: string }
  validators?: PairValidators
}

interface Loaded {
  table: Buffer
  entries: number
  services: ServiceInfo[]
  pairs: LoadedPair[]
  prefix: string
  /** Files stored as chunks too: file MD5 -> chunk index MD5. */
  chunkIndexes: Map<string, string>
  /** Blobs of the services marked `prefetch`, when asked for. */
  prefetch?: Map<string, number>
  /** What the miss worker guesses from (`main.speculate`). */
  locality?: LocalityData
  /** The blobs of the services' start-up lists the miss worker fetches (`main.startup`). */
  startup?: StartupSet
}

/**
 * Fetches, checks and merges the flists of every service: all or nothing. With
 * `main.trusted_keys`, each flist's signature is checked before a byte of it is parsed, on the
 * copy from a store and on the copy kept in `<cache>/md/` alike, and so is its revision: a
 * signed revision lower than the highest this node accepted (or the same with other bytes) is
 * refused (lib/revisions.ts) and the next store tried. The key files are read again on every
 * call, so a reload picks up a rotation. The revisions are recorded once the whole tree is built.
 */
async function loadTree(
  config: Config,
  mountpoint: string,
  meta: Pipeline,
  log: Logger,
  counts: FlistCounts,
  revisions: Revisions,
  opts: { prefetch?: boolean; pairs?: AcceptedPairs } = {},
): Promise<Loaded> {
  const before = flistCounts(meta)
  try {
    return await loadFlists(config, mountpoint, meta, log, revisions, opts)
  } finally {
    // Counted whether or not the load succeeded: a refusal that fails a reload counts.
    const after = flistCounts(meta)
    counts.fetched += after.fetched - before.fetched
    counts.kept += after.kept - before.kept
    counts.refused += after.refused - before.refused
  }
}

/** What the main thread's pipeline did with flists so far. */
function flistCounts(meta: Pipeline): FlistCounts {
  const s = meta.stats()
  return { ...s.flists, refused: s.sources.reduce((n, src) => n + (src.errorKinds.untrusted ?? 0), 0) }
}

/**
 * What `pairs` remembers of the flists of service `id` that stores offered and `revisions`
 * refused: a store that still offers one is asked with a conditional request, and refused again
 * without a download.
 */
function refusedOffers(pairs: AcceptedPairs, id: string, revisions: Revisions): RefusedOffers {
  return {
    at: (store) => pairs.refusedAt(store, id),
    again: (store, offer) => revisions.again(id, offer.revision, offer.digest, `${store.key} (${store.url})`),
    refused: (store, offer) => pairs.refused(store, id, offer),
  }
}

async function loadFlists(config: Config, mountpoint: string, meta: Pipeline, log: Logger, revisions: Revisions, opts: { prefetch?: boolean; pairs?: AcceptedPairs }): Promise<Loaded> {
  const prefix = config.main.prefix ?? mountpoint
  const keys = loadTrustedKeys(config.main.trustedKeys)
  const parsed: ParsedFlist[] = []
  const services: ServiceInfo[] = []
  const pairs: LoadedPair[] = []
  const prefetch = opts.prefetch ? new Map<string, number>() : undefined
  const startupLists: Promise<StartupResult<string[]>>[] = []
  for (const ays of config.ays) {
    let signer: string | undefined
    let revision: number | undefined
    const result = await meta.fetchFlist(
      ays.id,
      verifyThenParse(
        keys,
        ays.id,
        (data) =>
          parseFlist(data, {
            name: ays.id,
            prefix,
            file: `${ays.id}.flist`,
            maxEntries: config.main.maxEntries,
            maxSize: config.main.maxFlistSize,
          }),
        (verified, data, source) => {
          revisions.check(ays.id, verified.revision, data, source)
          signer = verified.keyId
          revision = verified.revision
        },
      ),
      { signature: keys.length > 0, ...(opts.pairs ? { refused: refusedOffers(opts.pairs, ays.id, revisions) } : {}) },
    )
    parsed.push(result.value)
    const warning = prefixWarning(result.value)
    if (warning !== undefined) log.warn({ id: ays.id, prefix, ignored: result.value.ignored, lines: result.value.lines, example: result.value.firstIgnored }, warning)
    services.push({
      id: ays.id,
      source: result.source,
      entries: result.value.entries,
      ignored: result.value.ignored,
      droppedDevices: 0,
      ...(signer !== undefined ? { key: signer } : {}),
      ...(warning !== undefined ? { warning } : {}),
      ...(revision !== undefined ? { revision } : {}),
    })
    pairs.push({
      id: ays.id,
      source: result.source,
      flist: sha256(result.data),
      ...(result.signature !== undefined ? { signature: sha256(result.signature) } : {}),
      ...(result.validators !== undefined ? { validators: result.validators } : {}),
    })
    if (prefetch && ays.prefetch) result.value.tree.forEachFile((md5, size) => prefetch.set(md5, size))
    // Its start-up list, from where the flist came, while the next flist is fetched; none is no
    // error, a bad one only a warning (fetchStartup never rejects for what a store does).
    if (config.main.startup) startupLists.push(meta.fetchStartup(ays.id, result.source, startupValidator(keys, ays.id, log), { signature: keys.length > 0 }))
  }
  const found = await Promise.all(startupLists)
  // What a refresh compares the store's list with: the list as offered, from where the flist came.
  found.forEach((r, i) => {
    const p = pairs[i]!
    p.startup = { ...(r.list !== undefined ? { list: r.list } : {}), ...(r.signature !== undefined ? { signature: r.signature } : {}) }
    if (p.validators && r.store?.key === p.source && r.validators) {
      p.validators.startup = r.validators.list
      if (r.validators.signature) p.validators.startupSignature = r.validators.signature
    }
  })
  const lists = found.map((r) => r.value).filter((l) => l !== undefined)
  const tree = mergeServices(parsed, { maxEntries: config.main.maxEntries })
  const { buffer, count, droppedDevices } = buildTable(tree, { suid: config.main.suid, dev: config.main.dev })
  droppedDevices.forEach((n, i) => {
    if (n === 0) return
    services[i]!.droppedDevices = n
    log.warn(
      { id: services[i]!.id, droppedDevices: n },
      `service ${services[i]!.id}: ${n} device ${n === 1 ? 'entry' : 'entries'} (block or char) left out: main.dev is off, so flists cannot create device nodes (set main.dev = true to serve them)`,
    )
  })
  services.forEach((s, i) => {
    if (s.revision !== undefined) revisions.accept(s.id, s.revision, pairs[i]!.flist)
  })
  const locality = config.main.speculate ? buildLocality(tree) : undefined
  const chunkIndexes = new Map<string, string>()
  tree.forEachFile((md5, _size, id) => {
    const index = tree.chunksOf(id)
    if (index !== undefined) chunkIndexes.set(md5, index)
  })
  // Only blobs of the merged tree: a list names nothing else a node will fetch.
  const startup = config.main.startup ? startupSet(tree, lists) : undefined
  return { table: buffer, entries: count, services, pairs, prefix, chunkIndexes, ...(prefetch ? { prefetch } : {}), ...(locality ? { locality } : {}), ...(startup ? { startup } : {}) }
}

/**
 * Fills the local cache with every blob of the services marked `prefetch = true`, from the
 * flists {@link loadTree} verified (never a second, unchecked fetch).
 */
async function prefetchMarked(config: Config, blobs: Map<string, number> | undefined, meta: Pipeline, log: Logger): Promise<void> {
  const marked = config.ays.filter((a) => a.prefetch)
  if (marked.length === 0 || blobs === undefined) return
  log.info({ services: marked.map((a) => a.id), blobs: blobs.size }, 'prefetching before serving')
  const failures = (await Promise.allSettled([...blobs].map(([md5, size]) => meta.fetch(md5, size)))).filter((r) => r.status === 'rejected')
  if (failures.length > 0) {
    throw new AysfsError('EIO', `prefetch: ${failures.length} of ${blobs.size} blobs could not be fetched`)
  }
}

/**
 * Mounts every `[[ays]]` service of the config at the mountpoint and resolves once the tree is
 * visible there. Rejects with an {@link AysfsError}: `EINVAL` (with `key`, `file`, `line`) for
 * configuration mistakes and invalid flists, `ENOTDIR`/`ENOENT`/`EBUSY` for a bad mountpoint,
 * `EIO` when a flist can be had from no store and no kept copy.
 */
export async function mount(options: MountOptions): Promise<AysfsMount> {
  if (options === null || typeof options !== 'object') throw new TypeError('mount() takes an options object')
  const log: Logger = isLogger(options.log) ? options.log : createLogger(options.log)
  // The miss worker makes its own logger: the same level and, for one of ours, the same format.
  const logging: LogOptions | undefined = isLogger(options.log) ? { level: levelOf(options.log), format: formatOf(options.log) } : options.log
  // A relative config path is resolved once, here: a reload reads the same file whatever the
  // working directory has become.
  const configArg = typeof options.config === 'string' ? path.resolve(options.config) : options.config
  let config = readConfig(configArg)
  if (options.metrics !== undefined) parseListenAddress(options.metrics, 'metrics')
  const mountpoint = options.mountpoint ?? config.main.mount
  if (mountpoint === undefined) {
    throw new AysfsError('EINVAL', 'no mountpoint: pass one, or set main.mount in the config', { key: 'main.mount', file: config.file })
  }
  if (!path.isAbsolute(mountpoint)) {
    throw new AysfsError('EINVAL', `mountpoint must be an absolute path: ${mountpoint}`, { key: 'main.mount', file: config.file })
  }
  // Before any work: what the engine would refuse after the flists were fetched.
  checkMountpoint(mountpoint)
  const fetcherData = (c: Config, l: Pick<Loaded, 'locality' | 'startup'>): FetcherData => ({
    config: c,
    ...(logging ? { logging } : {}),
    ...(l.locality ? { locality: l.locality } : {}),
    ...(l.startup ? { startup: l.startup } : {}),
  })
  const flists: FlistCounts = { fetched: 0, kept: 0, refused: 0 }

  // The highest revision accepted per service, per cache directory (a reload may move it).
  const revisionStores = new Map<string, Revisions>()
  const revisionsFor = (c: Config): Revisions => {
    let r = revisionStores.get(c.main.cache)
    if (r === undefined) revisionStores.set(c.main.cache, (r = new Revisions({ cacheDir: c.main.cache, log })))
    return r
  }

  // What a refresh compares the stores with: the pairs in force and their validators, and the
  // flists stores offered that were refused as rollbacks.
  const pairs = new AcceptedPairs()

  // The main thread's own pipeline: flists at mount and reload, and prefetch.
  let meta = createFetcher({ config, log })
  let loaded: Loaded
  try {
    loaded = await loadTree(config, mountpoint, meta, log, flists, revisionsFor(config), { prefetch: true, pairs })
    await prefetchMarked(config, loaded.prefetch, meta, log)
    delete loaded.prefetch
  } catch (err) {
    await meta.close()
    throw err
  }

  let engine: Engine
  try {
    engine = await Engine.mount({
      mountpoint,
      cacheDir: config.main.cache,
      table: loaded.table,
      fetcher: { module: runtimeModule('pipeline/index'), data: fetcherData(config, loaded) },
      allowOther: options.allowOther ?? false,
      suid: config.main.suid,
      dev: config.main.dev,
      debug: options.debug ?? false,
      stallTimeoutMs: stallTimeoutMs(config.main.timeoutMs),
      chunkIndexes: loaded.chunkIndexes,
      ...(options.onMiss ? { onMiss: options.onMiss } : {}),
      onExit: () => {
        schedule.stop()
        void metricsServer?.close()
        void meta.close()
        options.onExit?.()
      },
    })
  } catch (err) {
    await meta.close()
    throw err
  }
  // The native side has its own copy of the table: give the flist's and the table's memory back
  // now (hundreds of MB for a million entries), not at V8's next full collection.
  if (loaded.table.length >= RELEASE_AFTER_BYTES) {
    loaded.table = Buffer.alloc(0)
    releaseMemory()
  }
  // The miss worker has its copies.
  delete loaded.locality
  delete loaded.startup

  const info: MountInfo = {
    prefix: loaded.prefix,
    ...(config.file ? { config: config.file } : {}),
    services: loaded.services,
    signed: config.main.trustedKeys.length > 0,
    mountedAt: new Date().toISOString(),
    flists,
    reloads: 0,
  }
  const recordPairs = (l: Loaded, stores: Pipeline): void => {
    for (const p of l.pairs) {
      const store = stores.stores().find((s) => s.key === p.source)
      const pair = { flist: p.flist, ...(p.signature !== undefined ? { signature: p.signature } : {}), ...(p.startup !== undefined ? { startup: p.startup } : {}) }
      pairs.applied(p.id, pair, store ? { store, ...(p.validators ? { validators: p.validators } : {}) } : undefined)
    }
  }
  recordPairs(loaded, meta)
  const refreshed = new Map<string, ServiceRefresh>()
  /** Service checks by refreshes, by result (metrics). */
  const refreshCounts: Partial<Record<RefreshResult, number>> = {}
  /** Sets the `mount` part of the status document from `info` and the refresh state. */
  const publishStatus = (): void => {
    info.services = info.services.map((s) => {
      const r = refreshed.get(s.id)
      return r ? { ...s, refresh: r } : s
    })
    const rollbacks = revisionsFor(config).refusals()
    if (rollbacks.length > 0) info.rollbacks = rollbacks
    else delete info.rollbacks
    engine.setStatus('mount', info)
  }
  if (config.main.refreshMs) info.refresh = { intervalMs: config.main.refreshMs, checks: 0 }
  publishStatus()
  log.info({ mountpoint, entries: loaded.entries, services: loaded.services.map((s) => s.id) }, 'mounted')

  // Reloads and refreshes run one at a time, in the order asked.
  let queue: Promise<unknown> | undefined
  const enqueue = <T>(task: () => Promise<T>): Promise<T> => {
    const run = (queue ?? Promise.resolve()).catch(() => undefined).then(task)
    queue = run
    return run
  }

  const refreshOnce = async (): Promise<({ id: string } & ServiceRefresh)[]> => {
    if (!engine.mounted) return []
    const c = config
    const revisions = revisionsFor(c)
    const signed = c.main.trustedKeys.length > 0
    const outcomes = new Map<string, CheckOutcome>()
    for (const a of c.ays) {
      // A store that still offers a flist refused as a rollback: refused again, without a download.
      const offers = refusedOffers(pairs, a.id, revisions)
      const again = (store: Source, offer: RefusedOffer) => offers.again(store, offer)?.message
      outcomes.set(a.id, await checkService(meta.stores(), a.id, signed, pairs, c.main.maxFlistSize, again))
    }
    const changed = c.ays.map((a) => a.id).filter((id) => outcomes.get(id)!.result === 'changed')
    let event: RefreshEvent | undefined
    const results = new Map<string, Omit<ServiceRefresh, 'checkedAt'>>()
    for (const [id, o] of outcomes) {
      if (o.result !== 'changed') results.set(id, o.error !== undefined ? { result: o.result, error: o.error } : { result: o.result })
    }
    if (changed.length > 0) {
      const before = new Map(c.ays.map((a) => [a.id, pairs.get(a.id)]))
      const revisionBefore = new Map(info.services.map((s) => [s.id, s.revision]))
      const refusedBefore = revisions.refusalEvents
      try {
        const fresh = await loadTree(c, mountpoint, meta, log, flists, revisions, { pairs })
        const differs = fresh.pairs.filter((p) => before.get(p.id)?.flist !== p.flist || before.get(p.id)?.signature !== p.signature).map((p) => p.id)
        let invalidated = 0
        // New revisions of the same bytes change no entry: the table stays.
        if (fresh.pairs.some((p) => before.get(p.id)?.flist !== p.flist)) {
          invalidated = engine.swap(fresh.table).invalidatedEntries
          // Speculation guesses from the tree in force.
          if (fresh.locality) engine.setLocality(fresh.locality)
          engine.setChunkIndexes(fresh.chunkIndexes)
        }
        // A new flist or revision: its start-up list (the same, mostly: what is cached is skipped).
        if (fresh.startup) engine.setStartup(fresh.startup)
        recordPairs(fresh, meta)
        info.services = fresh.services
        info.prefix = fresh.prefix
        for (const id of changed) results.set(id, { result: differs.includes(id) ? 'applied' : 'unchanged' })
        // The same pair with another start-up list: the list goes to the miss worker (above).
        const lists = fresh.pairs.filter((p) => !differs.includes(p.id) && p.startup !== undefined && (before.get(p.id)?.startup?.list !== p.startup.list || before.get(p.id)?.startup?.signature !== p.startup.signature)).map((p) => p.id)
        if (lists.length > 0) log.info({ mountpoint, services: lists, startup: fresh.startup ? { listed: fresh.startup.listed, dropped: fresh.startup.dropped } : undefined }, 'refreshed: new start-up lists')
        if (differs.length > 0) {
          const revised = fresh.services.filter((s) => differs.includes(s.id))
          event = {
            type: 'applied',
            at: new Date().toISOString(),
            services: revised.map((s) => {
              const previous = revisionBefore.get(s.id)
              return { id: s.id, ...(s.revision !== undefined ? { revision: s.revision } : {}), ...(previous !== undefined ? { previous } : {}) }
            }),
          }
          log.info({ mountpoint, entries: fresh.entries, invalidated, services: event.services }, 'refreshed: new flists applied')
        }
      } catch (err) {
        const refused = revisions.refusalEvents > refusedBefore
        const error = (err as Error).message
        for (const id of changed) results.set(id, { result: refused ? 'refused' : 'failed', error })
        event = { type: refused ? 'refused' : 'failed', at: new Date().toISOString(), services: changed.map((id) => ({ id })), error }
        // A refusal was logged once per pair where it was made; a failure is logged each time.
        if (!refused) log.error({ err: error }, 'refresh failed; the tree stays')
      }
    }
    const at = new Date().toISOString()
    for (const [id, r] of results) {
      refreshed.set(id, { checkedAt: at, ...r })
      refreshCounts[r.result] = (refreshCounts[r.result] ?? 0) + 1
    }
    info.refresh = { intervalMs: c.main.refreshMs ?? 0, checks: (info.refresh?.checks ?? 0) + 1, lastAt: at }
    publishStatus()
    if (event) {
      try {
        options.onRefresh?.(event)
      } catch (err) {
        log.error({ err: (err as Error).message }, 'onRefresh threw')
      }
    }
    return c.ays.map((a) => ({ id: a.id, ...refreshed.get(a.id)! }))
  }
  const schedule = new RefreshSchedule(config.main.refreshMs ?? 0, () => enqueue(refreshOnce))
  schedule.start()

  // Metrics: the registry is made at the first scrape (or now, for a listener).
  let registry: import('prom-client').Registry | undefined
  const metricsRegistry = async (): Promise<import('prom-client').Registry> => {
    if (registry) return registry
    const { createRegistry } = await import('./metrics')
    registry = createRegistry({
      mountpoint,
      meta: engineStatMeta(),
      engine: () => engine.stats(),
      missLatency: () => engine.missLatency(),
      pipeline: () => (engine.mounted ? (engine.status().pipeline as FetcherStats | undefined) : undefined),
      services: () => info.services,
      refreshes: () => refreshCounts,
      rollbacksRefused: () => [...revisionStores.values()].reduce((n, r) => n + r.refusedCount, 0),
    })
    return registry
  }
  let metricsServer: MetricsServer | undefined
  const metricsAddr = options.metrics ?? config.main.metrics
  if (metricsAddr !== undefined) {
    try {
      const { serveMetrics } = await import('./metrics')
      metricsServer = await serveMetrics(metricsAddr, await metricsRegistry())
      log.info({ mountpoint, metrics: `http://${metricsServer.address}/metrics` }, 'serving metrics')
    } catch (err) {
      schedule.stop()
      await engine.unmount()
      await meta.close()
      throw err
    }
  }

  const reload = async (): Promise<ReloadResult> => {
    let next: Config | undefined
    let nextMeta: Pipeline | undefined
    try {
      next = typeof configArg === 'string' ? readConfig(configArg) : config
      if (next.main.cache !== config.main.cache) {
        throw new AysfsError(
          'EINVAL',
          `main.cache changed from ${config.main.cache} to ${next.main.cache}: the local cache cannot change under a live mount; the mount keeps ${config.main.cache} (unmount and mount again to use the new one)`,
          { key: 'main.cache', ...(next.file !== undefined ? { file: next.file } : {}) },
        )
      }
      nextMeta = next === config ? meta : createFetcher({ config: next, log })
      const fresh = await loadTree(next, mountpoint, nextMeta, log, flists, revisionsFor(next), { pairs })
      engine.setChunkIndexes(fresh.chunkIndexes)
      const swapped = engine.swap(fresh.table)
      if (JSON.stringify(next) !== JSON.stringify(config)) await engine.reconfigure(fetcherData(next, fresh), next.main.timeoutMs * 3)
      else {
        // Speculation guesses from the tree, and the start-up set comes with it: the running
        // fetcher gets the new ones.
        if (fresh.locality) engine.setLocality(fresh.locality)
        if (fresh.startup) engine.setStartup(fresh.startup)
      }
      if (nextMeta !== meta) {
        // New sources: what a refresh knew of the old ones (keyed by store URL) goes with them.
        void meta.close()
        meta = nextMeta
        pairs.clear()
      }
      recordPairs(fresh, nextMeta)
      if ((next.main.refreshMs ?? 0) !== schedule.interval) schedule.start(next.main.refreshMs ?? 0)
      config = next
      info.services = fresh.services
      info.prefix = fresh.prefix
      info.signed = next.main.trustedKeys.length > 0
      info.reloads++
      info.lastReload = { at: new Date().toISOString(), ok: true }
      publishStatus()
      log.info({ mountpoint, entries: fresh.entries, invalidated: swapped.invalidatedEntries }, 'reloaded')
      return { entries: fresh.entries, invalidated: swapped.invalidatedEntries, services: fresh.services }
    } catch (err) {
      // A bad config is reported like a bad flist: logged, recorded in status, old tree kept.
      if (nextMeta && nextMeta !== meta) void nextMeta.close()
      info.lastReload = { at: new Date().toISOString(), ok: false, error: (err as Error).message }
      publishStatus()
      log.error({ err: (err as Error).message }, 'reload failed; the old tree stays')
      throw err
    }
  }

  return {
    mountpoint,
    get config() {
      return config
    },
    get mounted() {
      return engine.mounted
    },
    stats: () => engine.status() as unknown as MountStats,
    // One reload or refresh at a time; a call while one runs waits for it and starts another.
    reload: () => enqueue(reload),
    refresh: () => enqueue(refreshOnce),
    metrics: async () => {
      if (!engine.mounted) throw new AysfsError('ENOTCONN', `${mountpoint} is not mounted`)
      const { scrape } = await import('./metrics')
      return scrape(await metricsRegistry())
    },
    ...(metricsServer ? { metricsAddress: metricsServer.address } : {}),
    unmount: async () => {
      schedule.stop()
      await metricsServer?.close()
      await engine.unmount()
      await meta.close()
      log.info({ mountpoint }, 'unmounted')
    },
  }
}
