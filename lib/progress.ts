/**
 * Progress of long CLI jobs (prefetch, publish, verify): a bar on a terminal (cli-progress), plain
 * lines every few seconds otherwise (a pipe, a journal, a CI log), where a redrawn bar would be
 * noise. Both go to stderr, so stdout keeps only results.
 */
import type * as CliProgress from 'cli-progress'
import { lazyRequire } from './lazy'

// Only a bar on a terminal needs it (formatBytes is everywhere, `status` too).
const loadCliProgress = lazyRequire<typeof CliProgress>('cli-progress')

/**
 * `12.3 MiB`: powers of 1024, as `cache_size` reads them. Fractions of a byte (a rate: 101 bytes
 * in 5 s) are rounded to whole bytes: `20 B`, not `20.2 B`.
 */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let v = n
  let u = 0
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return u === 0 ? `${Math.round(n)} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[u]}`
}

/** `1h02m`, `3m05s`, `42s`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?'
  const s = Math.round(seconds)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}

/** Options of {@link createProgress}. */
export interface ProgressOptions {
  /** What is being done, e.g. `prefetch` or `hashing`. */
  label: string
  /** Total files and bytes, when known up front. */
  files: number
  bytes: number
  /** Draw a bar (a TTY) or print lines. Default: whether stderr is a TTY. */
  tty?: boolean
  /** Seconds between plain lines. Default 5. */
  every?: number
  /** Where to write. Default stderr. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean }
  /** The clock rates and ETAs are measured with, in ms. Default `Date.now` (tests inject one). */
  now?: () => number
}

/** A running progress display. */
export interface Progress {
  /** Count `files` more files of `bytes` more bytes as done. */
  add(files: number, bytes: number): void
  /** Ends the display (the bar stays drawn; a last plain line is printed). Idempotent. */
  stop(): void
}

/**
 * A progress display for `files` files of `bytes` bytes: files done, bytes done, rate, ETA. The
 * ETA follows bytes (they dominate the time), or files when there are no bytes to count.
 */
export function createProgress(opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr
  const tty = opts.tty ?? stream.isTTY === true
  const now = opts.now ?? Date.now
  const started = now()
  let files = 0
  let bytes = 0
  const byBytes = opts.bytes > 0
  const rate = (): number => {
    const secs = (now() - started) / 1000
    return secs > 0 ? (byBytes ? bytes : files) / secs : 0
  }
  const eta = (): number => {
    const r = rate()
    const left = byBytes ? opts.bytes - bytes : opts.files - files
    return left <= 0 ? 0 : r > 0 ? left / r : Infinity
  }
  const rateText = (): string => (byBytes ? `${formatBytes(rate())}/s` : `${rate().toFixed(0)} files/s`)
  const payload = () => ({
    files: `${files}/${opts.files} files`,
    bytesText: `${formatBytes(bytes)}/${formatBytes(opts.bytes)}`,
    rateText: rateText(),
    etaText: formatDuration(eta()),
  })

  if (tty) {
    const bar = new (loadCliProgress().SingleBar)({
      format: `${opts.label} [{bar}] {percentage}% | {files} | {bytesText} | {rateText} | ETA {etaText}`,
      stream: stream as NodeJS.WriteStream,
      // The cursor stays visible: a Ctrl-C mid-bar must not leave the terminal without one.
      hideCursor: false,
      barsize: 24,
      fps: 5,
    })
    const total = Math.max(1, byBytes ? opts.bytes : opts.files)
    bar.start(total, 0, payload())
    let done = false
    return {
      add(f, b) {
        files += f
        bytes += b
        bar.update(Math.min(total, byBytes ? bytes : files), payload())
      },
      stop() {
        if (done) return
        done = true
        bar.update(Math.min(total, byBytes ? bytes : files), payload())
        bar.stop()
      },
    }
  }

  const line = (final: boolean): void => {
    const p = payload()
    const tail = final ? `in ${formatDuration((now() - started) / 1000)}` : `ETA ${p.etaText}`
    stream.write(`${opts.label}: ${p.files}, ${p.bytesText}, ${p.rateText}, ${tail}\n`)
  }
  const timer = setInterval(() => line(false), (opts.every ?? 5) * 1000)
  timer.unref()
  let stopped = false
  return {
    add(f, b) {
      files += f
      bytes += b
    },
    stop() {
      if (stopped) return
      stopped = true
      clearInterval(timer)
      line(true)
    },
  }
}
