// Build stores, grid caches and local caches on disk for tests (layouts: docs/format.md).
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import * as zlib from 'node:zlib'

export function md5hex(data: Buffer | string): string {
  return crypto.createHash('md5').update(data).digest('hex')
}

/**
 * Deterministic pseudo-random bytes (incompressible, so `.bro` is not much smaller): the
 * AES-128-CTR keystream under a key derived from `seed` (OpenSSL's speed: a chain of SHA-256
 * blocks in JS took seconds for the MiBs some tests use). A shorter size gives a prefix.
 */
export function randomBytes(size: number, seed = 1): Buffer {
  const key = crypto.createHash('sha256').update(String(seed)).digest().subarray(0, 16)
  const cipher = crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16))
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()])
}

export interface StoredBlob {
  md5: string
  size: number
  data: Buffer
}

export function blob(content: Buffer | string): StoredBlob {
  const data = Buffer.isBuffer(content) ? content : Buffer.from(content)
  return { md5: md5hex(data), size: data.length, data }
}

/** `files/h0/h1/md5` (store) or `h0/h1/md5` (grid or local cache), relative to the root. */
export function blobRelPath(md5: string, layout: 'store' | 'cache'): string {
  const rel = path.join(md5[0], md5[1], md5)
  return layout === 'store' ? path.join('files', rel) : rel
}

/**
 * Write one blob under `root`. `variant`: `plain` (default), `bro` (only the `.bro`), `both`.
 * Returns the blob.
 */
export function writeBlob(root: string, content: Buffer | string, opts: { layout?: 'store' | 'cache'; variant?: 'plain' | 'bro' | 'both' } = {}): StoredBlob {
  const b = blob(content)
  const file = path.join(root, blobRelPath(b.md5, opts.layout ?? 'store'))
  fs.mkdirSync(path.dirname(file), { recursive: true })
  const variant = opts.variant ?? 'plain'
  if (variant !== 'bro') fs.writeFileSync(file, b.data)
  if (variant !== 'plain') fs.writeFileSync(`${file}.bro`, zlib.brotliCompressSync(b.data))
  return b
}

export interface FlistEntry extends StoredBlob {
  /** The path inside the service, e.g. `/opt/x/bin/tool`. */
  path: string
}

export interface MadeStore {
  root: string
  id: string
  entries: FlistEntry[]
  /** The flist text written to `md/<id>.flist`. */
  flist: string
}

/**
 * A store from a map of file path → content: each content becomes `files/h0/h1/md5` (and/or
 * `.bro`), and `md/<id>.flist` lists them in the seed format (`path|md5|size`).
 */
export function makeStore(
  root: string,
  files: Record<string, Buffer | string>,
  opts: { id?: string; variant?: 'plain' | 'bro' | 'both'; layout?: 'store' | 'cache' } = {},
): MadeStore {
  const id = opts.id ?? 'test__service'
  const entries: FlistEntry[] = []
  for (const [p, content] of Object.entries(files)) {
    const b = writeBlob(root, content, { layout: opts.layout, variant: opts.variant })
    entries.push({ ...b, path: p })
  }
  const flist = entries.map((e) => `${e.path}|${e.md5}|${e.size}\n`).join('')
  if ((opts.layout ?? 'store') === 'store') {
    fs.mkdirSync(path.join(root, 'md'), { recursive: true })
    fs.writeFileSync(path.join(root, 'md', `${id}.flist`), flist)
  }
  return { root, id, entries, flist }
}

/** A checked-shape Config for pipeline tests (no TOML involved). */
export function makeConfig(opts: {
  cache: string
  caches?: (string | { url: string; push?: boolean; headers?: Record<string, string>; tokenFile?: string })[]
  stores?: (string | { url: string; headers?: Record<string, string>; tokenFile?: string })[]
  timeoutMs?: number
  maxDownloads?: number
  maxFlistSize?: number
  speculate?: boolean
}): import('../../lib/config').Config {
  const src = (role: 'cache' | 'store') => (s: string | { url: string; push?: boolean; headers?: Record<string, string>; tokenFile?: string }, i: number) => {
    const o = typeof s === 'string' ? { url: s } : s
    return {
      url: o.url,
      headers: o.headers ?? {},
      tokenFile: o.tokenFile,
      push: role === 'cache' ? ('push' in o ? o.push !== false : true) : false,
      key: `${role}[${i}]`,
    }
  }
  return {
    main: {
      cache: opts.cache,
      cacheSize: 0,
      timeoutMs: opts.timeoutMs ?? 1000,
      trustedKeys: [],
      maxEntries: 5_000_000,
      maxFlistSize: opts.maxFlistSize ?? 512 * 1024 * 1024,
      maxDownloads: opts.maxDownloads ?? 16,
      suid: false,
      dev: false,
      speculate: opts.speculate ?? true,
      startup: true,
    },
    ays: [{ id: 'test__service', prefetch: false }],
    caches: (opts.caches ?? []).map(src('cache')),
    stores: (opts.stores ?? []).map(src('store')),
  }
}

/** A logger that keeps what it is told (pino-shaped). */
export function memLog(): { lines: { level: string; msg: string; obj: object }[]; debug(o: object, m?: string): void; info(o: object, m?: string): void; warn(o: object, m?: string): void; error(o: object, m?: string): void } {
  const lines: { level: string; msg: string; obj: object }[] = []
  const at = (level: string) => (obj: object, msg?: string) => {
    lines.push({ level, msg: msg ?? '', obj })
  }
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}
