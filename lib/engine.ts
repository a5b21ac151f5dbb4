import fs from 'node:fs'
import path from 'node:path'
import v8 from 'node:v8'
import vm from 'node:vm'
import { Worker } from 'node:worker_threads'
import { onExit } from 'signal-exit'
import type { NativeStats, SwapResult } from '../binding'
import { prepareCacheDir } from './local-cache/dir'
import { AysfsError } from './errors'
import { loadBinding, type Binding } from './native'
import { runtimeModule } from './package-root'

/** Where the miss worker finds the code that fetches blobs. See docs/design.md. */
export interface FetcherSpec {
  /** Absolute path of a module exporting `createFetcher(data)`. */
  module: string
  /** Structured-cloneable data handed to `createFetcher`. */
  data?: unknown
}

/** Options of the low-level engine: a packed table in, a mount out. */
export interface EngineOptions {
  /** Absolute path of an existing, empty directory. */
  mountpoint: string
  /** The local cache directory (created if missing): blobs at `<h0>/<h1>/<md5>`. */
  cacheDir: string
  /** The packed inode table (`buildTable`). */
  table: Buffer
  /** The code that fetches a missing blob into the cache, run on the engine's miss worker. */
  fetcher: FetcherSpec
  /** Let other users see the mount (`allow_other`). Default false. */
  allowOther?: boolean
  /** Honour setuid bits. Default false (`nosuid`). */
  suid?: boolean
  /** Honour device files. Default false (`nodev`). */
  dev?: boolean
  /** libfuse debug output on stderr. */
  debug?: boolean
  /** Shown as the source of the mount in /proc/mounts. Default `aysfs`. */
  fsname?: string
  /**
   * The backstop of parked reads, in ms: when the fetch of a blob has made no progress for this
   * long, the reads waiting on it fail with EIO (counted in `missTimeouts`) and the fetch is
   * aborted through its `signal`. Progress is what the fetcher reports through `onProgress`
   * (bytes arriving from any source, a move to the next source, and for a fetch still queued for
   * a download slot, any download of the pipeline moving); a fetcher that never reports gets this
   * long from the first read. `mount()` sets it from the sources' `timeout` (docs/hardening.md,
   * "The backstop of parked reads"). Default 60 s.
   */
  stallTimeoutMs?: number
  /** Files at least this large are served with splice. Default 1 MiB. */
  spliceMinSize?: number
  /**
   * Read-ahead window in KiB for the mount's own backing device, set when running as root
   * (sequential reads then come in requests this big). Default 512; 0 leaves the kernel's 128.
   */
  readAheadKb?: number
  /**
   * A small read at a random offset also puts the rest of its aligned chunk of this many bytes
   * in the kernel's page cache, as the kernel does around a page fault. Default 128 KiB; 0 = off.
   */
  readAround?: number
  /**
   * Regular files of at most this many bytes whose blobs are in the local cache are put whole in
   * the kernel's page cache before anyone reads them, so that reading them sends no request: a
   * file as soon as a lookup names it (opened by path: an import, an exec), and the files of a
   * directory after two of them were read from the start (a walk: cat, tar, cp -r). A listing
   * alone pushes nothing. Default 128 KiB; 0 = off.
   */
  pushFiles?: number
  /** Called when the mount went away from outside (`umount`), after the engine cleaned up. */
  onExit?: () => void
}

/** The `user.aysfs.status` document of a mount. */
export interface StatusDocument {
  version: 1
  mountpoint: string
  engine: Omit<NativeStats, 'mounted'>
  /** The fetcher's counters, as the miss worker last published them (at most a second old). */
  pipeline?: Record<string, unknown>
  /** Parts set with {@link Engine.setStatus}. */
  [part: string]: unknown
}

let collect: (() => void) | null | undefined

/**
 * Runs two full garbage collections, so that the memory of a parsed flist and of a built table
 * (the native side keeps its own copy) goes back to the system now rather than at V8's next
 * full collection: for a million entries that is hundreds of MB. The second collection is the
 * one that frees the ArrayBuffers the first one found dead; then the C heap is trimmed. Costs
 * tens of ms.
 */
export function releaseMemory(): void {
  if (collect === undefined) {
    collect = typeof globalThis.gc === 'function' ? (globalThis.gc as () => void) : null
    if (collect === null) {
      try {
        v8.setFlagsFromString('--expose-gc')
        collect = vm.runInNewContext('gc') as () => void
      } catch {
        collect = null
      }
    }
  }
  if (collect) {
    collect()
    collect()
  }
  // What the collections freed sits in the C heap's free lists (a flist fetched over HTTP comes
  // in 64 KiB chunks): give it back. (Optional call: an addon built before this export lacks it.)
  ;(loadBinding() as Partial<ReturnType<typeof loadBinding>>).trimMemory?.()
}

/** How long {@link Engine.unmount} waits for the miss worker to end. */
const WORKER_EXIT_MS = 500

const live = new Set<Engine>()
let removeExitHook: (() => void) | undefined

function unmountAllSync(): void {
  for (const engine of [...live]) engine.unmountSync()
}

// Unmount when the process exits or dies of a signal it does not handle (SIGINT, SIGTERM, …).
// signal-exit keeps Node's behaviour: a process with no handler of its own still dies of the
// signal, and a host service's own handlers are left in charge (it exits, and then we unmount).
function installHooks(): void {
  removeExitHook ??= onExit(unmountAllSync, { alwaysLast: true })
}

function removeHooks(): void {
  if (live.size > 0 || !removeExitHook) return
  removeExitHook()
  removeExitHook = undefined
}

/**
 * One mounted inode table. The native session answers every request from the table and the
 * cache; only a read of an uncached blob reaches the fetcher, on a worker thread of its own, so
 * any thread of this process may read the mount.
 */
export class Engine {
  readonly mountpoint: string
  #id: number
  #worker: Worker
  /** Settles when the miss worker's thread has ended. */
  #exited: Promise<void>
  #gone = false

  private constructor(mountpoint: string, id: number, worker: Worker, exited: Promise<void>) {
    this.mountpoint = mountpoint
    this.#id = id
    this.#worker = worker
    this.#exited = exited
  }

  /** Mounts `options.table` at `options.mountpoint`; resolves once the tree is visible. */
  static async mount(options: EngineOptions): Promise<Engine> {
    const binding = loadBinding()
    if (!path.isAbsolute(options.mountpoint)) {
      throw new TypeError('mountpoint must be an absolute path')
    }
    if (!Buffer.isBuffer(options.table)) throw new TypeError('table must be a Buffer')
    if (typeof options.fetcher?.module !== 'string') {
      throw new TypeError('fetcher.module must be the path of a fetcher module')
    }
    prepareCacheDir(options.cacheDir)
    const stallTimeoutMs = options.stallTimeoutMs ?? 60_000
    const worker = new Worker(runtimeModule('miss-worker'), {
      workerData: { module: options.fetcher.module, data: options.fetcher.data, stallTimeoutMs },
      // No loader hooks of the parent (a test runner's TypeScript loader): plain, fast start.
      execArgv: [],
      stdout: false,
      stderr: false,
    })
    let engine: Engine | undefined
    // The exit callback lives as long as the mount: it must not close over `options`, which
    // holds the table (hundreds of MB for millions of entries) the native side has copied.
    const userOnExit = options.onExit
    // The worker starts (loads the fetcher module) on its own thread while this one mounts:
    // misses that come before it is attached wait for it on the native side.
    const ready = message(worker, 'ready')
    ready.catch(() => undefined)
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()))
    try {
      const id = binding.mount(
        {
          mountpoint: options.mountpoint,
          cacheDir: path.resolve(options.cacheDir),
          fsname: options.fsname ?? 'aysfs',
          allowOther: options.allowOther ?? false,
          suid: options.suid ?? false,
          dev: options.dev ?? false,
          debug: options.debug ?? false,
          stallTimeoutMs,
          spliceMinSize: options.spliceMinSize ?? 1 << 20,
          readAheadKb: options.readAheadKb ?? 512,
          readAround: options.readAround ?? 128 << 10,
          pushFiles: options.pushFiles ?? 128 << 10,
        },
        options.table,
        () => {
          // The mount went away from outside: clean up, then tell the owner.
          if (engine && !engine.#gone) {
            engine.unmountSync()
            userOnExit?.()
          }
        },
      )
      engine = new Engine(options.mountpoint, id, worker, exited)
      live.add(engine)
      installHooks()
      await ready
      worker.postMessage({ type: 'attach', id })
      await message(worker, 'attached')
      return engine
    } catch (err) {
      if (engine) await engine.unmount()
      else await stopWorker(worker, exited)
      if (err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && !(err instanceof AysfsError)) {
        throw new AysfsError((err as NodeJS.ErrnoException).code as string, err.message, { cause: err })
      }
      throw err
    }
  }

  /** True until unmounted (by us or from outside). */
  get mounted(): boolean {
    return !this.#gone
  }

  /** The native counters; `stat`, listings and cached reads show here without entering JS. */
  stats(): NativeStats {
    if (this.#gone) throw new AysfsError('ENOTCONN', `${this.mountpoint} is not mounted`)
    return loadBinding().stats(this.#id)
  }

  /** The document the mount's root serves as the `user.aysfs.status` xattr. */
  status(): StatusDocument {
    if (this.#gone) throw new AysfsError('ENOTCONN', `${this.mountpoint} is not mounted`)
    return JSON.parse(loadBinding().status(this.#id)) as StatusDocument
  }

  /** Replaces the live table; the kernel forgets what changed. Open files keep their bytes. */
  swap(table: Buffer): SwapResult {
    if (this.#gone) throw new AysfsError('ENOTCONN', `${this.mountpoint} is not mounted`)
    return loadBinding().swap(this.#id, table)
  }

  /**
   * Hands the miss worker new fetcher data (a reload with changed sources): new misses use it,
   * downloads already running finish on the old fetcher, which is closed after `graceMs`.
   */
  async reconfigure(data: unknown, graceMs = 30_000): Promise<void> {
    if (this.#gone) throw new AysfsError('ENOTCONN', `${this.mountpoint} is not mounted`)
    const done = message(this.#worker, 'reconfigured')
    this.#worker.postMessage({ type: 'reconfigure', data, graceMs })
    await done
  }

  /** Sets one part of the status document (the mount's own facts: `mount`). */
  setStatus(part: string, value: unknown): void {
    if (this.#gone) return
    loadBinding().setStatus(this.#id, part, JSON.stringify(value))
  }

  /** Unmounts at once (within about a second, even with files held open). Idempotent. */
  unmountSync(): void {
    if (this.#detach()) void this.#worker.terminate()
  }

  /**
   * Unmounts and waits for the miss worker to end, within about two seconds whatever it is
   * doing. Blobs its fetcher had handed to the committer are in place (or gone) by then, so the
   * caller may remove the cache directory once this resolves. Idempotent.
   */
  async unmount(): Promise<void> {
    if (this.#detach()) await settledWithin(message(this.#worker, 'closed'), FETCHER_CLOSE_MS)
    await stopWorker(this.#worker, this.#exited)
  }

  /** Unmounts and asks the miss worker to close its fetcher; false when that was done already. */
  #detach(): boolean {
    if (this.#gone) return false
    this.#gone = true
    loadBinding().unmount(this.#id)
    live.delete(this)
    removeHooks()
    this.#worker.postMessage({ type: 'close' })
    return true
  }
}

/** How long {@link Engine.unmount} waits for the fetcher's close (which bounds its own wait for
 * commits in flight to about a second). */
const FETCHER_CLOSE_MS = 1200

/** Waits for `p` to settle, at most `ms`; never rejects. */
async function settledWithin(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p.catch(() => undefined), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))])
  clearTimeout(timer)
}

/**
 * Terminates the miss worker and waits for its thread to end, {@link WORKER_EXIT_MS} at most.
 * `worker.terminate()` cannot end a thread blocked in a system call (a fetcher opening a FIFO, a
 * read from a hung network file system): V8 stops JavaScript only when the call returns, and
 * libuv starts an interrupted open or stat again. Such a worker is left to end when its call
 * returns. Unmounting is done by then (the native side answered every parked read), so this
 * resolves anyway; but Node joins its worker threads when the process exits, so until that call
 * returns the process cannot exit (only a signal it does not handle ends it).
 */
async function stopWorker(worker: Worker, exited: Promise<void>): Promise<void> {
  void worker.terminate()
  let timer: NodeJS.Timeout | undefined
  await Promise.race([exited, new Promise<void>((resolve) => (timer = setTimeout(resolve, WORKER_EXIT_MS)))])
  clearTimeout(timer)
}

function message(worker: Worker, type: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      worker.off('message', onMessage)
      worker.off('error', onError)
      worker.off('exit', onExit)
    }
    const onMessage = (msg: { type: string; error?: { message: string; code?: string } }): void => {
      if (msg.type === type) {
        cleanup()
        resolve()
      } else if (msg.type === 'error' && msg.error) {
        cleanup()
        reject(new AysfsError(msg.error.code ?? 'EINVAL', msg.error.message))
      }
    }
    const onError = (err: Error): void => {
      cleanup()
      reject(err)
    }
    const onExit = (code: number): void => {
      cleanup()
      reject(new AysfsError('EIO', `the miss worker exited (${code}) before it was ${type}`))
    }
    worker.on('message', onMessage)
    worker.on('error', onError)
    worker.on('exit', onExit)
  })
}

// -------------------------------------------------------------------------------------------------
// The addon's door. lib/native.ts loads the addon; this module is the only one that asks it for
// anything: the engine above, the miss worker (missWorkerBinding), and the two native helpers a
// fetcher uses on whatever thread it runs: the committer (lib/local-cache/committer.ts) and the
// streaming brotli decoder (lib/sources/bro.ts). Nothing else imports lib/native.ts.
// -------------------------------------------------------------------------------------------------

/** The addon's committer: native threads that write, fsync and rename blobs (binding.d.ts). */
export type NativeCommitter = InstanceType<Binding['Committer']>
/** The addon's streaming brotli decoder (binding.d.ts). */
export type NativeBrotliDecoder = InstanceType<Binding['BrotliDecoder']>
/** The calls the miss worker makes into its session. */
export type MissWorkerBinding = Pick<Binding, 'attach' | 'progress' | 'complete' | 'serveVerified' | 'setStatus'>

/** A committer for this thread; `done` runs on this thread when a job ends (binding.d.ts). */
export function createCommitter(done: ConstructorParameters<Binding['Committer']>[0]): NativeCommitter {
  return new (loadBinding().Committer)(done)
}

/** A new streaming brotli decoder, on the calling thread (never libuv's threadpool). */
export function createBrotliDecoder(): NativeBrotliDecoder {
  return new (loadBinding().BrotliDecoder)()
}

/** What the miss worker (lib/miss-worker.ts) calls to attach to its session and answer misses. */
export function missWorkerBinding(): MissWorkerBinding {
  return loadBinding()
}
