// Signed flists through real mounts: with main.trusted_keys a node mounts only what a trusted key
// signed, at mount, at reload and from the copy kept in <cache>/md/; refusals name the service,
// the store and the reason. Stores are served by a real nginx.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { mount, type AysfsMount } from '../../lib/index'
import type { Logger } from '../../lib/log'
import { generateKeyPair, signFlist, type KeyPairFiles } from '../../lib/sign'
import { clearMounts, tmpdir } from '../helpers/mount'
import { startNginx, type Nginx } from '../helpers/nginx'
import { md5, writeStore, type GenEntry } from '../helpers/tree'

const PREFIX = '/opt/jumpscale7'
const ID = 'jumpscale__base'

function file(p: string, text: string): GenEntry {
  const content = Buffer.from(text)
  return { path: p, kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000, content }
}

/** Publish entries to the store and sign the flist with `key` (none: unsigned, any old .sig removed). */
function publish(store: string, entries: GenEntry[], key?: KeyPairFiles, id = ID): Buffer {
  writeStore(entries, store, id, PREFIX)
  const flist = path.join(store, 'md', `${id}.flist`)
  fs.rmSync(`${flist}.sig`, { force: true })
  const data = fs.readFileSync(flist)
  if (key) fs.writeFileSync(`${flist}.sig`, signFlist(data, key.privateKey))
  return data
}

async function serve(t: Test, store: string): Promise<Nginx> {
  const n = await startNginx({ store })
  t.teardown(() => n.stop())
  return n
}

/** A memory logger that mount() accepts (pino-compatible enough for it). */
function memLog() {
  const lines: { level: string; msg: string; obj: object }[] = []
  const mk = (level: string) => (obj: object, msg?: string) => void lines.push({ level, msg: msg ?? '', obj })
  const log = { level: 'debug', trace: mk('trace'), debug: mk('debug'), info: mk('info'), warn: mk('warn'), error: mk('error'), fatal: mk('fatal'), child: () => log }
  return { log: log as unknown as Logger, lines }
}

interface NodeOpts {
  stores: string[]
  keys?: string[]
  /** A TOML file instead of an object (needed for reload to re-read the config). */
  configFile?: string
  name?: string
  log?: ReturnType<typeof memLog>['log']
}

function configObject(dir: string, name: string, o: NodeOpts): Record<string, unknown> {
  return {
    main: { cache: path.join(dir, name, 'cache'), prefix: PREFIX, timeout: '2s', ...(o.keys ? { trusted_keys: o.keys } : {}) },
    ays: [{ id: ID }],
    store: o.stores.map((url) => ({ url })),
  }
}

/** The same config as TOML (for reloads that change trusted_keys). */
function writeToml(file: string, dir: string, name: string, o: NodeOpts): void {
  const q = (s: string) => JSON.stringify(s)
  fs.writeFileSync(
    file,
    [
      '[main]',
      `cache = ${q(path.join(dir, name, 'cache'))}`,
      `prefix = ${q(PREFIX)}`,
      'timeout = "2s"',
      ...(o.keys ? [`trusted_keys = [${o.keys.map(q).join(', ')}]`] : []),
      '[[ays]]',
      `id = ${q(ID)}`,
      ...o.stores.flatMap((url) => ['[[store]]', `url = ${q(url)}`]),
      '',
    ].join('\n'),
  )
}

function mnt(dir: string, name: string): string {
  const m = path.join(dir, name, 'mnt')
  fs.mkdirSync(m, { recursive: true })
  return m
}

async function node(t: Test, dir: string, o: NodeOpts): Promise<AysfsMount> {
  const name = o.name ?? 'a'
  const mountpoint = mnt(dir, name)
  const m = await mount({ mountpoint, log: o.log ?? { level: 'silent' }, config: o.configFile ?? configObject(dir, name, o) })
  t.teardown(async () => {
    await m.unmount()
    clearMounts(mountpoint)
  })
  return m
}

/** mount() must reject, and nothing may be left mounted. */
async function refused(t: Test, dir: string, o: NodeOpts, expect: { code: string; message: RegExp }): Promise<void> {
  const name = o.name ?? 'a'
  const mountpoint = mnt(dir, name)
  await t.rejects(mount({ mountpoint, log: o.log ?? { level: 'silent' }, config: configObject(dir, name, o) }), expect)
  t.notOk(fs.readFileSync('/proc/self/mounts', 'utf8').includes(` ${mountpoint} `), 'nothing mounted')
}

const entriesV1 = [file('/bin/tool', 'tool v1\n'), file('/etc/app.conf', 'one\n')]
const entriesV2 = [file('/bin/tool', 'tool v2\n'), file('/etc/app.conf', 'two\n')]

/** A temp dir, a key made there, a store in it with entriesV1 signed by that key, served by nginx. */
async function signedStore(t: Test): Promise<{ dir: string; key: KeyPairFiles; store: string; n: Nginx }> {
  const dir = tmpdir(t)
  const key = generateKeyPair(path.join(dir, 'keys'))
  const store = path.join(dir, 'store')
  publish(store, entriesV1, key)
  return { dir, key, store, n: await serve(t, store) }
}

t.test('a signed flist mounts; status says it was verified and by which key', async (t) => {
  const { dir, key, store, n } = await signedStore(t)
  const m = await node(t, dir, { stores: [`${n.url}/store`], keys: [key.publicKey] })
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'bin/tool'), 'utf8'), 'tool v1\n')
  const info = m.stats().mount!
  t.equal(info.signed, true)
  t.match(info.services, [{ id: ID, source: 'store[0]', key: key.keyId }])
  t.ok(n.requests().some((r) => r.uri === `/store/md/${ID}.flist.sig` && r.status === 200), 'the signature was fetched')
  const kept = path.join(dir, 'a', 'cache', 'md')
  t.same(fs.readFileSync(path.join(kept, `${ID}.flist.sig`)), fs.readFileSync(path.join(store, 'md', `${ID}.flist.sig`)), 'and kept next to the flist')
})

t.test('without trusted_keys: unchanged, no signature asked for, status says not verified', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  publish(store, entriesV1)
  const n = await serve(t, store)
  const m = await node(t, dir, { stores: [`${n.url}/store`] })
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'etc/app.conf'), 'utf8'), 'one\n')
  t.equal(m.stats().mount!.signed, false)
  t.notOk(m.stats().mount!.services[0]!.key)
  t.notOk(n.requests().some((r) => r.uri.endsWith('.sig')), 'no .sig request')
})

t.test('refused at mount: one byte changed, an untrusted key, no signature, a garbled signature', async (t) => {
  const dir = tmpdir(t)
  const key = generateKeyPair(path.join(dir, 'keys'), 'ops')
  const stranger = generateKeyPair(path.join(dir, 'keys'), 'stranger')
  const store = path.join(dir, 'store')
  const n = await serve(t, store)
  const url = `${n.url}/store`
  const o = { stores: [url], keys: [key.publicKey] }
  const head = `service ${ID}: flist from store\\[0\\] \\(${url.replace(/[.]/g, '\\.')}\\) refused: `
  const flist = path.join(store, 'md', `${ID}.flist`)

  const data = publish(store, entriesV1, key)
  const changed = Buffer.from(data)
  changed[changed.indexOf('tool') + 1] ^= 0x20 // "tool" -> "tOol" in one path: one byte
  fs.writeFileSync(flist, changed)
  await refused(t, dir, { ...o, name: 'byte' }, { code: 'EACCES', message: new RegExp(`^${head}bad signature: its bytes are not what key ${key.keyId}`) })

  publish(store, entriesV1, stranger)
  await refused(t, dir, { ...o, name: 'stranger' }, { code: 'EACCES', message: new RegExp(`^${head}signed by key ${stranger.keyId}, which is not trusted`) })

  publish(store, entriesV1)
  await refused(t, dir, { ...o, name: 'unsigned' }, { code: 'EACCES', message: new RegExp(`^${head}it has no signature \\(${ID}\\.flist\\.sig\\)`) })

  publish(store, entriesV1)
  fs.writeFileSync(`${flist}.sig`, 'this is not a signature\n')
  await refused(t, dir, { ...o, name: 'garbled' }, { code: 'EACCES', message: new RegExp(`^${head}its signature file ${ID}\\.flist\\.sig is not valid`) })

  for (const name of ['byte', 'stranger', 'unsigned', 'garbled']) {
    t.notOk(fs.existsSync(path.join(dir, name, 'cache', 'md', `${ID}.flist`)), `${name}: a refused flist is never kept`)
  }
})

t.test('a store whose copy is refused is skipped for the next one, and the refusal logged', async (t) => {
  const dir = tmpdir(t)
  const key = generateKeyPair(path.join(dir, 'keys'))
  const bad = path.join(dir, 'bad-store')
  const good = path.join(dir, 'good-store')
  publish(bad, entriesV2) // unsigned: whoever wrote it has no key
  publish(good, entriesV1, key)
  const n = await serve(t, bad)
  const { log, lines } = memLog()
  const m = await node(t, dir, { stores: [`${n.url}/store`, good], keys: [key.publicKey], log })
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'bin/tool'), 'utf8'), 'tool v1\n', 'the signed tree from store[1]')
  t.match(m.stats().mount!.services, [{ source: 'store[1]', key: key.keyId }])
  t.ok(
    lines.some((l) => l.level === 'warn' && /^service jumpscale__base: flist from store\[0\] .* refused: it has no signature/.test(l.msg)),
    'the refusal of store[0] is logged as a warning',
  )

  // Both stores refused: the error lists each; the (good) kept copy is not used, since stores answered.
  await m.unmount()
  clearMounts(m.mountpoint)
  publish(good, entriesV1)
  await refused(t, dir, { stores: [`${n.url}/store`, good], keys: [key.publicKey] }, {
    code: 'EACCES',
    message: /^flist jumpscale__base: no store has a copy that can be trusted \(store\[0\]: refused, store\[1\]: refused\): service jumpscale__base: flist from store\[0\].*no signature.*; service jumpscale__base: flist from store\[1\].*no signature/,
  })
})

t.test('the kept copy is verified again on a remount: tampered on disk, it is refused', async (t) => {
  const { dir, key, store, n } = await signedStore(t)
  const o = { stores: [`${n.url}/store`], keys: [key.publicKey] }
  const first = await node(t, dir, o)
  t.equal(fs.readFileSync(path.join(first.mountpoint, 'etc/app.conf'), 'utf8'), 'one\n')
  await first.unmount()
  clearMounts(first.mountpoint)
  await n.stop() // offline from now on: only the kept copy is left

  const again = await node(t, dir, o)
  t.match(again.stats().mount!.services, [{ source: 'kept', key: key.keyId }], 'an intact kept copy remounts offline')
  await again.unmount()
  clearMounts(again.mountpoint)

  const kept = path.join(dir, 'a', 'cache', 'md', `${ID}.flist`)
  const original = fs.readFileSync(kept)
  const tampered = Buffer.from(original.toString().replace('/etc/app.conf', '/etc/app.cong'))
  t.equal(tampered.length, original.length)
  fs.writeFileSync(kept, tampered)
  await refused(t, dir, o, { code: 'EACCES', message: new RegExp(`^service ${ID}: flist from the copy kept in ${kept.replace(/[.]/g, '\\.')} refused: bad signature`) })

  fs.writeFileSync(kept, original)
  fs.rmSync(`${kept}.sig`)
  await refused(t, dir, o, { code: 'EACCES', message: /from the copy kept in .* refused: it has no signature/ })
})

t.test('reload: a flist replaced by an unsigned or tampered one is refused and the old tree stays', async (t) => {
  const { dir, key, store, n } = await signedStore(t)
  const m = await node(t, dir, { stores: [`${n.url}/store`], keys: [key.publicKey] })
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'etc/app.conf'), 'utf8'), 'one\n')

  const v2 = publish(store, entriesV2, key)
  await m.reload()
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'etc/app.conf'), 'utf8'), 'two\n', 'a signed update reloads')

  const flist = path.join(store, 'md', `${ID}.flist`)
  const sig = fs.readFileSync(`${flist}.sig`)
  writeStore(entriesV1, store, ID, PREFIX) // new bytes, the old signature
  await t.rejects(m.reload(), { code: 'EACCES', message: /^service jumpscale__base: flist from store\[0\] .* refused: bad signature/ })
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'etc/app.conf'), 'utf8'), 'two\n', 'the old tree stays')
  t.match(m.stats().mount!.lastReload, { ok: false, error: /refused: bad signature/ })

  fs.rmSync(`${flist}.sig`)
  await t.rejects(m.reload(), { code: 'EACCES', message: /refused: it has no signature/ })
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'etc/app.conf'), 'utf8'), 'two\n')
  const kept = path.join(dir, 'a', 'cache', 'md', `${ID}.flist`)
  t.ok(fs.readFileSync(kept).equals(v2), 'the kept copy is still the last verified flist')
  t.ok(fs.readFileSync(`${kept}.sig`).equals(sig), 'with its signature')
})

t.test('rotation: old and new keys trusted, then the old one removed', async (t) => {
  const dir = tmpdir(t)
  const oldKey = generateKeyPair(path.join(dir, 'keys'), 'ops-2024')
  const newKey = generateKeyPair(path.join(dir, 'keys'), 'ops-2025')
  const store = path.join(dir, 'store')
  publish(store, entriesV1, oldKey)
  const n = await serve(t, store)
  const stores = [`${n.url}/store`]
  const toml = path.join(dir, 'aysfs.toml')

  // 1. Nodes trust both keys; flists are still signed with the old one.
  writeToml(toml, dir, 'a', { stores, keys: [oldKey.publicKey, newKey.publicKey] })
  const m = await node(t, dir, { stores, configFile: toml })
  t.match(m.stats().mount!.services, [{ key: oldKey.keyId }])

  // 2. The publisher switches to the new key: nodes take the new flists without a config change.
  publish(store, entriesV2, newKey)
  await m.reload()
  t.match(m.stats().mount!.services, [{ key: newKey.keyId }])
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'bin/tool'), 'utf8'), 'tool v2\n')

  // 3. The old key is retired from the config: anything it signed is refused from now on.
  writeToml(toml, dir, 'a', { stores, keys: [newKey.publicKey] })
  await m.reload()
  t.equal(m.stats().mount!.signed, true)
  publish(store, entriesV1, oldKey) // e.g. a replay of an old, old-key-signed flist
  await t.rejects(m.reload(), { code: 'EACCES', message: new RegExp(`signed by key ${oldKey.keyId}, which is not trusted \\(main.trusted_keys: ${newKey.publicKey} = ${newKey.keyId}\\)`) })
  t.equal(fs.readFileSync(path.join(m.mountpoint, 'bin/tool'), 'utf8'), 'tool v2\n', 'the tree the new key signed stays')

  // A fresh node that trusts only the new key refuses the old-key flist at mount too.
  await refused(t, dir, { stores, keys: [newKey.publicKey], name: 'b' }, { code: 'EACCES', message: new RegExp(`signed by key ${oldKey.keyId}, which is not trusted`) })

  // And a key file that cannot be read fails the reload with the key, not silently unverified.
  writeToml(toml, dir, 'a', { stores, keys: [path.join(dir, 'keys', 'missing.pub')] })
  await t.rejects(m.reload(), { code: 'EINVAL', key: 'main.trusted_keys[0]', message: /missing\.pub: cannot read: no such file/ })
})

t.test('ays ids cannot reach outside md/ on the store or the cache', async (t) => {
  const dir = tmpdir(t)
  for (const id of ['../x', '..', '.', 'a/b', 'a\\b', 'x\u0000y', '']) {
    await t.rejects(
      mount({ mountpoint: dir, log: { level: 'silent' }, config: { main: { cache: path.join(dir, 'c') }, ays: [{ id }], store: [{ url: dir }] } }),
      { code: 'EINVAL', key: 'ays[0].id' },
      JSON.stringify(id),
    )
  }
  // An id that percent-decodes to a path names one file on an HTTP store, never another place.
  const store = path.join(dir, 'store')
  publish(store, entriesV1)
  const n = await serve(t, store)
  const mountpoint = mnt(dir, 'pct')
  await t.rejects(
    mount({ mountpoint, log: { level: 'silent' }, config: { main: { cache: path.join(dir, 'pct', 'cache'), prefix: PREFIX }, ays: [{ id: '..%2f..%2fstore%2fmd%2fjumpscale__base' }], store: [{ url: `${n.url}/store` }] } }),
    { code: 'ENOENT' },
  )
  t.ok(n.requests().some((r) => r.uri === '/store/md/..%2f..%2fstore%2fmd%2fjumpscale__base.flist' && r.status === 404), 'asked for the literal name')
})

t.test('prefetch = true fills the cache from the verified flist, fetched once', async (t) => {
  const { dir, key, store, n } = await signedStore(t)
  const mountpoint = mnt(dir, 'a')
  const cfg = configObject(dir, 'a', { stores: [`${n.url}/store`], keys: [key.publicKey] })
  const m = await mount({ mountpoint, log: { level: 'silent' }, config: { ...cfg, ays: [{ id: ID, prefetch: true }] } })
  t.teardown(async () => {
    await m.unmount()
    clearMounts(mountpoint)
  })
  for (const e of entriesV1) t.ok(fs.existsSync(path.join(dir, 'a', 'cache', e.md5[0]!, e.md5[1]!, e.md5)), `${e.path} cached before serving`)
  t.equal(n.requests().filter((r) => r.uri === `/store/md/${ID}.flist`).length, 1, 'the flist was fetched (and verified) once')
})

t.test('prefetch (the subcommand) checks signatures like a mount and never keeps an unverified copy', async (t) => {
  const { prefetch } = await import('../../lib/prefetch')
  const { checkConfig } = await import('../../lib/config')
  const { createLogger } = await import('../../lib/log')
  const dir = tmpdir(t)
  const key = generateKeyPair(path.join(dir, 'keys'))
  const store = path.join(dir, 'store')
  const signed = publish(store, entriesV1, key)
  const config = checkConfig(configObject(dir, 'p', { stores: [store], keys: [key.publicKey] }))
  const log = createLogger({ level: 'silent' })
  const r = await prefetch({ config, log, progress: false })
  t.equal(r.fetched, entriesV1.length)
  const kept = path.join(dir, 'p', 'cache', 'md', `${ID}.flist`)
  t.ok(fs.readFileSync(kept).equals(signed), 'the verified flist is kept')
  t.ok(fs.existsSync(`${kept}.sig`), 'with its signature')

  publish(store, entriesV2) // unsigned
  await t.rejects(prefetch({ config, log, progress: false }), { code: 'EACCES', message: /service jumpscale__base: flist from store\[0\] .* refused: it has no signature/ })
  t.ok(fs.readFileSync(kept).equals(signed), 'the kept copy is still the verified one')
  for (const e of entriesV2) t.notOk(fs.existsSync(path.join(dir, 'p', 'cache', e.md5[0]!, e.md5[1]!, e.md5)), `${e.path}: nothing fetched for a refused flist`)
})
