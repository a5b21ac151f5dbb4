import fs from 'node:fs'
import path from 'node:path'
import v8 from 'node:v8'
import vm from 'node:vm'
import { Worker } from 'node:worker_threads'
import { onExit } from 'signal-exit'
import type { MissLatency, NativeMountOptions, NativeStats, SwapResult } from '../binding'
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

/**
 * The engine's tunables: the native mount options but the two paths. What each one does is said
 * on {@link NativeMountOptions} (binding.d.ts); its type, range and default are in
 * {@link TUNABLES}.
 */
export type EngineTunables = Omit<NativeMountOptions, 'mountpoint' | 'cacheDir'>

/**
 * Options of the low-level engine: a packed table in, a mount out. Every tunable may be left
 * out (its default is in {@link ENGINE_DEFAULTS}); one of the wrong type or out of its range is a
 * TypeError that names it, like any other option here.
 */
export interface EngineOptions extends Partial<EngineTunables> {
  /** Absolute path of an existing, empty directory. */
  mountpoint: string
  /** The local cache directory (created if missing): blobs at `<h0>/<h1>/<md5>`. */
  cacheDir: string
  /** The packed inode table (`buildTable`). */
  table: Buffer
  /** The code that fetches a missing blob into the cache, run on the engine's miss worker. */
  fetcher: FetcherSpec
  /** Called when the mount went away from outside (`umount`), after the engine cleaned up. */
  onExit?: () => void
  /**
   * Called on this thread with each blob the native side hands the miss worker (MD5, size), in
   * the order the misses came: once per fetch it asks for (a chunked file's: once per read that
   * missed). For recording what a program reads (`aysfs-native record`). Every miss told before
   * {@link Engine.unmount} resolves.
   */
  onMiss?: (md5: string, size: number) => void
  /** Files stored as chunks too: file MD5 -> chunk index MD5 (see {@link Engine.setChunkIndexes}). */
  chunkIndexes?: ReadonlyMap<string, string>
}

/** How one tunable is checked, and its value when the caller leaves it out. */
interface Tunable<T> {
  /** What a value must be, as the TypeError says it: `Expected the "x" option to be …`. */
  expected: string
  valid(value: unknown): boolean
  default: T
}

const UINT32_MAX = 0xffff_ffff

function flag(fallback: boolean): Tunable<boolean> {
  return { expected: 'a boolean', valid: (v) => typeof v === 'boolean', default: fallback }
}

function integer(min: number, max: number, fallback: number): Tunable<number> {
  return {
    expected: `an integer from ${min} to ${max}`,
    valid: (v) => Number.isInteger(v) && (v as number) >= min && (v as number) <= max,
    default: fallback,
  }
}

/**
 * The one list of the engine's tunables: each one's type, range and default (with the reasons
 * for the defaults). The native side keeps no defaults: {@link nativeMountOptions} hands it a
 * complete set, and it checks only that each is there with its type. The ranges are what the
 * native side can hold (a `uint32_t` or, for sizes, a safe integer).
 *
 * To add an engine option: its line here, its field (with what it does) in NativeMountOptions
 * (binding.d.ts) and its line in AYSFS_MOUNT_OPTIONS (native/options.h); the compiler and
 * test/unit/native-lists.test.ts check that the three lists agree.
 */
const TUNABLES: { readonly [K in keyof EngineTunables]-?: Tunable<EngineTunables[K]> } = {
  // A ',' would end the mount option and start another; libfuse's option parser takes '\' as
  // an escape.
  fsname: { expected: "a string without ',' or '\\'", valid: (v) => typeof v === 'string' && !/[,\\]/.test(v), default: 'aysfs' },
  allowOther: flag(false),
  suid: flag(false),
  dev: flag(false),
  debug: flag(false),
  // mount() derives it from the sources' timeout; a minute for a fetcher of its own.
  stallTimeoutMs: integer(0, UINT32_MAX, 60_000),
  spliceMinSize: integer(0, Number.MAX_SAFE_INTEGER, 1 << 20),
  // The kernel's default, 128 KiB, cuts a sequential read into 128 KiB requests; 512 KiB measured
  // about a fifth faster for a first read of a 1 GiB file here (1 MiB was slower).
  readAheadKb: integer(0, UINT32_MAX, 512),
  // As the kernel reads around a page fault in a mapping. Random 4 KiB reads of a 1 GiB file
  // measured 5.09 s -> 1.26 s with it (docs/benchmarks.md).
  readAround: integer(0, UINT32_MAX, 128 << 10),
  pushFiles: integer(0, UINT32_MAX, 128 << 10),
}

/** The default of every engine tunable. */
export const ENGINE_DEFAULTS: Readonly<EngineTunables> = Object.freeze(
  Object.fromEntries(Object.entries(TUNABLES).map(([key, t]) => [key, t.default])) as unknown as EngineTunables,
)

function expected(what: string, option: string): TypeError {
  return new TypeError(`Expected the "${option}" option to be ${what}`)
}

/**
 * Checks every engine option (the type and range of each; a TypeError that names the first one
 * that is wrong) and returns the complete set of native mount options: the tunables left out
 * take their defaults, `cacheDir` is made absolute. Touches nothing: no mount, no file.
 */
export function nativeMountOptions(options: EngineOptions): NativeMountOptions {
  if (options === null || typeof options !== 'object') throw new TypeError('Expected the engine options to be an object')
  if (typeof options.mountpoint !== 'string' || !path.isAbsolute(options.mountpoint)) {
    throw expected('an absolute path', 'mountpoint')
  }
  if (typeof options.cacheDir !== 'string' || options.cacheDir === '') throw expected('a path', 'cacheDir')
  if (!Buffer.isBuffer(options.table)) throw expected('a Buffer (the packed inode table)', 'table')
  if (options.fetcher === null || typeof options.fetcher !== 'object' || typeof options.fetcher.module !== 'string') {
    throw expected('the path of a fetcher module', 'fetcher.module')
  }
  if (options.onExit !== undefined && typeof options.onExit !== 'function') throw expected('a function', 'onExit')
  if (options.onMiss !== undefined && typeof options.onMiss !== 'function') throw expected('a function', 'onMiss')
  const tunables: Record<string, unknown> = {}
  for (const [key, tunable] of Object.entries(TUNABLES) as [string, Tunable<unknown>][]) {
    const value = (options as unknown as Record<string, unknown>)[key]
    if (value === undefined) {
      tunables[key] = tunable.default
    } else if (tunable.valid(value)) {
      tunables[key] = value
    } else {
      throw expected(tunable.expected, key)
    }
  }
  return { mountpoint: options.mountpoint, cacheDir: path.resolve(options.cacheDir), ...(tunables as unknown as EngineTunables) }
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

  /**
   * Mounts `options.table` at `options.mountpoint`; resolves once the tree is visible. Rejects
   * with a TypeError, before anything is mounted or started, when an option is of the wrong type
   * or out of its range ({@link nativeMountOptions}).
   */
  static async mount(options: EngineOptions): Promise<Engine> {
    const mountOptions = nativeMountOptions(options)
    const binding = loadBinding()
    prepareCacheDir(options.cacheDir)
    const { stallTimeoutMs } = mountOptions
    const worker = new Worker(runtimeModule('miss-worker'), {
      workerData: { module: options.fetcher.module, data: options.fetcher.data, stallTimeoutMs, reportMisses: options.onMiss !== undefined },
      // No loader hooks of the parent (a test runner's TypeScript loader): plain, fast start.
      execArgv: [],
      stdout: false,
      stderr: false,
    })
    let engine: Engine | undefined
    // The exit callback lives as long as the mount: it must not close over `options`, which
    // holds the table (hundreds of MB for millions of entries) the native side has copied.
    const userOnExit = options.onExit
    // For the life of the worker: the misses it posted before it closed all arrive before `closed`.
    const onMiss = options.onMiss
    if (onMiss) worker.on('message', (msg: { type: string; md5?: string; size?: number }) => void (msg.type === 'miss' && onMiss(msg.md5!, msg.size!)))
    // The worker starts (loads the fetcher module) on its own thread while this one mounts:
    // misses that come before it is attached wait for it on the native side.
    const ready = message(worker, 'ready')
    ready.catch(() => undefined)
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()))
    try {
      const id = binding.mount(
        mountOptions,
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
      // Before attach: the first misses already know which files have chunks.
      if (options.chunkIndexes) engine.setChunkIndexes(options.chunkIndexes)
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

  /** The miss-latency histogram (binding.d.ts `missLatency`). */
  missLatency(): MissLatency {
    if (this.#gone) throw new AysfsError('ENOTCONN', `${this.mountpoint} is not mounted`)
    return loadBinding().missLatency(this.#id)
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

  /** Hands the miss worker's fetcher the tree it guesses from after a reload ({@link Fetcher.setLocality}). */
  setLocality(data: unknown): void {
    if (this.#gone) return
    this.#worker.postMessage({ type: 'locality', data })
  }

  /** Hands the miss worker's fetcher the start-up set of a new tree ({@link Fetcher.setStartup}). */
  setStartup(data: unknown): void {
    if (this.#gone) return
    this.#worker.postMessage({ type: 'startup', data })
  }

  /**
   * The files the tree stores as chunks too (file MD5 -> the MD5 of its chunk index, from the
   * flists' `chunks=`), for the miss worker: a miss of one of them fetches only the chunks the
   * read covers (when the fetcher can). Replaces the previous set (a reload).
   */
  setChunkIndexes(indexes: ReadonlyMap<string, string>): void {
    if (this.#gone) return
    this.#worker.postMessage({ type: 'chunks', files: [...indexes] })
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
export type MissWorkerBinding = Pick<Binding, 'attach' | 'progress' | 'complete' | 'serveVerified' | 'setStatus' | 'setChunks'>

/** A committer for this thread; `done` runs on this thread when a job ends (binding.d.ts). */
export function createCommitter(done: ConstructorParameters<Binding['Committer']>[0]): NativeCommitter {
  return new (loadBinding().Committer)(done)
}

/**
 * The engine's counters and gauges as the native list declares them (native/counters.h): C++
 * name, `stats()` key, counter or gauge, what it counts. The metrics are generated from it.
 */
export function engineStatMeta(): { name: string; js: string; kind: 'counter' | 'gauge'; help: string }[] {
  const b = loadBinding()
  return b.statMeta.map((m, i) => ({ ...m, js: b.statNames.stats[i]! }))
}

/**
 * A new streaming brotli decoder, on the calling thread (never libuv's threadpool), that may hold
 * at most `maxMemory` bytes (default and most: `BrotliDecoder.maxMemory`).
 */
export function createBrotliDecoder(maxMemory?: number): NativeBrotliDecoder {
  return new (loadBinding().BrotliDecoder)(maxMemory)
}

/** What the miss worker (lib/miss-worker.ts) calls to attach to its session and answer misses. */
export function missWorkerBinding(): MissWorkerBinding {
  return loadBinding()
}
