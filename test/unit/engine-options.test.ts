// Engine options are checked once, in lib/engine.ts (type and range of each, a TypeError naming
// the option), and handed to the addon complete; the addon checks again that each is present
// and of its type. Mounts nothing: every call here fails before anything is started.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import type { NativeMountOptions } from '../../binding'
import { ENGINE_DEFAULTS, Engine, nativeMountOptions, type EngineOptions } from '../../lib/engine'
import { loadBinding } from '../../lib/native'

const UINT32_MAX = 4294967295
const base: EngineOptions = {
  mountpoint: '/nonexistent-aysfs-test/mnt',
  cacheDir: '/nonexistent-aysfs-test/cache',
  table: Buffer.alloc(0),
  fetcher: { module: '/nonexistent-aysfs-test/fetcher.js' },
}

function message(option: string, what: string): string {
  return `Expected the "${option}" option to be ${what}`
}

/** Wrong values of today's tunables, with the message each gets. */
const wrong: Partial<Record<keyof typeof ENGINE_DEFAULTS, { values: unknown[]; what: string }>> = {
  fsname: { values: [1, null, true, 'a,b', 'a\\b', Buffer.from('x')], what: "a string without ',' or '\\'" },
  allowOther: { values: [1, 'true', null, {}], what: 'a boolean' },
  suid: { values: [0, 'yes', null], what: 'a boolean' },
  dev: { values: [1, 'false', null], what: 'a boolean' },
  debug: { values: ['1', null, []], what: 'a boolean' },
  stallTimeoutMs: { values: ['60s', -1, 1.5, NaN, Infinity, UINT32_MAX + 1, null, 10n], what: `an integer from 0 to ${UINT32_MAX}` },
  spliceMinSize: { values: ['1M', -1, 0.5, Number.MAX_SAFE_INTEGER + 1, null], what: `an integer from 0 to ${Number.MAX_SAFE_INTEGER}` },
  readAheadKb: { values: ['512', -512, 2 ** 40, null], what: `an integer from 0 to ${UINT32_MAX}` },
  readAround: { values: ['128k', -1, 2 ** 32, 2 ** 40, 4096.5, null, { valueOf: () => 4096 }], what: `an integer from 0 to ${UINT32_MAX}` },
  pushFiles: { values: ['128k', -1, 2 ** 32, null], what: `an integer from 0 to ${UINT32_MAX}` },
}

t.test('the tunables left out take their defaults; the native side gets a complete set', async (t) => {
  const native = nativeMountOptions({ ...base, cacheDir: 'relative/cache' })
  // The defaults the engine had before they were one list (a new tunable needs no line here).
  const before = {
    mountpoint: base.mountpoint,
    cacheDir: path.resolve('relative/cache'),
    fsname: 'aysfs',
    allowOther: false,
    suid: false,
    dev: false,
    debug: false,
    stallTimeoutMs: 60_000,
    spliceMinSize: 1 << 20,
    readAheadKb: 512,
    readAround: 128 << 10,
    pushFiles: 128 << 10,
  }
  t.same(Object.fromEntries(Object.keys(before).map((k) => [k, native[k as keyof NativeMountOptions]])), before)
  t.same(Object.keys(native), loadBinding().mountOptionNames, 'every native option, in the native order')
  t.ok(Object.isFrozen(ENGINE_DEFAULTS))
})

t.test('values given are handed over as they are; undefined is left out', async (t) => {
  const given = {
    fsname: 'svc', allowOther: true, suid: true, dev: true, debug: true, stallTimeoutMs: 0,
    spliceMinSize: Number.MAX_SAFE_INTEGER, readAheadKb: 0, readAround: UINT32_MAX, pushFiles: 0,
  }
  const native = nativeMountOptions({ ...base, ...given })
  t.same(Object.fromEntries(Object.keys(given).map((k) => [k, native[k as keyof NativeMountOptions]])), given)
  t.equal(native.cacheDir, base.cacheDir)
  t.equal(nativeMountOptions({ ...base, readAround: undefined }).readAround, 128 << 10)
  t.equal(nativeMountOptions({ ...base, fsname: '' }).fsname, '', 'an empty fsname is the mount\'s business')
})

t.test('a tunable of the wrong type or out of range is a TypeError naming it', async (t) => {
  for (const [option, { values, what }] of Object.entries(wrong) as [string, { values: unknown[]; what: string }][]) {
    for (const value of values) {
      t.throws(() => nativeMountOptions({ ...base, [option]: value }), new TypeError(message(option, what)), `${option}: ${String(value)}`)
    }
  }
  // Every tunable, today's and any added later: an object is no value of any of them.
  for (const option of Object.keys(ENGINE_DEFAULTS)) {
    t.throws(() => nativeMountOptions({ ...base, [option]: {} }), { name: 'TypeError', message: new RegExp(`^Expected the "${option}" option to be `) }, `${option}: {}`)
  }
})

t.test('the other options are checked the same way', async (t) => {
  t.throws(() => nativeMountOptions(null as unknown as EngineOptions), new TypeError('Expected the engine options to be an object'))
  t.throws(() => nativeMountOptions({ ...base, mountpoint: 'relative' }), new TypeError(message('mountpoint', 'an absolute path')))
  t.throws(() => nativeMountOptions({ ...base, mountpoint: 1 as unknown as string }), new TypeError(message('mountpoint', 'an absolute path')))
  t.throws(() => nativeMountOptions({ ...base, cacheDir: '' }), new TypeError(message('cacheDir', 'a path')))
  t.throws(() => nativeMountOptions({ ...base, table: 'x' as unknown as Buffer }), new TypeError(message('table', 'a Buffer (the packed inode table)')))
  t.throws(() => nativeMountOptions({ ...base, fetcher: undefined as unknown as EngineOptions['fetcher'] }), new TypeError(message('fetcher.module', 'the path of a fetcher module')))
  t.throws(() => nativeMountOptions({ ...base, fetcher: { module: 1 as unknown as string } }), new TypeError(message('fetcher.module', 'the path of a fetcher module')))
  t.throws(() => nativeMountOptions({ ...base, onExit: 'x' as unknown as () => void }), new TypeError(message('onExit', 'a function')))
})

t.test('Engine.mount rejects a mistyped option before it starts or creates anything', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-options-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const cacheDir = path.join(dir, 'cache')
  await t.rejects(
    Engine.mount({ ...base, cacheDir, readAround: '128k' as unknown as number }),
    new TypeError(message('readAround', `an integer from 0 to ${UINT32_MAX}`)),
  )
  await t.rejects(Engine.mount({ ...base, cacheDir, suid: 'no' as unknown as boolean }), new TypeError(message('suid', 'a boolean')))
  t.notOk(fs.existsSync(cacheDir), 'the cache directory was not made')
})

t.test('the addon checks again: every option present, of its type', async (t) => {
  const binding = loadBinding()
  const complete: NativeMountOptions = nativeMountOptions(base)
  const call = (options: Record<string, unknown>) => () => binding.mount(options as unknown as NativeMountOptions, Buffer.alloc(0), () => undefined)
  const named = (option: string) => ({ name: 'TypeError', message: new RegExp(`^mount: expected the "${option}" option to be `) })
  for (const option of binding.mountOptionNames) {
    const missing: Record<string, unknown> = { ...complete }
    delete missing[option]
    t.throws(call(missing), named(option), `${option} missing`)
    const mistyped = typeof complete[option as keyof NativeMountOptions] === 'string' ? 1 : '1'
    t.throws(call({ ...complete, [option]: mistyped }), named(option), `${option} mistyped`)
  }
  t.throws(call({ ...complete, fsname: 1 }), new TypeError('mount: expected the "fsname" option to be a string'))
  t.throws(call({ ...complete, suid: 1 }), new TypeError('mount: expected the "suid" option to be a boolean'))
  for (const value of [-1, 1.5, 2 ** 32, NaN]) {
    t.throws(call({ ...complete, readAround: value }), new TypeError(`mount: expected the "readAround" option to be an integer from 0 to ${UINT32_MAX}`), `readAround ${value}`)
  }
  t.throws(call({ ...complete, spliceMinSize: 2 ** 53 }), new TypeError(`mount: expected the "spliceMinSize" option to be an integer from 0 to ${Number.MAX_SAFE_INTEGER}`))
})
