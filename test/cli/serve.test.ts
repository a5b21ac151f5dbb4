// `aysfs-native --mount …` as systemd or an operator runs it: a real nginx store, a spawned
// process, signals, an outside unmount, SIGHUP reloads, `status`, systemd readiness.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { startNginx, type Nginx } from '../helpers/nginx'
import { tmpdir } from '../helpers/mount'
import { md5, writeStore, type GenEntry } from '../helpers/tree'
import { isMounted, run, serveCli, start, waitMount, writeConfig } from '../helpers/cli'

const PREFIX = '/opt/jumpscale7'

function file(p: string, content: string | Buffer, mtime = 1_700_000_000): GenEntry {
  const data = Buffer.isBuffer(content) ? content : Buffer.from(content)
  return { path: p, kind: 'file', perms: 0o644, size: data.length, md5: md5(data), mtime, content: data }
}

/** A descriptor on a mount that went away: its close fails with ENOTCONN, which is fine. */
function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd)
  } catch {
    // the mount is gone
  }
}

async function setup(t: Test, entries: GenEntry[]): Promise<{ dir: string; store: string; nginx: Nginx; config: string; mnt: string }> {
  const dir = tmpdir(t, 'aysfs-cli-')
  const store = path.join(dir, 'store')
  writeStore(entries, store, 'jumpscale__base', PREFIX)
  const nginx = await startNginx({ store })
  t.teardown(() => nginx.stop())
  const config = writeConfig(path.join(dir, 'config.toml'), { cache: path.join(dir, 'cache'), prefix: PREFIX, stores: [`${nginx.url}/store`] })
  return { dir, store, nginx, config, mnt: path.join(dir, 'mnt') }
}

t.test('serves until SIGINT; status --json counts exactly the reads made; JSON logs', async (t) => {
  const files = [file('/a.txt', 'alpha\n'.repeat(100)), file('/b/c.txt', 'gamma\n'.repeat(2000)), file('/b/d.bin', Buffer.alloc(70_000, 7))]
  const { mnt, config } = await setup(t, files)
  const cli = await serveCli(t, mnt, config, ['--log-format', 'json'])
  await cli.waitFor(/"msg":"mounted"/)

  for (const f of files) t.ok(fs.readFileSync(path.join(mnt, f.path)).equals(f.content!), `${f.path} reads back`)
  const r = await run(['status', mnt, '--json'])
  t.equal(r.code, 0, r.stderr)
  const doc = JSON.parse(r.stdout)
  const total = files.reduce((n, f) => n + f.size, 0)
  t.equal(doc.version, 1)
  t.equal(doc.mountpoint, mnt)
  t.equal(doc.engine.bytesRead, total, 'bytesRead is the bytes the test read')
  t.equal(doc.engine.missCalls, files.length, 'one fetch per blob')
  t.equal(doc.engine.missFailures, 0)
  t.equal(doc.engine.errors, 0)
  t.ok(doc.engine.misses >= files.length, 'every first read missed')
  t.equal(doc.engine.ops.read, doc.engine.hits + doc.engine.misses, 'every read is a hit or a miss')
  const store = doc.pipeline.sources.find((s: { key: string }) => s.key === 'store[0]')
  t.equal(store.hits, files.length, 'store[0] served each blob')
  t.equal(store.bytes, total, 'and exactly their bytes')
  t.equal(doc.mount.services[0].id, 'jumpscale__base')
  t.equal(doc.mount.signed, false)

  const table = await run(['status', mnt])
  t.equal(table.code, 0)
  t.match(table.stdout, /bytes read\s+\S+ KiB/)
  t.match(table.stdout, new RegExp(`store\\[0\\]\\s+${files.length}\\s+0\\s+0`), 'per-source row: hits, misses, errors')

  // Every stderr line is one JSON object.
  for (const line of cli.stderr.trim().split('\n')) t.doesNotThrow(() => JSON.parse(line), `JSON log line: ${line.slice(0, 80)}`)

  cli.kill('SIGINT')
  const end = await cli.exited
  t.equal(end.code, 0, 'SIGINT: exit 0')
  t.notOk(isMounted(mnt), 'and nothing is left mounted')
})

t.test('SIGTERM unmounts and exits 0, even with a file held open', async (t) => {
  const { mnt, config } = await setup(t, [file('/x', 'x\n')])
  const cli = await serveCli(t, mnt, config)
  const fd = fs.openSync(path.join(mnt, 'x'), 'r')
  t.teardown(() => closeQuietly(fd))
  cli.kill('SIGTERM')
  const end = await cli.exited
  t.equal(end.code, 0, end.stderr)
  t.notOk(isMounted(mnt))
  t.match(end.stderr, /unmounting/)
})

t.test('an outside unmount (aysfs-native unmount) ends the serving process with 0', async (t) => {
  // y: opened, never read before the unmount, and too large to be pushed into the page cache
  // whole: only the serving process can answer its first read.
  const y = Buffer.alloc(200_000, 'y')
  const { mnt, config } = await setup(t, [file('/x', 'x\n'), file('/y.bin', y)])
  const cli = await serveCli(t, mnt, config)
  t.equal(fs.readFileSync(path.join(mnt, 'x'), 'utf8'), 'x\n')
  const fd = fs.openSync(path.join(mnt, 'x'), 'r')
  t.teardown(() => closeQuietly(fd))
  const cold = fs.openSync(path.join(mnt, 'y.bin'), 'r')
  t.teardown(() => closeQuietly(cold))
  const u = await run(['unmount', mnt])
  t.equal(u.code, 0, u.stderr)
  t.match(u.stdout, `unmounted ${mnt}`)
  t.notOk(isMounted(mnt), 'gone from the mount table at once (lazy)')
  // A lazy unmount leaves files already open working: the process serves them until they close.
  // A read the process answers after the unmount shows it did not end with it.
  const got = Buffer.alloc(y.length)
  t.equal(fs.readSync(cold, got, 0, got.length, 0), y.length, 'a file held open and never read is served after the unmount')
  t.ok(got.equals(y), 'with its bytes')
  t.ok(cli.running, 'still serving the files held open')
  const buf = Buffer.alloc(4)
  t.equal(buf.toString('utf8', 0, fs.readSync(fd, buf, 0, 4, 0)), 'x\n', 'which still read')
  fs.closeSync(fd)
  fs.closeSync(cold)
  const end = await cli.exited
  t.equal(end.code, 0, 'the daemon exits 0 once the last file is closed')
  t.match(end.stderr, /unmounted from outside/)
  const again = await run(['unmount', mnt])
  t.equal(again.code, 1)
  t.match(again.stderr, `${mnt} is not mounted`)
})

t.test('plain umount -l from outside ends it too', { skip: process.getuid?.() !== 0 && 'umount needs root' }, async (t) => {
  const { mnt, config } = await setup(t, [file('/x', 'x\n')])
  const cli = await serveCli(t, mnt, config)
  execFileSync('umount', ['-l', mnt])
  const end = await cli.exited
  t.equal(end.code, 0)
  t.notOk(isMounted(mnt))
})

t.test('SIGHUP swaps in changed flists and config: open files keep their bytes, failures keep the old tree', async (t) => {
  const { dir, store, mnt, config, nginx } = await setup(t, [file('/app.conf', 'one\n'), file('/old', 'old\n')])
  const cli = await serveCli(t, mnt, config)
  t.equal(fs.readFileSync(path.join(mnt, 'app.conf'), 'utf8'), 'one\n')
  const held = fs.openSync(path.join(mnt, 'app.conf'), 'r')
  t.teardown(() => closeQuietly(held))

  const reloads = (): number => (cli.stderr.match(/reloaded/g) ?? []).length
  writeStore([file('/app.conf', 'two\n', 1_700_000_100), file('/new', 'new\n')], store, 'jumpscale__base', PREFIX)
  cli.kill('SIGHUP')
  await cli.waitFor(/reloaded/)
  t.equal(fs.readFileSync(path.join(mnt, 'app.conf'), 'utf8'), 'two\n', 'a new open sees the new content')
  const buf = Buffer.alloc(16)
  t.equal(buf.toString('utf8', 0, fs.readSync(held, buf, 0, 16, 0)), 'one\n', 'the file held open keeps its bytes')
  t.same(fs.readdirSync(mnt).sort(), ['app.conf', 'new'], 'new files appear, removed ones go')

  // An invalid flist: the reload fails, is logged, and the old tree stays.
  fs.writeFileSync(path.join(store, 'md', 'jumpscale__base.flist'), `${PREFIX}/bad|nothex|3\n`)
  cli.kill('SIGHUP')
  await cli.waitFor(/reload failed/)
  t.same(fs.readdirSync(mnt).sort(), ['app.conf', 'new'], 'the old tree stays')
  t.ok(cli.running, 'and the process keeps serving')
  const st = JSON.parse((await run(['status', mnt, '--json'])).stdout)
  t.equal(st.mount.lastReload.ok, false)
  t.match(st.mount.lastReload.error, /line 1/)

  // The config is re-read too: a second service appears.
  writeStore([file('/app.conf', 'two\n', 1_700_000_100), file('/new', 'new\n')], store, 'jumpscale__base', PREFIX)
  writeStore([file('/extra/tool', 'tool\n')], store, 'extra__svc', PREFIX)
  writeConfig(config, { cache: path.join(dir, 'cache'), prefix: PREFIX, stores: [`${nginx.url}/store`], ays: ['jumpscale__base', 'extra__svc'] })
  const before = reloads()
  cli.kill('SIGHUP')
  await cli.waitFor(new RegExp(`(?:[\\s\\S]*reloaded){${before + 1}}`))
  t.same(fs.readdirSync(mnt).sort(), ['app.conf', 'extra', 'new'])
  t.equal(fs.readFileSync(path.join(mnt, 'extra/tool'), 'utf8'), 'tool\n')

  // A broken config on SIGHUP: logged with the key, old config stays.
  fs.writeFileSync(config, fs.readFileSync(config, 'utf8').replace('timeout = "2s"', 'timeout = 2'))
  cli.kill('SIGHUP')
  await cli.waitFor(/main\.timeout/)
  t.ok(cli.running)
  t.equal(fs.readFileSync(path.join(mnt, 'extra/tool'), 'utf8'), 'tool\n', 'still serving the last good tree')

  cli.kill('SIGINT')
  t.equal((await cli.exited).code, 0)
})

t.test('a killed daemon leaves a stale mount: status says so, unmount or a new start clears it', async (t) => {
  const { mnt, config } = await setup(t, [file('/x', 'x\n')])
  const first = await serveCli(t, mnt, config)
  first.kill('SIGKILL')
  await first.exited
  t.throws(() => fs.readdirSync(mnt), { code: 'ENOTCONN' }, 'Transport endpoint is not connected')
  const st = await run(['status', mnt])
  t.equal(st.code, 1)
  t.match(st.stderr, `${mnt} is a stale mount: the process that served it is gone; clear it with \`aysfs-native unmount ${mnt}\``)
  const u = await run(['unmount', mnt])
  t.equal(u.code, 0, u.stderr)
  t.same(fs.readdirSync(mnt), [], 'cleared')

  const second = await serveCli(t, mnt, config)
  second.kill('SIGKILL')
  await second.exited
  const third = await serveCli(t, mnt, config)
  t.same(fs.readdirSync(mnt), ['x'], 'a new start clears the stale mount by itself')
  third.kill('SIGINT')
  t.equal((await third.exited).code, 0)
})

t.test('tells systemd when ready (Type=notify) and when stopping', async (t) => {
  const { dir, mnt, config } = await setup(t, [file('/x', 'x\n')])
  // A stand-in for systemd-notify that records what it was asked to send.
  const bin = path.join(dir, 'bin')
  const record = path.join(dir, 'notify.log')
  fs.mkdirSync(bin)
  fs.writeFileSync(path.join(bin, 'systemd-notify'), `#!/bin/sh\necho "$NOTIFY_SOCKET $*" >> ${record}\n`, { mode: 0o755 })
  const cli = await serveCli(t, mnt, config, [], { env: { PATH: `${bin}:${process.env.PATH}`, NOTIFY_SOCKET: '/run/test/notify' } })
  const text = async (re: RegExp): Promise<string> => {
    for (let i = 0; i < 200; i++) {
      const s = fs.existsSync(record) ? fs.readFileSync(record, 'utf8') : ''
      if (re.test(s)) return s
      await new Promise((r) => setTimeout(r, 25))
    }
    return fs.existsSync(record) ? fs.readFileSync(record, 'utf8') : ''
  }
  const ready = await text(/READY=1/)
  t.match(ready, /^\/run\/test\/notify READY=1 STATUS=serving 2 entries at /m, 'READY=1 once the tree is visible')
  cli.kill('SIGTERM')
  t.equal((await cli.exited).code, 0)
  t.match(await text(/STOPPING=1/), /STOPPING=1/, 'STOPPING=1 on the way out')
})

// The real systemd-notify against a datagram socket of our own (python3 makes one: Node cannot),
// checking what systemd checks with NotifyAccess=main: the sender's pid is the daemon's.
const python = ((): string | undefined => {
  try {
    execFileSync('python3', ['-c', 'import socket'], { stdio: 'ignore' })
    execFileSync('systemd-notify', ['--version'], { stdio: 'ignore' })
    return 'python3'
  } catch {
    return undefined
  }
})()

t.test('READY=1 reaches a real notify socket from the daemon\'s pid', { skip: !python && 'needs python3 and systemd-notify' }, async (t) => {
  const { dir, mnt, config } = await setup(t, [file('/x', 'x\n')])
  const sock = path.join(dir, 'notify.sock')
  const script = [
    'import socket, struct, sys',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
    's.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)',
    's.bind(sys.argv[1])',
    'print("listening", flush=True)',
    'while True:',
    // Room for credentials only: the fd systemd-notify passes for its barrier is closed by the kernel.
    '    msg, anc, flags, addr = s.recvmsg(4096, socket.CMSG_SPACE(12))',
    '    pid = [struct.unpack("iII", d[:12])[0] for l, t, d in anc if t == socket.SCM_CREDENTIALS]',
    '    print(pid[0] if pid else None, msg.decode().replace("\\n", " "), flush=True)',
  ].join('\n')
  const { spawn } = await import('node:child_process')
  const receiver = spawn(python!, ['-c', script, sock], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => receiver.kill('SIGKILL'))
  let got = ''
  receiver.stdout!.on('data', (d: Buffer) => (got += d.toString()))
  for (let i = 0; i < 200 && !got.includes('listening'); i++) await new Promise((r) => setTimeout(r, 25))
  const cli = await serveCli(t, mnt, config, [], { env: { NOTIFY_SOCKET: sock } })
  for (let i = 0; i < 200 && !/READY=1/.test(got); i++) await new Promise((r) => setTimeout(r, 25))
  const line = got.split('\n').find((l) => l.includes('READY=1')) ?? ''
  t.match(line, /READY=1 STATUS=serving/)
  if (process.getuid?.() === 0) t.equal(Number(line.split(' ')[0]), cli.child.pid, 'sent with the daemon\'s pid (NotifyAccess=main is enough as root)')
  cli.kill('SIGTERM')
  t.equal((await cli.exited).code, 0)
})

t.test('a busy mountpoint: exit 1 naming it and what to do', async (t) => {
  const { mnt, config } = await setup(t, [file('/x', 'x\n')])
  await serveCli(t, mnt, config)
  const r = await run(['--mount', mnt, '--config', config])
  t.equal(r.code, 1)
  t.match(r.stderr, `${mnt} is already mounted`)
  t.match(r.stderr, `aysfs-native unmount ${mnt}`)
  t.ok(isMounted(mnt), 'the first mount is untouched')
})

t.test('a store that has no such flist: exit 1 with the reason, nothing mounted', async (t) => {
  const { dir, mnt, nginx } = await setup(t, [file('/x', 'x\n')])
  const config = writeConfig(path.join(dir, 'other.toml'), { cache: path.join(dir, 'cache'), prefix: PREFIX, stores: [`${nginx.url}/store`], ays: ['nope__svc'] })
  fs.mkdirSync(mnt)
  const r = await run(['--mount', mnt, '--config', config])
  t.equal(r.code, 1)
  t.match(r.stderr, /flist nope__svc: not found in any store/)
  t.notOk(isMounted(mnt))
})

t.test('SIGINT while the flists are still loading stops at once, leaving nothing mounted', async (t) => {
  const dir = tmpdir(t, 'aysfs-cli-')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  // A store that accepts the connection and never answers.
  const net = await import('node:net')
  const sockets = new Set<import('node:net').Socket>()
  const server = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => undefined)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  const port = (server.address() as { port: number }).port
  const config = writeConfig(path.join(dir, 'config.toml'), { cache: path.join(dir, 'cache'), prefix: PREFIX, stores: [`http://127.0.0.1:${port}/store`] })
  fs.writeFileSync(config, fs.readFileSync(config, 'utf8').replace('timeout = "2s"', 'timeout = "30s"'))
  const cli = start(t, ['--mount', mnt, '--config', config])
  // Loading: the flist's request reached the store (the CLI handles signals from before that;
  // a fixed wait here could signal a process still starting up, which SIGINT simply kills).
  for (let i = 0; i < 1200 && sockets.size === 0; i++) await new Promise((r) => setTimeout(r, 25))
  t.ok(sockets.size > 0, 'the store was asked for the flist')
  const t0 = Date.now()
  cli.kill('SIGINT')
  const end = await cli.exited
  t.equal(end.code, 0)
  t.ok(Date.now() - t0 < 3000, 'promptly')
  await waitMount(mnt, false, 100)
})
