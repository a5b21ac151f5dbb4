// The pipeline on a worker thread completes fetches (HTTP through nginx, by host name, and from a
// directory store) while every thread of libuv's threadpool is blocked and the main thread is
// parked in Atomics.wait: the situation of a process that reads its own mount (docs/design.md).
import t from 'tap'
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Worker } from 'node:worker_threads'
import { startNginx } from '../helpers/nginx'
import { makeConfig, randomBytes, writeBlob } from '../helpers/store'
import { tmpdir } from '../helpers/tmp'
import { until, within } from '../helpers/wait'

const POOL = Number(process.env.UV_THREADPOOL_SIZE) || 4

function once<T>(w: Worker, pred: (m: T) => boolean): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: T) => {
      if (!pred(m)) return
      w.off('message', onMsg)
      resolve(m)
    }
    w.on('message', onMsg)
    w.once('error', reject)
  })
}

/**
 * Threads of this process asleep in an open() of a FIFO that has no writer: the kernel's
 * `wait_for_partner` (fs/pipe.c), as /proc says where each thread sleeps.
 */
function inFifoOpen(): number {
  let n = 0
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      if (fs.readFileSync(`/proc/self/task/${tid}/wchan`, 'utf8') === 'wait_for_partner') n++
    } catch {
      // the thread ended meanwhile
    }
  }
  return n
}

/**
 * Occupy every threadpool thread with an open() of a FIFO that has no writer. `done()`: every
 * one of those opens has returned (after `unblock()`), its descriptor closed.
 */
function blockThreadpool(dir: string): { unblock(): void; done(): boolean } {
  const fifo = path.join(dir, 'fifo')
  execFileSync('mkfifo', [fifo])
  let returned = 0
  for (let i = 0; i < POOL; i++) {
    fs.open(fifo, 'r', (err, fd) => {
      if (!err) fs.closeSync(fd)
      returned++
    })
  }
  let released = false
  return {
    done: () => returned === POOL,
    unblock() {
      if (released) return
      released = true
      // A writer arriving releases every reader blocked in open(); O_NONBLOCK so this thread
      // never waits itself.
      const fd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
      fs.closeSync(fd)
    },
  }
}

t.test('fetches complete on a worker while the threadpool and the main thread are blocked', async (t) => {
  const n = await startNginx()
  t.teardown(() => n.stop())
  const dirStore = tmpdir(t)
  const cache = tmpdir(t)
  const viaHttp = writeBlob(n.dirs.store, randomBytes(500_000, 70))
  const viaBro = writeBlob(n.dirs.store, randomBytes(20_000, 71), { variant: 'bro' })
  const viaDir = writeBlob(dirStore, randomBytes(300_000, 72))
  const pushTarget = tmpdir(t)
  const config = makeConfig({
    cache,
    caches: [`http://localhost:${n.port}/cache`, pushTarget],
    stores: [`http://localhost:${n.port}/store`, `file://${dirStore}`],
    timeoutMs: 2000,
  })
  const flag = new SharedArrayBuffer(4)
  const done = new Int32Array(flag)
  const w = new Worker(path.join(__dirname, 'fixtures', 'fetch-worker.ts'), { workerData: { config, flag } })
  t.teardown(() => w.terminate())
  await once<{ type: string }>(w, (m) => m.type === 'ready')

  const block = blockThreadpool(tmpdir(t))
  let statDone = false
  try {
    // Blocked: as many threads as the pool has sleep in open(). A stat queued behind them waits
    // until they are let go (checked below, after the fetches).
    t.ok(await until(() => inFifoOpen() >= POOL, 10_000, 10), `the threadpool (${POOL} threads) is blocked in open()`)
    fs.stat(__filename, () => (statDone = true))

    const results: { type: string; md5: string; stats: { sources: { hits: number; pushes: number }[] } }[] = []
    for (const blob of [viaHttp, viaBro, viaDir]) {
      const before = Atomics.load(done, 0)
      const got = once<(typeof results)[0]>(w, (m) => m.md5 === blob.md5)
      w.postMessage({ type: 'fetch', md5: blob.md5, size: blob.size })
      // Park the main thread, as a thread blocked reading the mount would be.
      const waited = Atomics.wait(done, 0, before, 10_000)
      t.equal(waited === 'timed-out' ? 'timed-out' : 'woken', 'woken', `worker finished ${blob.md5} with the main thread parked`)
      results.push(await within(got, 2000, `fetch of ${blob.md5}`))
    }
    t.same(results.map((r) => r.type), ['fetched', 'fetched', 'fetched'])
    for (const blob of [viaHttp, viaBro, viaDir]) {
      t.same(fs.readFileSync(path.join(cache, blob.md5[0], blob.md5[1], blob.md5)), blob.data)
    }
    t.notOk(statDone, 'and the threadpool was blocked all along')
    // Pushes ran on the worker too (sync reads for PUT, sync copy for the directory cache).
    w.postMessage({ type: 'close' })
    await within(once<{ type: string }>(w, (m) => m.type === 'closed'), 5000, 'drain and close')
    for (const blob of [viaHttp, viaBro, viaDir]) {
      const rel = path.join(blob.md5[0], blob.md5[1], blob.md5)
      t.same(fs.readFileSync(path.join(n.dirs.cache, rel)), blob.data, 'pushed over HTTP')
      t.same(fs.readFileSync(path.join(pushTarget, rel)), blob.data, 'pushed to the directory cache')
    }
    t.notOk(statDone)
  } finally {
    block.unblock()
  }
  // The threadpool let go before the test ends: every blocked open() returned (its descriptor
  // closed), and the stat queued behind them completed.
  t.ok(await until(() => block.done() && statDone, 10_000, 10), 'the threadpool is free again')
})
