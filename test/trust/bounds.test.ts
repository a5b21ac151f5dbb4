// What a hostile or broken store can never make a node do: hold more than max_entries entries or
// a flist over max_flist_size, or write or expose anything outside the cache and the mountpoint.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { mount, type AysfsMount } from '../../lib/index'
import { clearMounts, tmpdir } from '../helpers/mount'
import { startNginx, type Nginx } from '../helpers/nginx'
import { md5, writeStore, type GenEntry } from '../helpers/tree'

const PREFIX = '/opt/jumpscale7'

function file(p: string, text: string): GenEntry {
  const content = Buffer.from(text)
  return { path: p, kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000, content }
}

async function serve(t: Test, store: string): Promise<Nginx> {
  const n = await startNginx({ store })
  t.teardown(() => n.stop())
  return n
}

function mountpointIn(dir: string, name: string): string {
  const m = path.join(dir, name, 'mnt')
  fs.mkdirSync(m, { recursive: true })
  return m
}

function config(dir: string, name: string, stores: string[], main: Record<string, unknown> = {}, ays = ['svc']) {
  return {
    main: { cache: path.join(dir, name, 'cache'), prefix: PREFIX, timeout: '2s', ...main },
    ays: ays.map((id) => ({ id })),
    store: stores.map((url) => ({ url })),
  }
}

async function rejects(t: Test, dir: string, name: string, cfg: Record<string, unknown>, expect: { code: string; message: RegExp }, msg = 'mount() rejects'): Promise<void> {
  const mnt = mountpointIn(dir, name)
  await t.rejects(mount({ mountpoint: mnt, log: { level: 'silent' }, config: cfg }), expect, msg)
  t.notOk(fs.readFileSync('/proc/self/mounts', 'utf8').includes(` ${mnt} `), 'nothing mounted')
}

async function mounts(t: Test, dir: string, name: string, cfg: Record<string, unknown>): Promise<AysfsMount> {
  const mnt = mountpointIn(dir, name)
  const m = await mount({ mountpoint: mnt, log: { level: 'silent' }, config: cfg })
  t.teardown(async () => {
    await m.unmount()
    clearMounts(mnt)
  })
  return m
}

t.test('max_flist_size: an flist over it is a failure of that store, over HTTP and from a directory', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const entries = Array.from({ length: 100 }, (_, i) => file(`/f${i}`, `${i}\n`))
  writeStore(entries, store, 'svc', PREFIX)
  const size = fs.statSync(path.join(store, 'md', 'svc.flist')).size
  t.ok(size > 4096)
  const n = await serve(t, store)
  await rejects(t, dir, 'http', config(dir, 'http', [`${n.url}/store`], { max_flist_size: '4KiB' }), {
    code: 'EIO',
    message: /flist svc: no store answered \(store\[0\]: too-long\), and no copy is kept/,
  })
  await rejects(t, dir, 'dir', config(dir, 'dir', [store], { max_flist_size: 4096 }), { code: 'EIO', message: /store\[0\]: too-long/ })
  // At the limit it mounts.
  const m = await mounts(t, dir, 'exact', config(dir, 'exact', [`${n.url}/store`], { max_flist_size: size }))
  t.equal(fs.readdirSync(m.mountpoint).length, 100)
  // A kept copy over the limit is refused too (the limit was lowered since it was kept).
  await m.unmount()
  clearMounts(m.mountpoint)
  await n.stop()
  await rejects(t, dir, 'exact', config(dir, 'exact', [`${n.url}/store`], { max_flist_size: size - 1 }), {
    code: 'EINVAL',
    message: new RegExp(`flist svc \\(svc.flist\\): ${size} bytes, more than main.max_flist_size \\(${size - 1}\\)`),
  })
})

t.test('max_entries: one flist, and services merged, can hold no more', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  writeStore(Array.from({ length: 50 }, (_, i) => file(`/a/f${i}`, `a${i}\n`)), store, 'one', PREFIX)
  writeStore(Array.from({ length: 50 }, (_, i) => file(`/b/f${i}`, `b${i}\n`)), store, 'two', PREFIX)
  await rejects(t, dir, 'single', config(dir, 'single', [store], { max_entries: 40 }, ['one']), {
    code: 'EINVAL',
    message: /flist one .*: more than 40 entries \(main.max_entries\)/,
  })
  // Each fits (50 files + /a + the root line), the two together do not.
  await rejects(t, dir, 'merged', config(dir, 'merged', [store], { max_entries: 60 }, ['one', 'two']), {
    code: 'EINVAL',
    message: /more than 60 entries together \(main.max_entries\)/,
  })
  const m = await mounts(t, dir, 'fits', config(dir, 'fits', [store], { max_entries: 200 }, ['one', 'two']))
  t.same(fs.readdirSync(m.mountpoint).sort(), ['a', 'b'])
})

t.test('paths and hashes from a store cannot point outside the mount or the cache', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const good = '8a3e5e03a10ecc3601a1f14fbc371019'
  const cases: [string, RegExp][] = [
    [`${PREFIX}/../../etc/passwd|${good}|10`, /has an empty, "\." or "\.\." component/],
    [`${PREFIX}/a/./b|${good}|10`, /has an empty, "\." or "\.\." component/],
    [`${PREFIX}//b|${good}|10`, /has an empty, "\." or "\.\." component/],
    [`${PREFIX}/x|../../../../etc/passwd00000000000|10`, /bad md5/],
    [`${PREFIX}/x|8a3e5e03a10ecc3601a1f14fbc37101/|10`, /bad md5/],
    [`relative/x|${good}|10`, /path must be absolute/],
    [`${PREFIX}/x\u0000y|${good}|10`, /NUL byte/],
    [`${PREFIX}/x|${good}|-1`, /bad size/],
  ]
  fs.mkdirSync(path.join(store, 'md'), { recursive: true })
  for (const [i, [line, why]] of cases.entries()) {
    fs.writeFileSync(path.join(store, 'md', `bad${i}.flist`), `${PREFIX}/ok|${good}|10\n${line}\n`)
    await rejects(t, dir, `bad${i}`, config(dir, `bad${i}`, [store], {}, [`bad${i}`]), { code: 'EINVAL', message: new RegExp(`bad${i}.*line 2: .*${why.source}`) }, JSON.stringify(line))
    t.notOk(fs.existsSync(path.join(dir, `bad${i}`, 'cache', 'md', `bad${i}.flist`)), 'an invalid flist is not kept')
  }
  // Nothing was written anywhere but the caches.
  t.same(fs.readdirSync(path.join(store, 'md')).sort(), cases.map((_, i) => `bad${i}.flist`).sort(), 'the store is untouched')
  t.notOk(fs.existsSync(path.join(dir, 'etc')))
})
