// `aysfs-native demo`, the README's first command: no config, no server, a bundled store.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { parseFlist } from '../../lib/flist'
import { tmpdir } from '../helpers/mount'
import { ROOT, isMounted, run, start, waitMount } from '../helpers/cli'

const STORE = path.join(ROOT, 'demo', 'store')

function listing(dir: string): string[] {
  const out: string[] = []
  const walk = (d: string): void => {
    for (const n of fs.readdirSync(d).sort()) {
      const p = path.join(d, n)
      out.push(`${path.relative(dir, p)} ${fs.statSync(p).mtimeMs}`)
      if (fs.statSync(p).isDirectory()) walk(p)
    }
  }
  walk(dir)
  return out
}

t.test('demo mounts the bundled service, says what to try, and unmounts on SIGINT', async (t) => {
  const before = listing(STORE)
  const cli = start(t, ['demo'])
  const m = await cli.waitFor(/is mounted at (\S+)\n/)
  const mnt = m[1]!
  t.teardown(() => {
    if (isMounted(mnt)) execFileSync('umount', ['-l', mnt])
  })
  await cli.waitFor(/Press Ctrl-C to unmount and quit/)
  t.ok(isMounted(mnt), 'mounted')
  t.match(cli.stdout, `${mnt}/bin/hello you`, 'suggests commands with the real path')
  t.match(fs.readFileSync(path.join(mnt, 'README.md'), 'utf8'), /The aysfs-native demo service/)
  t.equal(fs.readlinkSync(path.join(mnt, 'bin', 'hi')), 'hello')
  t.equal(fs.statSync(path.join(mnt, 'bin', 'hello')).mode & 0o777, 0o755)
  t.match(execFileSync(path.join(mnt, 'bin', 'hello'), ['tap'], { encoding: 'utf8' }), /^Hello, tap! \(from .*\)\nconfig: content-addressed/, 'a program runs from the mount')
  const st = await run(['status', mnt, '--json'])
  t.equal(st.code, 0)
  t.equal(JSON.parse(st.stdout).mount.services[0].id, 'demo__hello')

  cli.kill('SIGINT')
  const end = await cli.exited
  t.equal(end.code, 0, end.stderr)
  t.notOk(isMounted(mnt), 'unmounted')
  t.notOk(fs.existsSync(path.dirname(mnt)), 'its temp directory (cache, mountpoint) is gone')
  t.same(listing(STORE), before, 'the bundled store was only read')
})

t.test('demo --mount DIR; SIGTERM too', async (t) => {
  const dir = tmpdir(t)
  const mnt = path.join(dir, 'here')
  fs.mkdirSync(mnt)
  const cli = start(t, ['demo', '--mount', mnt])
  await cli.waitFor(/Press Ctrl-C/)
  await waitMount(mnt)
  t.match(fs.readFileSync(path.join(mnt, 'etc', 'hello.toml'), 'utf8'), /motto/)
  cli.kill('SIGTERM')
  t.equal((await cli.exited).code, 0)
  t.notOk(isMounted(mnt))
  t.ok(fs.existsSync(mnt), 'a mountpoint it was given is left in place')
})

t.test('the bundled store is demo/service, published', async (t) => {
  const dir = tmpdir(t)
  const r = await run(['publish', path.join(ROOT, 'demo', 'service'), '--id', 'demo__hello', '--store', path.join(dir, 'store'), '--prefix', '/opt/jumpscale7'])
  t.equal(r.code, 0, r.stderr)
  // Times differ between checkouts, and modes with the umask; paths, types, exec bits and contents must not.
  const shape = (file: string): string[] => {
    const out: string[] = []
    parseFlist(fs.readFileSync(file), {
      name: 'demo__hello',
      prefix: '/opt/jumpscale7',
      onEntry: (e) => out.push(`${e.path} ${e.ftype} ${(e.perm & 0o111).toString(8)} ${e.md5} ${e.size} ${e.target ?? ''}`),
    })
    return out.sort()
  }
  t.same(shape(path.join(dir, 'store', 'md', 'demo__hello.flist')), shape(path.join(STORE, 'md', 'demo__hello.flist')))
  const blobs = (root: string): string[] => execFileSync('find', [path.join(root, 'files'), '-type', 'f', '-printf', '%P\n'], { encoding: 'utf8' }).trim().split('\n').sort()
  t.same(blobs(path.join(dir, 'store')), blobs(STORE), 'the same blobs')
})
