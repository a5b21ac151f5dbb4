/**
 * The configuration file: TOML, or an object of the same shape handed to `mount()`.
 *
 * Every key is checked here, once, so the rest of the code can trust a `Config`: a mistake is an
 * `AysfsError('EINVAL')` that names the file, the dotted key (`store[1].url`) and, where the text
 * is known, the line. Secrets (header values, `user:password@` in URLs, query strings) never reach
 * a message: config errors end up in logs and bug reports.
 */
import { LOG_LEVELS, type LogLevel } from './log'
import { readFileSync } from 'node:fs'
import * as path from 'node:path'
import { parse as parseToml, TomlError } from 'smol-toml'
import { AysfsError } from './errors'
import { flistPathProblem, isServiceId, normalisePrefix, SERVICE_ID_RULE } from './paths'
import { distance } from './suggest'

/** Where the CLI looks for the config when neither `--config` nor `AYSFS_CONFIG` is given. */
export const DEFAULT_CONFIG_PATH = '/etc/aysfs/config.toml'

/** One `[[cache]]` (grid cache) or `[[store]]` entry. */
export interface SourceConfig {
  /**
   * `http://…`, `https://…`, `file://…` or an absolute path, as written except that trailing `/`
   * are removed (so `url + '/md/x.flist'` is always right). May hold `user:password@`: never log
   * it as is, use {@link redactUrl}.
   */
  url: string
  /** Extra request headers (HTTP sources only). Values are secrets: never log them. */
  headers: Record<string, string>
  /** Absolute path of a file whose trimmed content is sent as `Authorization: Bearer <token>`. */
  tokenFile?: string
  /** Absolute path of a PEM file of CA certificates to trust for this source (https only). */
  ca?: string
  /** Grid caches only: push blobs that had to come from elsewhere. Always false for stores. */
  push: boolean
  /** Where this entry sits in the config, e.g. `store[0]`, for messages and counters. */
  key: string
}

/** One `[[ays]]` entry: a service whose flist is mounted. */
export interface AysConfig {
  /** The service id: the flist is `<store>/md/<id>.flist`. A safe file name (no `/`, not `.`/`..`). */
  id: string
  /** Fetch every blob of this service into the local cache before serving. */
  prefetch: boolean
}

/** `[main]`, with every default filled in. Paths are absolute. */
export interface MainConfig {
  /** Mountpoint; `--mount` / `mount({mountpoint})` wins over it. */
  mount?: string
  /**
   * Flist path prefix that is exposed (normalised: absolute, no trailing `/` unless it is `/`).
   * Absent: the caller uses the mountpoint.
   */
  prefix?: string
  /** Local cache directory. Default `/var/cache/aysfs`. */
  cache: string
  /** LRU quota of the local cache in bytes; 0 = unbounded (the default). */
  cacheSize: number
  /** A source slower than 1 KiB/s for this long has failed, in ms. Default 10 000. */
  timeoutMs: number
  /** Public key files; when non-empty only flists signed by one of them mount. */
  trustedKeys: string[]
  /** Most entries one mount may hold (all services merged). Default 5 000 000. */
  maxEntries: number
  /** Largest flist accepted, in bytes. Default 512 MiB. */
  maxFlistSize: number
  /** Downloads at once. Default 16. */
  maxDownloads: number
  /** Fetch the small blobs beside a missed one with the slots misses leave free. Default true. */
  speculate: boolean
  /**
   * Fetch the blobs of each service's published start-up list (`md/<id>.startup`) at mount and
   * when a new flist is applied, behind the misses. Default true.
   */
  startup: boolean
  /** Honour setuid/setgid bits from flists. Default false. */
  suid: boolean
  /** Honour device files from flists. Default false. */
  dev: boolean
  /** Log level name (pino's: trace, debug, info, warn, error, fatal, silent). */
  logLevel?: LogLevel
  /** Check the stores for new flists this often, in ms (plus up to 10% jitter); absent = off (the default). */
  refreshMs?: number
  /** Serve Prometheus metrics at `http://<this>/metrics` (`host:port`); absent = off (the default). */
  metrics?: string
}

/** A checked configuration. */
export interface Config {
  /** The file it was read from, when it came from one. */
  file?: string
  main: MainConfig
  /** Services in merge order; never empty. */
  ays: AysConfig[]
  /** Grid caches in lookup order. */
  caches: SourceConfig[]
  /** Stores in order of preference; may be empty (see {@link checkConfig}). */
  stores: SourceConfig[]
}


const DEFAULTS = {
  cache: '/var/cache/aysfs',
  cacheSize: 0,
  timeoutMs: 10_000,
  maxEntries: 5_000_000,
  maxFlistSize: 512 * 1024 * 1024,
  maxDownloads: 16,
}

/** The inode table counts entries in a u32 and reserves index 0 for the root. */
const MAX_ENTRIES_LIMIT = 0xffff_fffe
const MAX_DOWNLOADS_LIMIT = 1024

const MAIN_KEYS = [
  'mount', 'prefix', 'cache', 'cache_size', 'timeout', 'trusted_keys', 'max_entries',
  'max_flist_size', 'max_downloads', 'suid', 'dev', 'log_level', 'refresh', 'metrics', 'speculate', 'startup',
]
const TOP_KEYS = ['main', 'ays', 'cache', 'store']
const AYS_KEYS = ['id', 'prefetch']
const STORE_KEYS = ['url', 'headers', 'token_file', 'ca']
const CACHE_KEYS = [...STORE_KEYS, 'push']

/**
 * Where errors are reported: the file, and the text to find a key's line in (best effort, see
 * {@link keyLines}). `base` resolves relative paths.
 */
interface Ctx {
  file?: string
  lines?: Map<string, number>
  base: string
  /** Mistakes found so far: {@link check} reports them all at once. */
  errors?: AysfsError[]
}

function where(ctx: Ctx, line?: number): string {
  let s = 'config'
  if (ctx.file !== undefined) s += ` ${ctx.file}`
  if (line !== undefined) s += ` line ${line}`
  return s
}

/** The line of `key` or, failing that, of the nearest enclosing table / key that has one. */
function lineOf(ctx: Ctx, key: string): number | undefined {
  if (!ctx.lines) return undefined
  let k = key
  for (;;) {
    // `[[stores]]` (a typo of `[[store]]`) is known by its first element's line.
    const l = ctx.lines.get(k) ?? ctx.lines.get(`${k}[0]`)
    if (l !== undefined) return l
    const cut = Math.max(k.lastIndexOf('.'), k.lastIndexOf('['))
    if (cut <= 0) return undefined
    k = k.slice(0, cut)
  }
}

function fail(ctx: Ctx, key: string, msg: string): never {
  const line = lineOf(ctx, key)
  throw new AysfsError('EINVAL', `${where(ctx, line)}: ${key}: ${msg}`, { file: ctx.file, line, key })
}

/**
 * `fn()`, or `undefined` when it found a mistake: the mistake is kept in `ctx.errors` and the
 * check goes on with the next key, so that one run reports every mistake of a config.
 */
function collect<T>(ctx: Ctx, fn: () => T): T | undefined {
  try {
    return fn()
  } catch (err) {
    if (!(err instanceof AysfsError) || err.code !== 'EINVAL' || ctx.errors === undefined) throw err
    ctx.errors.push(err)
    return undefined
  }
}

/**
 * `url` with anything secret replaced by `***`: the user info (`user:password@`) and the query
 * string (pre-signed URLs carry tokens there). Not a URL: returned unchanged.
 */
export function redactUrl(url: string): string {
  return url
    .replace(/^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)[^/?#]*@/, '$1***@')
    .replace(/\?[^#]*/, '?***')
}

/** A short description of a value for "got …", never the value of a secret. */
function describe(v: unknown, secret = false): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  switch (typeof v) {
    case 'string': {
      if (secret) return 'a string'
      const s = v.length > 60 ? `${v.slice(0, 57)}...` : v
      return JSON.stringify(s)
    }
    case 'number':
    case 'bigint':
    case 'boolean':
      return secret ? `a ${typeof v}` : String(v)
    case 'object':
      return v instanceof Date || (v as object).constructor?.name === 'TomlDate' ? 'a date' : 'a table'
    default:
      return typeof v
  }
}

function isTable(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

function checkKeys(ctx: Ctx, table: Record<string, unknown>, allowed: readonly string[], prefix: string, hint?: (k: string) => string | undefined): void {
  for (const k of Object.keys(table)) {
    if (table[k] === undefined || allowed.includes(k)) continue
    const key = prefix ? `${prefix}.${k}` : k
    let msg = 'unknown key'
    const special = hint?.(k)
    if (special) msg += ` (${special})`
    else {
      const near = allowed.filter((a) => distance(a, k.toLowerCase().replace(/-/g, '_')) <= 2)
      if (near.length > 0) msg += ` (did you mean ${near.map((n) => `"${n}"`).join(' or ')}?)`
    }
    collect(ctx, () => fail(ctx, key, msg))
  }
}

function optString(ctx: Ctx, v: unknown, key: string): string | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'string') fail(ctx, key, `expected a string, got ${describe(v)}`)
  return v
}

function optBool(ctx: Ctx, v: unknown, key: string, dflt: boolean): boolean {
  if (v === undefined) return dflt
  if (typeof v !== 'boolean') fail(ctx, key, `expected true or false, got ${describe(v)}`)
  return v
}

function optInt(ctx: Ctx, v: unknown, key: string, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt
  const n = typeof v === 'bigint' ? Number(v) : v
  if (typeof n !== 'number' || !Number.isInteger(n)) fail(ctx, key, `expected an integer, got ${describe(v)}`)
  if (n < min || n > max) fail(ctx, key, `expected an integer from ${min} to ${max}, got ${describe(v)}`)
  return n
}

/** A file system path from the config: non-empty, no NUL; relative ones resolved against `base`. */
function fsPath(ctx: Ctx, v: unknown, key: string): string {
  if (typeof v !== 'string') fail(ctx, key, `expected a path, got ${describe(v)}`)
  if (v === '') fail(ctx, key, 'expected a path, got an empty string')
  if (v.includes('\0')) fail(ctx, key, 'a path cannot contain a NUL byte')
  return path.resolve(ctx.base, v)
}

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, pb: 1e15,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40, pib: 2 ** 50,
}

function sizeIn(ctx: Ctx, v: unknown, key: string): number {
  const bad = (): never => fail(ctx, key, `expected a size in bytes or like "20GiB" or "512MB", got ${describe(v)}`)
  if (typeof v === 'number' || typeof v === 'bigint') {
    const n = Number(v)
    if (!Number.isInteger(n)) bad()
    if (n < 0) fail(ctx, key, `a size cannot be negative, got ${describe(v)}`)
    if (n > Number.MAX_SAFE_INTEGER) fail(ctx, key, `size ${describe(v)} is too large`)
    return n
  }
  if (typeof v !== 'string') return bad()
  // A unit is required for fractions: "1.5" bytes means nothing. Bare K/M/G are refused on
  // purpose: half of users read them as 1000s, the other half as 1024s.
  const m = /^\s*(-?)(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v)
  if (!m) return bad()
  const unit = m[3]!.toLowerCase()
  const mult = unit === '' ? 1 : SIZE_UNITS[unit]
  if (mult === undefined) {
    return fail(ctx, key, `unknown size unit "${m[3]}" in ${describe(v)}: use B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)`)
  }
  if (m[1] === '-') fail(ctx, key, `a size cannot be negative, got ${describe(v)}`)
  const num = Number(m[2])
  if (mult === 1 && !Number.isInteger(num)) bad()
  const n = Math.floor(num * mult)
  if (!Number.isSafeInteger(n)) fail(ctx, key, `size ${describe(v)} is too large`)
  return n
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

function durationIn(ctx: Ctx, v: unknown, key: string): number {
  // Bare numbers are refused: "timeout = 10" is ambiguous between seconds and milliseconds.
  const bad = (): never => fail(ctx, key, `expected a duration like "10s", got ${describe(v)}`)
  if (typeof v !== 'string') return bad()
  const m = /^\s*(-?)(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(v)
  if (!m) return bad()
  if (m[1] === '-') fail(ctx, key, `a duration cannot be negative, got ${describe(v)}`)
  const n = Math.round(Number(m[2]) * DURATION_UNITS[m[3]!]!)
  if (!Number.isSafeInteger(n)) fail(ctx, key, `duration ${describe(v)} is too large`)
  return n
}

/**
 * A size from the config: a non-negative integer number of bytes, or a string with a unit:
 * `B`, `KB`/`MB`/`GB`/`TB`/`PB` (powers of 1000), `KiB`/`MiB`/`GiB`/`TiB`/`PiB` (powers of 1024),
 * case-insensitive, with an optional fraction (`1.5GiB`, rounded down to whole bytes).
 * Bare `K`/`M`/`G` are refused as ambiguous.
 * @throws AysfsError `EINVAL` naming `key` (and `file`).
 */
export function parseSize(v: unknown, key: string, file?: string): number {
  return sizeIn({ file, base: process.cwd() }, v, key)
}

/**
 * A duration from the config in milliseconds: a string `<number><unit>` with unit `ms`, `s`, `m`
 * or `h` (`500ms`, `10s`, `1.5s`, `5m`, `1h`). Numbers without a unit are refused.
 * @throws AysfsError `EINVAL` naming `key` (and `file`).
 */
export function parseDuration(v: unknown, key: string, file?: string): number {
  return durationIn({ file, base: process.cwd() }, v, key)
}

/**
 * A listen address `HOST:PORT` (`127.0.0.1:9469`, `[::1]:9469`, `localhost:9469`, `0.0.0.0:9469`):
 * a host is required, so serving to every interface is always written out.
 * @throws AysfsError `EINVAL` naming `key` (and `file`).
 */
export function parseListenAddress(v: unknown, key: string, file?: string): string {
  return listenAddressIn({ file, base: process.cwd() }, v, key)
}

/** Splits a checked listen address into the host to bind and the port. */
export function splitListenAddress(addr: string): { host: string; port: number } {
  const cut = addr.lastIndexOf(':')
  return { host: addr.slice(0, cut).replace(/^\[|\]$/g, ''), port: Number(addr.slice(cut + 1)) }
}

function listenAddressIn(ctx: Ctx, v: unknown, key: string): string {
  const bad = (why = ''): never => fail(ctx, key, `expected an address like "127.0.0.1:9469" (host and port)${why}, got ${describe(v)}`)
  if (typeof v !== 'string') return bad()
  const m = /^(\[[0-9a-fA-F:.]+\]|[0-9.]+|[A-Za-z0-9][A-Za-z0-9.-]*):([0-9]{1,5})$/.exec(v)
  if (!m) return bad()
  const port = Number(m[2])
  if (port < 1 || port > 65535) bad(': the port is from 1 to 65535')
  const host = m[1]!.replace(/^\[|\]$/g, '')
  if (/^[0-9.]+$/.test(host) && !/^(\d{1,3})(\.\d{1,3}){3}$/.test(host)) bad(': not an IPv4 address')
  return v
}

/**
 * A prefix in flist path space (not a file system path: never resolved against anything): a flist
 * path (lib/paths.ts); a trailing `/` is dropped.
 */
function prefixIn(ctx: Ctx, v: unknown, key: string): string {
  if (typeof v !== 'string') fail(ctx, key, `expected an absolute path, got ${describe(v)}`)
  const p = normalisePrefix(v)
  const problem = flistPathProblem(p)
  if (problem?.relative) fail(ctx, key, `expected an absolute path, got ${describe(v)}`)
  if (problem) fail(ctx, key, `expected an absolute path without empty, "." or ".." components, "|", CR, LF or NUL, got ${describe(v)}: it ${problem.text}`)
  return p
}

function urlIn(ctx: Ctx, v: unknown, key: string): string {
  const bad = (): never =>
    fail(ctx, key, `expected an http://, https:// or file:// URL or an absolute path, got ${typeof v === 'string' ? JSON.stringify(redactUrl(v)) : describe(v)}`)
  if (typeof v !== 'string' || v === '' || v.includes('\0')) return bad()
  // A root of "/" stays "/"; any other trailing "/" goes, so joining with "/md/..." is uniform.
  const trim = (s: string): string => s.replace(/\/+$/, '') || '/'
  if (v.startsWith('/')) return trim(v)
  let u: URL
  try {
    u = new URL(v)
  } catch {
    return bad()
  }
  if (u.protocol === 'file:') {
    if (u.host !== '' && u.host !== 'localhost') {
      fail(ctx, key, `a file:// URL must name a local path (file:///path), got ${JSON.stringify(redactUrl(v))}`)
    }
    return trim(v)
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return bad()
  if (u.hostname === '') return bad()
  if (u.hash !== '') fail(ctx, key, `a source URL cannot have a #fragment, got ${JSON.stringify(redactUrl(v))}`)
  return u.search === '' ? trim(v) : v
}

/** RFC 9110 token: what a header name may be. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/**
 * The `headers` of a source; each bad header is reported on its own (`collect`) and left out of
 * the result.
 */
function headersIn(ctx: Ctx, v: unknown, key: string): Record<string, string> {
  if (v === undefined) return {}
  if (!isTable(v)) fail(ctx, key, `expected an inline table of strings like { Authorization = "Bearer ..." }, got ${describe(v)}`)
  const out: Record<string, string> = {}
  for (const [name, val] of Object.entries(v)) {
    if (val === undefined) continue
    const k = `${key}.${name}`
    collect(ctx, () => {
      if (!HEADER_NAME.test(name)) fail(ctx, k, 'not a valid HTTP header name')
      // Header values are typically credentials: report their type, never their content.
      if (typeof val !== 'string') fail(ctx, k, `expected a string, got ${describe(val, true)}`)
      if (/[\r\n\0]/.test(val)) fail(ctx, k, 'a header value cannot contain CR, LF or NUL')
      out[name] = val
    })
  }
  return out
}

/**
 * One `[[cache]]` or `[[store]]` element. Each of its keys is checked on its own (`collect`), so
 * that every bad value of the element is reported, not only the first; undefined when one was.
 */
function sourceIn(ctx: Ctx, v: unknown, key: string, kind: 'cache' | 'store'): SourceConfig | undefined {
  if (!isTable(v)) fail(ctx, key, `expected a table ([[${kind}]]), got ${describe(v)}`)
  const c = <T>(fn: () => T): T | undefined => collect(ctx, fn)
  const before = ctx.errors?.length ?? 0
  checkKeys(ctx, v, kind === 'cache' ? CACHE_KEYS : STORE_KEYS, key, (k) =>
    kind === 'store' && k === 'push' ? 'push applies to [[cache]] entries only' : misplaced(k, `[[${kind}]]`))
  const url = c(() => {
    if (v.url === undefined) fail(ctx, `${key}.url`, 'missing (every source needs a url)')
    return urlIn(ctx, v.url, `${key}.url`)
  })
  const headers = c(() => headersIn(ctx, v.headers, `${key}.headers`)) ?? {}
  const push = kind === 'cache' ? c(() => optBool(ctx, v.push, `${key}.push`, true)) : false
  const tokenFile = v.token_file === undefined ? undefined : c(() => fsPath(ctx, v.token_file, `${key}.token_file`))
  if (tokenFile !== undefined && Object.keys(headers).some((h) => h.toLowerCase() === 'authorization')) {
    c(() => fail(ctx, `${key}.token_file`, 'set either token_file or headers.Authorization, not both'))
  }
  const ca = v.ca === undefined ? undefined : c(() => fsPath(ctx, v.ca, `${key}.ca`))
  // Outside check() (no list to collect into) the first mistake was thrown already.
  if (url === undefined || push === undefined || (ctx.errors?.length ?? 0) > before) return undefined
  const src: SourceConfig = { url, headers, push, key }
  if (tokenFile !== undefined) src.tokenFile = tokenFile
  if (ca !== undefined) src.ca = ca
  return src
}

/** The hint for a [main] key found in an array table: TOML keeps keys in the last table opened. */
function misplaced(k: string, table: string): string | undefined {
  return MAIN_KEYS.includes(k) ? `${k} belongs in [main]; keys after ${table} belong to that ${table} until the next table header` : undefined
}

function arrayOfTables(ctx: Ctx, v: unknown, key: string): unknown[] {
  if (v === undefined) return []
  if (key === 'cache' && typeof v === 'string') {
    fail(ctx, key, `expected an array of tables ([[cache]], the grid caches), got ${describe(v)}; the local cache directory is main.cache, in [main]`)
  }
  if (!Array.isArray(v)) fail(ctx, key, `expected an array of tables ([[${key}]]), got ${describe(v)}`)
  return v
}

/** An AYS id becomes a file name (`md/<id>.flist`) locally and in stores: keep it one. */
function aysIdIn(ctx: Ctx, v: unknown, key: string): string {
  if (v === undefined) fail(ctx, key, 'missing (every [[ays]] needs an id)')
  if (typeof v !== 'string') fail(ctx, key, `expected a string, got ${describe(v)}`)
  if (!isServiceId(v)) fail(ctx, key, `expected a service id ${SERVICE_ID_RULE}, got ${describe(v)}`)
  return v
}

function check(obj: unknown, ctx: Ctx): Config {
  if (!isTable(obj)) fail(ctx, '(top level)', `expected a table, got ${describe(obj)}`)
  ctx.errors = []
  // Each key is checked on its own (`collect`): a mistake is kept, the key's default stands in
  // for it, and the check goes on; all of them are thrown together at the end.
  const c = <T>(fn: () => T): T | undefined => collect(ctx, fn)
  checkKeys(ctx, obj, TOP_KEYS, '', (k) =>
    MAIN_KEYS.includes(k) ? `${k} belongs in [main]` : k === 'caches' || k === 'stores' || k === 'services' ? `the arrays are [[ays]], [[cache]] and [[store]]` : undefined)

  let m: Record<string, unknown> = {}
  if (obj.main !== undefined) {
    if (isTable(obj.main)) m = obj.main
    else c(() => fail(ctx, 'main', `expected a table ([main]), got ${describe(obj.main)}`))
  }
  checkKeys(ctx, m, MAIN_KEYS, 'main', (k) =>
    AYS_KEYS.includes(k) || CACHE_KEYS.includes(k) ? `${k} belongs in [[ays]], [[cache]] or [[store]]` : undefined)

  const main: MainConfig = {
    cache: (m.cache === undefined ? undefined : c(() => fsPath(ctx, m.cache, 'main.cache'))) ?? DEFAULTS.cache,
    cacheSize: (m.cache_size === undefined ? undefined : c(() => sizeIn(ctx, m.cache_size, 'main.cache_size'))) ?? DEFAULTS.cacheSize,
    timeoutMs: (m.timeout === undefined ? undefined : c(() => durationIn(ctx, m.timeout, 'main.timeout'))) ?? DEFAULTS.timeoutMs,
    trustedKeys: [],
    maxEntries: c(() => optInt(ctx, m.max_entries, 'main.max_entries', DEFAULTS.maxEntries, 1, MAX_ENTRIES_LIMIT)) ?? DEFAULTS.maxEntries,
    maxFlistSize: (m.max_flist_size === undefined ? undefined : c(() => sizeIn(ctx, m.max_flist_size, 'main.max_flist_size'))) ?? DEFAULTS.maxFlistSize,
    maxDownloads: c(() => optInt(ctx, m.max_downloads, 'main.max_downloads', DEFAULTS.maxDownloads, 1, MAX_DOWNLOADS_LIMIT)) ?? DEFAULTS.maxDownloads,
    suid: c(() => optBool(ctx, m.suid, 'main.suid', false)) ?? false,
    dev: c(() => optBool(ctx, m.dev, 'main.dev', false)) ?? false,
    speculate: c(() => optBool(ctx, m.speculate, 'main.speculate', true)) ?? true,
    startup: c(() => optBool(ctx, m.startup, 'main.startup', true)) ?? true,
  }
  if (main.timeoutMs === 0) c(() => fail(ctx, 'main.timeout', 'must be more than 0'))
  if (main.maxFlistSize === 0) c(() => fail(ctx, 'main.max_flist_size', 'must be more than 0'))
  if (m.mount !== undefined) {
    const mount = c(() => fsPath(ctx, m.mount, 'main.mount'))
    if (mount !== undefined) main.mount = mount
  }
  if (m.prefix !== undefined) {
    const prefix = c(() => prefixIn(ctx, m.prefix, 'main.prefix'))
    if (prefix !== undefined) main.prefix = prefix
  }
  // 0 (a number or a duration) is off, like an absent key.
  const refreshMs = m.refresh === undefined || m.refresh === 0 ? 0 : c(() => durationIn(ctx, m.refresh, 'main.refresh')) ?? 0
  if (refreshMs > 0) main.refreshMs = refreshMs
  if (m.metrics !== undefined) {
    const metrics = c(() => listenAddressIn(ctx, m.metrics, 'main.metrics'))
    if (metrics !== undefined) main.metrics = metrics
  }
  if (m.trusted_keys !== undefined) {
    const keys = m.trusted_keys
    if (!Array.isArray(keys)) c(() => fail(ctx, 'main.trusted_keys', `expected an array of paths, got ${describe(keys)}`))
    else main.trustedKeys = keys.map((p, i) => c(() => fsPath(ctx, p, `main.trusted_keys[${i}]`)) ?? '')
  }
  c(() => {
    const level = optString(ctx, m.log_level, 'main.log_level')
    if (level === undefined) return
    if (!(LOG_LEVELS as readonly string[]).includes(level)) fail(ctx, 'main.log_level', `expected one of ${LOG_LEVELS.join(', ')}, got ${describe(level)}`)
    main.logLevel = level as LogLevel
  })

  const aysIn = c(() => arrayOfTables(ctx, obj.ays, 'ays'))
  // A mount of nothing is always a mistake (a forgotten [[ays]], or [ays] for [[ays]]).
  if (aysIn?.length === 0) c(() => fail(ctx, 'ays', 'missing: add at least one [[ays]] with an id'))
  const seen = new Map<string, number>()
  const ays: AysConfig[] = []
  ;(aysIn ?? []).forEach((a, i) => {
    const key = `ays[${i}]`
    if (!isTable(a)) return void c(() => fail(ctx, key, `expected a table ([[ays]]), got ${describe(a)}`))
    checkKeys(ctx, a, AYS_KEYS, key, (k) => misplaced(k, '[[ays]]'))
    const id = c(() => aysIdIn(ctx, a.id, `${key}.id`))
    const prefetch = c(() => optBool(ctx, a.prefetch, `${key}.prefetch`, false)) ?? false
    if (id === undefined) return
    const before = seen.get(id)
    if (before !== undefined) return void c(() => fail(ctx, `${key}.id`, `${describe(id)} is already ays[${before}]`))
    seen.set(id, i)
    ays.push({ id, prefetch })
  })

  const sources = (kind: 'cache' | 'store'): SourceConfig[] =>
    (c(() => arrayOfTables(ctx, obj[kind], kind)) ?? []).flatMap((v, i) => c(() => sourceIn(ctx, v, `${kind}[${i}]`, kind)) ?? [])
  const caches = sources('cache')
  const stores = sources('store')

  // In the order of the file's lines (those without a line last).
  const errors = ctx.errors.map((e, i) => ({ e, i })).sort((x, y) => (x.e.line ?? Infinity) - (y.e.line ?? Infinity) || x.i - y.i).map(({ e }) => e)
  ctx.errors = undefined
  if (errors.length === 1) throw errors[0]
  if (errors.length > 1) {
    // One line per mistake, each saying where; `file`, `line` and `key` are the first one's.
    const first = errors[0]!
    throw new AysfsError('EINVAL', errors.map((e) => e.message).join('\n'), { file: first.file, line: first.line, key: first.key })
  }
  const cfg: Config = { main, ays, caches, stores }
  if (ctx.file !== undefined) cfg.file = ctx.file
  ORIGINS.set(cfg, { obj, file: ctx.file, base: ctx.base })
  return cfg
}

/** The object (of the file's shape) each checked config came from: {@link reviseConfig} checks it again. */
const ORIGINS = new WeakMap<Config, { obj: Record<string, unknown>; file?: string; base: string }>()

/**
 * `config` checked again with `changes` (keys of the file's shape, `undefined` for absent) put
 * over its `[main]`, and its `[[ays]]` replaced by `changes.ays` when given. Relative paths
 * resolve as they did (against the config file's directory). For a command that mounts a user's
 * config its own way (`record`: a temp cache, no speculation).
 * @throws TypeError when `config` did not come from this module's checker; AysfsError `EINVAL`
 *   for a change the checker refuses.
 */
export function reviseConfig(config: Config, changes: { main?: Record<string, unknown>; ays?: Record<string, unknown>[] }): Config {
  const origin = ORIGINS.get(config)
  if (!origin) throw new TypeError('reviseConfig: config must come from loadConfig, parseConfig or checkConfig')
  const main = { ...(isTable(origin.obj.main) ? origin.obj.main : {}), ...changes.main }
  return check({ ...origin.obj, main, ...(changes.ays ? { ays: changes.ays } : {}) }, { file: origin.file, base: origin.base })
}

/** Whether `v` is a config this module's checker made (mount() takes one as it is). */
export function isCheckedConfig(v: unknown): v is Config {
  return typeof v === 'object' && v !== null && ORIGINS.has(v as Config)
}

/**
 * Check a config object of the TOML file's shape (`{ main: {...}, ays: [...], cache: [...],
 * store: [...] }`, TOML key names such as `cache_size`) and fill in defaults. Keys whose value
 * is `undefined` count as absent.
 *
 * Decisions users see: at least one `[[ays]]` is required; `[[store]]` may be absent (an offline
 * node serves flists from `<cache>/md/` and blobs from the local and grid caches; the mount then
 * fails if a flist is not there). Relative file paths (`cache`, `mount`, `token_file`, `ca`,
 * `trusted_keys`) resolve against the config file's directory, or the working directory for an
 * object. Source URLs must be absolute.
 * @param file only used in messages and to resolve relative paths.
 * @throws AysfsError `EINVAL` with `key` (and `file`, `line` when known).
 */
export function checkConfig(obj: unknown, file?: string): Config {
  return check(obj, { file, base: file === undefined ? process.cwd() : path.dirname(path.resolve(file)) })
}

/**
 * Parse and check the text of a TOML config.
 * @param file the file name for messages and relative paths.
 * @throws AysfsError `EINVAL`: TOML syntax errors carry the line TOML reports; other mistakes the
 *   line of the key (found by a small scan of the text, exact for ordinary layouts).
 */
export function parseConfig(text: string, file?: string): Config {
  const ctx: Ctx = { file, base: file === undefined ? process.cwd() : path.dirname(path.resolve(file)) }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  let obj: unknown
  try {
    obj = parseToml(text, { unsafeKeyBehaviour: 'throw' })
  } catch (err) {
    if (err instanceof TomlError) {
      // The message of a TomlError quotes the offending lines: they may hold a secret, so keep
      // only its first line, which says what is wrong.
      const what = err.message.split('\n')[0]!.replace(/^Invalid TOML document:\s*/, '')
      throw new AysfsError('EINVAL', `${where(ctx, err.line)}, column ${err.column}: ${what}`, { file, line: err.line })
    }
    throw err
  }
  ctx.lines = keyLines(text)
  return check(obj, ctx)
}

/**
 * Read, parse and check a config file.
 * @throws AysfsError `EINVAL` (a configuration error, exit status 2) for an unreadable file too,
 *   with the fs error as `cause`.
 */
export function loadConfig(file: string): Config {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : e.message
    throw new AysfsError('EINVAL', `config ${file}: cannot read: ${why}`, { file, cause: err })
  }
  return parseConfig(text, file)
}

/**
 * Map dotted keys (`main.timeout`, `ays[1]`, `store[0].headers.Authorization`) to 1-based lines by
 * a light scan of the text. smol-toml gives no positions for values, and a wrong line is worse
 * than none, so this only understands the ordinary layouts: `[table]`, `[[array]]`, `key = value`
 * with bare, quoted or dotted keys, inline tables on one line; it skips multi-line strings and
 * arrays.
 */
export function keyLines(text: string): Map<string, number> {
  const out = new Map<string, number>()
  const counts = new Map<string, number>()
  let table = ''
  let inString: string | null = null
  let depth = 0
  const lines = text.split(/\r?\n/)
  const keyPart = String.raw`(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')`
  const dotted = new RegExp(String.raw`^\s*(${keyPart}(?:\s*\.\s*${keyPart})*)\s*`)
  const splitKey = (k: string): string[] =>
    (k.match(new RegExp(keyPart, 'g')) ?? []).map((p) => (p.startsWith('"') ? (JSON.parse(p) as string) : p.startsWith("'") ? p.slice(1, -1) : p))
  const resolve = (parts: string[], isArray: boolean): string => {
    // Each [[x]] adds an element; a later [x.y] means "in the last element of x".
    let acc = ''
    parts.forEach((p, i) => {
      acc = acc ? `${acc}.${p}` : p
      const n = counts.get(acc)
      const last = i === parts.length - 1
      if (last && isArray) {
        const idx = n === undefined ? 0 : n + 1
        counts.set(acc, idx)
        acc = `${acc}[${idx}]`
      } else if (n !== undefined) acc = `${acc}[${n}]`
    })
    return acc
  }
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!
    if (inString !== null) {
      const end = line.indexOf(inString)
      // The rest of a closing line is rarely more than a comment: skip it.
      if (end >= 0) inString = null
      continue
    }
    if (depth > 0) {
      depth += bracketDelta(line)
      continue
    }
    const header = /^\s*(\[\[?)\s*(.*?)\s*\]\]?\s*(#.*)?$/.exec(line)
    if (header) {
      table = resolve(splitKey(header[2]!), header[1] === '[[')
      if (!out.has(table)) out.set(table, i + 1)
      continue
    }
    const m = dotted.exec(line)
    if (!m || line[m[0].length] !== '=') continue
    const parts = splitKey(m[1]!)
    const full = table ? `${table}.${parts.join('.')}` : parts.join('.')
    if (!out.has(full)) out.set(full, i + 1)
    const value = line.slice(m[0].length + 1)
    const triple = /("""|''')/.exec(value)
    if (triple && value.indexOf(triple[1]!, triple.index + 3) < 0) inString = triple[1]!
    else depth = Math.max(0, bracketDelta(value))
  }
  return out
}

/** Net count of `[`/`{` minus `]`/`}` outside strings and comments: > 0 while a value goes on. */
function bracketDelta(s: string): number {
  let d = 0
  let q: string | null = null
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!
    if (q !== null) {
      if (c === '\\' && q === '"') i++
      else if (c === q) q = null
    } else if (c === '"' || c === "'") q = c
    else if (c === '#') break
    else if (c === '[' || c === '{') d++
    else if (c === ']' || c === '}') d--
  }
  return d
}
