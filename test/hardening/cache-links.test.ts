// The engine never follows a link planted under the local cache, nor waits on a FIFO there: such
// an entry is not a blob, so the read parks and the blob is fetched (its rename replaces the
// entry), or fails with EIO when no source has it. Never the planted file's bytes.
import { execFileSync, spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { config, files, mountHere, until, writeStore } from '../helpers/hardening'
import { fixtureFetcher, mountEngine, tmpdir, type FixtureData } from '../helpers/mount'
import { randomBytes } from '../helpers/store'
import { md5, tableFor, type GenEntry } from '../helpers/tree'

/** `cat` in a child process, killed after `ms`: exit code (null when killed), bytes, stderr. */
function catFile(file: string, ms = 10_000): Promise<{ code: number | null; out: Buffer; err: string }> {
  return new Promise((resolve) => {
    const child = spawn('cat', [file])
    const timer = setTimeout(() => child.kill('SIGKILL'), ms)
    const out: Buffer[] = []
    let err = ''
    child.stdout.on('data', (d: Buffer) => out.push(d))
    child.stderr.on('data', (d: Buffer) => (err += d))
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, out: Buffer.concat(out), err })
    })
  })
}

function blobPath(cacheDir: string, hash: string): string {
  return path.join(cacheDir, hash[0]!, hash[1]!, hash)
}

/** A mount of two files (small: pushed to the page cache on lookup; large: spliced) whose
 * cache entries are symlinks to files of the right size and other bytes. */
async function planted(t: Test, mode: FixtureData['mode']) {
  const dir = tmpdir(t)
  const small = randomBytes(50_000, 71)
  const large = randomBytes(3 << 20, 72)
  const blobs = path.join(dir, 'blobs')
  fs.mkdirSync(blobs)
  const cacheDir = path.join(dir, 'cache')
  const decoys: Buffer[] = []
  for (const content of [small, large]) {
    fs.writeFileSync(path.join(blobs, md5(content)), content)
    const decoy = Buffer.alloc(content.length, 0x5a)
    decoys.push(decoy)
    const target = path.join(dir, `decoy-${content.length}`)
    fs.writeFileSync(target, decoy)
    fs.mkdirSync(path.dirname(blobPath(cacheDir, md5(content))), { recursive: true })
    fs.symlinkSync(target, blobPath(cacheDir, md5(content)))
  }
  const entry = (p: string, content: Buffer): GenEntry => ({ path: p, kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000 })
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor([entry('/small', small), entry('/large', large)]),
    fetcher: fixtureFetcher({ cacheDir, mode, sourceDir: blobs }),
  })
  return { mnt, engine, cacheDir, small, large, decoys }
}

t.test('a symlink planted at a blob path is never followed: the blob is fetched over it', async (t) => {
  const { mnt, engine, cacheDir, small, large, decoys } = await planted(t, 'copy')
  for (const [name, content] of [['small', small], ['large', large]] as const) {
    const r = await catFile(path.join(mnt, name))
    t.equal(r.code, 0, `${name}: read (${r.err.trim() || 'no error'})`)
    t.notOk(decoys.some((d) => r.out.equals(d)), `${name}: never the planted file's bytes`)
    t.ok(r.out.equals(content), `${name}: the blob's own bytes`)
    t.ok(fs.lstatSync(blobPath(cacheDir, md5(content))).isFile(), `${name}: the fetched blob replaced the link`)
  }
  t.equal(engine.stats().missCalls, 2, 'each planted link counted as absent: one fetch each')
})

t.test('a symlink planted at a blob no source has: EIO, never its bytes', async (t) => {
  const { mnt, small, large, decoys } = await planted(t, 'reject')
  for (const [name, content] of [['small', small], ['large', large]] as const) {
    const r = await catFile(path.join(mnt, name))
    t.not(r.code, 0, `${name}: the read failed`)
    t.match(r.err, /Input\/output error/, `${name}: with EIO`)
    t.equal(r.out.length, 0, `${name}: and returned no byte`)
    t.notOk(decoys.some((d) => r.out.equals(d)) || r.out.equals(content), `${name}: nothing served`)
  }
})

t.test('a FIFO planted at a blob path is never waited on', async (t) => {
  const dir = tmpdir(t)
  const content = randomBytes(20_000, 73)
  const blobs = path.join(dir, 'blobs')
  fs.mkdirSync(blobs)
  fs.writeFileSync(path.join(blobs, md5(content)), content)
  const cacheDir = path.join(dir, 'cache')
  const fifo = blobPath(cacheDir, md5(content))
  fs.mkdirSync(path.dirname(fifo), { recursive: true })
  execFileSync('mkfifo', [fifo])
  // Should a FUSE thread block opening it, a writer lets it go so the mount can be unmounted.
  t.teardown(() => {
    try {
      fs.closeSync(fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK))
    } catch {
      // no reader (the engine never opened it), or replaced by the blob
    }
  })
  const mnt = path.join(dir, 'mnt')
  await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor([{ path: '/f', kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000 }]),
    fetcher: fixtureFetcher({ cacheDir, mode: 'copy', sourceDir: blobs }),
  })
  const r = await catFile(path.join(mnt, 'f'), 5000)
  t.equal(r.code, 0, r.code === null ? 'the read hung (killed after 5 s)' : `read (${r.err.trim() || 'no error'})`)
  t.ok(r.out.equals(content), 'the blob was fetched over the FIFO')
})

t.test('through mount(): a planted symlink is replaced by the fetched blob', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const [file] = files(1, 70_000, 74)
  writeStore(store, [file!])
  const cache = path.join(dir, 'cache')
  const decoy = path.join(dir, 'decoy')
  fs.writeFileSync(decoy, Buffer.alloc(file!.data.length, 0x5a))
  fs.mkdirSync(path.dirname(blobPath(cache, file!.md5)), { recursive: true })
  fs.symlinkSync(decoy, blobPath(cache, file!.md5))
  const mnt = path.join(dir, 'mnt')
  const m = await mountHere(t, mnt, config(cache, [store]))
  const r = await catFile(path.join(mnt, file!.path))
  t.equal(r.code, 0, `read (${r.err.trim() || 'no error'})`)
  t.ok(r.out.equals(file!.data), "the blob's own bytes")
  // The reader was answered from the checked bytes; the commit renames a moment later.
  t.ok(await until(() => fs.lstatSync(blobPath(cache, file!.md5)).isFile(), 5000), 'the link is gone, the blob is in its place')
  t.equal(m.stats().pipeline?.alreadyCached, 0, 'the pipeline did not take the link for a cached blob')
})
