// A FIFO, a device or a symlink where a directory store (or file:// grid cache) should hold a
// blob or an flist is that source's failure, found at once: it is never opened in a way that
// waits (a FIFO with no writer blocked the miss worker's open forever, and unmount with it) and
// never followed. The next source serves; with none left the read fails with EIO, promptly.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { DirSource } from '../../lib/sources/dir'
import { BufferSink } from '../../lib/sources/source'
import { SERVICE, config, files, mountChild, writeStore, type Child, type File } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'

/** Well past what the fix needs (milliseconds), well below the old hang (forever, or the 11 s backstop). */
const PROMPT_MS = 5000

function blobFile(store: string, f: File): string {
  return path.join(store, 'files', f.md5[0]!, f.md5[1]!, f.md5)
}

function mkfifo(file: string): void {
  fs.rmSync(file, { force: true })
  execFileSync('mkfifo', [file])
}

/** `p`, or a rejection after `ms` saying what did not happen in time. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  return Promise.race([p, late]).finally(() => clearTimeout(timer))
}

/** Reads `file` from this process (the mount is in a child); its outcome and how long it took. */
async function timedRead(file: string): Promise<{ data?: Buffer; code?: string; ms: number }> {
  const start = Date.now()
  try {
    const data = await within(fs.promises.readFile(file), PROMPT_MS, `reading ${file}`)
    return { data, ms: Date.now() - start }
  } catch (err) {
    return { code: (err as NodeJS.ErrnoException).code ?? (err as Error).message, ms: Date.now() - start }
  }
}

/** SIGTERM: the mounter unmounts and exits; resolves with its exit code, or rejects if it hangs. */
async function stop(child: Child): Promise<number | string> {
  child.proc.kill('SIGTERM')
  return within(child.exited, 10_000, 'unmount and exit after SIGTERM')
}

t.test('directory source: a FIFO, a device, a symlink or a directory is that source failing, at once', async (t) => {
  const root = tmpdir(t)
  const outside = path.join(tmpdir(t), 'outside')
  fs.writeFileSync(outside, 'not for you')
  fs.mkdirSync(path.join(root, 'd'))
  mkfifo(path.join(root, 'fifo'))
  execFileSync('mknod', [path.join(root, 'null'), 'c', '1', '3'])
  fs.symlinkSync(outside, path.join(root, 'link'))
  fs.mkdirSync(path.join(root, 'dir'))
  const src = new DirSource({ url: root, headers: {}, push: false, key: 'store[0]' }, 'store')
  const cases: [string, RegExp][] = [
    ['fifo', /is a FIFO, not a regular file/],
    ['null', /is a character device, not a regular file/],
    ['link', /is a symbolic link \(not followed\)/],
    ['dir', /is a directory, not a regular file/],
  ]
  for (const [name, message] of cases) {
    const start = Date.now()
    await t.rejects(within(src.get(name, new BufferSink(1 << 20)), PROMPT_MS, name), { name: 'SourceFault', kind: 'not-a-file', message }, name)
    t.ok(Date.now() - start < PROMPT_MS, `${name}: failed in ${Date.now() - start} ms`)
  }
})

t.test('a FIFO where a blob or the flist should be: the next store serves, promptly; alone, EIO; unmount resolves', async (t) => {
  const dir = tmpdir(t)
  const list = files(2, 50_000, 311)
  const fifoStore = path.join(dir, 'fifo-store')
  const goodStore = path.join(dir, 'good-store')
  writeStore(fifoStore, list)
  writeStore(goodStore, list)
  mkfifo(blobFile(fifoStore, list[0]!))
  mkfifo(blobFile(fifoStore, list[1]!))

  t.test('with a good store after it', async (t) => {
    // The flist too is a FIFO in the first store: the mount itself must not wait on it.
    const flistStore = path.join(dir, 'fifo-flist-store')
    writeStore(flistStore, list)
    mkfifo(blobFile(flistStore, list[0]!))
    mkfifo(path.join(flistStore, 'md', `${SERVICE}.flist`))
    const mnt = path.join(dir, 'mnt1')
    const child = await within(mountChild(t, { mountpoint: mnt, config: config(path.join(dir, 'cache1'), [flistStore, goodStore]) }), 60_000, 'the mount')
    const r = await timedRead(path.join(mnt, list[0]!.path))
    t.ok(r.data?.equals(list[0]!.data), `the read succeeds from the second store (${r.code ?? 'ok'}, ${r.ms} ms)`)
    t.ok(r.ms < PROMPT_MS, 'promptly')
    t.match(child.stderr(), /not-a-file/, 'the first store is logged as failing (not-a-file)')
    t.equal(await stop(child), 0, 'unmount resolves and the mounter exits 0')
  })

  t.test('with only the FIFO store', async (t) => {
    const mnt = path.join(dir, 'mnt2')
    // The flist from the FIFO store itself (only its blobs are FIFOs).
    const child = await within(mountChild(t, { mountpoint: mnt, config: config(path.join(dir, 'cache2'), [fifoStore]) }), 60_000, 'the mount')
    const r = await timedRead(path.join(mnt, list[0]!.path))
    t.equal(r.code, 'EIO', `the read fails with EIO (${r.code ?? 'read'}, ${r.ms} ms)`)
    t.ok(r.ms < PROMPT_MS, 'promptly')
    // A second miss still finds the worker free (it was never stuck on the first).
    const again = await timedRead(path.join(mnt, list[1]!.path))
    t.equal(again.code, 'EIO', `another file: EIO too (${again.ms} ms)`)
    t.equal(await stop(child), 0, 'unmount resolves and the mounter exits 0')
  })
})
