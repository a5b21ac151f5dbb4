// The engine's miss worker: loads a fetcher module and answers the native side's misses. It
// runs apart from the main thread and never uses libuv's threadpool (docs/design.md), so a
// thread of this process that is blocked reading the mount cannot stall it.
import { parentPort, workerData } from 'node:worker_threads'
import { Cancel } from './cancel'
import { missWorkerBinding } from './engine'
import type { Fetcher, FetcherModule, FetchOptions } from './fetcher'

/** A fetch this worker runs for the native side. */
interface Running {
  readonly md5: string
  /** Aborts the fetch (and `ac`, made only if the fetcher reads `signal`). */
  readonly cancel: Cancel
  ac?: AbortController
  /** The fetch made progress since the last report. */
  moved: boolean
  /** The backstop gave up on it: its readers were answered, no `complete` is owed. */
  abandoned: boolean
}

const EIO = 5
const PUBLISH_EVERY_MS = 100
const port = parentPort!
const binding = missWorkerBinding()
const { module: modulePath, data, stallTimeoutMs, reportMisses } = workerData as { module: string; data: unknown; stallTimeoutMs: number; reportMisses?: boolean }
/** Progress goes to the native side this often while fetches run (a tenth of the backstop's
 * window, 10 to 250 ms): one call for every fetch, whatever the number of chunks. */
const REPORT_EVERY_MS = Math.min(250, Math.max(10, Math.floor(stallTimeoutMs / 10)))

async function main(): Promise<void> {
  // Load everything now (and the fetcher preloads what its sources need): a miss pays no module
  // load, and nothing loads while readers wait on this thread.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(modulePath) as FetcherModule
  // And what a fetcher loads only when it first needs it (an HTTP client, say); for a new one
  // (`reconfigure`) too: its sources may need what the old ones did not (a grid cache to push to).
  const startFetcher = async (d: unknown): Promise<Fetcher> => {
    const f = await mod.createFetcher(d)
    try {
      f.preload?.()
    } catch (err) {
      void Promise.resolve(f.close()).catch(() => undefined)
      throw err
    }
    return f
  }
  let fetcher = await startFetcher(data)
  let id = 0
  let statusTimer: NodeJS.Timeout | undefined

  // Files stored as chunks too (file MD5 -> chunk index MD5), from the engine; and the files whose
  // checked index the native side has (it then answers reads from their cached chunks).
  let chunkIndexes = new Map<string, string>()
  const indexed = new Set<string>()

  let lastPublish = 0
  let publishTimer: NodeJS.Timeout | undefined
  const publish = (): void => {
    if (publishTimer) clearTimeout(publishTimer)
    publishTimer = undefined
    lastPublish = Date.now()
    if (id !== 0) binding.setStatus(id, 'pipeline', JSON.stringify(fetcher.stats()))
  }

  // The counters are published when the only fetch in flight serves its readers or settles (so
  // a reader that got its bytes sees them counted), and while many run, at most every
  // PUBLISH_EVERY_MS.
  let inFlight = 0
  const publishDue = (alone: boolean): boolean => alone || Date.now() - lastPublish >= PUBLISH_EVERY_MS

  // The backstop (native/misses.h): the native side fails the reads parked on a blob whose fetch
  // has made no progress for `stallTimeoutMs`. Fetches say they moved through `onProgress`
  // (per chunk: it only sets a flag); every REPORT_EVERY_MS one `progress` call hands over the
  // blobs that moved and brings back those given up on, whose fetches are aborted here.
  const running = new Map<string, Set<Running>>()
  let reportTimer: NodeJS.Timeout | undefined
  const report = (): void => {
    const moved: string[] = []
    for (const [md5, fetches] of running) {
      let any = false
      for (const f of fetches) {
        any ||= f.moved
        f.moved = false
      }
      if (any) moved.push(md5)
    }
    for (const md5 of binding.progress(id, moved)) {
      const fetches = running.get(md5)
      if (!fetches) continue
      running.delete(md5)
      for (const f of fetches) {
        f.abandoned = true
        const reason = new Error(`blob ${md5}: no progress for ${stallTimeoutMs} ms; its readers got EIO`)
        f.cancel.abort(reason)
        f.ac?.abort(reason)
      }
    }
    if (running.size === 0 && reportTimer) {
      clearInterval(reportTimer)
      reportTimer = undefined
    }
  }

  const settled = (f: Running, errno: number): void => {
    const fetches = running.get(f.md5)
    if (fetches?.delete(f) && fetches.size === 0) running.delete(f.md5)
    // Abandoned: the native side answered its readers already, and a read that parked on the
    // blob since then belongs to a miss of its own.
    if (!f.abandoned) binding.complete(id, f.md5, errno)
    inFlight--
    if (publishDue(inFlight === 0)) publish()
    else publishTimer ??= setTimeout(publish, PUBLISH_EVERY_MS)
  }

  const onMiss = (md5: string, size: number, off = 0, len = 0): void => {
    // The engine's onMiss (a recording): told before the fetch starts, in the misses' order.
    if (reportMisses) port.postMessage({ type: 'miss', md5, size })
    inFlight++
    const f: Running = { md5, cancel: new Cancel(), ac: undefined, moved: false, abandoned: false }
    let fetches = running.get(md5)
    if (!fetches) running.set(md5, (fetches = new Set()))
    fetches.add(f)
    if (!reportTimer) {
      reportTimer = setInterval(report, REPORT_EVERY_MS)
      reportTimer.unref()
    }
    // Readers waiting on the blob get its checked bytes as soon as they are checked, while the
    // fetcher still writes them to the cache.
    const serve = (data: Buffer): void => {
      if (publishDue(inFlight === 1)) publish()
      binding.serveVerified(id, md5, data)
    }
    const onProgress = (): void => {
      f.moved = true
    }
    const options: FetchOptions = {
      cancel: f.cancel,
      get signal(): AbortSignal {
        if (!f.ac) {
          f.ac = new AbortController()
          if (f.cancel.aborted) f.ac.abort(f.cancel.reason)
        }
        return f.ac.signal
      },
      onProgress,
    }
    // `absent` only straight from the read path's look (not after the chunks were tried).
    const whole = (absent: boolean): void => {
      options.absent = absent // (not a spread: that would read, and so make, `signal`)
      fetcher.fetch(md5, size, serve, options).then(
        () => settled(f, 0),
        // The fetcher logs and counts its own failures; the readers get EIO.
        () => settled(f, EIO),
      )
    }
    const index = chunkIndexes.get(md5)
    if (index === undefined || !fetcher.fetchRange) return whole(true)
    // A chunked file: only the chunks the read covers. The native side learns the checked index
    // before the readers are answered, so it serves them (and the next reads) from the chunks.
    fetcher.fetchRange(md5, size, index, off, len, options).then(
      (file) => {
        if (file === undefined) return whole(false)
        // By size too: the native side keeps one index per file MD5 and serves it only for
        // entries of its size (a flist may name one content with two sizes; one of them is wrong).
        if (!indexed.has(`${md5}:${size}`)) {
          if (!binding.setChunks(id, md5, size, file.chunkSize, Buffer.from(file.chunks.join(''), 'hex'))) return settled(f, EIO)
          for (const k of indexed) if (k.startsWith(md5)) indexed.delete(k)
          indexed.add(`${md5}:${size}`)
        }
        settled(f, 0)
      },
      () => settled(f, EIO),
    )
  }

  port.on('message', (msg: { type: string; id?: number; data?: unknown; graceMs?: number }) => {
    if (msg.type === 'attach' && typeof msg.id === 'number') {
      id = msg.id
      binding.attach(id, onMiss)
      publish()
      statusTimer = setInterval(publish, 1000)
      statusTimer.unref()
      port.postMessage({ type: 'attached' })
    } else if (msg.type === 'chunks') {
      chunkIndexes = new Map((msg as { files?: [string, string][] }).files ?? [])
    } else if (msg.type === 'reconfigure') {
      // New sources for new misses; downloads already running finish on the old fetcher.
      startFetcher(msg.data).then(
        (next) => {
          const old = fetcher
          fetcher = next
          publish()
          setTimeout(() => void old.close(), msg.graceMs ?? 30_000).unref()
          port.postMessage({ type: 'reconfigured' })
        },
        (err: Error & { code?: string }) => port.postMessage({ type: 'error', error: { message: err.message, code: err.code } }),
      )
    } else if (msg.type === 'locality') {
      fetcher.setLocality?.(msg.data)
    } else if (msg.type === 'startup') {
      fetcher.setStartup?.(msg.data)
    } else if (msg.type === 'close') {
      if (statusTimer) clearInterval(statusTimer)
      if (reportTimer) clearInterval(reportTimer)
      // The engine waits (briefly) for this before it ends the thread: blobs handed to the
      // committer are in place, or gone, by the time unmount() resolves.
      void Promise.resolve()
        .then(() => fetcher.close())
        .catch(() => undefined)
        .then(() => port.postMessage({ type: 'closed' }))
    }
  })
  port.postMessage({ type: 'ready' })
}

main().catch((err: Error & { code?: string }) => {
  port.postMessage({ type: 'error', error: { message: err.message, code: err.code } })
})
