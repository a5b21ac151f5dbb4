/**
 * Logging: the one logger type every part of the package writes to, and the loggers it makes.
 */
import type pino from 'pino'
import type pretty from 'pino-pretty'
import { lazyRequire } from './lazy'

// Loaded by createLogger only (the config's log levels bring this file everywhere): pino, and
// pino-pretty for text only.
const loadPino = lazyRequire<typeof pino>('pino')
const loadPretty = lazyRequire<typeof pretty>('pino-pretty')

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

/**
 * What the package logs to: structured fields, then the message. A pino logger is one (what
 * {@link createLogger} makes, or one of the caller's own).
 */
export interface Logger {
  debug(fields: object, msg?: string): void
  info(fields: object, msg?: string): void
  warn(fields: object, msg?: string): void
  error(fields: object, msg?: string): void
}

/** Warnings and errors as plain lines on stderr; nothing else. For a fetcher made without a logger. */
export const stderrLogger: Logger = {
  debug() {},
  info() {},
  warn(fields, msg) {
    process.stderr.write(`aysfs-native: warning: ${msg ?? JSON.stringify(fields)}\n`)
  },
  error(fields, msg) {
    process.stderr.write(`aysfs-native: error: ${msg ?? JSON.stringify(fields)}\n`)
  },
}

/** Whether `x` is a logger (rather than {@link LogOptions}, which has no functions). */
export function isLogger(x: unknown): x is Logger {
  return typeof x === 'object' && x !== null && typeof (x as Logger).info === 'function'
}

/** The level a logger logs at, when it says (pino's `level`). */
export function levelOf(log: Logger): LogLevel | undefined {
  const level = (log as { level?: unknown }).level
  return (LOG_LEVELS as readonly unknown[]).includes(level) ? (level as LogLevel) : undefined
}

/** Where {@link createLogger} notes the format of a logger it made. */
const FORMAT = Symbol('aysfs-native log format')

/**
 * The format of a logger {@link createLogger} made (so that the miss worker, which makes its own,
 * writes the same lines); `undefined` for any other logger.
 */
export function formatOf(log: Logger): LogFormat | undefined {
  return (log as { [FORMAT]?: LogFormat })[FORMAT]
}

/**
 * A pino logger writing synchronously to stderr. Synchronous on purpose: it also runs on the miss
 * worker, which must not use libuv's threadpool, and a log line is never lost at exit. Besides
 * {@link Logger}'s methods it has pino's `fatal`, which the command line uses for its last word.
 */
export function createLogger(opts: LogOptions = {}): pino.Logger {
  const level = opts.level ?? 'info'
  const pino = loadPino()
  if (opts.format === 'json') {
    return Object.assign(pino({ level, base: { name: 'aysfs-native' } }, pino.destination({ fd: 2, sync: true })), { [FORMAT]: 'json' as const })
  }
  const stream = loadPretty()({
    sync: true,
    destination: 2,
    colorize: false,
    singleLine: true,
    ignore: 'pid,hostname',
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
  })
  return Object.assign(pino({ level, base: undefined }, stream), { [FORMAT]: 'text' as const })
}
