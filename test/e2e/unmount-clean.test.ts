// unmount() with a file held open and read while it unmounts prints nothing: libfuse printed
// "fuse: failed to unmount …: Invalid argument" when a request woke the loop after
// fuse_session_exit, because it then unmounted the already detached mountpoint once more (issue
// 15). The mount is served by a child process, whose stderr is what a user sees.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { files, PREFIX, SERVICE, writeStore, config } from '../helpers/hardening'
import { clearMounts, tmpdir } from '../helpers/mount'

const INDEX = path.resolve(__dirname, '../../dist/lib/index.js')

t.test('unmount() with a file held open and busy: no spurious libfuse line', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const list = files(1, 1 << 20)
  writeStore(store, list)
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  const child = path.join(dir, 'child.js')
  fs.writeFileSync(
    child,
    `const { mount } = require(${JSON.stringify(INDEX)})\n` +
      `mount({ mountpoint: process.argv[2], config: JSON.parse(process.argv[3]), log: { level: 'error' } }).then((m) => {\n` +
      `  process.stdout.write('ready\\n')\n` +
      `  process.stdin.once('data', () => m.unmount().then(() => process.exit(0)))\n` +
      `})\n`,
  )
  const cfg = config(path.join(dir, 'cache'), [store])
  for (let i = 0; i < 3; i++) {
    const c = spawn(process.execPath, [child, mnt, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } })
    t.teardown(() => {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
      clearMounts(mnt)
    })
    let out = ''
    let err = ''
    c.stdout.on('data', (d: Buffer) => (out += d.toString()))
    c.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const exited = new Promise<number | null>((resolve) => c.on('exit', (code) => resolve(code)))
    await Promise.race([
      new Promise<void>((resolve) => c.stdout.on('data', () => out.includes('ready') && resolve())),
      exited.then(() => {
        throw new Error(`the child exited before it mounted: ${err}`)
      }),
    ])
    const fd = fs.openSync(path.join(mnt, list[0]!.path.slice(1)), 'r')
    fs.readSync(fd, Buffer.alloc(4096), 0, 4096, 0)
    c.stdin.write('unmount\n')
    // Requests on the open file while it unmounts: one of them wakes the loop after it was told
    // to exit, before the connection is over.
    let done = false
    void exited.then(() => (done = true))
    const buf = Buffer.alloc(4096)
    for (let n = 0; !done; n++) {
      try {
        fs.fstatSync(fd)
        fs.readSync(fd, buf, 0, 4096, ((n * 37) % 256) * 4096)
      } catch {
        // the connection is gone: ENOTCONN
      }
      await new Promise((r) => setImmediate(r))
    }
    t.equal(await exited, 0, `run ${i}: unmounted and exited`)
    try {
      fs.closeSync(fd)
    } catch {
      // ENOTCONN
    }
    t.equal(err, '', `run ${i}: nothing on stderr`)
  }
  t.notOk(fs.readFileSync('/proc/self/mounts', 'utf8').includes(` ${mnt} `), 'nothing left mounted')
})
