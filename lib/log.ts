import pino from 'pino'
import pretty from 'pino-pretty'

/** Log levels, quietest last. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]
/** `text`: one readable line per record; `json`: one JSON object per line (for journald, Loki…). */
export type LogFormat = 'text' | 'json'

/** How to log: structured-cloneable, so the miss worker can make the same logger. */
export interface LogOptions {
  /** Default `info`. */
  level?: LogLevel
  /** Default `text`. */
  format?: LogFormat
}

/** The logger every part of the package writes to (pino's). */
export type Logger = pino.Logger

/**
 * A logger writing synchronously to stderr. Synchronous on purpose: it also runs on the miss
 * worker, which must not use libuv's threadpool, and a log line is never lost at exit.
 */
export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? 'info'
  if (opts.format === 'json') {
    return pino({ level, base: { name: 'aysfs-native' } }, pino.destination({ fd: 2, sync: true }))
  }
  const stream = pretty({
    sync: true,
    destination: 2,
    colorize: false,
    singleLine: true,
    ignore: 'pid,hostname',
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
  })
  return pino({ level, base: undefined }, stream)
}
