// A real nginx for tests and the benchmark: a store at /store/, a WebDAV-PUT grid cache at
// /cache/, and /auth/ (the store again, behind `Authorization: Bearer <token>`). Listens on
// 127.0.0.1 only, everything (config, logs, temp paths, pid) in its own temp prefix; never
// touches /var/log or /etc/nginx. stop() kills it, and so does the exit of the process.
import { spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'

export const NGINX_BIN = process.env.NGINX ?? '/usr/sbin/nginx'

export interface NginxOptions {
  /** Directory served at /store/ (and /auth/); default an empty temp dir. */
  store?: string
  /** Directory behind /cache/ (GET and PUT); default an empty temp dir. */
  cache?: string
  /** Bearer token /auth/ wants; default `test-token`. */
  token?: string
  /** Keep an access log (for {@link Nginx.requests}); default true. The benchmark turns it off. */
  accessLog?: boolean
}

export interface NginxRequest {
  method: string
  uri: string
  status: number
}

export interface Nginx {
  /** `http://127.0.0.1:<port>` */
  url: string
  port: number
  token: string
  dirs: { prefix: string; store: string; cache: string }
  /** Requests served so far, from the access log (written as each request completes). */
  requests(): NginxRequest[]
  /** The error log, for test diagnostics. */
  errorLog(): string
  /** Stop nginx (SIGTERM, then SIGKILL); resolves when it is gone. Idempotent. */
  stop(): Promise<void>
}

const running = new Set<ChildProcess>()
let exitHookInstalled = false

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const child of running) {
      try {
        child.kill('SIGKILL')
      } catch {
        // gone already
      }
    }
  })
}

/** A port that was free a moment ago (nginx retries on a race, see startNginx). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(port))
    })
  })
}

/** Whether something accepts a TCP connection on 127.0.0.1:`port` now. */
export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' })
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/**
 * The start of an nginx.conf that keeps everything (pid, logs, temp dirs) under `prefix`, runs
 * in the foreground as one process, and opens the `http {` block for the caller to complete.
 */
export function confPreamble(prefix: string, accessLog: boolean): string {
  const p = (x: string) => path.join(prefix, x)
  return `
daemon off;
master_process off;
worker_processes 1;
pid ${p('nginx.pid')};
error_log ${p('error.log')} warn;
events { worker_connections 512; }
http {
  log_format t '$request_method $uri $status';
  access_log ${accessLog ? `${p('access.log')} t` : 'off'};
  client_body_temp_path ${p('client_body')};
  proxy_temp_path ${p('proxy')};
  fastcgi_temp_path ${p('fastcgi')};
  uwsgi_temp_path ${p('uwsgi')};
  scgi_temp_path ${p('scgi')};
  default_type application/octet-stream;
`
}

function config(prefix: string, port: number, store: string, cache: string, token: string, accessLog: boolean): string {
  return `${confPreamble(prefix, accessLog)}  sendfile on;
  keepalive_requests 10000;
  server {
    listen 127.0.0.1:${port};
    server_name localhost;
    location /store/ { alias ${store}/; }
    location /cache/ {
      alias ${cache}/;
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
      client_max_body_size 0;
    }
    location /auth/ {
      alias ${store}/;
      if ($http_authorization != "Bearer ${token}") { return 401; }
    }
  }
}
`
}

/** Start nginx; rejects (after cleaning up) if it does not listen within 5 s. */
export async function startNginx(opts: NginxOptions = {}): Promise<Nginx> {
  const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-nginx-'))
  // nginx may run as root and then serves files as root too (master_process off: no worker
  // that drops privileges), so temp dirs with mode 0700 are fine.
  const store = opts.store ?? path.join(prefix, 'store')
  const cache = opts.cache ?? path.join(prefix, 'cache')
  fs.mkdirSync(store, { recursive: true })
  fs.mkdirSync(cache, { recursive: true })
  const token = opts.token ?? 'test-token'
  const n = await launchNginx(prefix, (port) => config(prefix, port, store, cache, token, opts.accessLog ?? true))
  return { ...n, url: `http://127.0.0.1:${n.port}`, token, dirs: { prefix, store, cache } }
}

/** An nginx that {@link launchNginx} started. */
export interface NginxProcess {
  port: number
  /** Requests served so far, from `<prefix>/access.log` (in `log_format t`, see confPreamble). */
  requests(): NginxRequest[]
  errorLog(): string
  /** SIGTERM, then SIGKILL; resolves when it is gone and its prefix removed. Idempotent. */
  stop(): Promise<void>
}

/**
 * Runs nginx on the config `conf` writes for a free port, everything in `prefix` (see
 * confPreamble), trying another port when another process took it first. Rejects, with
 * `prefix` removed, if it does not listen within 5 s. Killed at the exit of this process.
 */
export async function launchNginx(prefix: string, conf: (port: number) => string): Promise<NginxProcess> {
  installExitHook()
  const read = (name: string): string => {
    try {
      return fs.readFileSync(path.join(prefix, name), 'utf8')
    } catch {
      return ''
    }
  }
  let lastError = ''
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    const file = path.join(prefix, 'nginx.conf')
    fs.writeFileSync(file, conf(port))
    const child = spawn(NGINX_BIN, ['-p', prefix, '-c', file, '-e', path.join(prefix, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] })
    running.add(child)
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    let exited = false
    const exit = new Promise<void>((resolve) => {
      const gone = () => {
        exited = true
        running.delete(child)
        resolve()
      }
      child.once('exit', gone)
      child.once('error', (err) => {
        stderr += String(err)
        gone()
      })
    })
    const deadline = Date.now() + 5000
    let up = false
    while (!exited && Date.now() < deadline && !(up = await canConnect(port))) await new Promise((r) => setTimeout(r, 20))
    if (up && !exited) {
      let stopped: Promise<void> | undefined
      return {
        port,
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
    lastError = `${stderr}\n${read('error.log')}`.trim()
    if (!/Address already in use/.test(lastError)) break
  }
  fs.rmSync(prefix, { recursive: true, force: true })
  throw new Error(`nginx did not start: ${lastError || 'no output'}`)
}
