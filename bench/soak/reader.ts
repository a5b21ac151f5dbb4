// A soak reader: a process of its own that reads the mount for a while, every way a program
// does, and checks each byte it gets against the content made from the file's index. Half the
// reads are O_DIRECT: they bypass the kernel's page cache of the mount, so they reach the engine
// (and its cache files, and the evictions) every time; the other half go through the page cache.
//
//   node dist/bench/soak/reader.js '<json>'   json: { mnt, files, seed, durationMs, concurrency, id }
//
// Prints one JSON line at the end: counts of operations, bytes, wrong bytes (with the first few
// cases), errors by code.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { contentOf, dirCount, pathOf, PER_DIR, sizeOf } from './content'

interface Args {
  mnt: string
  files: number
  seed: number
  durationMs: number
  concurrency: number
  id: number
}

export interface ReaderResult {
  id: number
  ops: Record<string, number>
  bytes: number
  wrong: number
  wrongCases: string[]
  errors: Record<string, number>
}

async function readWhole(file: string, flags: number): Promise<Buffer> {
  const fh = await fs.promises.open(file, flags)
  try {
    return await fh.readFile()
  } finally {
    await fh.close()
  }
}

async function main(): Promise<void> {
  const a = JSON.parse(process.argv[2]!) as Args
  const res: ReaderResult = { id: a.id, ops: {}, bytes: 0, wrong: 0, wrongCases: [], errors: {} }
  let rnd = (a.seed * 7919 + a.id * 104729) >>> 0 || 1
  const rand = (n: number): number => {
    rnd ^= rnd << 13
    rnd ^= rnd >>> 17
    rnd ^= rnd << 5
    return (rnd >>> 0) % n
  }
  const wrong = (what: string) => {
    res.wrong++
    if (res.wrongCases.length < 10) res.wrongCases.push(what)
  }
  const end = Date.now() + a.durationMs
  // Warm-up: every lane starts with a whole large file (the engine splices those): each FUSE
  // thread then has its splice pipe early, so the fd count is at its level after warm-up.
  const large: number[] = []
  for (let i = 0; i < a.files && large.length < 4 * a.concurrency; i++) if (sizeOf(a.seed, i) >= 1 << 20) large.push(i)
  let warm = large.length
  const op = async (): Promise<void> => {
    const warming = warm > 0
    const i = warming ? large[--warm]! : rand(a.files)
    const flags = rand(2) === 0 ? fs.constants.O_RDONLY | fs.constants.O_DIRECT : fs.constants.O_RDONLY
    if (warming) {
      res.ops.read = (res.ops.read ?? 0) + 1
      const got = await readWhole(path.join(a.mnt, pathOf(i)), fs.constants.O_RDONLY | fs.constants.O_DIRECT)
      res.bytes += got.length
      if (!got.equals(contentOf(a.seed, i))) wrong(`read ${pathOf(i)}: ${got.length} bytes`)
      return
    }
    const file = path.join(a.mnt, pathOf(i))
    const kind = rand(100)
    if (kind < 40) {
      res.ops.read = (res.ops.read ?? 0) + 1
      const got = await readWhole(file, flags)
      res.bytes += got.length
      if (!got.equals(contentOf(a.seed, i))) wrong(`read ${pathOf(i)}: ${got.length} bytes`)
    } else if (kind < 65) {
      res.ops.pread = (res.ops.pread ?? 0) + 1
      const size = sizeOf(a.seed, i)
      const off = size === 0 ? 0 : rand(size)
      const len = 1 + rand(128 * 1024)
      const fh = await fs.promises.open(file, flags)
      try {
        const buf = Buffer.alloc(len)
        const { bytesRead } = await fh.read(buf, 0, len, off)
        res.bytes += bytesRead
        const want = contentOf(a.seed, i).subarray(off, off + len)
        if (!buf.subarray(0, bytesRead).equals(want)) wrong(`pread ${pathOf(i)} @${off}+${len}: ${bytesRead} bytes`)
      } finally {
        await fh.close()
      }
    } else if (kind < 80) {
      res.ops.stat = (res.ops.stat ?? 0) + 1
      const st = await fs.promises.stat(file)
      if (st.size !== sizeOf(a.seed, i) || !st.isFile()) wrong(`stat ${pathOf(i)}: size ${st.size}`)
    } else if (kind < 90) {
      res.ops.readdir = (res.ops.readdir ?? 0) + 1
      const d = rand(dirCount(a.files))
      const names = await fs.promises.readdir(path.join(a.mnt, `d${d}`))
      const want = Math.min(PER_DIR, a.files - d * PER_DIR)
      if (names.length !== want) wrong(`readdir d${d}: ${names.length} names, not ${want}`)
    } else {
      // An open file kept a while, read at its start and again at its end.
      res.ops.held = (res.ops.held ?? 0) + 1
      const fh = await fs.promises.open(file, flags)
      try {
        const content = contentOf(a.seed, i)
        const head = Buffer.alloc(Math.min(4096, content.length))
        await fh.read(head, 0, head.length, 0)
        await new Promise((resolve) => setTimeout(resolve, 200 + rand(1000)))
        const tailOff = Math.max(0, content.length - 4096)
        const tail = Buffer.alloc(content.length - tailOff)
        await fh.read(tail, 0, tail.length, tailOff)
        res.bytes += head.length + tail.length
        if (!head.equals(content.subarray(0, head.length)) || !tail.equals(content.subarray(tailOff))) wrong(`held ${pathOf(i)}`)
      } finally {
        await fh.close()
      }
    }
  }
  await Promise.all(
    Array.from({ length: a.concurrency }, async () => {
      while (Date.now() < end) {
        try {
          await op()
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code ?? 'other'
          res.errors[code] = (res.errors[code] ?? 0) + 1
        }
      }
    }),
  )
  process.stdout.write(JSON.stringify(res) + '\n')
}

void main()
