// Interrupts: a reader waiting on a miss that is killed ends at once (its read is answered
// EINTR), and the download goes on for the other readers of the blob.
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { until } from '../helpers/hardening'
import { fixtureFetcher, mountEngine, tmpdir } from '../helpers/mount'
import { md5, tableFor } from '../helpers/tree'
import { within } from '../helpers/wait'

// An O_DIRECT read into an aligned buffer: with asynchronous direct I/O (libfuse's default) the
// kernel would send it as a background request and the reader could not be killed until it was
// answered.
const DIRECT_READ = `
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 16)
print('reading', flush=True)
n = os.readv(fd, [buf])
print('read', n, flush=True)
`

t.test('a killed O_DIRECT reader of a blob being fetched ends at once; the fetch goes on', async (t) => {
  const dir = tmpdir(t)
  const content = crypto.randomBytes(300_000)
  fs.mkdirSync(path.join(dir, 'blobs'))
  fs.writeFileSync(path.join(dir, 'blobs', md5(content)), content)
  const cacheDir = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const gateFile = path.join(dir, 'gate')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor([{ path: '/a.bin', kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000 }]),
    // The fetch completes only when the test opens the gate; the backstop is far away.
    fetcher: fixtureFetcher({ cacheDir, mode: 'gate', gateFile, sourceDir: path.join(dir, 'blobs') }),
    stallTimeoutMs: 60_000,
  })

  const child = spawn('python3', ['-c', DIRECT_READ, path.join(mnt, 'a.bin')], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d))
  const exited = new Promise<number>((resolve) => child.once('exit', () => resolve(Date.now())))
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  t.ok(await until(() => engine.stats().parked >= 1, 10_000), 'the O_DIRECT read parked on the miss')
  t.match(out, /reading/)

  const killedAt = Date.now()
  child.kill('SIGKILL')
  const gone = await within(exited, 5000, 'the killed reader').catch(() => undefined)
  t.ok(gone !== undefined, gone === undefined ? 'the killed reader is still there after 5 s' : `the killed reader ended after ${gone - killedAt} ms`)
  t.equal(child.signalCode, 'SIGKILL', 'killed, not answered')
  t.ok(await until(() => engine.stats().interrupted >= 1, 3000), 'its read was answered EINTR (counted)')
  const s = engine.stats()
  t.equal(s.parked, 0, 'nothing parked any more')
  t.equal(s.fetching, 1, 'the fetch goes on')

  // Another reader of the same blob joins that fetch and gets its bytes when it completes.
  const reader = fs.promises.readFile(path.join(mnt, 'a.bin'))
  t.ok(await until(() => engine.stats().parked >= 1, 5000), 'a second reader parked on the same fetch')
  fs.writeFileSync(gateFile, '')
  const got = await reader
  t.ok(got.equals(content), 'and got every byte')
  const after = engine.stats()
  t.equal(after.missCalls, 1, 'one fetch for both')
  t.equal(after.errors, 0, 'no EIO')
})

// The reader handles SIGUSR1 and reads again on EINTR, as Python does by itself (PEP 475).
const RETRYING_READ = `
import mmap, os, signal, sys
signal.signal(signal.SIGUSR1, lambda *a: print('signal', flush=True))
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 16)
print('reading', flush=True)
n = os.readv(fd, [buf])
print('read', n, buf[:n].hex()[:16], flush=True)
`

t.test('a handled signal interrupts a parked read; the reader reads again and joins the same fetch', async (t) => {
  const dir = tmpdir(t)
  const content = crypto.randomBytes(100_000)
  fs.mkdirSync(path.join(dir, 'blobs'))
  fs.writeFileSync(path.join(dir, 'blobs', md5(content)), content)
  const cacheDir = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const gateFile = path.join(dir, 'gate')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor([{ path: '/a.bin', kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000 }]),
    fetcher: fixtureFetcher({ cacheDir, mode: 'gate', gateFile, sourceDir: path.join(dir, 'blobs') }),
    stallTimeoutMs: 60_000,
  })
  const child = spawn('python3', ['-c', RETRYING_READ, path.join(mnt, 'a.bin')], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.ok(await until(() => engine.stats().parked >= 1, 10_000), 'the read parked')
  child.kill('SIGUSR1')
  t.ok(await until(() => /signal/.test(out), 5000), 'the handler ran while the read waited')
  t.ok(await until(() => engine.stats().interrupted >= 1 && engine.stats().parked >= 1, 5000), 'the read was answered EINTR and parked again')
  fs.writeFileSync(gateFile, '')
  t.equal(await exited, 0, 'the reader ended well')
  t.match(out, new RegExp(`read 65536 ${content.subarray(0, 8).toString('hex')}`), 'with the right bytes')
  t.equal(engine.stats().missCalls, 1, 'one fetch: the second read joined it')
})
