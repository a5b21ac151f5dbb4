// unmount() resolves within about a second whatever the miss worker is doing, even blocked in a
// system call that worker.terminate() cannot interrupt.
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { packageRoot } from '../../lib/package-root'
import { until } from '../helpers/hardening'
import { clearMounts, mountsBelow, tmpdir } from '../helpers/mount'
import { md5, tableFor } from '../helpers/tree'

t.test('unmount() resolves while the miss worker is blocked opening a FIFO', async (t) => {
  const dir = tmpdir(t)
  const cacheDir = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  const fifo = path.join(dir, 'fifo')
  execFileSync('mkfifo', [fifo]) // nobody ever opens it for writing
  const content = Buffer.from('never fetched\n')
  const table = tableFor([{ path: '/a', kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000 }])
  const script = path.join(dir, 'child.js')
  fs.writeFileSync(
    script,
    `const { Engine } = require(${JSON.stringify(path.join(packageRoot(), 'dist/lib/engine.js'))})
const { spawn } = require('child_process')
const fs = require('fs')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
// A thread of this process waiting in the open of a FIFO for a writer.
const blocked = () => fs.readdirSync('/proc/self/task').some((tid) => {
  try { return fs.readFileSync('/proc/self/task/' + tid + '/wchan', 'utf8') === 'wait_for_partner' } catch { return false }
})
;(async () => {
  const engine = await Engine.mount({
    mountpoint: ${JSON.stringify(mnt)}, cacheDir: ${JSON.stringify(cacheDir)},
    table: Buffer.from(${JSON.stringify(table.toString('base64'))}, 'base64'),
    fetcher: { module: ${JSON.stringify(require.resolve('../fixtures/fetcher.js'))}, data: { cacheDir: ${JSON.stringify(cacheDir)}, mode: 'block', fifo: ${JSON.stringify(fifo)} } },
  })
  const reader = spawn('cat', [${JSON.stringify(path.join(mnt, 'a'))}], { stdio: 'ignore' })
  const readerDone = new Promise((resolve) => reader.on('exit', (code) => resolve(code)))
  for (let i = 0; i < 500 && !blocked(); i++) await sleep(20)
  console.log(blocked() ? 'blocked' : 'not blocked')
  const start = Date.now()
  await engine.unmount()
  console.log('unmounted ' + (Date.now() - start))
  console.log('reader ' + (await readerDone))
})()
`,
  )
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => {
    child.kill('SIGKILL')
    clearMounts(mnt)
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d))
  const exit = new Promise<void>((resolve) => child.on('exit', () => resolve()))
  const done = await until(() => /^reader /m.test(out), 15_000)
  t.match(out, /^blocked$/m, 'the miss worker was blocked in open() of the FIFO')
  const took = /^unmounted (\d+)$/m.exec(out)
  t.ok(took, done ? 'unmount() resolved' : 'unmount() had not resolved after 15 s')
  if (took) t.ok(Number(took[1]) < 3000, `within ${took[1]} ms`)
  t.match(out, /^reader 1$/m, 'the parked reader got an error')
  t.same(mountsBelow(mnt), [], 'and the mount is gone')
  // The worker stays blocked: Node would join it at exit, so this process cannot exit by itself.
  child.kill('SIGKILL')
  await exit
})
