// The engine's miss worker: loads a fetcher module and answers the native side's misses. It
// runs apart from the main thread and never uses libuv's threadpool (docs/design.md), so a
// thread of this process that is blocked reading the mount cannot stall it.
import { parentPort, workerData } from 'node:worker_threads'
import { loadBinding } from './native'

interface Fetcher {
  fetch(md5: string, size: number, onVerified?: (data: Buffer) => void): Promise<void>
  stats(): Record<string, unknown>
  close(): Promise<void>
}
type FetcherModule = { createFetcher(data: unknown): Fetcher | Promise<Fetcher> }

const EIO = 5
const PUBLISH_EVERY_MS = 100
const port = parentPort!
const binding = loadBinding()
const { module: modulePath, data } = workerData as { module: string; data: unknown }

async function main(): Promise<void> {
  // Load everything now: the module loader uses async fs, which a blocked threadpool would stall.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(modulePath) as FetcherModule
  let fetcher = await mod.createFetcher(data)
  let id = 0
  let statusTimer: NodeJS.Timeout | undefined

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
  let running = 0
  const publishDue = (alone: boolean): boolean => alone || Date.now() - lastPublish >= PUBLISH_EVERY_MS
  const settled = (md5: string, errno: number): void => {
    binding.complete(id, md5, errno)
    running--
    if (publishDue(running === 0)) publish()
    else publishTimer ??= setTimeout(publish, PUBLISH_EVERY_MS)
  }

  const onMiss = (md5: string, size: number): void => {
    running++
    // Readers waiting on the blob get its checked bytes as soon as they are checked, while the
    // fetcher still writes them to the cache.
    const serve = (data: Buffer): void => {
      if (publishDue(running === 1)) publish()
      binding.serveVerified(id, md5, data)
    }
    fetcher.fetch(md5, size, serve).then(
      () => settled(md5, 0),
      // The fetcher logs and counts its own failures; the readers get EIO.
      () => settled(md5, EIO),
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
    } else if (msg.type === 'reconfigure') {
      // New sources for new misses; downloads already running finish on the old fetcher.
      Promise.resolve(mod.createFetcher(msg.data)).then(
        (next) => {
          const old = fetcher
          fetcher = next
          publish()
          setTimeout(() => void old.close(), msg.graceMs ?? 30_000).unref()
          port.postMessage({ type: 'reconfigured' })
        },
        (err: Error & { code?: string }) => port.postMessage({ type: 'error', error: { message: err.message, code: err.code } }),
      )
    } else if (msg.type === 'close') {
      if (statusTimer) clearInterval(statusTimer)
      void fetcher.close()
    }
  })
  port.postMessage({ type: 'ready' })
}

main().catch((err: Error & { code?: string }) => {
  port.postMessage({ type: 'error', error: { message: err.message, code: err.code } })
})
