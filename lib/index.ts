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
import { checkConfig, loadConfig, type Config } from './config'
import { Engine, releaseMemory } from './engine'
import { AysfsError } from './errors'
import { mergeServices, parseFlist, type ParsedFlist } from './flist'
import { createLogger, isLogger, levelOf, type Logger, type LogOptions } from './log'
import { runtimeModule } from './package-root'
import { createFetcher, type FetcherData, type FetcherStats, type Pipeline } from './pipeline'
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

/** Options of {@link mount}. */
export interface MountOptions {
  /**
   * An absolute path of an existing directory. Default: `main.mount` of the config. Flist paths
   * under the prefix (`main.prefix`, default this path) are exposed with the prefix stripped.
   */
  mountpoint?: string
  /**
   * The configuration: a TOML file's path, or an object of the file's shape
   * (`{ main: {...}, ays: [...], cache: [...], store: [...] }`), checked the same way.
   */
  config: string | Record<string, unknown>
  /** Let users other than the mounting one see the tree (`allow_other`; needs
   * `user_allow_other` in /etc/fuse.conf for non-root). Default false. */
  allowOther?: boolean
  /** How to log (stderr), or a logger to log to (a pino logger is one). Default: `info`, text. */
  log?: LogOptions | Logger
  /** libfuse's own debug output on stderr. */
  debug?: boolean
  /** Called when the mount goes away from outside (someone ran `umount`). */
  onExit?: () => void
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
  reloads: number
  lastReload?: { at: string; ok: boolean; error?: string }
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
  /** Unmounts; returns within about a second even with files held open. */
  unmount(): Promise<void>
}

function readConfig(config: MountOptions['config']): Config {
  if (typeof config === 'string') return loadConfig(path.resolve(config))
  if (config === null || typeof config !== 'object') {
    throw new TypeError('config must be a file path or an object of the config file\'s shape')
  }
  return checkConfig(config)
}

interface Loaded {
  table: Buffer
  entries: number
  services: ServiceInfo[]
  prefix: string
  /** Files stored as chunks too: file MD5 -> chunk index MD5. */
  chunkIndexes: Map<string, string>
  /** Blobs of the services marked `prefetch`, when asked for. */
  prefetch?: Map<string, number>
}

/**
 * Fetches, checks and merges the flists of every service: all or nothing. With
 * `main.trusted_keys`, each flist's signature is checked before a byte of it is parsed, on the
 * copy from a store and on the copy kept in `<cache>/md/` alike; the key files are read again
 * on every call, so a reload picks up a rotation.
 */
async function loadTree(config: Config, mountpoint: string, meta: Pipeline, log: Logger, opts: { prefetch?: boolean } = {}): Promise<Loaded> {
  const prefix = config.main.prefix ?? mountpoint
  const keys = loadTrustedKeys(config.main.trustedKeys)
  const parsed: ParsedFlist[] = []
  const services: ServiceInfo[] = []
  const prefetch = opts.prefetch ? new Map<string, number>() : undefined
  for (const ays of config.ays) {
    let signer: string | undefined
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
        (keyId) => (signer = keyId),
      ),
      { signature: keys.length > 0 },
    )
    parsed.push(result.value)
    services.push({
      id: ays.id,
      source: result.source,
      entries: result.value.entries,
      ignored: result.value.ignored,
      droppedDevices: 0,
      ...(signer !== undefined ? { key: signer } : {}),
    })
    if (prefetch && ays.prefetch) result.value.tree.forEachFile((md5, size) => prefetch.set(md5, size))
  }
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
  const chunkIndexes = new Map<string, string>()
  tree.forEachFile((md5, _size, id) => {
    const index = tree.chunksOf(id)
    if (index !== undefined) chunkIndexes.set(md5, index)
  })
  return { table: buffer, entries: count, services, prefix, chunkIndexes, ...(prefetch ? { prefetch } : {}) }
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
  const logging: LogOptions | undefined = isLogger(options.log) ? { level: levelOf(options.log) } : options.log
  let config = readConfig(options.config)
  const mountpoint = options.mountpoint ?? config.main.mount
  if (mountpoint === undefined) {
    throw new AysfsError('EINVAL', 'no mountpoint: pass one, or set main.mount in the config', { key: 'main.mount', file: config.file })
  }
  if (!path.isAbsolute(mountpoint)) {
    throw new AysfsError('EINVAL', `mountpoint must be an absolute path: ${mountpoint}`, { key: 'main.mount', file: config.file })
  }
  const fetcherData = (c: Config): FetcherData => ({ config: c, ...(logging ? { logging } : {}) })

  // The main thread's own pipeline: flists at mount and reload, and prefetch.
  let meta = createFetcher({ config, log })
  let loaded: Loaded
  try {
    loaded = await loadTree(config, mountpoint, meta, log, { prefetch: true })
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
      fetcher: { module: runtimeModule('pipeline/index'), data: fetcherData(config) },
      allowOther: options.allowOther ?? false,
      suid: config.main.suid,
      dev: config.main.dev,
      debug: options.debug ?? false,
      stallTimeoutMs: stallTimeoutMs(config.main.timeoutMs),
      chunkIndexes: loaded.chunkIndexes,
      onExit: () => {
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

  const info: MountInfo = {
    prefix: loaded.prefix,
    ...(config.file ? { config: config.file } : {}),
    services: loaded.services,
    signed: config.main.trustedKeys.length > 0,
    mountedAt: new Date().toISOString(),
    reloads: 0,
  }
  engine.setStatus('mount', info)
  log.info({ mountpoint, entries: loaded.entries, services: loaded.services.map((s) => s.id) }, 'mounted')

  let reloading: Promise<ReloadResult> | undefined
  const reload = async (): Promise<ReloadResult> => {
    let next: Config | undefined
    let nextMeta: Pipeline | undefined
    try {
      next = typeof options.config === 'string' ? readConfig(options.config) : config
      nextMeta = next === config ? meta : createFetcher({ config: next, log })
      const fresh = await loadTree(next, mountpoint, nextMeta, log)
      engine.setChunkIndexes(fresh.chunkIndexes)
      const swapped = engine.swap(fresh.table)
      if (JSON.stringify(next) !== JSON.stringify(config)) await engine.reconfigure(fetcherData(next), next.main.timeoutMs * 3)
      if (nextMeta !== meta) {
        void meta.close()
        meta = nextMeta
      }
      config = next
      info.services = fresh.services
      info.prefix = fresh.prefix
      info.signed = next.main.trustedKeys.length > 0
      info.reloads++
      info.lastReload = { at: new Date().toISOString(), ok: true }
      engine.setStatus('mount', info)
      log.info({ mountpoint, entries: fresh.entries, invalidated: swapped.invalidatedEntries }, 'reloaded')
      return { entries: fresh.entries, invalidated: swapped.invalidatedEntries, services: fresh.services }
    } catch (err) {
      // A bad config is reported like a bad flist: logged, recorded in status, old tree kept.
      if (nextMeta && nextMeta !== meta) void nextMeta.close()
      info.lastReload = { at: new Date().toISOString(), ok: false, error: (err as Error).message }
      engine.setStatus('mount', info)
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
    reload: () => {
      // One reload at a time; a second call while one runs waits for it and starts another.
      const run = (reloading ?? Promise.resolve()).catch(() => undefined).then(reload)
      reloading = run
      return run
    },
    unmount: async () => {
      await engine.unmount()
      await meta.close()
      log.info({ mountpoint }, 'unmounted')
    },
  }
}
