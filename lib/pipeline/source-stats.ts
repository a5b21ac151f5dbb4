/**
 * The counters of each source of a pipeline (hits, misses, bytes, failures by kind, pushes), and
 * the rule for logging a source's failures: the first of each kind as a warning, the rest at debug
 * level (a dead store must not flood the log with one line per miss).
 */
import type { SourceHealth, HealthState } from '../health'
import type { Logger } from '../log'
import { SourceFault, type Source, type SourceRole } from '../sources/source'

/** Counters of one source (a grid cache or a store). */
export interface SourceStats {
  /** `cache[0]`, `store[1]`: the config key. */
  key: string
  role: SourceRole
  /** The URL without credentials or query. */
  url: string
  /** Blobs this source served (verified). */
  hits: number
  /** Blobs it did not have (404 / no such file), plain and `.bro` both. */
  misses: number
  /** Failures: anything but a hit or a miss (timeouts, HTTP errors, wrong content, ...). */
  errors: number
  /** Failures by kind (`timeout`, `http-500`, `md5`, `net:ECONNREFUSED`, ...). */
  errorKinds: Record<string, number>
  /** The last failure's message. */
  lastError?: string
  /** Bytes of verified content this source served. */
  bytes: number
  /** Blobs pushed to this grid cache. */
  pushes: number
  /** Pushes to it that failed. */
  pushErrors: number
  /** Its backoff: consecutive failures, when it is tried again, misses that skipped it. */
  backoff: HealthState
}

/** Any error as a source fault (`internal` when it is not one). */
export function asFault(err: unknown, kind = 'internal'): SourceFault {
  return err instanceof SourceFault ? err : new SourceFault(kind, (err as Error).message, err)
}

/** The counters of every source of one pipeline. */
export class SourceCounters {
  private readonly bySource = new Map<Source, SourceStats>()
  /** `<key>\0<kind>` of the failures already logged as warnings. */
  private readonly logged = new Set<string>()

  constructor(
    private readonly sources: readonly Source[],
    private readonly health: SourceHealth,
    private readonly log: Logger,
  ) {
    for (const s of sources) {
      this.bySource.set(s, { key: s.key, role: s.role, url: s.url, hits: 0, misses: 0, errors: 0, errorKinds: {}, bytes: 0, pushes: 0, pushErrors: 0, backoff: { failures: 0, skipped: 0 } })
    }
  }

  /** The live counters of `src`. */
  of(src: Source): SourceStats {
    return this.bySource.get(src)!
  }

  /** A failure of `src` (a blob or flist fetch): counted, logged the first time it fails this way. */
  fault(src: Source, fault: SourceFault): void {
    this.count(src, fault.kind, fault.message)
    this.logOnce(src, fault.kind, fault.message, `(further "${fault.kind}" failures of this source are counted, not logged)`)
  }

  /** A push to `target` went through: counted, and logged at debug. */
  pushed(target: Source, md5: string, size: number): void {
    this.of(target).pushes++
    this.log.debug({ md5, size, source: target.key, url: target.url }, `blob ${md5}: pushed to ${target.key} (${target.url})`)
  }

  /** A push to `target` failed: counted, logged the first time it fails this way. */
  pushFailed(target: Source, fault: SourceFault): void {
    this.of(target).pushErrors++
    this.logOnce(target, `push:${fault.kind}`, `push failed: ${fault.message}`, '(further failures of this kind are counted, not logged)')
  }

  /** `store` gave a flist its signature does not vouch for: counted. The fetch of the flist says
   * it (lib/pipeline/flists.ts): the error it rejects with, or a warning when another store's copy
   * was trusted. */
  untrusted(store: Source, err: Error): void {
    this.count(store, 'untrusted', err.message)
  }

  /** Every source's counters, grid caches then stores, as plain JSON. */
  stats(): SourceStats[] {
    return this.sources.map((s) => {
      const st = this.of(s)
      return { ...st, errorKinds: { ...st.errorKinds }, backoff: this.health.state(s.key) }
    })
  }

  private count(src: Source, kind: string, message: string): void {
    const st = this.of(src)
    st.errors++
    st.errorKinds[kind] = (st.errorKinds[kind] ?? 0) + 1
    st.lastError = message
  }

  private logOnce(src: Source, kind: string, message: string, further: string): void {
    const once = `${src.key}\0${kind}`
    const fields = { source: src.key, url: src.url, kind }
    if (this.logged.has(once)) {
      this.log.debug(fields, `${src.key}: ${message}`)
    } else {
      this.logged.add(once)
      this.log.warn(fields, `${src.key} (${src.url}): ${message} ${further}`)
    }
  }
}
