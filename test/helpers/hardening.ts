// Helpers of test/hardening: stores of generated files, mounts in this process or in a child
// process (to SIGKILL, to measure, to unmount from outside), and cache inspection.
import { spawn, type ChildProcess } from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { mount, type AysfsMount, type MountOptions } from '../../lib/index'
import { clearMounts } from './mount'
import { randomBytes } from './store'
import { until } from './wait'

export { until } from './wait'

type Test = { teardown(fn: () => unknown): void }

export const PREFIX = '/opt/hard'
export const SERVICE = 'hard__svc'
export const MOUNTER = path.resolve(__dirname, '../../dist/bench/soak/mounter.js')

export function md5(data: Buffer): string {
  return crypto.createHash('md5').update(data).digest('hex')
}

export interface File {
  /** Exposed path, e.g. `/f3`. */
  path: string
  data: Buffer
  md5: string
}

/** `n` files of `size` bytes (random, distinct), at `/f0` … */
export function files(n: number, size: number | ((i: number) => number), seed = 1): File[] {
  return Array.from({ length: n }, (_, i) => {
    const data = randomBytes(typeof size === 'number' ? size : size(i), seed * 1_000_003 + i)
    return { path: `/f${i}`, data, md5: md5(data) }
  })
}

/** A directory store `R/files/h0/h1/md5` + `R/md/<id>.flist` (seed lines under {@link PREFIX}). */
export function writeStore(root: string, list: File[], id = SERVICE): void {
  for (const f of list) {
    const dir = path.join(root, 'files', f.md5[0]!, f.md5[1]!)
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(dir, f.md5), f.data)
  }
  fs.mkdirSync(path.join(root, 'md'), { recursive: true })
  fs.writeFileSync(path.join(root, 'md', `${id}.flist`), list.map((f) => `${PREFIX}${f.path}|${f.md5}|${f.data.length}\n`).join(''))
}

/**
 * A config object for mount(). Speculation is off unless `main` turns it on: these stores put
 * every file in one directory, and the tests count what a read fetches.
 */
export function config(cache: string, stores: string[], main: Record<string, unknown> = {}, id = SERVICE): Record<string, unknown> {
  return {
    main: { cache, prefix: PREFIX, timeout: '1s', speculate: false, ...main },
    ays: [{ id }],
    store: stores.map((url) => ({ url })),
  }
}

/** mkdir -p, except that a stale mount a dead process left there is fine (mount clears it). */
function mkdirMountpoint(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOTCONN') throw err
  }
}

/** mount() in this process, unmounted in teardown. */
export async function mountHere(t: Test, mountpoint: string, cfg: Record<string, unknown>, extra: Partial<MountOptions> = {}): Promise<AysfsMount> {
  mkdirMountpoint(mountpoint)
  const m = await mount({ mountpoint, config: cfg, log: { level: 'error' }, ...extra })
  t.teardown(async () => {
    await m.unmount()
    clearMounts(mountpoint)
  })
  return m
}

/** A mount in a child process (bench/soak/mounter.ts). */
export interface Child {
  proc: ChildProcess
  pid: number
  /** stderr so far (the mount's log: JSON lines when `log.format` is json). */
  stderr(): string
  /** Lines the mounter printed on stdout (ready, stats, gone), parsed. */
  messages: Record<string, unknown>[]
  /** Resolves with the exit code (or the signal's name). */
  exited: Promise<number | string>
  /** Peak and current RSS (VmHWM, VmRSS) and open fds of the child, from /proc. */
  usage(): { hwm: number; rss: number; fds: number }
}

/**
 * Starts a mounter child and waits until it has mounted (rejects with its error otherwise). The
 * child is SIGKILLed and its mount cleared in teardown, whatever the test did.
 */
export async function mountChild(t: Test, args: { mountpoint: string; config: Record<string, unknown>; allowOther?: boolean; log?: Record<string, unknown> }): Promise<Child> {
  mkdirMountpoint(args.mountpoint)
  const proc = spawn(process.execPath, [MOUNTER, JSON.stringify({ log: { level: 'warn', format: 'json' }, ...args })], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  let out = ''
  const messages: Record<string, unknown>[] = []
  const waiters: (() => void)[] = []
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString()
    let nl
    while ((nl = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, nl)
      out = out.slice(nl + 1)
      try {
        messages.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        // not ours
      }
      for (const w of waiters.splice(0)) w()
    }
  })
  const exited = new Promise<number | string>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal ?? -1)))
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    await exited
    clearMounts(args.mountpoint)
  })
  const ready = await Promise.race([
    new Promise<Record<string, unknown>>((resolve) => {
      const look = () => {
        const m = messages.find((x) => x.type === 'ready' || x.type === 'error')
        if (m) resolve(m)
        else waiters.push(look)
      }
      look()
    }),
    exited.then((code): Record<string, unknown> => ({ type: 'error', message: `the mounter exited (${code}) before it mounted: ${err}` })),
  ])
  if (ready.type !== 'ready') throw Object.assign(new Error(String(ready.message)), { code: ready.code })
  const pid = proc.pid!
  return {
    proc,
    pid,
    stderr: () => err,
    messages,
    exited,
    usage: () => {
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
      const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
      return { hwm: kb('VmHWM'), rss: kb('VmRSS'), fds: fs.readdirSync(`/proc/${pid}/fd`).length }
    },
  }
}

/** The child mount's counters (the mounter prints them on SIGUSR2). */
export async function childStats(child: Child, ms = 10_000): Promise<Record<string, any>> {
  const seen = child.messages.length
  child.proc.kill('SIGUSR2')
  const got = () => child.messages.slice(seen).find((m) => m.type === 'stats')
  if (!(await until(() => got() !== undefined, ms))) throw new Error(`no stats from the mount child in ${ms} ms`)
  return got()!.stats as Record<string, any>
}

/**
 * Resolves once the child mount's pipeline has no download running or queued. Readers are
 * answered from the checked bytes before the blob is in the cache: until then a commit (and the
 * evictions that make room for it) may still change the cache directory.
 */
export async function childIdle(child: Child, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms
  for (;;) {
    const d = (await childStats(child, Math.max(1, end - Date.now()))).pipeline?.downloads
    if (d && d.active === 0 && d.queued === 0) return true
    if (Date.now() > end) return false
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** SIGTERM: the child unmounts and exits; resolves with its code once its stdout and stderr are closed (its log complete). */
export async function stopChild(child: Child): Promise<number | string> {
  const closed = new Promise<void>((resolve) => {
    if (child.proc.stdout!.closed && child.proc.stderr!.closed) resolve()
    else child.proc.once('close', () => resolve())
  })
  child.proc.kill('SIGTERM')
  const code = await child.exited
  await closed
  return code
}

/** The whole content of an open file, by size from fstat. */
function readFd(fd: number): Buffer {
  const size = fs.fstatSync(fd).size
  const buf = Buffer.alloc(size)
  let off = 0
  while (off < size) {
    const n = fs.readSync(fd, buf, off, size - off, off)
    if (n === 0) break
    off += n
  }
  return buf.subarray(0, off)
}

/**
 * Blobs in a local cache (`<cache>/<h0>/<h1>/<md5>`), with their content's real MD5 and the bytes
 * they take on disk. A blob that an eviction pass removes while this walks is left out: each one is
 * opened once, and its content and size come from that one descriptor.
 */
export function cacheBlobs(cache: string): { name: string; file: string; md5: string; bytes: number }[] {
  const out: { name: string; file: string; md5: string; bytes: number }[] = []
  for (const h0 of fs.existsSync(cache) ? fs.readdirSync(cache) : []) {
    if (!/^[0-9a-f]$/.test(h0)) continue
    for (const h1 of fs.readdirSync(path.join(cache, h0))) {
      for (const name of fs.readdirSync(path.join(cache, h0, h1))) {
        const file = path.join(cache, h0, h1, name)
        const blob = readBlobNoAtime(file)
        if (blob) out.push({ name, file, md5: md5(blob.bytes), bytes: blob.blocks * 512 })
      }
    }
  }
  return out
}

/**
 * A cached blob's bytes and allocated blocks from one descriptor, read without moving its atime
 * (the quota's LRU clock: a test must not tick it); undefined if it is gone.
 */
function readBlobNoAtime(file: string): { bytes: Buffer; blocks: number } | undefined {
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOATIME)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    return { bytes: readFd(fd), blocks: fs.fstatSync(fd).blocks }
  } finally {
    fs.closeSync(fd)
  }
}


/** Reads a file with a fresh async read (libuv's threadpool; the mount may be in this process). */
export async function readAsync(file: string): Promise<Buffer> {
  return fs.promises.readFile(file)
}

/** Runs `fn` and returns its error (or undefined). */
export async function errorOf(fn: () => unknown): Promise<(Error & { code?: string }) | undefined> {
  try {
    await fn()
    return undefined
  } catch (err) {
    return err as Error & { code?: string }
  }
}
