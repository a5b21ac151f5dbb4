/**
 * Source health: a grid cache or store that fails the way a dead or unwell server does (refused
 * or reset connections, silence past the speed floor, 5xx, TLS failures) is *backed off*: skipped
 * by misses for a while, exponentially longer with each consecutive failure (1 s, 2 s, 4 s, ... up
 * to a minute) with jitter (each delay drawn from its upper half, so a fleet of nodes does not
 * come back in step). When the delay has run out, one miss probes the source; misses arriving
 * meanwhile wait for that probe (at most one source timeout: a probe that is a long download at a
 * fine speed must not hold them up) rather than pile onto a server that may still be dead. Any
 * answer (content, 404, even wrong content) means the server is up, and clears the backoff.
 *
 * Without this, a storm of misses against a silent server would each wait the full timeout, and
 * a dead store in front of a good one would cost every miss a connection attempt. With it, and
 * every source down, uncached reads fail with EIO at once instead of after `timeout` per source.
 */

/** First backoff, ms. */
const BACKOFF_BASE_MS = 1000
/** Longest backoff, ms: a minute. */
const BACKOFF_MAX_MS = 60_000

/**
 * Whether a fault (a `SourceFault` kind) says the source is unwell, rather than that it holds
 * bad content for one blob or refuses this one request.
 */
export function isHealthFault(kind: string): boolean {
  if (/^(timeout|truncated|redirects|bad-redirect|token)$/.test(kind)) return true
  if (/^(net|tls|io):/.test(kind)) return true
  const http = /^http-(\d+)$/.exec(kind)
  if (http) {
    const status = Number(http[1])
    return status >= 500 || status === 408 || status === 429
  }
  return false
}

/** What {@link SourceHealth.admit} allows: a try, the probe after a backoff, or nothing. */
export type Admission = 'try' | 'probe' | false

/** The backoff of one source, for `status`. */
export interface HealthState {
  /** Consecutive failures (0: healthy). */
  failures: number
  /** When the source may be tried again (ISO time), while backed off. */
  retryAt?: string
  /** Misses that skipped this source while it was backed off. */
  skipped: number
}

interface State {
  failures: number
  until: number
  skipped: number
  /** Set while one miss probes the source after a backoff; others wait on it. */
  probe?: { done: Promise<void>; resolve: () => void }
}

export interface HealthOptions {
  baseMs?: number
  maxMs?: number
  /** Uniform in [0, 1); default Math.random. */
  random?: () => number
  now?: () => number
  /** Called when a source goes down (first failure) and when it answers again. */
  onChange?: (key: string, up: boolean, failures: number, delayMs: number) => void
}

/** The health of every source of one pipeline, by key (`store[0]`). */
export class SourceHealth {
  private readonly states = new Map<string, State>()
  private readonly baseMs: number
  private readonly maxMs: number
  private readonly random: () => number
  private readonly now: () => number
  private readonly onChange?: HealthOptions['onChange']

  constructor(opts: HealthOptions = {}) {
    this.baseMs = opts.baseMs ?? BACKOFF_BASE_MS
    this.maxMs = opts.maxMs ?? BACKOFF_MAX_MS
    this.random = opts.random ?? Math.random
    this.now = opts.now ?? Date.now
    this.onChange = opts.onChange
  }

  private get(key: string): State {
    let s = this.states.get(key)
    if (!s) {
      s = { failures: 0, until: 0, skipped: 0 }
      this.states.set(key, s)
    }
    return s
  }

  /**
   * May a miss try this source now? `'try'` when it is healthy, `'probe'` when its backoff has
   * run out and this caller is the one to find out, false while it is backed off. While another
   * miss probes, waits for that probe's outcome, at most `waitMs`, and decides again (after
   * `waitMs` it tries too: the probe may just be a long download). Every answer but false must be
   * followed by exactly one {@link settle} with it.
   */
  /** What {@link admit} would answer at once for a healthy source (`'try'`), without a promise;
   * undefined when the source is failing (ask {@link admit}). */
  admitNow(key: string): Admission | undefined {
    return this.get(key).failures === 0 ? 'try' : undefined
  }

  async admit(key: string, waitMs = Infinity): Promise<Admission> {
    const s = this.get(key)
    const deadline = this.now() + waitMs
    for (;;) {
      if (s.failures === 0) return 'try'
      if (s.probe) {
        const left = deadline - this.now()
        if (left <= 0) return 'try'
        let timer: NodeJS.Timeout | undefined
        await Promise.race([s.probe.done, new Promise<void>((resolve) => (timer = setTimeout(resolve, left)))])
        clearTimeout(timer)
        continue
      }
      if (this.now() < s.until) {
        s.skipped++
        return false
      }
      let resolve!: () => void
      const done = new Promise<void>((r) => (resolve = r))
      s.probe = { done, resolve }
      return 'probe'
    }
  }

  /**
   * The outcome of a try {@link admit} allowed: `true` the source answered (whatever it said),
   * `false` it failed as an unwell source does, `undefined` no verdict (the try ended for a
   * reason of ours, such as a full local disk).
   */
  settle(key: string, healthy: boolean | undefined, admission: Admission = 'try'): void {
    const s = this.get(key)
    const probe = admission === 'probe' ? s.probe : undefined
    if (probe) s.probe = undefined
    if (healthy === true) {
      if (s.failures > 0) this.onChange?.(key, true, s.failures, 0)
      s.failures = 0
      s.until = 0
    } else if (healthy === false) {
      // Tries that were already running when the source went down fail together: one failure
      // of one outage, not one each (16 concurrent timeouts must not jump to the longest delay).
      if (!probe && s.failures > 0 && this.now() < s.until) return
      s.failures++
      const delay = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(s.failures - 1, 30))
      const jittered = Math.round(delay / 2 + (this.random() * delay) / 2)
      // Concurrent failures of one outage extend the backoff, never shorten it.
      s.until = Math.max(s.until, this.now() + jittered)
      if (s.failures === 1) this.onChange?.(key, false, s.failures, jittered)
    }
    probe?.resolve()
  }

  /** Whether the source is backed off right now. */
  down(key: string): boolean {
    const s = this.states.get(key)
    return !!s && s.failures > 0 && this.now() < s.until
  }

  state(key: string): HealthState {
    const s = this.get(key)
    const out: HealthState = { failures: s.failures, skipped: s.skipped }
    if (s.failures > 0 && s.until > this.now()) out.retryAt = new Date(s.until).toISOString()
    return out
  }
}
