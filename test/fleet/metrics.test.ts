// Prometheus metrics of a real mount, scraped over HTTP: generated from the native list, moving
// with reads and misses, labelled per mount, and never carrying a credential.
import * as fs from 'node:fs'
import * as http from 'node:http'
import * as path from 'node:path'
import t from 'tap'
import { engineStatMeta } from '../../lib/engine'
import { mount } from '../../lib/index'
import { publish } from '../../lib/publish'
import { generateKeyPair } from '../../lib/sign'
import { until } from '../helpers/hardening'
import { clearMounts } from '../helpers/mount'
import { freePort, startNginx } from '../helpers/nginx'
import { ROOT } from '../helpers/cli'
import { publishDirs, tmpdir } from '../helpers/tmp'

const SECRETS = ['s3cret-password', 'hunter2-header-value', 'token-file-secret', 'deploy:']

function get(url: string): Promise<{ status: number; type?: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }))
      })
      .on('error', reject)
  })
}

/** The value of the sample `name{labels}` (labels given as they appear, in any order), or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m || m[1] !== name) continue
    const have = new Map([...(m[2] ?? '').matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1]!, x[2]!]))
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3])
  }
  return undefined
}

t.test('metrics at /metrics: every native counter, reads and misses move them, no credential anywhere', async (t) => {
  const dir = tmpdir(t, 'aysfs-metrics-')
  const key = generateKeyPair(path.join(dir, 'keys'))
  const src = path.join(dir, 'src')
  fs.mkdirSync(src)
  fs.writeFileSync(path.join(src, 'hello'), 'hello metrics\n')
  const store = path.join(dir, 'store')
  await publish({ dir: src, id: 'svc', store, prefix: '/opt/svc', sign: key.privateKey, revision: 42, progress: false, fsync: false })
  const n = await startNginx({ store })
  t.teardown(() => n.stop())
  const tokenFile = path.join(dir, 'token')
  fs.writeFileSync(tokenFile, 'token-file-secret\n')
  const port = await freePort()
  const mountpoint = path.join(dir, 'mnt')
  fs.mkdirSync(mountpoint)
  const m = await mount({
    mountpoint,
    log: { level: 'silent' },
    config: {
      main: { cache: path.join(dir, 'cache'), prefix: '/opt/svc', timeout: '2s', trusted_keys: [key.publicKey], metrics: `127.0.0.1:${port}` },
      ays: [{ id: 'svc' }],
      store: [
        { url: `http://deploy:s3cret-password@127.0.0.1:1/nothing?sig=s3cret-password`, headers: { 'X-Auth': 'hunter2-header-value' } },
        { url: `${n.url}/store`, token_file: tokenFile },
      ],
    },
  })
  t.teardown(async () => {
    await m.unmount()
    clearMounts(mountpoint)
  })
  t.equal(m.metricsAddress, `127.0.0.1:${port}`)
  const url = `http://127.0.0.1:${port}/metrics`

  const first = await get(url)
  t.equal(first.status, 200)
  t.match(first.type, /^text\/plain; version=0\.0\.4/)
  const mp = { mountpoint }
  // Generated from the native list: every counter and gauge, named after its C++ name.
  for (const meta of engineStatMeta()) {
    const name = `aysfs_${meta.name}${meta.kind === 'counter' ? '_total' : ''}`
    t.match(first.body, new RegExp(`^# TYPE ${name} ${meta.kind}$`, 'm'), `${name} is a ${meta.kind}`)
    t.match(first.body, new RegExp(`^# HELP ${name} ${meta.help.replace(/[()]/g, '\\$&')}$`, 'm'))
    // A count of bytes says so in its name, before `_total` (Prometheus' base unit suffix).
    if (/^bytes\b/.test(meta.help)) t.match(name, /_bytes(_total)?$/, `${name} counts bytes: its name ends in _bytes`)
  }
  t.equal(sample(first.body, 'aysfs_misses_total', mp), 0)
  t.equal(sample(first.body, 'aysfs_service_revision', { ...mp, service: 'svc' }), 42, 'the revision in force')

  // A miss (a second read would come from the kernel's page cache).
  t.equal(fs.readFileSync(path.join(mountpoint, 'hello'), 'utf8'), 'hello metrics\n')
  let text = ''
  t.ok(
    await until(() => {
      void get(url).then((r) => (text = r.body))
      return sample(text, 'aysfs_source_hits_total', { ...mp, source: 'store[1]' }) === 1
    }, 10_000),
    'the store that served the blob counts it (the pipeline snapshot is at most a second old)',
  )
  t.equal(sample(text, 'aysfs_misses_total', mp), 1)
  t.equal(sample(text, 'aysfs_read_bytes_total', mp), 14)
  t.equal(sample(text, 'aysfs_fetches_started_total', mp), 1, 'the read started its download')
  t.ok(sample(text, 'aysfs_requests_total', { ...mp, op: 'read' })! >= 1)
  t.ok(sample(text, 'aysfs_requests_total', { ...mp, op: 'lookup' })! >= 1)
  t.equal(sample(text, 'aysfs_source_bytes_total', { ...mp, source: 'store[1]', role: 'store' }), 14)
  t.ok(sample(text, 'aysfs_source_errors_total', { ...mp, source: 'store[0]', kind: 'net:ECONNREFUSED' })! >= 1, 'the dead store failed, by kind')
  t.equal(sample(text, 'aysfs_refresh_results_total', { ...mp, result: 'applied' }), 0)
  // The miss-latency histogram (native buckets): one miss, in some bucket, and in +Inf.
  t.match(text, /^# TYPE aysfs_miss_latency_seconds histogram$/m)
  t.equal(sample(text, 'aysfs_miss_latency_seconds_count', mp), 1)
  t.equal(sample(text, 'aysfs_miss_latency_seconds_bucket', { ...mp, le: '+Inf' }), 1)
  const buckets = [...text.matchAll(/^aysfs_miss_latency_seconds_bucket\{le="([^"]+)".*\} (\d+)$/gm)].map((x) => Number(x[2]))
  t.same([...buckets].sort((a, b) => a - b), buckets, 'cumulative')
  t.ok(sample(text, 'aysfs_miss_latency_seconds_sum', mp)! > 0)

  // No credential: not the URL's user or password, not the query, not a header, not the token.
  const api = await m.metrics()
  for (const body of [text, api]) {
    for (const secret of SECRETS) t.notOk(body.includes(secret), `no ${secret}`)
    t.notOk(body.includes(n.url), 'no store URL at all')
  }
  t.equal(sample(api, 'aysfs_misses_total', mp), 1, 'metrics() returns the same text')
  t.equal((await get(`http://127.0.0.1:${port}/other`)).status, 404)

  // The example alert rules and scrape config name only metrics a mount serves.
  const served = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((x) => x[1]!))
  for (const file of ['aysfs-alerts.yml', 'prometheus.yml']) {
    const example = fs.readFileSync(path.join(ROOT, 'examples', 'prometheus', file), 'utf8')
    for (const [name] of example.matchAll(/\baysfs_[a-z_]+/g)) t.ok(served.has(name), `examples/prometheus/${file}: ${name} is served`)
  }
  t.match(fs.readFileSync(path.join(ROOT, 'examples', 'prometheus', 'aysfs-alerts.yml'), 'utf8'), /alert: AysfsSourceInBackoff[\s\S]*alert: AysfsMissesFailing/)

  // Unmounted: the listener is gone.
  await m.unmount()
  await t.rejects(get(url), { code: 'ECONNREFUSED' })
})

t.test('two mounts in one process: their own listeners and mountpoint labels', async (t) => {
  const { dir, src, store } = publishDirs(t, { a: 'a\n' }, 'aysfs-metrics2-')
  await publish({ dir: src, id: 'svc', store, prefix: '/opt/svc', progress: false, fsync: false })
  const mounts = []
  for (const name of ['one', 'two']) {
    const mountpoint = path.join(dir, name)
    fs.mkdirSync(mountpoint)
    const m = await mount({ mountpoint, log: { level: 'silent' }, config: { main: { cache: path.join(dir, 'cache'), prefix: '/opt/svc' }, ays: [{ id: 'svc' }], store: [{ url: store }] } })
    t.teardown(async () => {
      await m.unmount()
      clearMounts(mountpoint)
    })
    mounts.push(m)
  }
  fs.readFileSync(path.join(mounts[0]!.mountpoint, 'a'))
  const [one, two] = await Promise.all(mounts.map((m) => m.metrics()))
  t.equal(sample(one!, 'aysfs_misses_total', { mountpoint: mounts[0]!.mountpoint }), 1)
  t.equal(sample(two!, 'aysfs_misses_total', { mountpoint: mounts[1]!.mountpoint }), 0)
  t.equal(sample(one!, 'aysfs_misses_total', { mountpoint: mounts[1]!.mountpoint }), undefined, 'each its own')
  fs.mkdirSync(path.join(dir, 'three'))
  await t.rejects(
    mount({ mountpoint: path.join(dir, 'three'), metrics: 'nope', log: { level: 'silent' }, config: { main: { cache: path.join(dir, 'cache') }, ays: [{ id: 'svc' }], store: [{ url: store }] } }),
    { code: 'EINVAL', key: 'metrics', message: /metrics: expected an address like "127.0.0.1:9469"/ },
  )
  t.notOk(fs.readFileSync('/proc/self/mounts', 'utf8').includes(` ${path.join(dir, 'three')} `), 'nothing mounted')
})
