// lib/config.ts: every kind of mistake is an EINVAL naming file, key and line; defaults; sizes
// and durations; secrets never in messages.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { checkConfig, DEFAULT_CONFIG_PATH, isCheckedConfig, keyLines, loadConfig, parseConfig, parseDuration, parseSize, redactUrl, reviseConfig } from '../../lib/config'
import { AysfsError } from '../../lib/errors'

const FILE = '/etc/aysfs/config.toml'
const MIN = '[[ays]]\nid = "svc"\n'

/** The AysfsError `fn` throws (fails the test if it throws nothing or something else). */
function errorOf(t: Test, fn: () => unknown): AysfsError {
  try {
    fn()
  } catch (err) {
    t.ok(err instanceof AysfsError, 'an AysfsError')
    return err as AysfsError
  }
  t.fail('expected an error')
  return new AysfsError('NONE', 'none')
}

/** Checks an error's code, key, line and the start of its message. */
function rejects(t: Test, text: string, key: string, line: number | undefined, what: RegExp): AysfsError {
  const err = errorOf(t, () => parseConfig(text, FILE))
  t.equal(err.code, 'EINVAL')
  t.equal(err.key, key, 'names the key')
  t.equal(err.line, line, 'names the line')
  t.equal(err.file, FILE, 'names the file')
  const head = line === undefined ? `config ${FILE}: ${key}: ` : `config ${FILE} line ${line}: ${key}: `
  t.ok(err.message.startsWith(head), `message starts with "${head}": ${err.message}`)
  t.match(err.message, what)
  return err
}

t.test('defaults', async (t) => {
  const c = parseConfig(MIN, FILE)
  t.equal(DEFAULT_CONFIG_PATH, '/etc/aysfs/config.toml')
  t.same(c.main, {
    cache: '/var/cache/aysfs',
    cacheSize: 0,
    timeoutMs: 10_000,
    trustedKeys: [],
    maxEntries: 5_000_000,
    maxFlistSize: 512 * 1024 * 1024,
    maxDownloads: 16,
    suid: false,
    dev: false,
    speculate: true,
    startup: true,
  })
  t.same(c.ays, [{ id: 'svc', prefetch: false }])
  t.same(c.caches, [])
  t.same(c.stores, [], 'stores may be absent (an offline node)')
  t.equal(c.file, FILE)
})

t.test('the spec example', async (t) => {
  const text = `[main]
mount = "/opt/jumpscale7"      # optional; --mount on the command line wins
prefix = "/opt/jumpscale7"     # optional; defaults to the mountpoint
cache = "/var/cache/aysfs"     # local cache directory
cache_size = "20GiB"           # optional LRU quota
timeout = "10s"
trusted_keys = ["/etc/aysfs/keys/ops.pub"]
max_entries = 5000000
max_downloads = 8
max_flist_size = "64MiB"
suid = true
dev = true
log_level = "debug"
speculate = false
startup = false

[[ays]]
id = "jumpscale__base"
prefetch = false

[[ays]]
id = "jumpscale__extra"
prefetch = true

[[cache]]
url = "http://cache.lan:9990/ays/"
push = true

[[cache]]
url = "/mnt/shared/cache"
push = false

[[store]]
url = "https://stor.example.com/dedupe"
headers = { Authorization = "Bearer abc", "X-Extra" = "1" }

[[store]]
url = "file:///srv/store"
token_file = "/etc/aysfs/token"
ca = "/etc/aysfs/ca.pem"
`
  const c = parseConfig(text, FILE)
  t.same(c.main, {
    mount: '/opt/jumpscale7',
    prefix: '/opt/jumpscale7',
    cache: '/var/cache/aysfs',
    cacheSize: 20 * 2 ** 30,
    timeoutMs: 10_000,
    trustedKeys: ['/etc/aysfs/keys/ops.pub'],
    maxEntries: 5_000_000,
    maxFlistSize: 64 * 2 ** 20,
    maxDownloads: 8,
    suid: true,
    dev: true,
    speculate: false,
    startup: false,
    logLevel: 'debug',
  })
  t.same(c.ays, [{ id: 'jumpscale__base', prefetch: false }, { id: 'jumpscale__extra', prefetch: true }])
  t.same(c.caches, [
    { url: 'http://cache.lan:9990/ays', headers: {}, push: true, key: 'cache[0]' },
    { url: '/mnt/shared/cache', headers: {}, push: false, key: 'cache[1]' },
  ])
  t.same(c.stores, [
    { url: 'https://stor.example.com/dedupe', headers: { Authorization: 'Bearer abc', 'X-Extra': '1' }, push: false, key: 'store[0]' },
    { url: 'file:///srv/store', headers: {}, tokenFile: '/etc/aysfs/token', ca: '/etc/aysfs/ca.pem', push: false, key: 'store[1]' },
  ])
})

t.test('the message format of the brief', async (t) => {
  const err = rejects(t, `${MIN}\n[main]\n\n\ntimeout = 10\n`, 'main.timeout', 7, /expected a duration like "10s", got 10$/)
  t.equal(err.message, `config ${FILE} line 7: main.timeout: expected a duration like "10s", got 10`)
})

t.test('unknown keys, with suggestions and hints', async (t) => {
  rejects(t, `[main]\ncahce = "/x"\n${MIN}`, 'main.cahce', 2, /unknown key \(did you mean "cache"\?\)/)
  rejects(t, `${MIN}[main]\ncache_size = 1\nfoo = 1\n`, 'main.foo', 5, /unknown key$/)
  rejects(t, `${MIN}color = "red"\n`, 'ays[0].color', 3, /unknown key/)
  rejects(t, `${MIN}[[store]]\nurl = "/s"\npush = true\n`, 'store[0].push', 5, /push applies to \[\[cache\]\] entries only/)
  rejects(t, `${MIN}[[store]]\nurl = "/s"\ntimeout = "5s"\n`, 'store[0].timeout', 5, /timeout belongs in \[main\]; keys after \[\[store\]\] belong to that \[\[store\]\]/)
  rejects(t, `timeout = "5s"\n${MIN}`, 'timeout', 1, /timeout belongs in \[main\]/)
  rejects(t, `[stores]\nurl = "/s"\n${MIN}`, 'stores', 1, /the arrays are \[\[ays\]\], \[\[cache\]\] and \[\[store\]\]/)
  rejects(t, `${MIN}[main]\nid = "x"\n`, 'main.id', 4, /belongs in \[\[ays\]\]/)
  rejects(t, `cache = "/var/cache/x"\n${MIN}`, 'cache', 1, /the local cache directory is main.cache/)
})

t.test('wrong types', async (t) => {
  rejects(t, `${MIN}[main]\nsuid = "yes"\n`, 'main.suid', 4, /expected true or false, got "yes"/)
  rejects(t, `${MIN}[main]\nmax_entries = "many"\n`, 'main.max_entries', 4, /expected an integer, got "many"/)
  rejects(t, `${MIN}[main]\nmax_entries = 1.5\n`, 'main.max_entries', 4, /expected an integer, got 1.5/)
  rejects(t, `${MIN}[main]\nmax_entries = 0\n`, 'main.max_entries', 4, /expected an integer from 1 to/)
  rejects(t, `${MIN}[main]\nmax_downloads = 100000\n`, 'main.max_downloads', 4, /from 1 to 1024, got 100000/)
  rejects(t, `${MIN}[main]\ncache = 5\n`, 'main.cache', 4, /expected a path, got 5/)
  rejects(t, `${MIN}[main]\ncache = ""\n`, 'main.cache', 4, /expected a path, got an empty string/)
  rejects(t, `${MIN}[main]\ntrusted_keys = "/k.pub"\n`, 'main.trusted_keys', 4, /expected an array of paths/)
  rejects(t, `${MIN}[main]\ntrusted_keys = [\n  "/a.pub",\n  3,\n]\n`, 'main.trusted_keys[1]', 4, /expected a path, got 3/)
  rejects(t, `${MIN}[main]\nlog_level = "loud"\n`, 'main.log_level', 4, /expected one of trace, debug, info, warn, error, fatal, silent, got "loud"/)
  rejects(t, `${MIN}[main]\ntimeout = "0s"\n`, 'main.timeout', 4, /must be more than 0/)
  rejects(t, `${MIN}[main]\nmax_flist_size = 0\n`, 'main.max_flist_size', 4, /must be more than 0/)
  rejects(t, `${MIN}[main]\nprefix = "opt/js"\n`, 'main.prefix', 4, /expected an absolute path, got "opt\/js"/)
  rejects(t, `${MIN}[main]\nprefix = "/opt/../js"\n`, 'main.prefix', 4, /empty, "\." or "\.\." components/)
  rejects(t, `main = 3\n${MIN}`, 'main', 1, /expected a table \(\[main\]\), got 3/)
  rejects(t, `${MIN}[[cache]]\nurl = "/c"\npush = "yes"\n`, 'cache[0].push', 5, /expected true or false/)
  rejects(t, `${MIN}[ays2]\n`, 'ays2', 3, /unknown key/)
})

t.test('ays: required, ids checked, duplicates', async (t) => {
  rejects(t, '[main]\ncache = "/c"\n', 'ays', undefined, /missing: add at least one \[\[ays\]\]/)
  rejects(t, '[ays]\nid = "x"\n', 'ays', 1, /expected an array of tables \(\[\[ays\]\]\), got a table/)
  rejects(t, `${MIN}\n[[ays]]\nprefetch = true\n`, 'ays[1].id', 4, /missing \(every \[\[ays\]\] needs an id\)/)
  rejects(t, `${MIN}\n[[ays]]\nid = "svc"\n`, 'ays[1].id', 5, /"svc" is already ays\[0\]/)
  rejects(t, '[[ays]]\nid = "../etc"\n', 'ays[0].id', 2, /usable as a file name/)
  rejects(t, '[[ays]]\nid = ".."\n', 'ays[0].id', 2, /usable as a file name/)
  rejects(t, '[[ays]]\nid = ""\n', 'ays[0].id', 2, /usable as a file name/)
  rejects(t, '[[ays]]\nid = 7\n', 'ays[0].id', 2, /expected a string, got 7/)
  rejects(t, `${MIN}[[ays]]\nid = "b"\nprefetch = 1\n`, 'ays[1].prefetch', 5, /expected true or false, got 1/)
  t.same(parseConfig('ays = [{ id = "a" }, { id = "b", prefetch = true }]\n').ays, [{ id: 'a', prefetch: false }, { id: 'b', prefetch: true }])
  t.same(parseConfig('[[ays]]\nid = "jumpscale__base!main@1.0"\n').ays[0]!.id, 'jumpscale__base!main@1.0', 'AYS ids with punctuation are fine')
})

t.test('sources: url, headers, token_file, ca', async (t) => {
  rejects(t, `${MIN}[[store]]\nheaders = {}\n`, 'store[0].url', 3, /missing \(every source needs a url\)/)
  rejects(t, `${MIN}[[store]]\nurl = "ftp://h/x"\n`, 'store[0].url', 4, /expected an http:\/\/, https:\/\/ or file:\/\/ URL or an absolute path, got "ftp:\/\/h\/x"/)
  rejects(t, `${MIN}[[store]]\nurl = "store/dir"\n`, 'store[0].url', 4, /or an absolute path, got "store\/dir"/)
  rejects(t, `${MIN}[[store]]\nurl = "https://"\n`, 'store[0].url', 4, /URL or an absolute path/)
  rejects(t, `${MIN}[[store]]\nurl = "file://host/x"\n`, 'store[0].url', 4, /must name a local path/)
  rejects(t, `${MIN}[[cache]]\nurl = 5\n`, 'cache[0].url', 4, /got 5/)
  rejects(t, `${MIN}[[store]]\nurl = "/s"\nheaders = "Authorization: x"\n`, 'store[0].headers', 5, /expected an inline table of strings/)
  rejects(t, `${MIN}[[store]]\nurl = "/s"\nheaders = { "Bad Name" = "x" }\n`, 'store[0].headers.Bad Name', 5, /not a valid HTTP header name/)
  rejects(t, `${MIN}[[store]]\nurl = "/s"\ntoken_file = "/t"\nheaders = { authorization = "Bearer x" }\n`, 'store[0].token_file', 5, /either token_file or headers.Authorization/)
  rejects(t, `${MIN}[[store]]\nurl = "/s"\nca = 1\n`, 'store[0].ca', 5, /expected a path/)

  const c = parseConfig(`${MIN}[[store]]\nurl = "/"\n[[store]]\nurl = "https://h/a/b//"\n[[store]]\nurl = "https://h/a?sig=1"\n`)
  t.same(c.stores.map((s) => s.url), ['/', 'https://h/a/b', 'https://h/a?sig=1'], 'trailing / removed, "/" kept, query kept')
  t.same(c.stores.map((s) => s.push), [false, false, false], 'stores never push')
})

t.test('secrets never reach a message', async (t) => {
  const secret = 'hunter2-s3cr3t'
  let err = rejects(t, `${MIN}[[store]]\nurl = "ftp://bob:${secret}@h/x"\n`, 'store[0].url', 4, /got "ftp:\/\/\*\*\*@h\/x"/)
  t.notMatch(err.message, secret)
  err = rejects(t, `${MIN}[[store]]\nurl = "ftps://h/x?token=${secret}"\n`, 'store[0].url', 4, /\?\*\*\*/)
  t.notMatch(err.message, secret)
  err = rejects(t, `${MIN}[[store]]\nurl = "/s"\nheaders = { Authorization = 12345 }\n`, 'store[0].headers.Authorization', 5, /expected a string, got a number$/)
  t.notMatch(err.message, '12345')
  err = rejects(t, `${MIN}[[store]]\nurl = "/s"\nheaders = { Authorization = "Bearer ${secret}\\r\\nX: y" }\n`, 'store[0].headers.Authorization', 5, /cannot contain CR, LF or NUL$/)
  t.notMatch(err.message, secret)
  // A TOML syntax error on a line holding a secret: the message keeps the reason, not the line.
  err = errorOf(t, () => parseConfig(`${MIN}[[store]]\nurl = "/s"\nheaders = { Authorization = "Bearer ${secret}" \n`, FILE))
  t.equal(err.code, 'EINVAL')
  t.ok(err.line! >= 5, 'the line TOML reports (the unclosed table runs to the end)')
  t.match(err.message, new RegExp(`^config ${FILE} line ${err.line}, column \\d+: [^\n]+$`))
  t.notMatch(err.message, secret)
  t.equal(redactUrl(`https://u:${secret}@h:8080/p?x=${secret}#f`), 'https://***@h:8080/p?***#f')
  t.equal(redactUrl('/plain/path'), '/plain/path')
})

t.test('TOML syntax errors carry TOML\'s line', async (t) => {
  const err = errorOf(t, () => parseConfig(`${MIN}[main]\ncache = "/c\n`, FILE))
  t.equal(err.code, 'EINVAL')
  t.equal(err.line, 4)
  t.equal(err.file, FILE)
  t.notMatch(err.message, '\n', 'one line, no code block')
  t.match(err.message, new RegExp(`^config ${FILE} line 4, column 12: \\w`), 'TOML\'s line and column, then its reason')
  const dup = errorOf(t, () => parseConfig(`[main]\ncache = "/a"\ncache = "/b"\n${MIN}`))
  t.equal(dup.line, 3)
  t.match(dup.message, /^config line 3, column \d+: /, 'no file: "config line N"')
})

t.test('CRLF text, dotted keys and sub-tables still find their lines', async (t) => {
  rejects(t, `[[ays]]\r\nid = "a"\r\n\r\n[main]\r\ntimeout = 3\r\n`, 'main.timeout', 5, /expected a duration/)
  rejects(t, `main.timeout = 3\n${MIN}`, 'main.timeout', 1, /expected a duration/)
  rejects(t, `${MIN}[[store]]\nurl = "/a"\n[[store]]\nurl = "/b"\n[store.headers]\n"X Y" = "1"\n`, 'store[1].headers.X Y', 8, /not a valid HTTP header name/)
  rejects(t, `${MIN}[main]\n"timeout" = 3\n`, 'main.timeout', 4, /expected a duration/)
  const lines = keyLines('a = """\nx = 1\n"""\n[t]\nk = [\n  1,\n]\nz = 2\n')
  t.equal(lines.get('x'), undefined, 'keys inside a multi-line string are not keys')
  t.equal(lines.get('t.k'), 5)
  t.equal(lines.get('t.z'), 8, 'a multi-line array is skipped')
})

t.test('sizes', async (t) => {
  const ok: Array<[unknown, number]> = [
    [0, 0], [1024, 1024], ['1024', 1024], ['20GiB', 20 * 2 ** 30], ['512MB', 512e6], ['1.5KiB', 1536], ['1.5 kib', 1536],
    ['10B', 10], ['3kb', 3000], ['2TiB', 2 * 2 ** 40], ['1PB', 1e15], [' 7 MiB ', 7 * 2 ** 20], [10n, 10], ['0.5KB', 500],
  ]
  for (const [v, n] of ok) t.equal(parseSize(v, 'main.cache_size'), n, `${String(v)} -> ${n}`)
  const bad: Array<[unknown, RegExp]> = [
    [-1, /cannot be negative, got -1/], ['-1GiB', /cannot be negative/], [1.5, /expected a size/], ['1.5', /expected a size/],
    ['20G', /unknown size unit "G".*KiB/], ['20 gigs', /unknown size unit/], ['', /expected a size/], [true, /got true/],
    ['1.5B', /expected a size/], [2 ** 60, /too large/], ['99999999PiB', /too large/], [{}, /got a table/], [[1], /got an array/],
  ]
  for (const [v, re] of bad) {
    const err = errorOf(t, () => parseSize(v, 'main.cache_size', FILE))
    t.equal(err.key, 'main.cache_size')
    t.equal(err.file, FILE)
    t.match(err.message, re, `${JSON.stringify(String(v))} rejected`)
    t.match(err.message, new RegExp(`^config ${FILE}: main.cache_size: `))
  }
})

t.test('durations', async (t) => {
  const ok: Array<[string, number]> = [['500ms', 500], ['10s', 10_000], ['1.5s', 1500], ['5m', 300_000], ['1h', 3_600_000], ['0s', 0], [' 2 s ', 2000]]
  for (const [v, n] of ok) t.equal(parseDuration(v, 'main.timeout'), n, `${v} -> ${n}`)
  const bad: Array<[unknown, RegExp]> = [
    [10, /expected a duration like "10s", got 10$/], ['10', /got "10"$/], ['10d', /got "10d"$/], ['-5s', /cannot be negative/],
    ['s', /expected a duration/], [false, /got false$/], ['1e3s', /expected a duration/],
  ]
  for (const [v, re] of bad) {
    const err = errorOf(t, () => parseDuration(v, 'main.timeout'))
    t.equal(err.key, 'main.timeout')
    t.match(err.message, re, `${String(v)} rejected`)
    t.match(err.message, /^config: main.timeout: /, 'no file: "config: key: ..."')
  }
})

t.test('the object form (mount({config}))', async (t) => {
  const c = checkConfig({ main: { cache_size: '1GiB', timeout: '2s', cache: 'rel/cache', log_level: undefined }, ays: [{ id: 'a' }], store: [{ url: 'http://s/x' }] })
  t.equal(c.main.cacheSize, 2 ** 30)
  t.equal(c.main.timeoutMs, 2000)
  t.equal(c.main.cache, path.resolve('rel/cache'), 'relative paths resolve against the working directory')
  t.equal(c.file, undefined)
  t.same(c.stores[0], { url: 'http://s/x', headers: {}, push: false, key: 'store[0]' })
  let err = errorOf(t, () => checkConfig({ ays: [{ id: 'a' }], main: { timeout: 10 } }))
  t.equal(err.message, 'config: main.timeout: expected a duration like "10s", got 10')
  t.equal(err.line, undefined)
  err = errorOf(t, () => checkConfig({ ays: [{ id: 'a' }], mian: {} }))
  t.equal(err.key, 'mian')
  t.match(err.message, /did you mean "main"/)
  err = errorOf(t, () => checkConfig({ ays: [{ id: 'a' }], main: { cacheSize: 1 } }))
  t.equal(err.key, 'main.cacheSize')
  t.match(err.message, /did you mean "cache_size"/, 'camelCase keys point at the TOML name')
  err = errorOf(t, () => checkConfig('/etc/aysfs/config.toml'))
  t.match(err.message, /expected a table, got "\/etc\/aysfs\/config.toml"/)
  err = errorOf(t, () => checkConfig({ ays: 'a' }))
  t.equal(err.key, 'ays')
  err = errorOf(t, () => checkConfig({ ays: [null] }))
  t.equal(err.key, 'ays[0]')
  t.match(err.message, /expected a table \(\[\[ays\]\]\), got null/)
})

t.test('loadConfig', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-config-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'config.toml')
  fs.writeFileSync(file, `\ufeff[main]\ncache = "cache"\ntrusted_keys = ["keys/a.pub"]\n${MIN}[[store]]\nurl = "/s"\ntoken_file = "tok"\n`)
  const c = loadConfig(file)
  t.equal(c.file, file)
  t.equal(c.main.cache, path.join(dir, 'cache'), 'relative to the config file')
  t.same(c.main.trustedKeys, [path.join(dir, 'keys/a.pub')])
  t.equal(c.stores[0]!.tokenFile, path.join(dir, 'tok'))

  let err = errorOf(t, () => loadConfig(path.join(dir, 'nope.toml')))
  t.equal(err.code, 'EINVAL', 'a configuration error (exit status 2)')
  t.equal(err.file, path.join(dir, 'nope.toml'))
  t.equal(err.message, `config ${path.join(dir, 'nope.toml')}: cannot read: no such file`)
  t.equal((err.cause as NodeJS.ErrnoException).code, 'ENOENT')
  err = errorOf(t, () => loadConfig(dir))
  t.match(err.message, /cannot read: is a directory/)

  fs.writeFileSync(file, `${MIN}[main]\nmax_downloads = -1\n`)
  err = errorOf(t, () => loadConfig(file))
  t.equal(err.message, `config ${file} line 4: main.max_downloads: expected an integer from 1 to 1024, got -1`)
})

t.test('reviseConfig: a checked config checked again with changes, relative paths as they were', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-config-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'config.toml')
  fs.writeFileSync(file, `[main]\ncache = "cache"\nrefresh = "5m"\ntrusted_keys = ["keys/a.pub"]\n\n[[ays]]\nid = "a"\nprefetch = true\n\n[[ays]]\nid = "b"\n`)
  const c = loadConfig(file)
  t.ok(isCheckedConfig(c))
  t.notOk(isCheckedConfig({ ...c }), 'a copy is not one the checker made')
  t.notOk(isCheckedConfig({ main: {} }))
  const r = reviseConfig(c, { main: { cache: '/tmp/x', speculate: false, refresh: undefined }, ays: [{ id: 'b' }] })
  t.ok(isCheckedConfig(r))
  t.equal(r.main.cache, '/tmp/x')
  t.equal(r.main.speculate, false)
  t.equal(r.main.refreshMs, undefined, 'undefined: absent')
  t.same(r.main.trustedKeys, [path.join(dir, 'keys/a.pub')], 'relative to the config file still')
  t.same(r.ays, [{ id: 'b', prefetch: false }])
  t.equal(r.file, file)
  t.equal(c.main.cache, path.join(dir, 'cache'), 'the original unchanged')
  t.throws(() => reviseConfig(c, { main: { speculate: 'no' } }), { code: 'EINVAL', key: 'main.speculate' }, 'changes are checked')
  t.throws(() => reviseConfig({ ...c }, {}), TypeError)
})

t.test('[[stores]] and every array-table typo are reported with their line', async (t) => {
  rejects(t, `${MIN}\n[[stores]]\nurl = "/s"\n`, 'stores', 4, /unknown key \(the arrays are \[\[ays\]\], \[\[cache\]\] and \[\[store\]\]\)/)
  rejects(t, `${MIN}[[caches]]\nurl = "/c"\n`, 'caches', 3, /the arrays are/)
  rejects(t, `[[ays]]\nid = "a"\n[[service]]\nid = "b"\n`, 'service', 3, /unknown key/)
})

t.test('every bad value of one [[store]] or [[cache]] element, each on its own line', async (t) => {
  // Two bad values: both reported.
  const two = errorOf(t, () => parseConfig(`${MIN}[[store]]\nurl = "ftp://x"\nca = 1\n`, FILE))
  t.equal(two.code, 'EINVAL')
  t.same(two.message.split('\n'), [
    `config ${FILE} line 4: store[0].url: expected an http://, https:// or file:// URL or an absolute path, got "ftp://x"`,
    `config ${FILE} line 5: store[0].ca: expected a path, got 1`,
  ])
  t.equal(two.line, 4, "line, key and file are the first mistake's")
  t.equal(two.key, 'store[0].url')
  t.equal(two.file, FILE)

  // Every key of an element, headers one by one, and the element after it.
  const text = [
    '[[ays]]', // 1
    'id = "svc"', // 2
    '[[store]]', // 3
    'url = "ftp://x"', // 4
    'colour = "red"', // 5
    'headers = { "Bad Name" = "x", Authorization = 5, X-Ok = "fine" }', // 6
    'token_file = ""', // 7
    'ca = 1', // 8
    '[[cache]]', // 9
    'push = "yes"', // 10
    'ca = ""', // 11
    '[[store]]', // 12
    'url = "/s"', // 13
    'token_file = "/t"', // 14
    'headers = { authorization = "Bearer x" }', // 15
  ].join('\n')
  const err = errorOf(t, () => parseConfig(text, FILE))
  t.same(err.message.split('\n'), [
    `config ${FILE} line 4: store[0].url: expected an http://, https:// or file:// URL or an absolute path, got "ftp://x"`,
    `config ${FILE} line 5: store[0].colour: unknown key`,
    `config ${FILE} line 6: store[0].headers.Bad Name: not a valid HTTP header name`,
    `config ${FILE} line 6: store[0].headers.Authorization: expected a string, got a number`,
    `config ${FILE} line 7: store[0].token_file: expected a path, got an empty string`,
    `config ${FILE} line 8: store[0].ca: expected a path, got 1`,
    `config ${FILE} line 9: cache[0].url: missing (every source needs a url)`,
    `config ${FILE} line 10: cache[0].push: expected true or false, got "yes"`,
    `config ${FILE} line 11: cache[0].ca: expected a path, got an empty string`,
    `config ${FILE} line 14: store[1].token_file: set either token_file or headers.Authorization, not both`,
  ])
  // The object form: the same, without lines.
  const obj = errorOf(t, () => checkConfig({ ays: [{ id: 'a' }], store: [{ url: 'ftp://x', ca: 1 }] }))
  t.same(obj.message.split('\n'), [
    'config: store[0].url: expected an http://, https:// or file:// URL or an absolute path, got "ftp://x"',
    'config: store[0].ca: expected a path, got 1',
  ])
})

t.test('every mistake of a config at once, each with its line, in the order of the file', async (t) => {
  const text = [
    '[main]', // 1
    'cahce = "/var/cache/aysfs"', // 2
    'timeout = 10', // 3
    'cache_size = "12 parsecs"', // 4
    '', // 5
    '[[ays]]', // 6
    'id = "a/b"', // 7
    '', // 8
    '[[stores]]', // 9
    'url = "/s"', // 10
    '', // 11
    '[[cache]]', // 12
    'url = "ftp://x"', // 13
  ].join('\n')
  const err = errorOf(t, () => parseConfig(text, FILE))
  t.equal(err.code, 'EINVAL')
  const lines = err.message.split('\n')
  t.equal(lines.length, 6, `one line per mistake:\n${err.message}`)
  t.match(lines[0], `config ${FILE} line 2: main.cahce: unknown key (did you mean "cache"?)`)
  t.match(lines[1], `config ${FILE} line 3: main.timeout: expected a duration`)
  t.match(lines[2], `config ${FILE} line 4: main.cache_size: unknown size unit`)
  t.match(lines[3], `config ${FILE} line 7: ays[0].id: expected a service id`)
  t.match(lines[4], `config ${FILE} line 9: stores: unknown key`)
  t.match(lines[5], `config ${FILE} line 13: cache[0].url: expected an http://`)
  t.equal(err.line, 2, 'line, key and file are the first mistake\'s')
  t.equal(err.key, 'main.cahce')
  t.equal(err.file, FILE)
  // One mistake: the message is that mistake's line alone, as before.
  const one = errorOf(t, () => parseConfig(`[main]\ntimeout = 10\n${MIN}`, FILE))
  t.equal(one.message, `config ${FILE} line 2: main.timeout: expected a duration like "10s", got 10`)
  // Objects too (no lines): every mistake.
  const obj = errorOf(t, () => checkConfig({ main: { timeout: 10, suid: 'yes' }, ays: [{ id: 'a' }, { id: 'a' }] }))
  t.equal(obj.message.split('\n').length, 3, 'three mistakes')
  t.match(obj.message, /main\.timeout:[^\n]*\n[^\n]*main\.suid:[^\n]*\n[^\n]*ays\[1\]\.id: "a" is already ays\[0\]/)
})
