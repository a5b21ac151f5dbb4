// Read-around: a second random read in a chunk pushes the rest of the chunk into the page cache
// (notify_store). What readers get stays byte-exact; sequential reads and first touches push
// nothing; readAround: 0 turns it off.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fixtureFetcher, mountEngine, tmpdir } from '../helpers/mount'
import { md5, tableFor, type GenEntry } from '../helpers/tree'

const SIZE = 8 << 20
const BLOCK = 4096

async function setup(t: Parameters<typeof mountEngine>[0], readAround?: number) {
  const dir = tmpdir(t)
  const content = crypto.randomBytes(SIZE)
  const hash = md5(content)
  const cacheDir = path.join(dir, 'cache')
  // Already cached: every read is a hit.
  fs.mkdirSync(path.join(cacheDir, hash[0]!, hash[1]!), { recursive: true })
  fs.writeFileSync(path.join(cacheDir, hash[0]!, hash[1]!, hash), content)
  const entries: GenEntry[] = [{ path: '/big.bin', kind: 'file', perms: 0o644, size: SIZE, md5: hash, mtime: 1_700_000_000 }]
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor(entries),
    fetcher: fixtureFetcher({ cacheDir, mode: 'never' }),
    ...(readAround !== undefined ? { readAround } : {}),
  })
  return { engine, content, file: path.join(mnt, 'big.bin') }
}

function shuffled(n: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i)
  let seed = 7
  for (let i = n - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) >>> 0
    const j = seed % (i + 1)
    ;[order[i], order[j]] = [order[j]!, order[i]!]
  }
  return order
}

t.test('every block once in random order: byte-exact, far fewer requests than blocks', async (t) => {
  const { engine, content, file } = await setup(t)
  const fd = fs.openSync(file, 'r')
  t.teardown(() => fs.closeSync(fd))
  const buf = Buffer.alloc(BLOCK)
  let bad = 0
  const blocks = SIZE / BLOCK
  for (const b of shuffled(blocks)) {
    fs.readSync(fd, buf, 0, BLOCK, b * BLOCK)
    if (!buf.equals(content.subarray(b * BLOCK, (b + 1) * BLOCK))) bad++
  }
  t.equal(bad, 0, 'every block as stored')
  const s = engine.stats()
  t.ok(s.readAround > 0, `pushed ${s.readAround} bytes around random reads`)
  t.ok(s.ops.read < blocks / 2, `${s.ops.read} read requests for ${blocks} blocks`)
  // Not exactly the file at most: a read's thread queues its chunk's push after its reply, so
  // under load the next read's push of the same chunk may land first, and a few pages go twice
  // (29 pages over the 8 MiB in one CI run). Never a runaway.
  t.ok(s.readAround <= 2 * SIZE, `at most twice the file pushed (${s.readAround} bytes for ${SIZE})`)
})

t.test('a sequential read pushes nothing', async (t) => {
  const { engine, content, file } = await setup(t)
  t.ok(fs.readFileSync(file).equals(content), 'the file as stored')
  t.equal(engine.stats().readAround, 0)
})

t.test('readAround: 0 turns it off', async (t) => {
  const { engine, content, file } = await setup(t, 0)
  const fd = fs.openSync(file, 'r')
  t.teardown(() => fs.closeSync(fd))
  const buf = Buffer.alloc(BLOCK)
  for (const b of shuffled(SIZE / BLOCK).slice(0, 512)) {
    fs.readSync(fd, buf, 0, BLOCK, b * BLOCK)
    if (!buf.equals(content.subarray(b * BLOCK, (b + 1) * BLOCK))) t.fail(`block ${b}`)
  }
  t.equal(engine.stats().readAround, 0)
})

t.test('random reads parked on a miss in one chunk are all answered (pushes never wait on them)', { timeout: 30_000 }, async (t) => {
  const dir = tmpdir(t)
  const content = crypto.randomBytes(SIZE)
  const hash = md5(content)
  fs.mkdirSync(path.join(dir, 'blobs'))
  fs.writeFileSync(path.join(dir, 'blobs', hash), content)
  const cacheDir = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor([{ path: '/big.bin', kind: 'file', perms: 0o644, size: SIZE, md5: hash, mtime: 1_700_000_000 }]),
    // The blob arrives after the reads below have parked: they are answered together, and the
    // second one in the chunk asks for a push while the others still hold their pages.
    fetcher: fixtureFetcher({ cacheDir, mode: 'copy', sourceDir: path.join(dir, 'blobs'), delayMs: 300 }),
  })
  const fh = await fs.promises.open(path.join(mnt, 'big.bin'), 'r')
  t.teardown(() => fh.close())
  const blocks = [33, 40, 50, 60, 45, 37]
  const got = await Promise.all(
    blocks.map(async (b) => {
      const buf = Buffer.alloc(BLOCK)
      await fh.read(buf, 0, BLOCK, b * BLOCK)
      return buf
    }),
  )
  got.forEach((buf, i) => t.ok(buf.equals(content.subarray(blocks[i]! * BLOCK, (blocks[i]! + 1) * BLOCK)), `block ${blocks[i]}`))
  t.ok(engine.stats().missCalls >= 1)
})
