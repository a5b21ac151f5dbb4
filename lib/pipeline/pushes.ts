/**
 * Pushes to grid caches: a blob that had to come from a store (or from a later grid cache) is
 * copied, after its fetch resolved, to each writable grid cache that missed it. A push is an
 * optimisation: it never delays a read, a full queue drops it, and failures are counted and
 * logged (once per kind), never thrown.
 */
import { sourceBlobRel, type Source } from '../sources/source'
import { asFault, type SourceCounters } from './source-stats'

/** Pushes waiting beyond this are dropped (and counted). */
const PUSH_QUEUE_MAX = 10_000

interface PushJob {
  target: Source
  md5: string
  size: number
  /** The blob in the local cache. */
  file: string
}

/** The push queue of one pipeline: at most `concurrency` pushes at once, the rest in order. */
export class PushQueue {
  /** Pushes dropped: the queue was full, or closed. */
  dropped = 0
  private readonly queue: PushJob[] = []
  private active = 0
  private pumpScheduled = false
  private idleWaiters: (() => void)[] = []
  private closed = false

  constructor(
    private readonly concurrency: number,
    private readonly counters: SourceCounters,
  ) {}

  /** Pushes running and waiting, for `status`. */
  stats(): { active: number; queued: number; dropped: number } {
    return { active: this.active, queued: this.queue.length, dropped: this.dropped }
  }

  /** Queue a copy of the cached blob `file` to each of `targets`. */
  add(targets: Source[], md5: string, size: number, file: string): void {
    for (const target of targets) {
      if (this.closed || this.queue.length >= PUSH_QUEUE_MAX) {
        this.dropped++
        continue
      }
      this.queue.push({ target, md5, size, file })
    }
    // Later, never inline: a directory push copies synchronously, and the fetch that caused it
    // must resolve first.
    if (this.queue.length > 0 && !this.pumpScheduled) {
      this.pumpScheduled = true
      setImmediate(() => {
        this.pumpScheduled = false
        this.pump()
      })
    }
  }

  /** Resolves once no push is queued or running (a CLI waits for this before it exits). */
  drain(): Promise<void> {
    if (this.active === 0 && this.queue.length === 0 && !this.pumpScheduled) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  /** Drops what is queued (counted) and refuses what comes; resolves once the running pushes
   * ended, or after `ms`. */
  async close(ms: number): Promise<void> {
    this.closed = true
    this.dropped += this.queue.length
    this.queue.length = 0
    if (this.active === 0) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([this.drain(), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))])
    clearTimeout(timer)
  }

  private pump(): void {
    while (this.active < this.concurrency && this.queue.length > 0) {
      const job = this.queue.shift()!
      this.active++
      void this.run(job).finally(() => {
        this.active--
        this.pump()
      })
    }
    if (this.active === 0 && this.queue.length === 0) {
      const waiters = this.idleWaiters
      this.idleWaiters = []
      for (const w of waiters) w()
    }
  }

  private async run(job: PushJob): Promise<void> {
    try {
      await job.target.put(sourceBlobRel(job.target.role, job.md5), job.file, job.size)
      this.counters.pushed(job.target, job.md5, job.size)
    } catch (err) {
      this.counters.pushFailed(job.target, asFault(err, 'push'))
    }
  }
}
