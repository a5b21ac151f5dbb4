// lib/paths.ts: the rules for flist paths, prefixes and service ids, and that every place that
// takes one (the flist parser, the config, publish, the pipeline) applies the same rule.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { parseConfig } from '../../lib/config'
import { AysfsError } from '../../lib/errors'
import { formatFlistLine, parseFlist } from '../../lib/flist'
import {
  MAX_NAME_BYTES, MAX_PATH_BYTES, SERVICE_ID_RULE, componentProblem, flistPathProblem, forbiddenCharIn, isServiceId, normalisePrefix, pathLengthProblem,
} from '../../lib/paths'
import { createFetcher } from '../../lib/pipeline'
import { publish } from '../../lib/publish'
import { makeConfig, memLog } from '../helpers/store'

const MD5 = '8a3e5e03a10ecc3601a1f14fbc371019'
const long = (n: number): string => 'x'.repeat(n)
/** A path of exactly `bytes` bytes: components of 200 bytes, the last one shorter. */
function pathOf(bytes: number): string {
  let p = ''
  while (p.length < bytes) p += `/${long(Math.min(200, bytes - p.length - 1))}`
  return p
}

t.test('flist paths', async (t) => {
  const good = ['/', '/a', '/a/b.c', '/.hidden', '/a/...', `/${long(MAX_NAME_BYTES)}`, `/${'é'.repeat(127)}`, pathOf(MAX_PATH_BYTES), '/a b/tab\there']
  for (const p of good) t.equal(flistPathProblem(p), undefined, `${JSON.stringify(p.slice(0, 40))} is a flist path`)
  const bad: Array<[string, RegExp, boolean?]> = [
    ['a/b', /^is not absolute$/, true],
    ['', /^is not absolute$/, true],
    ['/a//b', /^has an empty, "\." or "\.\." component$/],
    ['/a/', /component/],
    ['/a/./b', /component/],
    ['/a/..', /component/],
    ['/..', /component/],
    [`/${long(MAX_NAME_BYTES + 1)}`, /^has a component of 256 bytes: at most 255 \(NAME_MAX\)$/],
    [`/${'é'.repeat(128)}`, /component of 256 bytes/],
    [pathOf(MAX_PATH_BYTES + 1), /^is 4097 bytes long: at most 4096 \(PATH_MAX\)$/],
    ['/a|b', /^contains a "\|"$/],
    ['/a\rb', /^contains a carriage return \(CR\)$/],
    ['/a\nb', /^contains a line feed \(LF\)$/],
    ['/a\0b', /^contains a NUL byte$/],
  ]
  for (const [p, what, relative] of bad) {
    const problem = flistPathProblem(p)
    t.match(problem?.text, what, `${JSON.stringify(p.slice(0, 40))}: ${problem?.text}`)
    t.equal(problem?.relative, relative, 'only a relative path is marked relative')
  }
})

t.test('the pieces the flist parser uses on bytes', async (t) => {
  const b = (s: string): Buffer => Buffer.from(s)
  t.equal(componentProblem(b('abc'), 0, 3), undefined)
  t.equal(componentProblem(b('...'), 0, 3), undefined, '"..." is a name')
  t.equal(componentProblem(b('.a'), 0, 2), undefined)
  for (const c of ['', '.', '..']) t.match(componentProblem(b(`/${c}/`), 1, 1 + c.length), /empty, "\." or "\.\."/, JSON.stringify(c))
  t.match(componentProblem(b(long(300)), 0, 300), /300 bytes/)
  t.equal(pathLengthProblem(MAX_PATH_BYTES), undefined)
  t.match(pathLengthProblem(MAX_PATH_BYTES + 1), /PATH_MAX/)
  t.equal(forbiddenCharIn('a|b', { pipe: false }), undefined, 'a symlink target may hold "|"')
  t.equal(forbiddenCharIn('a\nb', { pipe: false }), 'a line feed (LF)', 'but no line end')
  t.equal(forbiddenCharIn('a|b\n'), 'a "|"', 'the first kind in the rule\'s order')
})

t.test('prefixes', async (t) => {
  t.equal(normalisePrefix('/opt/js/'), '/opt/js')
  t.equal(normalisePrefix('/opt/js///'), '/opt/js')
  t.equal(normalisePrefix('/'), '/')
  t.equal(normalisePrefix('///'), '/')
  t.equal(normalisePrefix('rel/'), 'rel', 'normalising does not check: flistPathProblem does')
})

t.test('service ids', async (t) => {
  for (const id of ['jumpscale__base', 'a.b', '...', 'a b', 'é', 'a..b']) t.ok(isServiceId(id), JSON.stringify(id))
  for (const id of ['', '.', '..', 'a/b', '/', 'a\\b', '\\', 'a\0b', 'a\nb', 'a\x1fb', 'a\x7fb', 5, undefined]) {
    t.notOk(isServiceId(id), JSON.stringify(id))
  }
  t.match(SERVICE_ID_RULE, /"\\"/, 'the rule names the backslash')
})

const IDS = ['svc', 'a.b', 'a\\b', 'a/b', '..', 'a\tb']

t.test('config, publish and the pipeline apply the one service-id rule', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-paths-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const fetcher = createFetcher({ config: makeConfig({ cache: path.join(dir, 'cache') }), log: memLog() })
  t.teardown(() => fetcher.close())
  for (const id of IDS) {
    const ok = isServiceId(id)
    const name = `${JSON.stringify(id)} ${ok ? 'accepted' : 'refused'}`
    // config
    let configErr: unknown
    try {
      parseConfig(`[[ays]]\nid = ${JSON.stringify(id)}\n`)
    } catch (err) {
      configErr = err
    }
    if (ok) t.equal(configErr, undefined, `config: ${name}`)
    else t.match(configErr, { code: 'EINVAL', key: 'ays[0].id', message: /usable as a file name/ }, `config: ${name}`)
    // publish: the id is checked before anything is read or written
    const pub = publish({ dir: path.join(dir, 'nope'), id, store: path.join(dir, 'store'), progress: false })
    if (ok) await t.rejects(pub, { code: 'EUSAGE', message: /no such directory/ }, `publish: ${name}`)
    else await t.rejects(pub, { code: 'EUSAGE', message: /--id .*: a service id must be usable as a file name/ }, `publish: ${name}`)
    // the pipeline's flist fetch: a refused id never reaches a store or the cache
    let fetchErr: unknown
    try {
      await fetcher.fetchFlist(id, () => undefined)
    } catch (err) {
      fetchErr = err
    }
    t.ok(fetchErr instanceof AysfsError, 'an AysfsError')
    if (ok) t.not((fetchErr as AysfsError).code, 'EINVAL', `pipeline: ${name} (no store: ${(fetchErr as AysfsError).code})`)
    else t.match(fetchErr, { code: 'EINVAL', message: /not a valid ays id/ }, `pipeline: ${name}`)
  }
})

const PREFIXES = ['/opt/js', '/opt/js/', '/', 'opt/js', '/opt/../js', '/opt//js', '/a|b', `/${long(300)}`]

t.test('config, the flist parser and publish apply the one prefix rule', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-paths-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.mkdirSync(path.join(dir, 'tree'))
  for (const prefix of PREFIXES) {
    const ok = flistPathProblem(normalisePrefix(prefix)) === undefined
    const name = `${JSON.stringify(prefix.slice(0, 40))} ${ok ? 'accepted' : 'refused'}`
    let configErr: unknown
    try {
      parseConfig(`[main]\nprefix = ${JSON.stringify(prefix)}\n[[ays]]\nid = "svc"\n`)
    } catch (err) {
      configErr = err
    }
    if (ok) t.equal(configErr, undefined, `config: ${name}`)
    else t.match(configErr, { code: 'EINVAL', key: 'main.prefix' }, `config: ${name}`)
    if (ok) {
      const line = `${normalisePrefix(prefix) === '/' ? '' : normalisePrefix(prefix)}/f|${MD5}|1\n`
      t.equal(parseFlist(Buffer.from(line), { name: 's', prefix }).entries, 1, `parser: ${name}`)
    }
    else t.throws(() => parseFlist(Buffer.alloc(0), { name: 's', prefix }), TypeError, `parser: ${name}`)
    if (!ok) {
      await t.rejects(publish({ dir: path.join(dir, 'tree'), id: 's', store: path.join(dir, 'store'), prefix, progress: false }), { code: 'EUSAGE', message: /--prefix/ }, `publish: ${name}`)
    }
  }
  const r = await publish({ dir: path.join(dir, 'tree'), id: 's', store: path.join(dir, 'store'), prefix: '/opt/js/', progress: false, fsync: false })
  t.equal(r.prefix, '/opt/js', 'publish: a trailing "/" is dropped')
})

t.test('formatFlistLine writes only paths the parser reads', async (t) => {
  for (const p of ['/a', '/a//b', '/a|b', 'rel', `/${long(256)}`, pathOf(MAX_PATH_BYTES + 1)]) {
    const problem = flistPathProblem(p)
    if (problem === undefined) {
      const line = formatFlistLine({ path: p, md5: MD5, size: 1 }, 'seed')
      t.equal(parseFlist(Buffer.from(`${line}\n`), { name: 's', prefix: '/' }).entries, p.split('/').length - 1, `${p} round-trips`)
    } else {
      t.throws(() => formatFlistLine({ path: p, md5: MD5, size: 1 }, 'seed'), { code: 'EINVAL' }, `${JSON.stringify(p.slice(0, 20))} refused: ${problem.text}`)
    }
  }
})
