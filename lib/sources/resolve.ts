/**
 * Host name resolution that never touches libuv's threadpool.
 *
 * `dns.lookup()` (Node's default for every socket) runs getaddrinfo() on the threadpool. The miss
 * worker must keep working while every threadpool thread is blocked (a process that reads its own
 * mount from an fs callback holds one), so HTTP sources use the `lookup` made here instead:
 *
 * 1. IP literals are answered directly;
 * 2. names in /etc/hosts (read with readFileSync, re-read when its mtime changes), then
 *    `localhost` and `*.localhost`, which always mean the loopback addresses;
 * 3. anything else goes to c-ares (`dns.Resolver`, sockets on the calling thread's event loop):
 *    A records first, then AAAA; a single-label name is also tried with the `search` domains of
 *    /etc/resolv.conf, as getaddrinfo would. Answers are cached for their TTL (at most a minute).
 *
 * What this does not do, unlike getaddrinfo: nsswitch modules (mDNS, LDAP, systemd-resolved's
 * own API), `options ndots`. Name a host that needs them in /etc/hosts or by address.
 */
import * as dns from 'node:dns'
import * as fs from 'node:fs'
import * as net from 'node:net'

/** One resolved address, as `dns.lookup(..., { all: true })` gives it. */
export interface LookupAddress {
  address: string
  family: 4 | 6
}

/** The options `net.connect` passes to a `lookup` function. */
export interface LookupOptions {
  family?: number | string
  all?: boolean
  hints?: number
  verbatim?: boolean
  order?: string
}

type SingleCallback = (err: NodeJS.ErrnoException | null, address: string, family: number) => void
type AllCallback = (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void

/** The signature of `dns.lookup`, accepted by `http.Agent`, `net.connect` and `tls.connect`. */
export type LookupFunction = (
  hostname: string,
  options: LookupOptions | number | SingleCallback,
  callback?: SingleCallback | AllCallback,
) => void

export interface ResolverOptions {
  /** Hosts file to consult; default `/etc/hosts`. */
  hostsFile?: string
  /** resolv.conf to take `search` domains from; default `/etc/resolv.conf`. */
  resolvConf?: string
  /** DNS servers for c-ares (`'127.0.0.1:5353'`); default: the system's, from resolv.conf. */
  servers?: string[]
  /** Time c-ares waits for one answer, in ms; default 2000. */
  timeoutMs?: number
  /** Attempts per server; default 2. */
  tries?: number
  /**
   * The clock of the caches (the hosts file and resolv.conf looked at again at most once a
   * second, answers kept for their TTL), in ms; default `Date.now` (tests pass their own).
   */
  now?: () => number
}

/** A resolver with its own caches; `lookup` is the function to hand to agents and sockets. */
export interface HostResolver {
  lookup: LookupFunction
  /** All addresses of `hostname` (IPv4 first), or a rejection coded `ENOTFOUND`. */
  resolve(hostname: string, family?: 0 | 4 | 6): Promise<LookupAddress[]>
  /** Drop cached answers and re-read the hosts file on next use. */
  clear(): void
}

const LOOPBACK: LookupAddress[] = [
  { address: '127.0.0.1', family: 4 },
  { address: '::1', family: 6 },
]
const MAX_TTL_MS = 60_000
const FILE_RECHECK_MS = 1_000

interface FileCache<T> {
  path: string
  checkedAt: number
  mtimeMs: number
  value: T
}

/** Parse a hosts file: name (lower case) -> addresses in file order. */
export function parseHosts(text: string): Map<string, LookupAddress[]> {
  const map = new Map<string, LookupAddress[]>()
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim()
    if (line === '') continue
    const [address, ...names] = line.split(/\s+/)
    const bare = address.replace(/%.*$/, '') // fe80::1%eth0: the zone is not something we can dial
    const family = net.isIP(bare)
    if (family === 0) continue
    for (const n of names) {
      const name = n.toLowerCase()
      const list = map.get(name) ?? []
      if (!list.some((a) => a.address === bare)) list.push({ address: bare, family: family as 4 | 6 })
      map.set(name, list)
    }
  }
  return map
}

function parseSearch(text: string): string[] {
  let search: string[] = []
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*/, '').trim()
    const m = /^(search|domain)\s+(.*)$/.exec(line)
    // The last search/domain line wins, as in resolv.conf(5).
    if (m) search = m[2].split(/\s+/).filter((d) => d !== '' && d !== '.')
  }
  return search
}

function notFound(hostname: string, cause?: unknown): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException & { hostname?: string } = new Error(`getaddrinfo ENOTFOUND ${hostname}`, cause === undefined ? undefined : { cause })
  err.code = 'ENOTFOUND'
  err.errno = -3008
  err.syscall = 'getaddrinfo'
  err.hostname = hostname
  return err
}

function ipv4First(list: LookupAddress[]): LookupAddress[] {
  return [...list.filter((a) => a.family === 4), ...list.filter((a) => a.family === 6)]
}

function wantFamily(options: LookupOptions | number | undefined): 0 | 4 | 6 {
  const f = typeof options === 'number' ? options : options?.family
  if (f === 4 || f === 'IPv4') return 4
  if (f === 6 || f === 'IPv6') return 6
  return 0
}

/** Make a resolver; most callers want the shared {@link lookup} instead. */
export function createResolver(opts: ResolverOptions = {}): HostResolver {
  const hostsFile = opts.hostsFile ?? '/etc/hosts'
  const resolvConf = opts.resolvConf ?? '/etc/resolv.conf'
  const timeout = opts.timeoutMs ?? 2000
  const tries = opts.tries ?? 2
  const now = opts.now ?? Date.now
  let resolver: dns.Resolver | undefined
  let hosts: FileCache<Map<string, LookupAddress[]>> | undefined
  let search: FileCache<string[]> | undefined
  const answers = new Map<string, { until: number; list: LookupAddress[] }>()

  function readCached<T>(cache: FileCache<T> | undefined, path: string, parse: (s: string) => T, empty: T): FileCache<T> {
    const at = now()
    if (cache && at - cache.checkedAt < FILE_RECHECK_MS) return cache
    let mtimeMs = -1
    try {
      mtimeMs = fs.statSync(path).mtimeMs
    } catch {
      return { path, checkedAt: at, mtimeMs, value: empty }
    }
    if (cache && cache.mtimeMs === mtimeMs) {
      cache.checkedAt = at
      return cache
    }
    let value = empty
    try {
      value = parse(fs.readFileSync(path, 'utf8'))
    } catch {
      // unreadable: behave as if empty, try again after FILE_RECHECK_MS
    }
    return { path, checkedAt: at, mtimeMs, value }
  }

  function getResolver(): dns.Resolver {
    if (!resolver) {
      // The constructor reads resolv.conf synchronously (c-ares' init); queries go out on
      // sockets of this thread's event loop: no threadpool involved.
      resolver = new dns.Resolver({ timeout, tries })
      if (opts.servers) resolver.setServers(opts.servers)
    }
    return resolver
  }

  function query(name: string, family: 4 | 6): Promise<{ list: LookupAddress[]; ttl: number }> {
    return new Promise((resolve) => {
      const done = (err: NodeJS.ErrnoException | null, records: dns.RecordWithTtl[]) => {
        if (err || records.length === 0) return resolve({ list: [], ttl: 0 })
        resolve({
          list: records.map((r) => ({ address: r.address, family })),
          ttl: Math.min(...records.map((r) => r.ttl)) * 1000,
        })
      }
      if (family === 4) getResolver().resolve4(name, { ttl: true }, done)
      else getResolver().resolve6(name, { ttl: true }, done)
    })
  }

  async function viaDns(name: string, family: 0 | 4 | 6): Promise<LookupAddress[]> {
    const key = `${family}:${name}`
    const hit = answers.get(key)
    if (hit && hit.until > now()) return hit.list
    answers.delete(key)
    const candidates = [name]
    if (!name.includes('.')) {
      search = readCached(search, resolvConf, parseSearch, [])
      for (const d of search.value) candidates.push(`${name}.${d}`)
    }
    for (const candidate of candidates) {
      // A then AAAA (not both at once): the common case is one round trip.
      for (const f of family === 0 ? ([4, 6] as const) : [family]) {
        const { list, ttl } = await query(candidate, f)
        if (list.length > 0) {
          const keep = Math.min(Math.max(ttl, 0), MAX_TTL_MS)
          if (keep > 0) answers.set(key, { until: now() + keep, list })
          return list
        }
      }
    }
    throw notFound(name)
  }

  async function resolve(hostname: string, family: 0 | 4 | 6 = 0): Promise<LookupAddress[]> {
    let name = hostname
    if (name.startsWith('[') && name.endsWith(']')) name = name.slice(1, -1)
    const literal = net.isIP(name)
    if (literal !== 0) return [{ address: name, family: literal as 4 | 6 }]
    name = name.toLowerCase().replace(/\.$/, '')
    if (name === '') throw notFound(hostname)
    const filter = (list: LookupAddress[]) => ipv4First(family === 0 ? list : list.filter((a) => a.family === family))
    hosts = readCached(hosts, hostsFile, parseHosts, new Map())
    const fromHosts = filter(hosts.value.get(name) ?? [])
    if (fromHosts.length > 0) return fromHosts
    if (name === 'localhost' || name.endsWith('.localhost')) {
      const lo = filter(LOOPBACK)
      if (lo.length > 0) return lo
      throw notFound(hostname)
    }
    return viaDns(name, family)
  }

  const lookup: LookupFunction = (hostname, options, callback) => {
    let cb = callback
    let o: LookupOptions | number | undefined
    if (typeof options === 'function') cb = options
    else o = options
    if (typeof cb !== 'function') throw new TypeError('lookup: callback must be a function')
    const all = typeof o === 'object' && o !== null && o.all === true
    resolve(hostname, wantFamily(o)).then(
      (list) => {
        if (all) (cb as AllCallback)(null, list)
        else (cb as SingleCallback)(null, list[0].address, list[0].family)
      },
      (err: NodeJS.ErrnoException) => {
        if (all) (cb as AllCallback)(err, [])
        else (cb as SingleCallback)(err, '', 0)
      },
    )
  }

  return {
    lookup,
    resolve,
    clear() {
      hosts = undefined
      search = undefined
      answers.clear()
    },
  }
}

let shared: HostResolver | undefined

/**
 * The process-wide (well, thread-wide: each worker has its own module instance) resolver's
 * `lookup`, to pass as the `lookup` option of an `http.Agent`/`https.Agent` or `net.connect`.
 */
export const lookup: LookupFunction = (hostname, options, callback) => {
  shared ??= createResolver()
  shared.lookup(hostname, options, callback)
}
