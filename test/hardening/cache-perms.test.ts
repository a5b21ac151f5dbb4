// The local cache never widens access: with allow_other, a 0600 file of root that nobody cannot
// read through the mount cannot be read in the cache either, once root has read it. The cache's
// top directory is 0700 (made so, or set so at mount), and a cache directory that another user
// owns, or that group or others may write, is refused by mount(), prefetch and verify alike.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { mount } from '../../lib/index'
import { createLogger } from '../../lib/log'
import { checkConfig } from '../../lib/config'
import { prefetch } from '../../lib/prefetch'
import { verify } from '../../lib/verify'
import { PREFIX, SERVICE, config, files, mountHere, until, writeStore } from '../helpers/hardening'
import { mountsBelow, tmpdir } from '../helpers/mount'

const NOBODY = 65534

/** Runs a command as nobody (uid and gid 65534, no supplementary groups). */
function asNobody(...cmd: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', ...cmd], { encoding: 'utf8' })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

function mode(p: string): number {
  return fs.statSync(p).mode & 0o7777
}

/** A store whose flist has a world-readable file and a root-only one (0600). */
function store(dir: string): { root: string; open: { md5: string; data: Buffer }; secret: { md5: string; data: Buffer } } {
  const root = path.join(dir, 'store')
  const [open, secret] = files(2, 4096, 91)
  writeStore(root, [open!, secret!])
  fs.writeFileSync(
    path.join(root, 'md', `${SERVICE}.flist`),
    [`${PREFIX}||0|root|root|755|4|0|0|`, `${PREFIX}/open|${open!.md5}|4096|root|root|644|2|0|0|`, `${PREFIX}/secret|${secret!.md5}|4096|root|root|600|2|0|0|`].join('\n') + '\n',
  )
  return { root, open: open!, secret: secret! }
}

function blobFile(cache: string, md5: string): string {
  return path.join(cache, md5[0]!, md5[1]!, md5)
}

t.test('allow_other: nobody reads a 0600 file of root neither through the mount nor in the cache', async (t) => {
  const dir = tmpdir(t)
  fs.chmodSync(dir, 0o755) // nobody may walk to the mountpoint and to the cache
  const { root, open, secret } = store(dir)
  const cache = path.join(dir, 'cache')
  const m = await mountHere(t, path.join(dir, 'mnt'), config(cache, [root]), { allowOther: true })

  t.ok(fs.readFileSync(path.join(m.mountpoint, 'secret')).equals(secret.data), 'root reads the secret file')
  t.ok(fs.readFileSync(path.join(m.mountpoint, 'open')).equals(open.data))
  t.ok(await until(() => fs.existsSync(blobFile(cache, secret.md5)), 10_000), 'its blob is in the cache')

  const viaMount = asNobody('cat', path.join(m.mountpoint, 'secret'))
  t.not(viaMount.status, 0, 'nobody: the 0600 file does not read through the mount')
  t.match(viaMount.stderr, /Permission denied/)
  t.equal(asNobody('cat', path.join(m.mountpoint, 'open')).status, 0, 'nobody reads the 0644 one (allow_other works)')

  const viaCache = asNobody('cat', blobFile(cache, secret.md5))
  t.not(viaCache.status, 0, `nobody: nor its blob in the cache (${viaCache.stderr.trim()})`)
  t.match(viaCache.stderr, /Permission denied/)
  t.not(asNobody('ls', cache).status, 0, 'nobody cannot list the cache')

  t.equal(mode(cache), 0o700, 'the cache directory is 0700')
  t.equal(mode(path.join(cache, 'tmp')), 0o700, 'tmp/ is 0700')
  t.equal(mode(path.join(cache, 'md')), 0o700, 'md/ is 0700')
  t.equal(mode(path.join(cache, 'md', `${SERVICE}.flist`)), 0o600, 'the kept flist is 0600')
})

t.test('an existing cache directory of ours is set to 0700 at mount, what older versions wrote included', async (t) => {
  const dir = tmpdir(t)
  fs.chmodSync(dir, 0o755)
  const { root, secret } = store(dir)
  const cache = path.join(dir, 'cache')
  // As an older version left it: 0755 directories, a 0644 blob, a 0644 kept flist.
  const old = blobFile(cache, secret.md5)
  fs.mkdirSync(path.dirname(old), { recursive: true, mode: 0o755 })
  fs.mkdirSync(path.join(cache, 'md'), { mode: 0o755 })
  fs.writeFileSync(old, secret.data, { mode: 0o644 })
  fs.writeFileSync(path.join(cache, 'md', `${SERVICE}.flist`), 'old', { mode: 0o644 })
  for (const d of [cache, path.join(cache, 'md'), path.join(cache, secret.md5[0]!), path.dirname(old)]) fs.chmodSync(d, 0o755)
  t.equal(asNobody('cat', old).status, 0, 'before: nobody reads the old blob')

  const m = await mountHere(t, path.join(dir, 'mnt'), config(cache, [root]), { allowOther: true })
  t.equal(mode(cache), 0o700, 'the cache directory is 0700 now')
  t.equal(mode(path.join(cache, 'md')), 0o700, 'md/ is 0700 now')
  const after = asNobody('cat', old)
  t.not(after.status, 0, 'after: nobody cannot read the old blob')
  t.match(after.stderr, /Permission denied/)
  t.ok(fs.readFileSync(path.join(m.mountpoint, 'secret')).equals(secret.data), 'and the mount serves it')
})

t.test('a cache directory another user owns, or that others may write, is refused by mount(), prefetch and verify', async (t) => {
  const dir = tmpdir(t)
  const { root } = store(dir)
  const log = createLogger({ level: 'silent' })
  const cases: Array<{ name: string; mode: number; owner?: number; message: RegExp }> = [
    { name: 'owned by nobody', mode: 0o700, owner: NOBODY, message: /is owned by uid 65534( \(nobody\))?, not by uid 0( \(root\))? that uses it: .*chown 0 / },
    { name: 'mode 0777', mode: 0o777, message: /has mode 0777: its group and all users can write in it.*chmod 0700 / },
    { name: 'mode 1777 (sticky, like /tmp)', mode: 0o1777, message: /has mode 1777: its group and all users can write in it/ },
    { name: 'mode 0770 (group-writable)', mode: 0o770, message: /has mode 0770: its group can write in it/ },
    { name: 'mode 0757 (others may write)', mode: 0o757, message: /has mode 0757: all users can write in it/ },
  ]
  for (const c of cases) {
    const cache = path.join(dir, `cache-${c.name.replace(/\W+/g, '-')}`)
    fs.mkdirSync(cache)
    fs.chmodSync(cache, c.mode)
    if (c.owner !== undefined) fs.chownSync(cache, c.owner, c.owner)
    const before = fs.statSync(cache)
    const want = { code: 'EINVAL', key: 'main.cache', message: new RegExp(`^local cache ${cache} ${c.message.source}`) }
    const mnt = path.join(dir, 'mnt')
    fs.mkdirSync(mnt, { recursive: true })
    await t.rejects(mount({ mountpoint: mnt, config: config(cache, [root]), log }), want, `${c.name}: mount() refuses it`)
    t.same(mountsBelow(mnt), [], 'nothing mounted')
    await t.rejects(prefetch({ config: checkConfig(config(cache, [root])), log, progress: false }), want, `${c.name}: prefetch refuses it`)
    await t.rejects(verify({ cache, progress: false }), want, `${c.name}: verify refuses it`)
    const now = fs.statSync(cache)
    t.same([now.uid, now.mode], [before.uid, before.mode], 'and leaves it as it was')
    t.same(fs.readdirSync(cache), [], 'nothing written in it')
  }
})

t.test('verify: a bad blob goes to bad/ (0700) as a 0600 file', async (t) => {
  const dir = tmpdir(t)
  const cache = path.join(dir, 'cache')
  const [f] = files(1, 1000, 92)
  const file = blobFile(cache, f!.md5)
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, Buffer.alloc(1000), { mode: 0o644 }) // wrong content, an older version's mode
  fs.chmodSync(cache, 0o755)
  const r = await verify({ cache, progress: false })
  t.same(r.bad, [f!.md5])
  t.equal(mode(cache), 0o700, 'verify sets the cache directory 0700 too')
  t.equal(mode(path.join(cache, 'bad')), 0o700, 'bad/ is 0700')
  const moved = fs.readdirSync(path.join(cache, 'bad'))
  t.equal(moved.length, 1)
  t.equal(mode(path.join(cache, 'bad', moved[0]!)), 0o600, 'the blob moved aside is 0600')
})
