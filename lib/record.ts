/**
 * `aysfs-native record --ays ID --out FILE -- CMD…`, on a staging host: mounts service ID where
 * nodes mount it, with an empty temporary local cache and no speculation, runs CMD against it,
 * and writes the blobs CMD read, in the order it first read them, as a start-up list
 * (lib/startup.ts) for `publish --startup`. On an empty cache every first read of a file is a
 * miss, and with nothing guessed every miss is a read: the misses the engine reports, in their
 * order, are the list. The temporary cache is named for its owner process: a later `record`
 * removes one whose owner died without removing it (SIGKILL, a crash).
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { reviseConfig, type Config } from './config'
import { AysfsError, fromSystemError } from './errors'
import { mount } from './index'
import type { Logger } from './log'
import { isServiceId, SERVICE_ID_RULE } from './paths'
import { formatStartupList } from './startup'
import { createTempFile, writeAll } from './temp-file'

/** Options of {@link record}. */
export interface RecordOptions {
  /** The checked config (its stores, keys, prefix, mount). */
  config: Config
  /** The service to record: only it is mounted. */
  ays: string
  /** Where to write the start-up list. */
  out: string
  /** The command and its arguments. */
  command: string[]
  /** Where to mount; default `main.mount`. */
  mountpoint?: string
  log: Logger
}

/** What {@link record} did. */
export interface RecordResult {
  /** The file written. */
  out: string
  /** Blobs in it. */
  blobs: number
  /** The command's exit code, or the signal that ended it. */
  code: number | null
  signal: NodeJS.Signals | null
}

/** Signals passed on to the command while it runs (SIGINT from a terminal reaches it by itself). */
const FORWARDED: NodeJS.Signals[] = ['SIGTERM', 'SIGHUP']
/** Signals that end record (after it has cleaned up) when they come while no command runs. */
const ENDING: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']

/**
 * Mounts, runs the command (stdio inherited, in this process's working directory, looked up again
 * so that one below the mountpoint is in the mount, and environment), unmounts whatever happened, and writes the list, whatever the command's exit
 * status (a server stopped with Ctrl-C once it is up has read its start-up set).
 * @throws AysfsError `EUSAGE` for an id that is not a service id, no mountpoint, or an output
 *   directory that does not exist (before anything is mounted); the mount's errors; `ENOENT` when
 *   the command cannot be run (nothing is written then).
 */
export async function record(opts: RecordOptions): Promise<RecordResult> {
  if (!isServiceId(opts.ays)) throw new AysfsError('EUSAGE', `--ays ${JSON.stringify(opts.ays)}: a service id must be ${SERVICE_ID_RULE}`)
  if (opts.command.length === 0) throw new AysfsError('EUSAGE', 'no command: record --ays ID --out FILE -- CMD [ARGS...]')
  const mountpoint = opts.mountpoint ?? opts.config.main.mount
  if (mountpoint === undefined) {
    throw new AysfsError('EUSAGE', `no mountpoint: pass --mount DIR, or set main.mount in ${opts.config.file ?? 'the config'} (record where the nodes mount, so the command sees the paths it will see there)`, { key: 'main.mount' })
  }
  const out = path.resolve(opts.out)
  const outDir = path.dirname(out)
  if (!fs.statSync(outDir, { throwIfNoEntry: false })?.isDirectory()) throw new AysfsError('EUSAGE', `--out ${opts.out}: ${outDir} is not a directory`)

  removeStaleCaches(opts.log)
  // A signal that would end us while the command is not running waits for the mount and the temp
  // cache to go: one that came while the mount was being made ends record without running the
  // command; one after the command ended lets record finish (the list is whole). While the
  // command runs, `run` passes signals on.
  let stopped: NodeJS.Signals | undefined
  let running = false
  const hold = (sig: NodeJS.Signals): void => {
    if (running || stopped !== undefined) return
    stopped = sig
    opts.log.warn({ signal: sig }, `${sig}: record stops once the mount and its temporary cache are gone`)
  }
  const held = ENDING.map((sig) => [sig, () => hold(sig)] as const)
  for (const [sig, h] of held) process.on(sig, h)
  const owner = ownerTag()
  const order: string[] = []
  const seen = new Set<string>()
  let child: { code: number | null; signal: NodeJS.Signals | null } | undefined
  let cache: string | undefined
  try {
    cache = fs.mkdtempSync(path.join(os.tmpdir(), `${TEMP_PREFIX}${owner === undefined ? '' : `${owner}-`}`))
    // Only this service, an empty cache of our own, nothing fetched but what is read.
    const config = reviseConfig(opts.config, {
      main: { cache, cache_size: undefined, speculate: false, startup: false, refresh: undefined, metrics: undefined },
      ays: [{ id: opts.ays }],
    })
    const m = await mount({
      mountpoint,
      config,
      log: opts.log,
      onMiss: (md5) => {
        if (seen.has(md5)) return
        seen.add(md5)
        order.push(md5)
      },
    })
    try {
      if (stopped === undefined) {
        running = true
        child = await run(opts.command)
        running = false
      }
    } finally {
      await m.unmount()
    }
  } finally {
    running = false
    if (cache !== undefined) fs.rmSync(cache, { recursive: true, force: true })
    for (const [sig, h] of held) process.off(sig, h)
  }
  if (child === undefined) {
    throw new AysfsError('EINTR', `record: ${stopped} while mounting ${mountpoint}: the command did not run; the mount and the temporary cache are gone, nothing was written`)
  }
  writeList(out, order)
  return { out, blobs: order.length, ...child }
}

/** The temp caches' names start with this, in `os.tmpdir()`. */
const TEMP_PREFIX = 'aysfs-record-'
/** `aysfs-record-<pid>-<start time>-<pid namespace>-<6 of mkdtemp>`: a temp cache whose owner is known. */
const OWNED_NAME = /^aysfs-record-([1-9][0-9]*)-([0-9]+)-([0-9]+)-[A-Za-z0-9]{6}$/

/**
 * When process `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`): with
 * the pid, it names one process, a pid used again later having another start time. Undefined
 * when there is no such process; null when it cannot be told.
 */
function startTime(pid: number | 'self'): string | undefined | null {
  let text: string
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'latin1')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    return code === 'ENOENT' || code === 'ESRCH' ? undefined : null
  }
  // The command name (field 2) is in parentheses and may hold anything: count after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  const start = fields[22 - 3]
  return start !== undefined && /^[0-9]+$/.test(start) ? start : null
}

/** The pid namespace of this process (its inode): pids of another one say nothing here. */
function pidNamespace(): string | undefined {
  try {
    return /^pid:\[([0-9]+)\]$/.exec(fs.readlinkSync('/proc/self/ns/pid'))?.[1]
  } catch {
    return undefined
  }
}

/** `<pid>-<start time>-<pid namespace>` of this process, or undefined without /proc. */
function ownerTag(): string | undefined {
  const start = startTime('self')
  const ns = pidNamespace()
  return typeof start === 'string' && ns !== undefined ? `${process.pid}-${start}-${ns}` : undefined
}

/**
 * Removes the temp caches of earlier `record` runs that never removed theirs (killed with
 * SIGKILL, a crash, a power cut): in `os.tmpdir()`, each directory named for its owner
 * ({@link OWNED_NAME}) whose owner process is gone (no process with that pid, or one that
 * started at another time), and only when it is a directory (not a link: never followed) of this
 * user, and its owner ran in this pid namespace. One whose owner is alive, or cannot be told
 * dead, stays; so do names of another shape (temp caches of versions that did not name their
 * owner). A failure to remove one is a warning, never the run's failure.
 */
function removeStaleCaches(log: Logger): void {
  const ns = pidNamespace()
  const uid = process.getuid?.()
  if (ns === undefined || uid === undefined) return
  const tmp = os.tmpdir()
  let names: string[]
  try {
    names = fs.readdirSync(tmp)
  } catch {
    return
  }
  for (const name of names) {
    const m = OWNED_NAME.exec(name)
    if (!m || m[3] !== ns) continue
    const dir = path.join(tmp, name)
    const pid = Number(m[1])
    try {
      const st = fs.lstatSync(dir, { throwIfNoEntry: false })
      if (!st?.isDirectory() || st.uid !== uid) continue
      const start = startTime(pid)
      if (start === null || start === m[2]) continue
      fs.rmSync(dir, { recursive: true, force: true })
      log.warn({ dir, pid }, `removed ${dir}: the temporary cache of a record run (pid ${pid}) that ended without removing it`)
    } catch (err) {
      // Another run removing it at the same time, or something we may not remove: left.
      if (fs.existsSync(dir)) log.warn({ dir }, `cannot remove ${dir}, the temporary cache of an earlier record run: ${(err as Error).message}`)
    }
  }
}

/** Runs the command to its end, passing on {@link FORWARDED} signals; SIGINT does not end us meanwhile. */
function run(command: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    // The working directory by its path: one at or below the mountpoint is then the mount's (an
    // inherited one would be the directory the mount now hides).
    const c = spawn(command[0]!, command.slice(1), { stdio: 'inherit', cwd: process.cwd() })
    const forward = (sig: NodeJS.Signals): void => void c.kill(sig)
    const ignore = (): void => undefined
    const handlers = FORWARDED.map((sig) => [sig, () => forward(sig)] as const)
    for (const [sig, h] of handlers) process.on(sig, h)
    process.on('SIGINT', ignore)
    const done = (): void => {
      for (const [sig, h] of handlers) process.off(sig, h)
      process.off('SIGINT', ignore)
    }
    c.once('error', (err) => {
      done()
      reject(fromSystemError(err, `cannot run ${command[0]}`))
    })
    c.once('exit', (code, signal) => {
      done()
      resolve({ code, signal })
    })
  })
}

/** Writes the list to a temp file beside `out` and renames it over `out`. */
function writeList(out: string, md5s: string[]): void {
  const tmp = createTempFile(path.dirname(out), path.basename(out), 0o644)
  try {
    writeAll(tmp.fd, formatStartupList(md5s))
    fs.fsyncSync(tmp.fd)
    fs.closeSync(tmp.fd)
    fs.renameSync(tmp.path, out)
  } catch (err) {
    try {
      fs.closeSync(tmp.fd)
    } catch {
      // closed already
    }
    fs.rmSync(tmp.path, { force: true })
    throw fromSystemError(err, `--out ${out}: cannot write`)
  }
}
