// The command as an operator runs it on a fleet node: `publish --sign` twice (revisions), a
// node serving with `refresh` and `--metrics`, scraped with a real HTTP client, and `status`
// showing the revision in force.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { freePort, startNginx } from '../helpers/nginx'
import { publishDirs } from '../helpers/mount'
import { run, serveCli, writeConfig } from '../helpers/cli'
import { until } from '../helpers/hardening'

t.test('publish --revision, serve --metrics with refresh, status', async (t) => {
  const { dir, src, store } = publishDirs(t, { tool: 'v1\n' }, 'aysfs-fleet-cli-')
  t.equal((await run(['keygen', '--out', path.join(dir, 'keys')])).code, 0)
  const key = path.join(dir, 'keys', 'aysfs.key')
  const pub = path.join(dir, 'keys', 'aysfs.pub')
  const published = await run(['publish', src, '--id', 'app', '--store', store, '--prefix', '/opt/app', '--sign', key, '--revision', '7'])
  t.equal(published.code, 0, published.stderr)
  t.match(published.stdout, /signature: .*app\.flist\.sig \(revision 7\)/)
  const lower = await run(['publish', src, '--id', 'app', '--store', store, '--prefix', '/opt/app', '--sign', key, '--revision', '7'])
  t.equal(lower.code, 2, 'a revision not above the store: a usage error')
  t.match(lower.stderr, /--revision 7: the store has revision 7 of app/)
  t.equal((await run(['publish', src, '--id', 'app', '--store', store, '--revision', '9'])).code, 2, '--revision without --sign')

  const nginx = await startNginx({ store })
  t.teardown(() => nginx.stop())
  const port = await freePort()
  const config = writeConfig(path.join(dir, 'config.toml'), {
    cache: path.join(dir, 'cache'),
    prefix: '/opt/app',
    ays: ['app'],
    stores: [`${nginx.url}/store`],
    main: `trusted_keys = [${JSON.stringify(pub)}]\nrefresh = "1s"`,
  })
  const mnt = path.join(dir, 'mnt')
  const cli = await serveCli(t, mnt, config, ['--metrics', `127.0.0.1:${port}`])
  t.equal(fs.readFileSync(path.join(mnt, 'tool'), 'utf8'), 'v1\n')

  fs.writeFileSync(path.join(src, 'tool'), 'v2!\n')
  t.equal((await run(['publish', src, '--id', 'app', '--store', store, '--prefix', '/opt/app', '--sign', key, '--revision', '8'])).code, 0)
  t.ok(await until(() => fs.readFileSync(path.join(mnt, 'tool'), 'utf8') === 'v2!\n', 20_000), 'the node picked up revision 8 by itself')

  const status = await run(['status', mnt])
  t.match(status.stdout, /app +store\[0\] +8 /, 'status: the revision in force')
  const scraped = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text())
  t.match(scraped, new RegExp(`^aysfs_service_revision\\{service="app",mountpoint="${mnt.replace(/[.]/g, '\\.')}"\\} 8$`, 'm'))
  t.match(scraped, /^aysfs_refresh_results_total\{result="applied",.*\} 1$/m)
  t.notOk(scraped.includes(nginx.url), 'no store URL in the metrics')
  cli.kill('SIGTERM')
  t.equal((await cli.exited).code, 0)
})
