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
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { confPreamble, launchNginx, type NginxRequest } from './nginx'

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

export async function startPrivateNginx(o: PrivateNginxOptions): Promise<PrivateNginx> {
  const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-pnginx-'))
  const cache = path.join(prefix, 'cache')
  fs.mkdirSync(cache)
  // nginx's own "{PLAIN}" scheme: no crypt() needed to make the file.
  if (o.basic) fs.writeFileSync(path.join(prefix, 'htpasswd'), `${o.basic.user}:{PLAIN}${o.basic.password}\n`)
  const n = await launchNginx(prefix, (port) => conf(prefix, port, o, cache))
  return { ...n, url: `${o.tls ? 'https' : 'http'}://127.0.0.1:${n.port}`, dirs: { prefix, store: o.store, cache } }
}
