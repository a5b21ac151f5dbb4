// mount() as a script calls it (issue 15 and its review): the mountpoint is checked before any
// flist is fetched, a relative config path is resolved once, a reload cannot move the local
// cache, the flists of the mount are counted in status, and a prefix that leaves a service's
// lines out says so. Real mounts of directory stores; every mount unmounted in teardown.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { mount, type AysfsMount } from '../../lib/index'
import type { Logger } from '../../lib/log'
import { generateKeyPair, signFlist } from '../../lib/sign'
import { run } from '../helpers/cli'
import { config, files, mountHere, PREFIX, SERVICE, writeStore } from '../helpers/hardening'
import { clearMounts, tmpdir } from '../helpers/mount'

function memLog(): { log: Logger; lines: { level: string; msg: string }[] } {
  const lines: { level: string; msg: string }[] = []
  const mk = (level: string) => (_obj: object, msg?: string) => void lines.push({ level, msg: msg ?? '' })
  const log = { level: 'debug', trace: mk('trace'), debug: mk('debug'), info: mk('info'), warn: mk('warn'), error: mk('error'), fatal: mk('fatal'), child: () => log }
  return { log: log as unknown as Logger, lines }
}

function setup(t: Test): { dir: string; store: string; cache: string } {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  writeStore(store, files(3, 100))
  return { dir, store, cache: path.join(dir, 'cache') }
}

const keptFlist = (cache: string): string => path.join(cache, 'md', `${SERVICE}.flist`)

t.test('the mountpoint is checked before any flist is fetched', async (t) => {
  const { dir, store, cache } = setup(t)
  const cfg = config(cache, [store])
  await t.rejects(mount({ mountpoint: path.join(dir, 'nope'), config: cfg, log: { level: 'silent' } }), {
    code: 'ENOENT',
    message: `mountpoint ${path.join(dir, 'nope')} does not exist: create it first (mkdir -p ${path.join(dir, 'nope')})`,
  })
  fs.writeFileSync(path.join(dir, 'file'), '')
  await t.rejects(mount({ mountpoint: path.join(dir, 'file'), config: cfg, log: { level: 'silent' } }), { code: 'ENOTDIR' })
  t.notOk(fs.existsSync(keptFlist(cache)), 'no flist was fetched (none kept)')

  const mnt = path.join(dir, 'mnt')
  await mountHere(t, mnt, cfg)
  const other = path.join(dir, 'cache2')
  await t.rejects(mount({ mountpoint: mnt, config: config(other, [store]), log: { level: 'silent' } }), {
    code: 'EBUSY',
    message: new RegExp(`^mountpoint ${mnt} is already mounted by aysfs-native .*aysfs-native unmount ${mnt}`),
  })
  t.notOk(fs.existsSync(keptFlist(other)), 'the second mount fetched no flist')
  t.equal(fs.readdirSync(mnt).length, 3, 'the first mount is untouched')
})

t.test('a relative config path is resolved once: a reload reads the same file after a chdir', async (t) => {
  const { dir, store, cache } = setup(t)
  fs.mkdirSync(path.join(dir, 'etc'))
  fs.writeFileSync(path.join(dir, 'etc', 'config.toml'), `[main]\ncache = "${cache}"\nprefix = "${PREFIX}"\n[[ays]]\nid = "${SERVICE}"\n[[store]]\nurl = "${store}"\n`)
  const cwd = process.cwd()
  t.teardown(() => process.chdir(cwd))
  process.chdir(dir)
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  const m = await mount({ mountpoint: mnt, config: 'etc/config.toml', log: { level: 'silent' } })
  t.teardown(async () => {
    await m.unmount()
    clearMounts(mnt)
  })
  process.chdir('/')
  const r = await m.reload()
  t.equal(r.entries, 4, 'reloaded from the file named at mount')
  t.equal(m.config.file, path.join(dir, 'etc', 'config.toml'))
  t.equal(m.stats().mount!.config, path.join(dir, 'etc', 'config.toml'))
})

t.test('a reload that changes main.cache is refused; the mount keeps its cache', async (t) => {
  const { dir, store, cache } = setup(t)
  const file = path.join(dir, 'config.toml')
  const write = (c: string): void => fs.writeFileSync(file, `[main]\ncache = "${c}"\nprefix = "${PREFIX}"\n[[ays]]\nid = "${SERVICE}"\n[[store]]\nurl = "${store}"\n`)
  write(cache)
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  const m = await mount({ mountpoint: mnt, config: file, log: { level: 'silent' } })
  t.teardown(async () => {
    await m.unmount()
    clearMounts(mnt)
  })
  const other = path.join(dir, 'other-cache')
  write(other)
  await t.rejects(m.reload(), {
    code: 'EINVAL',
    key: 'main.cache',
    message: `main.cache changed from ${cache} to ${other}: the local cache cannot change under a live mount; the mount keeps ${cache} (unmount and mount again to use the new one)`,
  })
  t.equal(m.config.main.cache, cache, 'the config in force is the old one')
  t.match(m.stats().mount!.lastReload, { ok: false, error: /main\.cache changed/ })
  t.equal(fs.readFileSync(path.join(mnt, 'f1')).length, 100, 'reads work, from the old cache')
  t.ok(fs.readdirSync(cache).length > 0, 'into the old cache')
  t.notOk(fs.existsSync(other), 'the new cache was never made')
})

t.test('status counts the flists of the mount and its reloads, refusals included', async (t) => {
  const { dir, store, cache } = setup(t)
  const keys = generateKeyPair(path.join(dir, 'keys'))
  const flist = path.join(store, 'md', `${SERVICE}.flist`)
  fs.writeFileSync(`${flist}.sig`, signFlist(fs.readFileSync(flist), keys.privateKey))
  const m = await mountHere(t, path.join(dir, 'mnt'), config(cache, [store], { trusted_keys: [keys.publicKey] }))
  t.same(m.stats().mount!.flists, { fetched: 1, kept: 0, refused: 0 })
  await m.reload()
  t.same(m.stats().mount!.flists, { fetched: 2, kept: 0, refused: 0 }, 'a reload fetches again')
  fs.appendFileSync(flist, `${PREFIX}/extra|d41d8cd98f00b204e9800998ecf8427e|0\n`)
  await t.rejects(m.reload(), { code: 'EACCES' })
  t.same(m.stats().mount!.flists, { fetched: 2, kept: 0, refused: 1 }, 'the refused copy is counted')
  const doc = await run(['status', m.mountpoint])
  t.match(doc.stdout, /flists: 2 fetched from stores, 0 kept copies used, 1 refused \(untrusted\)/)
})

t.test('a prefix that leaves a service\'s lines out: a warning naming it, in the log and in status', async (t) => {
  const { dir, store, cache } = setup(t)
  const { log, lines } = memLog()
  const m = await mountHere(t, path.join(dir, 'mnt'), config(cache, [store], { prefix: '/srv/elsewhere' }), { log })
  const want = `service ${SERVICE}: none of its 3 flist lines is under the prefix /srv/elsewhere (a line of the flist: ${PREFIX}/f0), so they are not served: set main.prefix (or mount at) the path the flist was published under, or publish it again with --prefix`
  t.same(
    lines.filter((l) => l.level === 'warn').map((l) => l.msg),
    [want],
    'one warning, naming the service, the prefix and a path of the flist',
  )
  t.same(fs.readdirSync(m.mountpoint), [], 'the tree is empty, as before')
  t.equal(m.stats().mount!.services[0]!.warning, want)
  const r = await run(['status', m.mountpoint])
  t.equal(r.code, 0)
  t.match(r.stdout, `  warning: ${want}`)

  // Most lines outside: said too; all under: nothing said.
  const { log: log2, lines: lines2 } = memLog()
  fs.appendFileSync(path.join(store, 'md', `${SERVICE}.flist`), `/srv/elsewhere/one|d41d8cd98f00b204e9800998ecf8427e|0\n`)
  const m2 = await mountHere(t, path.join(dir, 'mnt2'), config(path.join(dir, 'cache2'), [store], { prefix: '/srv/elsewhere' }), { log: log2 })
  t.match(m2.stats().mount!.services[0]!.warning, /: 3 of its 4 flist lines are not under the prefix \/srv\/elsewhere/)
  t.equal(lines2.filter((l) => l.level === 'warn').length, 1)
  const { log: log3, lines: lines3 } = memLog()
  const m3 = await mountHere(t, path.join(dir, 'mnt3'), config(path.join(dir, 'cache3'), [store]), { log: log3 })
  t.equal(m3.stats().mount!.services[0]!.warning, undefined, 'most lines under the prefix: no warning')
  t.same(lines3.filter((l) => l.level === 'warn'), [])
})

t.test('prefetch with a prefix that matches nothing says so, not just "0 blobs"', async (t) => {
  const { dir, store, cache } = setup(t)
  const file = path.join(dir, 'config.toml')
  fs.writeFileSync(file, `[main]\ncache = "${cache}"\nprefix = "/srv/elsewhere"\n[[ays]]\nid = "${SERVICE}"\n[[store]]\nurl = "${store}"\n`)
  const r = await run(['prefetch', '--config', file])
  t.equal(r.code, 0)
  t.match(r.stdout, /0 blobs/)
  t.match(r.stderr, `aysfs-native: warning: service ${SERVICE}: none of its 3 flist lines is under the prefix /srv/elsewhere (a line of the flist: ${PREFIX}/f0)`)
})
