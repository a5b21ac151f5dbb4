// --log-level debug lets an operator follow one file's fetch: the miss, each source tried and
// how it answered, the push to the grid cache that missed it, and evictions (issue 15). Never a
// secret. A real mount served by the command, its log read as JSON lines.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { files, md5, PREFIX, SERVICE, writeStore } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'
import { randomBytes } from '../helpers/store'
import { serveCli } from '../helpers/cli'
import { until } from '../helpers/hardening'

t.test('debug: each miss, source tried, push and eviction', async (t) => {
  const dir = tmpdir(t)
  const store = path.join(dir, 'store')
  const list = files(2, 64 * 1024)
  writeStore(store, list)
  const grid = path.join(dir, 'grid')
  fs.mkdirSync(grid)
  // Old blobs in the local cache, over its quota: the first quota pass evicts them.
  const cache = path.join(dir, 'cache')
  const old: string[] = []
  for (let i = 0; i < 4; i++) {
    const data = randomBytes(64 * 1024, 900 + i)
    const sum = md5(data)
    const d = path.join(cache, sum[0]!, sum[1]!)
    fs.mkdirSync(d, { recursive: true, mode: 0o700 })
    fs.writeFileSync(path.join(d, sum), data)
    const day = Date.now() / 1000 - 86_400
    fs.utimesSync(path.join(d, sum), day, day)
    old.push(sum)
  }
  fs.chmodSync(cache, 0o700)
  const config = path.join(dir, 'config.toml')
  fs.writeFileSync(
    config,
    `[main]\ncache = "${cache}"\ncache_size = "160KiB"\nprefix = "${PREFIX}"\ntimeout = "2s"\n` +
      `[[ays]]\nid = "${SERVICE}"\n[[cache]]\nurl = "${grid}"\n[[store]]\nurl = "${store}"\nheaders = { X-Secret = "s3cret-value" }\n`,
  )
  const mnt = path.join(dir, 'mnt')
  const cli = await serveCli(t, mnt, config, ['--log-level', 'debug', '--log-format', 'json'])
  const f = list[0]!
  t.ok(fs.readFileSync(path.join(mnt, f.path)).equals(f.data), 'the file reads')
  const msgs = (): string[] =>
    cli.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: number; msg: string })
      .filter((l) => l.level === 20)
      .map((l) => l.msg)
  const want = [
    new RegExp(`^blob ${f.md5} \\(65536 bytes\\): miss, fetching$`),
    new RegExp(`^blob ${f.md5}: cache\\[0\\] \\(${grid}\\) does not have it$`),
    new RegExp(`^blob ${f.md5}: served by store\\[0\\] \\(${store}\\); pushing it to cache\\[0\\]$`),
    new RegExp(`^blob ${f.md5}: pushed to cache\\[0\\] \\(${grid}\\)$`),
    new RegExp(`^cache quota: evicted blob (${old.join('|')}) \\(65536 bytes, least recently used\\)$`),
  ]
  const ok = await until(() => want.every((re) => msgs().some((m) => re.test(m))), 20_000)
  for (const re of want) t.ok(msgs().some((m) => re.test(m)), `logged at debug: ${re}`)
  if (!ok) t.comment(cli.stderr)
  t.same(cli.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('{')), [], "every line is JSON, the miss worker's too (--log-format json)")
  t.notMatch(cli.stderr, /s3cret-value/, 'no header value in the log')
})
