// A 256 MiB file, read sequentially and at random offsets, byte-exact.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fixtureFetcher, mountEngine, tmpdir } from '../helpers/mount'
import { md5, tableFor, type GenEntry } from '../helpers/tree'

t.test('a 256 MiB file reads back byte-exact, sequentially and at random offsets', async (t) => {
  const dir = tmpdir(t)
  const content = crypto.randomBytes(256 << 20)
  const hash = md5(content)
  fs.mkdirSync(path.join(dir, 'blobs'))
  fs.writeFileSync(path.join(dir, 'blobs', hash), content)
  const entries: GenEntry[] = [{ path: '/data/big.bin', kind: 'file', perms: 0o644, size: content.length, md5: hash, mtime: 1_700_000_000 }]
  const mnt = path.join(dir, 'mnt')
  const cacheDir = path.join(dir, 'cache')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor(entries),
    fetcher: fixtureFetcher({ cacheDir, mode: 'copy', sourceDir: path.join(dir, 'blobs') }),
  })
  const file = path.join(mnt, 'data/big.bin')

  // Random reads first: the first of them parks on the miss, the rest come from the cache file.
  const fd = fs.openSync(file, 'r')
  t.teardown(() => fs.closeSync(fd))
  const rand = crypto.createHash('sha256').update('offsets').digest()
  let bad = 0
  for (let i = 0; i < 300; i++) {
    const off = (rand.readUInt32LE(i % 28) * (i + 1)) % content.length
    const len = Math.min(1 + ((off * 7919) % 300_000), content.length - off)
    const buf = Buffer.alloc(len)
    const n = fs.readSync(fd, buf, 0, len, off)
    if (n !== len || !buf.equals(content.subarray(off, off + len))) bad++
  }
  t.equal(bad, 0, '300 random reads match')
  const tail = Buffer.alloc(100)
  t.equal(fs.readSync(fd, tail, 0, 100, content.length - 10), 10, 'a read past the end is short')

  const h = crypto.createHash('md5')
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer)
  t.equal(h.digest('hex'), hash, 'a sequential read matches')
  t.equal(engine.stats().missCalls, 1, 'one fetch for the whole file')
})
