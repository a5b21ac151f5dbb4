// Safe defaults, as the kernel sees them (/proc/mounts) and as another user meets them:
// read-only, nosuid and nodev (and no device entries at all) unless the config sets suid/dev, allow_other only when asked,
// default_permissions so the modes of the flist are enforced.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { PREFIX, SERVICE, config, files, mountHere, writeStore } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'

function options(mnt: string): string[] {
  const line = fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[1] === mnt)
  if (!line) throw new Error(`${mnt} is not in /proc/mounts`)
  const [, , type, opts] = line.split(' ')
  return [`type=${type}`, ...opts!.split(',')]
}

/** Runs `cat file` as nobody (uid 65534); returns its exit status and stderr. */
function catAsNobody(file: string): { status: number | null; stderr: string } {
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'cat', file], { encoding: 'utf8' })
  return { status: r.status, stderr: r.stderr }
}

function store(dir: string): string {
  const root = path.join(dir, 'store')
  const [open, secret, suid] = files(3, 64, 71)
  writeStore(root, [open!, secret!, suid!])
  fs.writeFileSync(
    path.join(root, 'md', `${SERVICE}.flist`),
    [
      `${PREFIX}||0|root|root|755|4|0|0|`,
      `${PREFIX}/open|${open!.md5}|64|root|root|644|2|0|0|`,
      `${PREFIX}/secret|${secret!.md5}|64|root|root|600|2|0|0|`,
      `${PREFIX}/suid|${suid!.md5}|64|root|root|4755|2|0|0|`,
      `${PREFIX}/null|||root|root|666|5|0|0|1,3`,
    ].join('\n') + '\n',
  )
  return root
}

t.test('by default: ro, nosuid, nodev, default_permissions, no allow_other', async (t) => {
  const dir = tmpdir(t)
  fs.chmodSync(dir, 0o755) // so that nobody can reach the mountpoint at all
  const m = await mountHere(t, path.join(dir, 'mnt'), config(path.join(dir, 'cache'), [store(dir)]))
  const opts = options(m.mountpoint)
  t.ok(opts.includes('type=fuse.aysfs'), opts.join(','))
  for (const o of ['ro', 'nosuid', 'nodev', 'default_permissions']) t.ok(opts.includes(o), `${o}`)
  t.notOk(opts.includes('allow_other'), 'no allow_other')
  t.notOk(opts.includes('rw') || opts.includes('suid') || opts.includes('dev'))

  t.equal(fs.statSync(path.join(m.mountpoint, 'suid')).mode & 0o7777, 0o755, 'setuid bits are dropped from the table too')
  t.throws(() => fs.writeFileSync(path.join(m.mountpoint, 'new'), 'x'), { code: 'EROFS' }, 'read-only')
  t.throws(() => fs.readFileSync(path.join(m.mountpoint, 'null')), { code: 'ENOENT' }, 'device files are left out of the tree (dev is off), nodev besides')
  const other = catAsNobody(path.join(m.mountpoint, 'open'))
  t.not(other.status, 0, `another user cannot enter the mount (${other.stderr.trim()})`)
})

t.test('allow_other when asked: modes are enforced for other users (default_permissions)', async (t) => {
  const dir = tmpdir(t)
  fs.chmodSync(dir, 0o755)
  const m = await mountHere(t, path.join(dir, 'mnt'), config(path.join(dir, 'cache'), [store(dir)]), { allowOther: true })
  t.ok(options(m.mountpoint).includes('allow_other'))
  const open = catAsNobody(path.join(m.mountpoint, 'open'))
  t.equal(open.status, 0, 'a 0644 file reads for nobody')
  const secret = catAsNobody(path.join(m.mountpoint, 'secret'))
  t.not(secret.status, 0, 'a 0600 file of root does not')
  t.match(secret.stderr, /Permission denied/)
})

t.test('suid and dev only when the config says so', async (t) => {
  const dir = tmpdir(t)
  const m = await mountHere(t, path.join(dir, 'mnt'), config(path.join(dir, 'cache'), [store(dir)], { suid: true, dev: true }))
  const opts = options(m.mountpoint)
  t.notOk(opts.includes('nosuid'), 'suid')
  t.notOk(opts.includes('nodev'), 'dev')
  t.ok(opts.includes('ro') && opts.includes('default_permissions'), 'still ro, default_permissions')
  t.equal(fs.statSync(path.join(m.mountpoint, 'suid')).mode & 0o7777, 0o4755, 'setuid bits kept')
  t.ok(fs.statSync(path.join(m.mountpoint, 'null')).isCharacterDevice(), 'device files served')
})
