// Crashes, for real: SIGKILL of the mounting process mid-download and at random moments of a
// burst of downloads, then a remount at once over the dead mount; and `umount -l` from outside
// while the mount is busy.
import { execFileSync, spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { prng } from '../../bench/prng'
import { startFaultServer } from '../helpers/faults'
import { cacheBlobs, childStats, config, files, mountChild, mountHere, until, writeStore } from '../helpers/hardening'
import { clearMounts, mountsBelow, tmpdir } from '../helpers/mount'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** `cat file` in a process of its own: resolves with what it read and how it ended. */
function cat(file: string): { done: Promise<{ code: number | null; out: Buffer; err: string }>; kill(): void } {
  const p = spawn('cat', [file], { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: Buffer[] = []
  let err = ''
  p.stdout.on('data', (d: Buffer) => out.push(d))
  p.stderr.on('data', (d: Buffer) => (err += d.toString()))
  return {
    done: new Promise((resolve) => p.on('close', (code) => resolve({ code, out: Buffer.concat(out), err }))),
    kill: () => p.kill('SIGKILL'),
  }
}

/** Reads files in one child process, 32 at a time (a burst of misses for the mount). */
function readMany(files: string[]): { done: Promise<number | null> } {
  const script = `
    const fs = require('fs'); const files = process.argv.slice(1); let next = 0
    const worker = async () => { while (next < files.length) { try { await fs.promises.readFile(files[next++]) } catch {} } }
    Promise.all(Array.from({ length: 32 }, worker))`
  const p = spawn(process.execPath, ['-e', script, ...files], { stdio: 'ignore' })
  return { done: new Promise((resolve) => p.on('close', (code) => resolve(code))) }
}

function tmpFiles(cache: string): { name: string; size: number }[] {
  const dir = path.join(cache, 'tmp')
  if (!fs.existsSync(dir)) return []
  return fs.readdirSync(dir).map((name) => ({ name, size: fs.statSync(path.join(dir, name)).size }))
}

t.test('SIGKILL mid-download: no partial blob under its name; a remount works at once and cleans up', async (t) => {
  const dir = tmpdir(t)
  // Over 1 MiB: such a blob is written to its temp file as it arrives (smaller ones are kept in
  // memory until checked, and a SIGKILL leaves nothing of them at all).
  const [slow] = files(1, 1_200_000, 31)
  writeStore(path.join(dir, 'store'), [slow!])
  // 2,000 bytes/s: over the speed floor, so the download runs (for 100 s) until we kill it.
  const srv = await startFaultServer({ store: path.join(dir, 'store'), trickleBps: 2000 })
  t.teardown(() => srv.close())
  const cache = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const child = await mountChild(t, { mountpoint: mnt, config: config(cache, [srv.base('trickle')], { timeout: '5s' }) })

  const reader = cat(path.join(mnt, slow!.path))
  t.ok(await until(() => tmpFiles(cache).some((f) => f.size >= 2000), 10_000), 'the download is writing its temp file')
  child.proc.kill('SIGKILL')
  t.equal(await child.exited, 'SIGKILL')
  const r = await reader.done
  t.not(r.code, 0, `the reader got an error (${r.err.trim()})`)

  const final = path.join(cache, slow!.md5[0]!, slow!.md5[1]!, slow!.md5)
  t.notOk(fs.existsSync(final), 'nothing under the final name')
  const left = tmpFiles(cache)
  t.ok(left.length === 1 && left[0]!.size > 0 && left[0]!.size < slow!.data.length, `a partial temp file (${left[0]?.size} bytes) is all there is`)
  t.throws(() => fs.statfsSync(mnt), { code: 'ENOTCONN' }, 'the dead mount is stale ("Transport endpoint is not connected")')

  // A remount over the stale mount, at once, from a good store.
  const start = Date.now()
  const m = await mountHere(t, mnt, config(cache, [srv.base('good')]))
  t.ok(Date.now() - start < 5000, `remounted in ${Date.now() - start} ms`)
  t.same(tmpFiles(cache), [], "the dead process's temp file was removed at start")
  // Async reads here and below: the fault server runs on this thread's event loop.
  t.ok((await fs.promises.readFile(path.join(m.mountpoint, slow!.path))).equals(slow!.data), 'the file reads right')
  t.equal(mountsBelow(mnt).length, 1, 'one mount, no stale one below it')
})

t.test('SIGKILL at random moments of a burst of downloads: every blob in the cache is whole', async (t) => {
  const dir = tmpdir(t)
  const list = files(200, (i) => 1000 + ((i * 7919) % 120_000), 32)
  writeStore(path.join(dir, 'store'), list)
  const srv = await startFaultServer({ store: path.join(dir, 'store') })
  t.teardown(() => srv.close())
  const cache = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  let cachedSome = false
  let partials = 0
  const random = prng(79) // the kill moments: the same on every run
  for (let round = 0; round < 4; round++) {
    const child = await mountChild(t, { mountpoint: mnt, config: config(cache, [srv.base('good')], { max_downloads: 32 }) })
    const asked = srv.requests.length
    const reader = readMany(list.map((f) => path.join(mnt, f.path)))
    // From the first request of the burst (the reader is a process that takes its time to
    // start, the more so on a busy machine), a random moment.
    await until(() => srv.requests.length > asked, 10_000)
    await sleep(random() * 400) // a moment of the burst: what is killed is the point, not a wait
    child.proc.kill('SIGKILL')
    await child.exited
    await reader.done
    partials += tmpFiles(cache).length
    const blobs = cacheBlobs(cache)
    cachedSome ||= blobs.length > 0
    t.same(blobs.filter((b) => b.md5 !== b.name), [], `round ${round}: ${blobs.length} blobs cached, each whole and checked`)
  }
  t.ok(cachedSome, 'the kills came after some downloads completed')
  t.comment(`${partials} temp files of downloads cut short`)
  const m = await mountHere(t, mnt, config(cache, [srv.base('good')]))
  t.same(tmpFiles(cache), [], 'temp files of the killed processes removed at start')
  const wrong: string[] = []
  for (const f of list) if (!(await fs.promises.readFile(path.join(m.mountpoint, f.path))).equals(f.data)) wrong.push(f.path)
  t.same(wrong, [], 'after the remount every file reads right')
})

t.test('umount -l from outside while busy: the mountpoint is free at once, the process ends when let go', async (t) => {
  const dir = tmpdir(t)
  const list = files(3, 50_000, 33)
  writeStore(path.join(dir, 'store'), list)
  const srv = await startFaultServer({ store: path.join(dir, 'store'), delayMs: 1500 })
  t.teardown(() => srv.close())
  const cache = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const child = await mountChild(t, { mountpoint: mnt, config: config(cache, [srv.base('slow')], { timeout: '5s' }) })

  // Busy: a file held open (read once), and a read parked on a slow download.
  const held = fs.openSync(path.join(mnt, list[0]!.path), 'r')
  const first = Buffer.alloc(list[0]!.data.length)
  await new Promise<void>((resolve, reject) => fs.read(held, first, 0, first.length, 0, (err) => (err ? reject(err) : resolve())))
  const parked = cat(path.join(mnt, list[1]!.path))
  // The read parks before its fetch starts: once the store sees the request (answered 1.5 s
  // later), the read is parked.
  t.ok(await until(() => srv.count((r) => r.rel.endsWith(list[1]!.md5)) > 0, 10_000, 10), 'the slow download started')
  const parkedNow = (await childStats(child)).engine?.parked ?? 0
  t.ok(parkedNow >= 1, `a read is parked on the slow download (${parkedNow})`)

  execFileSync('umount', ['-l', mnt])
  t.same(mountsBelow(mnt), [], 'detached at once')
  // The mountpoint can take a new mount while the old one still serves what it has open.
  const again = await mountHere(t, mnt, config(cache, [srv.base('good')]))
  t.ok((await fs.promises.readFile(path.join(again.mountpoint, list[2]!.path))).equals(list[2]!.data), 'a new mount at the same place works')

  const r = await parked.done
  t.equal(r.code, 0, 'the parked read completed')
  t.ok(r.out.equals(list[1]!.data), 'with the right bytes')
  const buf = Buffer.alloc(list[0]!.data.length)
  fs.readSync(held, buf, 0, buf.length, 0)
  t.ok(buf.equals(list[0]!.data), 'the held file still reads right')
  t.equal(child.proc.exitCode, null, 'the old process serves while its files are open')

  fs.closeSync(held)
  const code = await Promise.race([child.exited, sleep(5000).then(() => 'still running')])
  t.equal(code, 0, 'and exits 0 once they are closed')
  t.ok(child.messages.some((m) => m.type === 'gone'), 'after telling its owner the mount went away')
})

t.test('unmount while blobs are still being put in the cache: the process ends cleanly, the cache is whole', async (t) => {
  // Readers are answered from the checked bytes before the committer's threads have written,
  // fsynced and renamed them, so an unmount right after the reads ends the miss worker (and its
  // thread-safe functions) while commits are under way. Their reports must find nobody, not a
  // freed function.
  const dir = tmpdir(t)
  // A few over 1 MiB: those the miss worker writes to a temp file itself and hands over closed.
  const list = files(120, (i) => (i % 40 === 7 ? 1_500_000 : 2000 + ((i * 7919) % 60_000)), 33)
  writeStore(path.join(dir, 'store'), list)
  const cache = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  t.teardown(() => clearMounts(mnt))
  const script = `
    const fs = require('fs'), path = require('path')
    const { mount } = require(${JSON.stringify(path.resolve(__dirname, '../../dist/lib/index.js'))})
    const [mnt, cache, config, files] = JSON.parse(process.argv[1])
    ;(async () => {
      for (let round = 0; round < 12; round++) {
        // A cache of its own each round: the last round's commits may still be landing.
        config.main.cache = path.join(cache, String(round))
        const m = await mount({ mountpoint: mnt, config, log: { level: 'error' } })
        await Promise.all(files.map((f) => fs.promises.readFile(path.join(mnt, f))))
        await m.unmount()
      }
      process.stdout.write('done')
    })().catch((err) => { console.error(err); process.exit(1) })`
  const args = [mnt, cache, config(cache, [path.join(dir, 'store')]), list.map((f) => f.path)]
  const r = await new Promise<{ code: number | null; signal: string | null; out: string; err: string }>((resolve) => {
    const p = spawn(process.execPath, ['-e', script, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    p.stdout.on('data', (d: Buffer) => (out += d.toString()))
    p.stderr.on('data', (d: Buffer) => (err += d.toString()))
    p.on('close', (code, signal) => resolve({ code, signal, out, err }))
  })
  t.same({ code: r.code, signal: r.signal, out: r.out }, { code: 0, signal: null, out: 'done' }, `12 rounds, exited cleanly ${r.err.slice(0, 2000)}`)
  t.notMatch(r.err, /Warning/, 'no warning (a worker warns about an fd it opened that something else closed)')
  const blobs = Array.from({ length: 12 }, (_, round) => cacheBlobs(path.join(cache, String(round)))).flat()
  t.ok(blobs.length > 0, `${blobs.length} blobs landed`)
  t.same(blobs.filter((b) => b.md5 !== b.name), [], 'every blob in the caches is what its name says')
  t.equal(mountsBelow(mnt).length, 0, 'no mount left')
})
