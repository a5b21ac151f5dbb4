// Large files read in pieces over a WAN (`npm run bench -- --only chunks`): one large file (1 GiB;
// 64 MiB with --quick) published with `publish --chunks` (4 MiB chunks, the whole blob kept too),
// served by nginx through the WAN proxy (bench/wan-proxy.ts), read on a fresh mount with an empty
// local cache: the time to the first 4 KiB of the file, and to 4 KiB in its middle. The reference
// is the same read of the same file through a flist that names no chunk index (the whole-blob
// path: any byte waits for the whole file): every run with --quick (64 MiB), once at full size
// (86 s for 1 GiB at 100 Mbit/s; `info.referenceRuns` says how many). The
// floor of the link is in each row's info: curl fetching the index and then one chunk through a
// fresh proxy, one after the other on one connection (`curlIndexAndChunk`, seconds).
import { execFileSync } from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { mount, type AysfsMount } from '../lib/index'
import { publish } from '../lib/publish'
import { startNginx } from './nginx'
import { judge, summarize, type WorkloadResult } from './report'
import { spawnWanProxy, type ProxyStats, type WanProxyProcess } from './wan-proxy'

/** What the rows run with. */
export interface ChunksBenchOptions {
  work: string
  runs: number
  quick: boolean
  rttMs: number
  rateBits: number
  progress(msg: string): void
}

const ID = 'bench__big'
const WHOLE_ID = 'bench__big_whole'
const PREFIX = '/opt/bench-big'
const READ = 4096
/** The bound: the first byte of a large uncached file well under a second behind the link. */
const TARGET_S = 1

/** A file of `size` bytes: random 1 MiB blocks, each made distinct (no chunk repeats another). */
function makeFile(file: string, size: number): void {
  const block = crypto.randomBytes(1 << 20)
  const fd = fs.openSync(file, 'w')
  try {
    for (let off = 0; off < size; off += block.length) {
      block.writeUInt32LE(off / block.length, 0)
      fs.writeSync(fd, block, 0, Math.min(block.length, size - off), off)
    }
  } finally {
    fs.closeSync(fd)
  }
}

/** Seconds to read `READ` bytes at `off` (on this thread: the servers are other processes). */
function timedRead(file: string, off: number): number {
  const buf = Buffer.alloc(READ)
  const t0 = process.hrtime.bigint()
  const fd = fs.openSync(file, 'r')
  try {
    if (fs.readSync(fd, buf, 0, READ, off) !== READ) throw new Error(`chunks bench: short read of ${file} at ${off}`)
  } finally {
    fs.closeSync(fd)
  }
  return Number(process.hrtime.bigint() - t0) / 1e9
}

/** Runs the rows; returns them. */
export async function runChunks(o: ChunksBenchOptions): Promise<WorkloadResult[]> {
  const size = o.quick ? 64 << 20 : 1 << 30
  const dir = fs.mkdtempSync(path.join(o.work, 'chunks-'))
  const src = path.join(dir, 'src')
  const store = path.join(dir, 'store')
  fs.mkdirSync(src)
  o.progress(`chunks: a file of ${size >> 20} MiB, published with --chunks`)
  makeFile(path.join(src, 'big'), size)
  await publish({ dir: src, id: ID, store, prefix: PREFIX, chunks: true, progress: false, fsync: false })
  fs.rmSync(src, { recursive: true, force: true })
  // The same file without its chunk index: the whole-blob path.
  const flist = fs.readFileSync(path.join(store, 'md', `${ID}.flist`), 'utf8')
  fs.writeFileSync(path.join(store, 'md', `${WHOLE_ID}.flist`), flist.replace(/chunks=[0-9a-f]{32}$/m, ''))
  const nginx = await startNginx({ store, accessLog: false })
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  let proxy: WanProxyProcess | undefined
  let m: AysfsMount | undefined
  /** A fresh mount of `id` with an empty cache behind a fresh proxy; `fn` reads it. */
  const fresh = async <T>(id: string, run: number, fn: (file: string) => T): Promise<{ value: T; proxy: ProxyStats | undefined }> => {
    const cache = path.join(dir, `cache-${id}-${run}`)
    proxy = await spawnWanProxy({ target: nginx.port, rttMs: o.rttMs, rateBits: o.rateBits })
    try {
      m = await mount({ mountpoint: mnt, config: { main: { cache, prefix: PREFIX, timeout: '30s' }, ays: [{ id }], store: [{ url: `${proxy.url}/store` }] }, log: { level: 'warn' } })
      const value = fn(path.join(mnt, 'big'))
      await m.unmount()
      m = undefined
      return { value, proxy: await proxy.stop() }
    } finally {
      if (m?.mounted) await m.unmount()
      m = undefined
      await proxy?.stop()
      proxy = undefined
      fs.rmSync(cache, { recursive: true, force: true })
    }
  }
  try {
    const first: number[] = []
    const middle: number[] = []
    const whole: number[] = []
    let chunkedDown = 0
    let wholeDown = 0
    const curl: number[] = []
    const index = /chunks=([0-9a-f]{32})/.exec(flist)![1]!
    const chunk0 = fs.readFileSync(path.join(store, 'files', index[0]!, index[1]!, index), 'latin1').slice(0, 32)
    const url = (md5: string, base: string): string => `${base}/store/files/${md5[0]}/${md5[1]}/${md5}`
    for (let run = 0; run < o.runs; run++) {
      o.progress(`chunks: run ${run + 1} of ${o.runs}`)
      const a = await fresh(ID, run, (f) => timedRead(f, 0))
      first.push(a.value)
      const b = await fresh(ID, run, (f) => timedRead(f, Math.floor(size / 2)))
      middle.push(b.value)
      chunkedDown = Math.max(chunkedDown, a.proxy?.bytesDown ?? 0, b.proxy?.bytesDown ?? 0)
      proxy = await spawnWanProxy({ target: nginx.port, rttMs: o.rttMs, rateBits: o.rateBits })
      const t0 = process.hrtime.bigint()
      execFileSync('curl', ['-s', '--fail', '-o', '/dev/null', url(index, proxy.url), '-o', '/dev/null', url(chunk0, proxy.url)])
      curl.push(Number(process.hrtime.bigint() - t0) / 1e9)
      await proxy.stop()
      proxy = undefined
      // The whole-blob path takes the whole file's transfer whatever the offset: at full size
      // (a minute and a half a run), measured once.
      if (run > 0 && !o.quick) continue
      const w = await fresh(WHOLE_ID, run, (f) => timedRead(f, Math.floor(size / 2)))
      whole.push(w.value)
      wholeDown = w.proxy?.bytesDown ?? 0
    }
    const reference = summarize(whole)
    const info = { fileBytes: size, chunkBytes: 4 << 20, rttMs: o.rttMs, rateBits: o.rateBits, bytesDownChunked: chunkedDown, bytesDownWhole: wholeDown, curlIndexAndChunk: summarize(curl), referenceRuns: whole.length }
    const row = (id: string, title: string, runs: number[]): WorkloadResult => {
      const mountS = summarize(runs)
      const target = { of: 'value' as const, op: '<=' as const, bound: TARGET_S }
      return { id, title, unit: 's', mount: mountS, reference, referenceName: 'whole blob', target, ...judge(target, mountS, reference), info }
    }
    return [
      row('chunks-first', `${size >> 20} MiB file with chunks, uncached, over the WAN: first 4 KiB`, first),
      row('chunks-middle', `${size >> 20} MiB file with chunks, uncached, over the WAN: 4 KiB in the middle`, middle),
    ]
  } finally {
    if (m?.mounted) await m.unmount()
    await proxy?.stop()
    await nginx.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
