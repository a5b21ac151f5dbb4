// The local cache never widens access: what the engine, the pipeline and the committer create in
// it is private (blobs and temp files 0600, directories 0700, kept flists 0600), whatever the
// umask of the mounting process. Checked with a umask of 0, so nothing rests on the umask.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { BlobWriter } from '../../lib/local-cache/blob-writer'
import { SERVICE, config, files, mountHere, readAsync, until, writeStore } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'
import { md5hex, randomBytes } from '../helpers/store'

const mode = (file: string): string => (fs.lstatSync(file).mode & 0o7777).toString(8).padStart(4, '0')

/** Runs the rest of the test with a umask of 0 (restored in teardown). */
function umaskZero(t: { teardown(fn: () => void): void }): void {
  const old = process.umask(0)
  t.teardown(() => void process.umask(old))
}

t.test('after misses through a mount with umask 0: blobs 0600, their directories 0700', async (t) => {
  umaskZero(t)
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  // Small blobs (committed from memory by the committer) and large ones (streamed to their temp
  // file by the pipeline, then renamed by the committer).
  const small = files(3, 70_000, 301)
  const large = files(2, 3 << 20, 302).map((f, i) => ({ ...f, path: `/big${i}` }))
  writeStore(store, [...small, ...large])
  const cache = path.join(dir, 'cache')
  const m = await mountHere(t, path.join(dir, 'mnt'), config(cache, [store]))

  const read = async (f: (typeof small)[number]): Promise<void> => {
    t.ok((await readAsync(path.join(m.mountpoint, f.path))).equals(f.data), `${f.path} reads right`)
    const blob = path.join(cache, f.md5[0]!, f.md5[1]!, f.md5)
    // The reader was answered from the checked bytes; the blob lands in the cache just after.
    t.ok(await until(() => fs.existsSync(blob), 30_000), `${f.path}: its blob is in the cache`)
    t.equal(mode(blob), '0600', `${f.path} (${f.data.length} bytes): its blob is 0600`)
    t.equal(mode(path.dirname(blob)), '0700', `${f.md5[0]}/${f.md5[1]} is 0700`)
    t.equal(mode(path.dirname(path.dirname(blob))), '0700', `${f.md5[0]} is 0700`)
  }
  await read(small[0]!)
  await read(large[0]!)
  t.equal(mode(path.join(cache, 'tmp')), '0700', 'tmp/ is 0700')
  t.equal(mode(path.join(cache, 'md')), '0700', 'md/ (the kept flists) is 0700')
  t.equal(mode(path.join(cache, 'md', `${SERVICE}.flist`)), '0600', 'the kept flist is 0600')

  // tmp/ removed under a running mount is made again, private, by whichever side needs it first:
  // the committer for a blob held in memory, the pipeline for one streamed to its temp file.
  for (const f of [small[1]!, large[1]!]) {
    fs.rmSync(path.join(cache, 'tmp'), { recursive: true, force: true })
    await read(f)
    t.equal(mode(path.join(cache, 'tmp')), '0700', `tmp/ made again 0700 (for ${f.path})`)
  }
  t.same(fs.readdirSync(path.join(cache, 'tmp')), [], 'no temp file left')
})

t.test('a large blob is written to a 0600 temp file while it arrives', async (t) => {
  umaskZero(t)
  const dir = tmpdir(t)
  const data = randomBytes((1 << 20) + 1, 303)
  const tmp = path.join(dir, 'temp')
  const w = new BlobWriter(md5hex(data), data.length, tmp)
  t.teardown(() => w.abort())
  w.write(data.subarray(0, 1000))
  t.equal(mode(tmp), '0600', 'the temp file is 0600 from its creation')
})
