/**
 * Readiness for systemd (`Type=notify`): `READY=1` once the tree is visible, `STATUS=` lines,
 * `STOPPING=1` on the way out.
 *
 * The protocol is one datagram on the unix socket in `$NOTIFY_SOCKET`. Node cannot send unix
 * datagrams, and the npm packages that can (sd-notify, unix-dgram) are native addons that need a
 * compiler on install. So the message goes through systemd's own `systemd-notify` tool: it is
 * installed wherever systemd runs, it handles abstract sockets, and (systemd >= 246) it waits until
 * systemd has read the message. Run as root it sends with this process's pid, so the default
 * `NotifyAccess=main` works; for a unit with `User=`, set `NotifyAccess=all`
 * (examples/aysfs-native.service does).
 */
import { execFile } from 'node:child_process'
import type { Logger } from './log'

/** Whether systemd (or anything else speaking the protocol) is listening. */
function notifyEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return typeof env.NOTIFY_SOCKET === 'string' && env.NOTIFY_SOCKET !== ''
}

/**
 * Sends `KEY=VALUE` assignments to systemd; does nothing without `$NOTIFY_SOCKET`. Resolves when
 * the message was sent (or failed: failures are logged, never thrown; a service that runs fine
 * should not die because its supervisor could not be told).
 */
export function notifySystemd(fields: Record<string, string>, log?: Logger): Promise<void> {
  if (!notifyEnabled()) return Promise.resolve()
  const args = Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`)
  return new Promise((resolve) => {
    execFile('systemd-notify', args, { timeout: 10_000 }, (err, _stdout, stderr) => {
      if (err) {
        const missing = (err as NodeJS.ErrnoException).code === 'ENOENT'
        log?.warn(
          { notify: args.join(' ') },
          missing
            ? 'NOTIFY_SOCKET is set but systemd-notify is not installed: systemd is not told the mount is ready'
            : `systemd-notify failed: ${String(stderr).trim() || err.message}`,
        )
      }
      resolve()
    })
  })
}
