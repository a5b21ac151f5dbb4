/**
 * The foreground mount of `aysfs-native --mount …` (and of `demo`): mount, tell systemd, serve
 * until SIGINT/SIGTERM or an outside unmount, reload on SIGHUP.
 */
import fs from 'node:fs'
import { loadConfig } from './config'
import { mount, type AysfsMount } from './index'
import { AysfsError, fromSystemError } from './errors'
import type { Logger } from './log'
import { notifySystemd } from './systemd'

/** Options of {@link serve}. */
export interface ServeOptions {
  mountpoint: string
  /** A config file path (re-read on SIGHUP) or a config object. */
  config: string | Record<string, unknown>
  log: Logger
  allowOther?: boolean
  debug?: boolean
  /** `--metrics ADDR`: serve Prometheus metrics there (wins over `main.metrics`). */
  metrics?: string
  /** Called once the tree is visible (after systemd was told). */
  onReady?: (m: AysfsMount) => void
}

/**
 * Checks what the engine would refuse, with messages for a person at a shell; a missing or
 * wrong mountpoint is a usage error (exit status 2), a busy one is left to `mount()` (`EBUSY`).
 */
function checkMountpoint(mountpoint: string): void {
  let st: fs.Stats
  try {
    st = fs.statSync(mountpoint)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') {
      throw new AysfsError('EUSAGE', `mountpoint ${mountpoint} does not exist: create it first (mkdir -p ${mountpoint})`, { key: 'main.mount' })
    }
    // ENOTCONN: a stale mount of a process that died; the engine clears it.
    if (code === 'ENOTCONN' || code === 'ECONNABORTED') return
    throw fromSystemError(err, `mountpoint ${mountpoint}`, { key: 'main.mount' })
  }
  if (!st.isDirectory()) throw new AysfsError('EUSAGE', `mountpoint ${mountpoint} is not a directory`, { key: 'main.mount' })
}

/**
 * Mounts and serves in the foreground. Resolves to the exit status once the mount is gone:
 * 0 after SIGINT/SIGTERM or an outside unmount. Rejects when the mount cannot be made.
 */
export async function serve(opts: ServeOptions): Promise<number> {
  const { log } = opts
  checkMountpoint(opts.mountpoint)
  let m: AysfsMount | undefined
  let finish!: (code: number) => void
  const finished = new Promise<number>((resolve) => (finish = resolve))
  let stopping = false
  let reloadPending = false
  // Mounted, nothing else keeps the event loop alive for sure (the miss worker is an
  // implementation detail of the engine): hold it open until the mount is gone.
  const keepAlive = setInterval(() => undefined, 1 << 30)

  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return
    stopping = true
    if (!m) {
      log.info({ signal }, 'stopping before the mount was ready')
      finish(0)
      return
    }
    log.info({ signal, mountpoint: opts.mountpoint }, 'unmounting')
    void notifySystemd({ STOPPING: '1' }, log)
    m.unmount().then(
      () => finish(0),
      (err: Error) => {
        log.error({ err: err.message }, 'unmount failed')
        finish(1)
      },
    )
  }
  const reload = (): void => {
    if (stopping) return
    if (!m) {
      reloadPending = true
      return
    }
    log.info({ mountpoint: opts.mountpoint }, 'SIGHUP: reloading the config and flists')
    if (typeof opts.config === 'string') {
      // Check the file first: a config mistake is reported with its key and line, and the mount
      // keeps the config and tree it has.
      try {
        loadConfig(opts.config)
      } catch (err) {
        log.error({ err: (err as Error).message }, 'reload failed: the config is invalid; the old config and tree stay')
        void notifySystemd({ STATUS: `serving ${opts.mountpoint}; the last reload failed, the old tree stays` }, log)
        return
      }
    }
    const mounted = m
    // The result (or why it failed, the old tree staying) is logged by reload() itself.
    mounted.reload().then(
      (r) => void notifySystemd({ STATUS: `serving ${r.entries} entries at ${opts.mountpoint} (reloaded)` }, log),
      () => void notifySystemd({ STATUS: `serving ${opts.mountpoint}; the last reload failed, the old tree stays` }, log),
    )
  }
  const onInt = (): void => stop('SIGINT')
  const onTerm = (): void => stop('SIGTERM')
  process.on('SIGINT', onInt)
  process.on('SIGTERM', onTerm)
  process.on('SIGHUP', reload)
  const cleanup = (): void => {
    clearInterval(keepAlive)
    process.off('SIGINT', onInt)
    process.off('SIGTERM', onTerm)
    process.off('SIGHUP', reload)
  }

  const mounting = mount({
    mountpoint: opts.mountpoint,
    config: opts.config,
    log,
    allowOther: opts.allowOther ?? false,
    debug: opts.debug ?? false,
    ...(opts.metrics !== undefined ? { metrics: opts.metrics } : {}),
    onExit: () => {
      if (stopping) return
      stopping = true
      log.info({ mountpoint: opts.mountpoint }, 'unmounted from outside; exiting')
      void notifySystemd({ STOPPING: '1' }, log)
      finish(0)
    },
  })
  let first: AysfsMount | number
  try {
    // A signal while mounting (flists from a slow store, prefetch = true) ends the wait at once;
    // the caller exits, and the engine's exit hook undoes a mount that was half made.
    first = await Promise.race([mounting, finished])
  } catch (err) {
    cleanup()
    throw err
  }
  if (typeof first === 'number') {
    cleanup()
    mounting.then((late) => late.unmount(), () => undefined)
    return first
  }
  m = first
  const entries = m.stats().engine.entries
  await notifySystemd({ READY: '1', STATUS: `serving ${entries} entries at ${opts.mountpoint}` }, log)
  opts.onReady?.(m)
  if (reloadPending) reload()
  const code = await finished
  cleanup()
  return code
}
