// examples/nginx/read-through.conf does what its comments say, against real nginx: a read-through
// nginx (the example, pointed at 127.0.0.1) in front of an origin nginx serving a store
// (examples/nginx/store.conf, which sends flists with "Cache-Control: no-cache"). Flists and
// blobs are fetched from the origin once and then served from the read-through cache, and both
// are still served with the origin gone. Every answer says where it came from (X-Cache-Status),
// 404s and 502s included.
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import t from 'tap'
import { files, SERVICE, writeStore } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'
import { confPreamble, launchNginx, NGINX_BIN, type NginxProcess } from '../helpers/nginx'
import { spawnSync } from 'node:child_process'

const EXAMPLES = path.resolve(__dirname, '../../examples/nginx')

function get(port: number, p: string): Promise<{ status: number; cache: string | undefined; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, cache: res.headers['x-cache-status'] as string | undefined, body: Buffer.concat(chunks) }))
        res.on('error', reject)
      })
      .on('error', reject)
  })
}

const nginxOk = spawnSync(NGINX_BIN, ['-v']).status === 0

t.test('read-through.conf caches flists and blobs, and serves them with the store down', { skip: !nginxOk && `no ${NGINX_BIN}` }, async (t) => {
  const dir = tmpdir(t)
  const srv = path.join(dir, 'srv')
  const list = files(2, 4096)
  writeStore(path.join(srv, 'store'), list)
  const flist = fs.readFileSync(path.join(srv, 'store', 'md', `${SERVICE}.flist`))

  const originDir = path.join(dir, 'origin')
  fs.mkdirSync(originDir)
  const origin: NginxProcess = await launchNginx(originDir, (port) => {
    const text = fs.readFileSync(path.join(EXAMPLES, 'store.conf'), 'utf8').replaceAll('/srv/aysfs', srv).replace(/listen 80;/, `listen 127.0.0.1:${port};`)
    return `${confPreamble(originDir, true)}${text}\n}\n`
  })
  t.teardown(() => origin.stop())

  const proxyDir = path.join(dir, 'proxy')
  fs.mkdirSync(proxyDir)
  const proxy = await launchNginx(proxyDir, (port) => {
    const text = fs
      .readFileSync(path.join(EXAMPLES, 'read-through.conf'), 'utf8')
      .replaceAll('/var/cache/nginx/aysfs', path.join(proxyDir, 'cache'))
      .replace(/server stor\.example\.com:443;/, `server 127.0.0.1:${origin.port};`)
      .replaceAll('proxy_pass https://', 'proxy_pass http://') // the test's origin speaks plain HTTP
      .replace(/listen 9991;/, `listen 127.0.0.1:${port};`)
    return `${confPreamble(proxyDir, true)}${text}\n}\n`
  })
  t.teardown(() => proxy.stop())

  const originGets = (p: string): number => origin.requests().filter((r) => r.uri === p).length
  const flistPath = `/dedupe/md/${SERVICE}.flist`
  const blob = list[0]!
  const blobPath = `/dedupe/files/${blob.md5[0]}/${blob.md5[1]}/${blob.md5}`

  let r = await get(proxy.port, flistPath)
  t.equal(r.status, 200)
  t.ok(r.body.equals(flist), 'the flist, byte for byte')
  t.equal(r.cache, 'MISS', 'first read of the flist: from the store')
  r = await get(proxy.port, flistPath)
  t.equal(r.cache, 'HIT', 'second read of the flist: from the read-through cache (the store says no-cache)')
  t.ok(r.body.equals(flist))
  t.equal(originGets(flistPath), 1, 'the store was asked for the flist once')

  r = await get(proxy.port, blobPath)
  t.equal(r.status, 200)
  t.equal(r.cache, 'MISS')
  t.ok(r.body.equals(blob.data), 'the blob, byte for byte')
  r = await get(proxy.port, blobPath)
  t.equal(r.cache, 'HIT', 'second read of the blob: cached')
  t.equal(originGets(blobPath), 1, 'the store was asked for the blob once')

  const missing = `/dedupe/md/nope.flist`
  r = await get(proxy.port, missing)
  t.equal(r.status, 404)
  t.equal(r.cache, 'MISS', 'a 404 carries its cache status too (add_header ... always)')
  r = await get(proxy.port, missing)
  t.equal(r.status, 404)
  t.equal(r.cache, 'HIT', 'the second 404: from the read-through cache')
  t.equal(originGets(missing), 1, 'a 404 is remembered briefly: the store was asked once')

  await origin.stop()
  r = await get(proxy.port, flistPath)
  t.equal(r.status, 200, 'the store is down: the flist is still served')
  t.ok(r.body.equals(flist))
  r = await get(proxy.port, blobPath)
  t.equal(r.status, 200, 'and so is the blob')
  t.ok(r.body.equals(blob.data))
  r = await get(proxy.port, `/dedupe/md/never-cached.flist`)
  t.equal(r.status, 502, 'the store is down and nothing is cached: 502')
  t.equal(r.cache, 'MISS', 'a 5xx carries its cache status too')
})
