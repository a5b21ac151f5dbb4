// `prefetch` fills the local cache (and the grid cache) ahead of time, so a mount then reads with
// no miss at all; `verify` finds and moves aside what went bad in a cache.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { tmpdir } from '../helpers/mount'
import { startNginx } from '../helpers/nginx'
import { generateTree, md5, writeStore, type GenEntry } from '../helpers/tree'
import { run, serveCli, writeConfig } from '../helpers/cli'

const PREFIX = '/opt/jumpscale7'

function blobFile(cache: string, m: string): string {
  return path.join(cache, m[0]!, m[1]!, m)
}

t.test('prefetch fills the local and grid caches; a mount then reads with hits only; verify', async (t) => {
  const dir = tmpdir(t, 'aysfs-pre-')
  const store = path.join(dir, 'store')
  const base = generateTree({ entries: 400, seed: 3 })
  const extraContent = Buffer.from('only in the extra service\n')
  const extra: GenEntry[] = [{ path: '/extra.txt', kind: 'file', perms: 0o644, size: extraContent.length, md5: md5(extraContent), mtime: 1_700_000_000, content: extraContent }]
  // A line outside the prefix: not exposed, so not prefetched either.
  writeStore(base, store, 'jumpscale__base', PREFIX)
  writeStore(extra, store, 'extra__svc', PREFIX)
  const outside = Buffer.from('outside the prefix\n')
  fs.mkdirSync(path.join(store, 'files', md5(outside)[0]!, md5(outside)[1]!), { recursive: true })
  fs.writeFileSync(blobFile(path.join(store, 'files'), md5(outside)), outside)
  fs.appendFileSync(path.join(store, 'md', 'jumpscale__base.flist'), `/elsewhere/x|${md5(outside)}|${outside.length}\n`)

  const nginx = await startNginx({ store })
  t.teardown(() => nginx.stop())
  const cache = path.join(dir, 'cache')
  const config = writeConfig(path.join(dir, 'config.toml'), {
    cache,
    prefix: PREFIX,
    caches: [`${nginx.url}/cache`],
    stores: [`${nginx.url}/store`],
    ays: ['jumpscale__base', 'extra__svc'],
  })
  const blobs = new Map<string, number>()
  for (const e of base) if (e.kind === 'file' && e.size > 0) blobs.set(e.md5, e.size)
  const bytes = [...blobs.values()].reduce((a, b) => a + b, 0)

  // Only one service first.

  let r = await run(['prefetch', '--config', config, '--ays', 'extra__svc'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, 'prefetch extra__svc: 1 blobs')
  t.ok(fs.existsSync(blobFile(cache, extra[0]!.md5)))

  r = await run(['prefetch', '--config', config])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, `prefetch jumpscale__base, extra__svc: ${blobs.size + 1} blobs`)
  t.match(r.stdout, `1 already cached, ${blobs.size} fetched`)
  t.match(r.stdout, ', 0 failed')
  t.match(r.stderr, new RegExp(`^prefetch: ${blobs.size}/${blobs.size} files, .* in \\d+s$`, 'm'), 'a final plain progress line')
  for (const m of blobs.keys()) {
    if (!fs.existsSync(blobFile(cache, m))) {
      t.fail(`${m} not in the local cache`)
      break
    }
  }
  t.notOk(fs.existsSync(blobFile(cache, md5(outside))), 'blobs outside the prefix are not fetched')
  // The pushes to the grid cache landed before prefetch exited.
  const puts = nginx.requests().filter((q) => q.method === 'PUT' && q.status < 300).length
  t.equal(puts, blobs.size + 1, 'every fetched blob was pushed to the grid cache')
  t.ok(fs.existsSync(blobFile(nginx.dirs.cache, [...blobs.keys()][0]!)))

  r = await run(['prefetch', '--config', config])
  t.equal(r.code, 0)
  t.match(r.stdout, `${blobs.size + 1} already cached, 0 fetched (0 B)`, 'a rerun fetches nothing')

  r = await run(['prefetch', '--config', config, '--ays', 'nope'])
  t.equal(r.code, 2)
  t.match(r.stderr, /--ays nope: no \[\[ays\]\] with that id/)

  // A mount on the filled cache reads everything without a single miss.
  const mnt = path.join(dir, 'mnt')
  const cli = await serveCli(t, mnt, config)
  let read = 0
  let wrong = 0
  for (const e of base) {
    if (e.kind !== 'file') continue
    const data = fs.readFileSync(path.join(mnt, e.path))
    read += data.length
    if (md5(data) !== e.md5) wrong++
  }
  t.equal(wrong, 0, 'every file as published')
  const st = JSON.parse((await run(['status', mnt, '--json'])).stdout)
  t.equal(st.engine.misses, 0, 'no misses')
  t.equal(st.engine.missCalls, 0, 'no fetches')
  t.equal(st.engine.ops.read, st.engine.hits, 'every read a hit')
  // Small files may have been pushed to the page cache before they were read (pushFiles).
  t.ok(st.engine.bytesRead + st.engine.pushedFiles >= read, 'every byte from the cache, read or pushed')
  t.equal(st.mount.services[0].ignored, 1, 'the line outside the prefix is counted')
  cli.kill('SIGINT')
  t.equal((await cli.exited).code, 0)

  // verify: a clean cache, then one blob damaged.
  r = await run(['verify', '--cache', cache])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, `verify ${cache}: ${blobs.size + 1} blobs`)
  t.match(r.stdout, `${blobs.size + 1} ok, 0 bad`)
  const victim = [...blobs.keys()][1]!
  const f = blobFile(cache, victim)
  const content = fs.readFileSync(f)
  content[0] = content[0]! ^ 0xff
  fs.writeFileSync(f, content)
  r = await run(['verify', '--config', config])
  t.equal(r.code, 1, 'bad blobs found: exit 1')
  t.match(r.stdout, `${blobs.size} ok, 1 bad`)
  t.match(r.stdout, `moved aside to ${path.join(cache, 'bad')}: ${victim}`)
  t.notOk(fs.existsSync(f), 'no longer served from the cache')
  t.equal(fs.readdirSync(path.join(cache, 'bad')).filter((n) => n.startsWith(victim)).length, 1, 'kept in bad/')
  r = await run(['verify', '--cache', cache])
  t.equal(r.code, 0)
  t.match(r.stdout, `${blobs.size} ok, 0 bad`)
  // prefetch puts it back.
  r = await run(['prefetch', '--config', config])
  t.match(r.stdout, `${blobs.size} already cached, 1 fetched`)

  r = await run(['verify', '--cache', path.join(dir, 'no-such-cache')])
  t.equal(r.code, 1)
  t.match(r.stderr, 'no such directory')
})

t.test('prefetch with the store gone: what failed, exit 1', async (t) => {
  const dir = tmpdir(t, 'aysfs-pre-')
  const store = path.join(dir, 'store')
  const entries = generateTree({ entries: 30, seed: 9 })
  writeStore(entries, store, 'jumpscale__base', PREFIX)
  // The flist is there, the blobs are not.
  fs.rmSync(path.join(store, 'files'), { recursive: true })
  const config = writeConfig(path.join(dir, 'config.toml'), { cache: path.join(dir, 'cache'), prefix: PREFIX, stores: [store] })
  const r = await run(['prefetch', '--config', config])
  const n = new Set(entries.filter((e) => e.kind === 'file' && e.size > 0).map((e) => e.md5)).size
  t.equal(r.code, 1)
  t.match(r.stdout, `0 fetched (0 B), ${n} failed`)
  t.match(r.stderr, /aysfs-native: [0-9a-f]{32}: /)
})
