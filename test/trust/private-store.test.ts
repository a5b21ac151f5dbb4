// Private stores and grid caches against a real nginx: a bearer token from token_file (and from
// headers), HTTP Basic auth from user:password in the URL, HTTPS with a private CA (`ca`). Each
// mount runs in a child process (test/trust/fixtures/mount-child.js) logging at trace level, so
// every byte it writes (its logs and its miss worker's), its status (stats() and the
// user.aysfs.status xattr that `aysfs-native status --json` reads), its errors with their stacks
// and causes can be searched for the secrets: none may appear anywhere.
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { clearMounts, tmpdir } from '../helpers/mount'
import { canConnect, freePort, NGINX_BIN } from '../helpers/nginx'
import { makeCa, startPrivateNginx, type PrivateNginx } from '../helpers/private-nginx'
import { md5, writeStore, type GenEntry } from '../helpers/tree'
import { until } from '../helpers/wait'

const PREFIX = '/opt/jumpscale7'
const ID = 'jumpscale__base'
const TOKEN = 'tok-5f3c9e1a7b2d4e6f8a0b1c2d3e4f5a6b'
const WRONG = 'tok-wrong-0d9c8b7a6f5e4d3c2b1a0f9e'
const USER = 'deploy'
const PASSWORD = 'pw-7Hq2xZ9vK4mN8rT1'
const CHILD = path.join(__dirname, 'fixtures', 'mount-child.js')

function file(p: string, text: string): GenEntry {
  const content = Buffer.from(text)
  return { path: p, kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000, content }
}

const ENTRIES = ['one', 'two', 'three', 'four'].map((n) => file(`/${n}.txt`, `content of ${n}\n`.repeat(50)))
const content = (name: string) => ENTRIES.find((e) => e.path === `/${name}.txt`)!.content!.toString()

interface Msg {
  type: string
  [k: string]: unknown
}

/** A mount in a child process; everything it says is kept in `transcript`. */
class Child {
  readonly proc: ChildProcess
  transcript = ''
  private readonly inbox: Msg[] = []
  private waiting?: (m: Msg) => void
  readonly exited: Promise<void>

  constructor(
    readonly mountpoint: string,
    config: string | object,
  ) {
    this.proc = fork(CHILD, [mountpoint, typeof config === 'string' ? config : JSON.stringify(config)], { silent: true, execArgv: [] })
    this.proc.stdout!.on('data', (d: Buffer) => (this.transcript += d.toString()))
    this.proc.stderr!.on('data', (d: Buffer) => (this.transcript += d.toString()))
    this.proc.on('message', (m: Msg) => {
      this.transcript += `${JSON.stringify(m)}\n`
      if (this.waiting) {
        const w = this.waiting
        this.waiting = undefined
        w(m)
      } else this.inbox.push(m)
    })
    this.exited = new Promise((resolve) => this.proc.once('exit', () => resolve()))
  }

  next(timeoutMs = 20_000): Promise<Msg> {
    const m = this.inbox.shift()
    if (m) return Promise.resolve(m)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no message from the mount child in ${timeoutMs} ms:\n${this.transcript}`)), timeoutMs)
      this.waiting = (msg) => {
        clearTimeout(timer)
        resolve(msg)
      }
    })
  }

  async ask(type: string): Promise<Msg> {
    this.proc.send({ type })
    return this.next()
  }

  /** Unmount (or kill), wait for the process to end. */
  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.connected) {
      this.proc.send({ type: 'unmount' })
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000)
      await this.exited
      clearTimeout(timer)
    } else if (this.proc.exitCode === null) {
      this.proc.kill('SIGKILL')
      await this.exited
    }
    clearMounts(this.mountpoint)
  }
}

async function start(t: Test, mountpoint: string, config: string | object): Promise<{ child: Child; first: Msg }> {
  fs.mkdirSync(mountpoint, { recursive: true })
  const child = new Child(mountpoint, config)
  t.teardown(() => child.stop())
  return { child, first: await child.next() }
}

function xattrStatus(mountpoint: string): string {
  const r = spawnSync('getfattr', ['--only-values', '--absolute-names', '-n', 'user.aysfs.status', mountpoint], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`getfattr: ${r.stderr}`)
  return r.stdout
}

/** Not one secret in `text`; `what` names where it was looked for. */
function noSecrets(t: Test, text: string, what: string, secrets: string[]): void {
  for (const s of secrets) t.notOk(text.includes(s), `${what}: no ${s.slice(0, 6)}… anywhere`)
  t.notOk(/authorization"?\s*[:=]\s*"?(bearer|basic)/i.test(text), `${what}: no Authorization header value`)
}

function toml(file: string, lines: string[]): string {
  fs.writeFileSync(file, `${lines.join('\n')}\n`)
  return file
}

const q = (s: string) => JSON.stringify(s)

/** A private CA made in `dir`, or undefined (the test says it skipped) where openssl is missing. */
function caOrSkip(t: Test, dir: string): ReturnType<typeof makeCa> | undefined {
  try {
    return makeCa(dir)
  } catch {
    t.comment('skipped: no openssl to make a CA')
    return undefined
  }
}

t.test('token_file: store and grid cache behind a bearer token; no token, clean EIO; the token is nowhere', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  // gone.txt is in the flist and its blob in no store: each read of it that asks (past the
  // failure memory) reaches the store and caches nothing, a 404 with a good token, a 401 with a
  // bad one: what the store source sends is seen without waiting for a fixed time.
  const gone: GenEntry = { ...file('/gone.txt', 'in no store\n'), content: undefined }
  writeStore([...ENTRIES, gone], store, ID, PREFIX)
  const n: PrivateNginx = await startPrivateNginx({ store, token: TOKEN })
  t.teardown(() => n.stop())
  const tokenFile = path.join(dir, 'token')
  fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 })
  const cfg = toml(path.join(dir, 'aysfs.toml'), [
    '[main]',
    `cache = ${q(path.join(dir, 'cache'))}`,
    `prefix = ${q(PREFIX)}`,
    'timeout = "2s"',
    // The files of this test sit side by side: a guess would fetch two.txt with the first
    // read, while the token is still good, and the 401 below would never be asked for.
    'speculate = false',
    '[[ays]]',
    `id = ${q(ID)}`,
    '[[cache]]',
    `url = ${q(`${n.url}/cache`)}`,
    `token_file = ${q(tokenFile)}`,
    '[[store]]',
    `url = ${q(`${n.url}/token`)}`,
    `token_file = ${q(tokenFile)}`,
  ])
  const mnt = path.join(dir, 'mnt')
  const { child, first } = await start(t, mnt, cfg)
  t.equal(first.type, 'mounted', String(first.message ?? ''))
  const seen: string[] = [JSON.stringify(first)]

  t.equal(fs.readFileSync(path.join(mnt, 'one.txt'), 'utf8'), content('one'), 'a read works with the token')
  t.ok(
    await until(() => n.requests().some((r) => r.method === 'PUT' && r.uri.startsWith('/cache/') && r.status === 201), 10_000),
    'the grid cache took a push with its token',
  )

  // Reads gone.txt (EIO each time) until the store answers the miss worker's request for it with
  // `status`.
  const goneAnswered = async (status: number): Promise<boolean> => {
    const from = n.requests().length
    const answered = () => n.requests().slice(from).some((r) => r.uri === `/token/files/${gone.md5[0]}/${gone.md5[1]}/${gone.md5}` && r.status === status)
    const codes = new Set<string>()
    const seen = await until(() => {
      try {
        fs.readFileSync(path.join(mnt, 'gone.txt'))
        codes.add('no error')
      } catch (err) {
        codes.add(String((err as NodeJS.ErrnoException).code))
      }
      return answered()
    }, 10_000)
    t.same([...codes], ['EIO'], 'gone.txt: EIO each time')
    return seen
  }

  // The token goes bad (revoked, or a wrong one deployed): the source re-reads the file, at most
  // a second after it last looked.
  fs.writeFileSync(tokenFile, `${WRONG}\n`)
  t.ok(await goneAnswered(401), 'the store source sends the new token')
  const start0 = Date.now()
  t.throws(() => fs.readFileSync(path.join(mnt, 'two.txt')), { code: 'EIO' }, 'an uncached file fails with EIO')
  t.ok(Date.now() - start0 < 2000, `at once: a 401 is not a timeout (${Date.now() - start0} ms)`)
  t.equal(fs.readFileSync(path.join(mnt, 'one.txt'), 'utf8'), content('one'), 'a cached file still reads')
  t.same(fs.readdirSync(mnt).sort(), ['four.txt', 'gone.txt', 'one.txt', 'three.txt', 'two.txt'], 'the tree is still there')
  const stats = await child.ask('stats')
  seen.push(JSON.stringify(stats))
  const sources = (stats.stats as { pipeline: { sources: { key: string; errorKinds: Record<string, number>; lastError?: string; url: string }[] } }).pipeline.sources
  t.ok(sources.find((s) => s.key === 'store[0]')!.errorKinds['http-401']! > 0, 'status counts the 401s')
  t.match(sources.find((s) => s.key === 'store[0]')!.lastError, /HTTP 401/)
  const xattr = xattrStatus(mnt)
  seen.push(xattr)
  t.match(JSON.parse(xattr), { version: 1, mount: { signed: false } }, 'status --json answers, and says flists are not verified')

  // Reload with the bad token: no store answers, so the kept copy serves (and says so).
  const r1 = await child.ask('reload')
  seen.push(JSON.stringify(r1))
  t.match(r1, { type: 'reloaded', result: { services: [{ source: 'kept' }] } })

  // The right token back: a reload (new sources, the file read again) and reads recover.
  fs.writeFileSync(tokenFile, `${TOKEN}\n`)
  const r2 = await child.ask('reload')
  seen.push(JSON.stringify(r2))
  t.match(r2, { type: 'reloaded', result: { services: [{ source: 'store[0]' }] } })
  t.ok(await goneAnswered(404), 'the store source sends the right token again')
  t.equal(fs.readFileSync(path.join(mnt, 'two.txt'), 'utf8'), content('two'), 'reads work again')

  // No copy kept and the wrong token: the mount fails, and its error names the store, not the token.
  fs.writeFileSync(tokenFile, `${WRONG}\n`)
  const cfg2 = toml(path.join(dir, 'fresh.toml'), fs.readFileSync(cfg, 'utf8').replace(path.join(dir, 'cache'), path.join(dir, 'cache2')).split('\n'))
  const failed = await start(t, path.join(dir, 'mnt2'), cfg2)
  seen.push(JSON.stringify(failed.first))
  t.match(failed.first, { type: 'error', code: 'EIO', message: /flist jumpscale__base: no store answered \(store\[0\]: http-401\), and no copy is kept/ })
  t.match(failed.first.inspect, /AysfsError/, 'the error was inspected in full (stack, cause, own properties)')

  await child.stop()
  await failed.child.stop()
  t.match(child.transcript, /"level":40/, 'the log has the warnings (logged at trace level: everything the code says)')
  t.match(child.transcript, /store\[0\] \(http:\/\/127\.0\.0\.1:\d+\/token\): GET .* HTTP 401/, 'and logged the 401, with the URL')
  const secrets = [TOKEN, WRONG]
  noSecrets(t, child.transcript, 'logs, status and errors of the mount', secrets)
  noSecrets(t, failed.child.transcript, 'logs and error of the failed mount', secrets)
  noSecrets(t, seen.join('\n'), 'stats, status xattr, reload results, errors', secrets)
})

t.test('headers: an Authorization header from the config; a wrong one fails without showing it', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  writeStore(ENTRIES, store, ID, PREFIX)
  const n = await startPrivateNginx({ store, token: TOKEN })
  t.teardown(() => n.stop())
  const config = (bearer: string, cache: string) => ({
    main: { cache: path.join(dir, cache), prefix: PREFIX, timeout: '2s' },
    ays: [{ id: ID }],
    store: [{ url: `${n.url}/token`, headers: { Authorization: `Bearer ${bearer}`, 'X-Trace': 'aysfs-test' } }],
  })
  const ok = await start(t, path.join(dir, 'mnt'), config(TOKEN, 'cache'))
  t.equal(ok.first.type, 'mounted', String(ok.first.message ?? ''))
  t.equal(fs.readFileSync(path.join(dir, 'mnt', 'three.txt'), 'utf8'), content('three'))
  const bad = await start(t, path.join(dir, 'mnt2'), config(WRONG, 'cache2'))
  t.match(bad.first, { type: 'error', code: 'EIO', message: /store\[0\]: http-401/ })
  const status = xattrStatus(path.join(dir, 'mnt'))
  await ok.child.stop()
  await bad.child.stop()
  noSecrets(t, ok.child.transcript + status, 'mount with headers', [TOKEN])
  noSecrets(t, bad.child.transcript, 'failed mount with headers', [WRONG])
})

t.test('https with a private CA (`ca`) and user:password in the URL (Basic auth)', async (t) => {
  const dir = tmpdir(t)
  const pki = caOrSkip(t, dir)
  if (!pki) return
  const store = path.join(dir, 'store')
  writeStore(ENTRIES, store, ID, PREFIX)
  const n = await startPrivateNginx({ store, token: TOKEN, basic: { user: USER, password: PASSWORD }, tls: { cert: pki.cert, key: pki.key } })
  t.teardown(() => n.stop())
  t.match(n.url, /^https:/)
  const withAuth = `${n.url.replace('https://', `https://${USER}:${encodeURIComponent(PASSWORD)}@`)}/basic`
  const config = (url: string, cache: string, ca?: string) => ({
    main: { cache: path.join(dir, cache), prefix: PREFIX, timeout: '2s' },
    ays: [{ id: ID }],
    store: [{ url, ...(ca ? { ca } : {}) }],
  })

  const ok = await start(t, path.join(dir, 'mnt'), config(withAuth, 'cache', pki.ca))
  t.equal(ok.first.type, 'mounted', String(ok.first.message ?? ''))
  t.equal(fs.readFileSync(path.join(dir, 'mnt', 'four.txt'), 'utf8'), content('four'), 'reads over https with Basic auth')
  const status = xattrStatus(path.join(dir, 'mnt'))
  t.match(JSON.parse(status).pipeline.sources[0].url, /^https:\/\/\*\*\*@127\.0\.0\.1:\d+\/basic$/, 'status shows the URL without its credentials')

  const noCa = await start(t, path.join(dir, 'mnt2'), config(withAuth, 'cache2'))
  t.match(noCa.first, { type: 'error', code: 'EIO', message: /store\[0\]: (tls|net):/ }, 'without `ca` the certificate is refused')
  const noPassword = await start(t, path.join(dir, 'mnt3'), config(`${n.url.replace('https://', `https://${USER}:wrong-${PASSWORD.slice(3)}@`)}/basic`, 'cache3', pki.ca))
  t.match(noPassword.first, { type: 'error', code: 'EIO', message: /store\[0\]: http-401/ }, 'a wrong password is a 401')

  await ok.child.stop()
  await noCa.child.stop()
  await noPassword.child.stop()
  const all = [ok.child.transcript, status, noCa.child.transcript, noPassword.child.transcript].join('\n')
  noSecrets(t, all, 'https + basic auth', [PASSWORD, PASSWORD.slice(3), Buffer.from(`${USER}:${PASSWORD}`).toString('base64')])
  t.notOk(all.includes(`${USER}:`), 'not even the user name with a colon')
})

t.test('examples/nginx-store-token.conf works as documented (store over TLS and grid cache, each behind its token)', async (t) => {
  const dir = tmpdir(t)
  const pki = caOrSkip(t, dir)
  if (!pki) return
  const store = path.join(dir, 'store')
  const grid = path.join(dir, 'gridcache')
  fs.mkdirSync(grid)
  writeStore(ENTRIES, store, ID, PREFIX)
  const [storePort, cachePort] = [await freePort(), await freePort()]
  const example = fs.readFileSync(path.join(__dirname, '..', '..', 'examples', 'nginx-store-token.conf'), 'utf8')
  const site = example
    .replace('listen 443 ssl;', `listen 127.0.0.1:${storePort} ssl;`)
    .replace('listen 9990;', `listen 127.0.0.1:${cachePort};`)
    .replace('/etc/nginx/tls/stor.example.com.pem', pki.cert)
    .replace('/etc/nginx/tls/stor.example.com.key', pki.key)
    .replace('/srv/aysfs/store/', `${store}/`)
    .replace('/srv/aysfs/gridcache/', `${grid}/`)
    .replace('REPLACE-WITH-A-LONG-RANDOM-TOKEN', TOKEN)
    .replace('REPLACE-WITH-THE-CACHE-TOKEN', WRONG) // another token for the cache
  t.notMatch(site.replace(/#.*$/gm, ''), /REPLACE-|\/srv\/|\/etc\/nginx/, 'every placeholder replaced')
  const prefix = path.join(dir, 'nginx')
  fs.mkdirSync(prefix)
  fs.writeFileSync(path.join(prefix, 'site.conf'), site)
  const p = (x: string) => path.join(prefix, x)
  fs.writeFileSync(
    p('nginx.conf'),
    `daemon off; master_process off; pid ${p('pid')}; error_log ${p('error.log')} warn; events {}
http { log_format t '$request_method $uri $status'; access_log ${p('access.log')} t; client_body_temp_path ${p('cb')}; proxy_temp_path ${p('px')};
  fastcgi_temp_path ${p('fc')}; uwsgi_temp_path ${p('uw')}; scgi_temp_path ${p('sc')}; include ${p('site.conf')}; }\n`,
  )
  const ngx = spawn(NGINX_BIN, ['-p', prefix, '-c', p('nginx.conf'), '-e', p('error.log')], { stdio: 'ignore' })
  const gone = new Promise((r) => ngx.once('exit', r))
  t.teardown(async () => {
    ngx.kill('SIGTERM')
    await gone
  })
  t.ok(await until(() => fs.existsSync(p('pid')), 10_000), 'nginx runs the example')
  t.ok(await until(async () => (await canConnect(storePort)) && (await canConnect(cachePort)), 10_000, 20), 'and listens on both ports')

  const storeToken = path.join(dir, 'store.token')
  const cacheToken = path.join(dir, 'cache.token')
  fs.writeFileSync(storeToken, `${TOKEN}\n`, { mode: 0o600 })
  fs.writeFileSync(cacheToken, `${WRONG}\n`, { mode: 0o600 })
  const cfg = toml(path.join(dir, 'config.toml'), [
    '[main]',
    `cache = ${q(path.join(dir, 'cache'))}`,
    `prefix = ${q(PREFIX)}`,
    'timeout = "2s"',
    '[[ays]]',
    `id = ${q(ID)}`,
    '[[store]]',
    `url = ${q(`https://localhost:${storePort}/dedupe`)}`,
    `token_file = ${q(storeToken)}`,
    `ca = ${q(pki.ca)}`,
    '[[cache]]',
    `url = ${q(`http://127.0.0.1:${cachePort}/ays`)}`,
    `token_file = ${q(cacheToken)}`,
  ])
  const { child, first } = await start(t, path.join(dir, 'mnt'), cfg)
  t.equal(first.type, 'mounted', String(first.message ?? '') + fs.readFileSync(p('error.log'), 'utf8'))
  for (const e of ENTRIES) t.equal(fs.readFileSync(path.join(dir, 'mnt', e.path), 'utf8'), e.content!.toString())
  const pushed = (e: GenEntry) => fs.existsSync(path.join(grid, e.md5[0]!, e.md5[1]!, e.md5))
  t.ok(await until(() => ENTRIES.every(pushed), 10_000), 'every blob was pushed to the grid cache with its token')
  await child.stop()
  noSecrets(t, child.transcript, 'mount through the example', [TOKEN, WRONG])
})
