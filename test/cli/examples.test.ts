// The files in examples/ are what operators copy: they must at least be valid. The nginx configs
// pass `nginx -t` (with their paths and host names pointed at a temp dir and 127.0.0.1), the
// sample config passes the config checker, the systemd unit says Type=notify.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { parseConfig } from '../../lib/config'
import { NGINX_BIN } from '../helpers/nginx'
import { tmpdir } from '../helpers/mount'
import { ROOT } from '../helpers/cli'

const EXAMPLES = path.join(ROOT, 'examples')

t.test('the sample config.toml is a valid config', async (t) => {
  const file = path.join(EXAMPLES, 'config.toml')
  const c = parseConfig(fs.readFileSync(file, 'utf8'), file)
  t.equal(c.main.mount, '/opt/jumpscale7')
  t.same(c.ays.map((a) => a.id), ['jumpscale__base', 'jumpscale__portal'])
  t.equal(c.caches.length, 1)
  t.equal(c.stores.length, 2)
})

t.test('the systemd unit is Type=notify with a reload and no mount namespace', async (t) => {
  const unit = fs.readFileSync(path.join(EXAMPLES, 'aysfs-native.service'), 'utf8')
  t.match(unit, /^Type=notify$/m)
  t.match(unit, /^NotifyAccess=all$/m)
  t.match(unit, /^ExecStart=\S+aysfs-native --mount \/opt\/jumpscale7/m)
  t.match(unit, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m)
  t.notMatch(unit, /^(PrivateTmp|ProtectSystem|ProtectHome|PrivateMounts)=/m, 'no sandboxing that would hide the mount')
})

const nginxOk = spawnSync(NGINX_BIN, ['-v']).status === 0
for (const name of ['store.conf', 'grid-cache.conf', 'read-through.conf']) {
  t.test(`examples/nginx/${name} passes nginx -t`, { skip: !nginxOk && `no ${NGINX_BIN}` }, async (t) => {
    const dir = tmpdir(t)
    fs.mkdirSync(path.join(dir, 'srv', 'gridcache'), { recursive: true })
    const text = fs
      .readFileSync(path.join(EXAMPLES, 'nginx', name), 'utf8')
      .replaceAll('/srv/aysfs', path.join(dir, 'srv'))
      .replaceAll('/var/cache/nginx/aysfs', path.join(dir, 'proxy-cache'))
      .replace(/server stor\.example\.com:443;/, 'server 127.0.0.1:443;')
      .replace(/listen (\d+);/g, 'listen 127.0.0.1:$1;')
    const conf = path.join(dir, 'nginx.conf')
    fs.writeFileSync(
      conf,
      `daemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n  fastcgi_temp_path ${dir}/fastcgi;\n  uwsgi_temp_path ${dir}/uwsgi;\n  scgi_temp_path ${dir}/scgi;\n${text}\n}\n`,
    )
    const r = spawnSync(NGINX_BIN, ['-t', '-p', dir, '-c', conf, '-e', path.join(dir, 'error.log')], { encoding: 'utf8' })
    t.equal(r.status, 0, r.stderr)
    t.match(r.stderr, /syntax is ok/)
  })
}
