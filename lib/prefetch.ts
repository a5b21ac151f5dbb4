/**
 * `aysfs-native prefetch [--ays ID]`: fill the local cache with every blob of the services ahead
 * of time (before a node goes offline, or to take the first-read latency out of a deploy), through
 * the same pipeline a mount uses: grid caches before stores, checked content only, pushes to grid
 * caches that missed. Safe next to a running mount of the same cache: blobs are renamed in whole.
 */
import { AysfsError } from './errors'
import type { Config } from './config'
import { parseFlist } from './flist'
import type { Logger } from './log'
import { createFetcher } from './pipeline'
import { prefixWarning } from './prefix-warning'
import { createProgress } from './progress'
import { Revisions } from './revisions'
import { loadTrustedKeys, verifyThenParse } from './sign'
import { forEachLimit } from './publish'

/** Options of {@link prefetch}. */
export interface PrefetchOptions {
  config: Config
  /** Only these services (ids of `[[ays]]`); default all. */
  ays?: string[]
  /**
   * Only flist paths under this prefix count (what the mount exposes). Default `main.prefix`,
   * else `main.mount`, else everything.
   */
  prefix?: string
  log: Logger
  /** Progress display; default a bar on a TTY, lines otherwise. False: none. */
  progress?: boolean | { tty?: boolean; every?: number }
}

/** What {@link prefetch} did. */
export interface PrefetchResult {
  services: string[]
  /** Distinct blobs of the services (zero-size ones excluded: they need no source). */
  blobs: number
  bytes: number
  /** Already in the local cache. */
  cached: number
  /** Fetched now, and their bytes. */
  fetched: number
  fetchedBytes: number
  /** Blobs no source could serve; the first few messages. */
  failed: number
  errors: string[]
  /** Services most of whose lines (or all) are outside the prefix, so not prefetched: what to fix. */
  warnings: string[]
}

/**
 * Fetches every blob of the chosen services into `main.cache`. Resolves with what it did even when
 * some blobs failed (`failed` > 0); rejects for an unknown `--ays` id (`EUSAGE`) or an flist no
 * store (and no kept copy) gives.
 */
export async function prefetch(opts: PrefetchOptions): Promise<PrefetchResult> {
  const { config, log } = opts
  const known = new Set(config.ays.map((a) => a.id))
  for (const id of opts.ays ?? []) {
    if (!known.has(id)) {
      throw new AysfsError('EUSAGE', `--ays ${id}: no [[ays]] with that id in ${config.file ?? 'the config'} (it has ${[...known].join(', ')})`, { key: 'ays' })
    }
  }
  const ids = opts.ays && opts.ays.length > 0 ? config.ays.map((a) => a.id).filter((id) => opts.ays!.includes(id)) : config.ays.map((a) => a.id)
  const prefix = opts.prefix ?? config.main.prefix ?? config.main.mount ?? '/'
  // With trusted_keys, only verified flists are used (and kept in <cache>/md/, replacing the copy
  // a mount would remount from): the same check as mount().
  const keys = loadTrustedKeys(config.main.trustedKeys)
  // Never an older signed revision than a mount of this cache accepted: it would replace the
  // kept copy a mount falls back on (lib/revisions.ts).
  const revisions = new Revisions({ cacheDir: config.main.cache, log })
  const pipeline = createFetcher({ config, log })
  try {
    const blobs = new Map<string, number>()
    const warnings: string[] = []
    // Files stored as chunks too: file MD5 -> chunk index MD5.
    const chunked = new Map<string, string>()
    for (const id of ids) {
      const { value, source } = await pipeline.fetchFlist(
        id,
        verifyThenParse(
          keys,
          id,
          (data) => parseFlist(data, { name: id, prefix, file: `${id}.flist`, maxEntries: config.main.maxEntries, maxSize: config.main.maxFlistSize }),
          (verified, data, source) => revisions.check(id, verified.revision, data, source),
        ),
        { signature: keys.length > 0 },
      )
      log.info({ id, source, entries: value.entries }, `flist ${id} from ${source}`)
      const warning = prefixWarning(value)
      if (warning !== undefined) warnings.push(warning)
      value.tree.forEachFile((md5, size, entry) => {
        if (size > 0) blobs.set(md5, size)
        const index = value.tree.chunksOf(entry)
        if (index !== undefined) chunked.set(md5, index)
      })
    }
    let bytes = 0
    const todo: Array<[string, number]> = []
    for (const [md5, size] of blobs) {
      bytes += size
      if (!pipeline.has(md5, size)) todo.push([md5, size])
    }
    const todoBytes = todo.reduce((n, [, s]) => n + s, 0)
    const show = opts.progress !== false && todo.length > 0
    const bar = show ? createProgress({ label: 'prefetch', files: todo.length, bytes: todoBytes, ...(typeof opts.progress === 'object' ? opts.progress : {}) }) : undefined
    let fetched = 0
    let fetchedBytes = 0
    const errors: string[] = []
    let failed = 0
    try {
      // The pipeline queues beyond max_downloads itself; twice that in flight keeps it busy
      // without a promise per blob of a million-file service.
      await forEachLimit(todo, config.main.maxDownloads * 2, async ([md5, size]) => {
        try {
          await pipeline.fetch(md5, size).catch(async (err: unknown) => {
            // A chunked file whose whole blob no source has (a store published --no-whole):
            // all of its chunks, which is how a mount will read it.
            const index = chunked.get(md5)
            if (index === undefined || (await pipeline.fetchRange(md5, size, index, 0, size)) === undefined) throw err
          })
          fetched++
          fetchedBytes += size
        } catch (err) {
          failed++
          if (errors.length < 5) errors.push(`${md5}: ${(err as Error).message}`)
        }
        bar?.add(1, size)
      })
    } finally {
      bar?.stop()
    }
    // Pushes to grid caches of what came from stores: let them land before exiting.
    await pipeline.drain()
    return { services: ids, blobs: blobs.size, bytes, cached: blobs.size - todo.length, fetched, fetchedBytes, failed, errors, warnings }
  } finally {
    await pipeline.close()
  }
}
