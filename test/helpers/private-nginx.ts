// A real nginx serving a private store, for the trust tests (test/trust/): the locations a
// company would put in front of its store, each with one kind of credential, optionally over
// HTTPS with a certificate from a private CA. Like ./nginx, it listens on 127.0.0.1 only and keeps
// everything in its own temp prefix. The public harness (./nginx) has /store/, /cache/ and
// /auth/; this one adds Basic auth, TLS and a grid cache behind a token.
//
//   /store/   the store, no credentials
//   /token/   the store, `Authorization: Bearer <token>` or 401
//   /basic/   the store, HTTP Basic auth (user, password) or 401
//   /cache/   a WebDAV-PUT grid cache, `Authorization: Bearer <token>` or 401 (GET and PUT)
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import { confPreamble, freePort, NGINX_BIN, type NginxRequest } from './nginx'

export interface PrivateNginxOptions {
  store: string
  token: string
  basic?: { user: string; password: string }
  /** Serve HTTPS with this certificate and key (see {@link makeCa}). */
  tls?: { cert: string; key: string }
}

export interface PrivateNginx {
  /** `http(s)://127.0.0.1:<port>` */
  url: string
  dirs: { prefix: string; store: string; cache: string }
  requests(): NginxRequest[]
  errorLog(): string
  stop(): Promise<void>
}

/** A private CA and a server certificate it signed for 127.0.0.1 and localhost (openssl). */
export function makeCa(dir: string): { ca: string; cert: string; key: string } {
  const f = (n: string) => path.join(dir, n)
  const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  ossl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=aysfs test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign')
  ossl('req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost')
  fs.writeFileSync(f('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n')
  ossl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '2', '-extfile', f('ext.cnf'))
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') }
}

function conf(prefix: string, port: number, o: PrivateNginxOptions, cache: string): string {
  const p = (x: string) => path.join(prefix, x)
  const needToken = `if ($http_authorization != "Bearer ${o.token}") { return 401; }`
  return `${confPreamble(prefix, true)}  server {
    listen 127.0.0.1:${port}${o.tls ? ' ssl' : ''};
    server_name localhost;
    ${o.tls ? `ssl_certificate ${o.tls.cert}; ssl_certificate_key ${o.tls.key};` : ''}
    location /store/ { alias ${o.store}/; }
    location /token/ { alias ${o.store}/; ${needToken} }
    ${o.basic ? `location /basic/ { alias ${o.store}/; auth_basic "aysfs"; auth_basic_user_file ${p('htpasswd')}; }` : ''}
    location /cache/ {
      alias ${cache}/;
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 0;
      ${needToken}
    }
  }
}
`
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' })
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

export async function startPrivateNginx(o: PrivateNginxOptions): Promise<PrivateNginx> {
  const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-pnginx-'))
  const cache = path.join(prefix, 'cache')
  fs.mkdirSync(cache)
  // nginx's own "{PLAIN}" scheme: no crypt() needed to make the file.
  if (o.basic) fs.writeFileSync(path.join(prefix, 'htpasswd'), `${o.basic.user}:{PLAIN}${o.basic.password}\n`)
  let last = ''
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    fs.writeFileSync(path.join(prefix, 'nginx.conf'), conf(prefix, port, o, cache))
    const child: ChildProcess = spawn(NGINX_BIN, ['-p', prefix, '-c', path.join(prefix, 'nginx.conf'), '-e', path.join(prefix, 'error.log')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    const kill = () => child.kill('SIGKILL')
    process.on('exit', kill)
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    let exited = false
    const exit = new Promise<void>((resolve) => {
      child.once('exit', () => {
        exited = true
        process.off('exit', kill)
        resolve()
      })
      child.once('error', (err) => {
        stderr += String(err)
        exited = true
        process.off('exit', kill)
        resolve()
      })
    })
    const deadline = Date.now() + 5000
    while (!exited && Date.now() < deadline && !(await canConnect(port))) await new Promise((r) => setTimeout(r, 20))
    if (!exited && Date.now() < deadline) {
      let stopped: Promise<void> | undefined
      const read = (n: string) => {
        try {
          return fs.readFileSync(path.join(prefix, n), 'utf8')
        } catch {
          return ''
        }
      }
      return {
        url: `${o.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
        dirs: { prefix, store: o.store, cache },
        requests: () =>
          read('access.log')
            .split('\n')
            .filter((l) => l !== '')
            .map((l) => {
              const [method, uri, status] = l.split(' ')
              return { method: method!, uri: uri!, status: Number(status) }
            }),
        errorLog: () => read('error.log'),
        stop: () =>
          (stopped ??= (async () => {
            if (!exited) {
              child.kill('SIGTERM')
              const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
              await exit
              clearTimeout(timer)
            }
            fs.rmSync(prefix, { recursive: true, force: true })
          })()),
      }
    }
    if (!exited) {
      child.kill('SIGKILL')
      await exit
    }
    last = `${stderr}\n${fs.existsSync(path.join(prefix, 'error.log')) ? fs.readFileSync(path.join(prefix, 'error.log'), 'utf8') : ''}`.trim()
    if (!/Address already in use/.test(last)) break
  }
  fs.rmSync(prefix, { recursive: true, force: true })
  throw new Error(`nginx did not start: ${last || 'no output'}`)
}
