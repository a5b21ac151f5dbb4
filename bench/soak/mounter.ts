// A mount in a process of its own, for the soak and the hardening tests (a process to SIGKILL,
// to measure, to unmount from outside):
//
//   node dist/bench/soak/mounter.js '<json>'    json: { mountpoint, config, allowOther?, log? }
//
// Prints one JSON line on stdout once mounted, `{"type":"ready","pid":N}` (or `{"type":"error",
// ...}` and exits 1). SIGUSR2 prints `{"type":"stats",...}` (the mount's counters). SIGTERM or
// SIGINT: unmount, exit 0. An unmount from outside: exit 0 once the engine has cleaned up.
import { mount, type AysfsMount, type LogOptions } from '../../lib/index'

interface Args {
  mountpoint: string
  config: Record<string, unknown>
  allowOther?: boolean
  log?: LogOptions
}

function say(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? '{}') as Args
  let m: AysfsMount | undefined
  let ending = false
  const end = async (code: number): Promise<void> => {
    if (ending) return
    ending = true
    try {
      await m?.unmount()
    } finally {
      process.exit(code)
    }
  }
  process.on('SIGTERM', () => void end(0))
  process.on('SIGINT', () => void end(0))
  process.on('SIGUSR2', () => {
    if (m?.mounted) say({ type: 'stats', stats: m.stats() })
  })
  try {
    m = await mount({
      mountpoint: args.mountpoint,
      config: args.config,
      allowOther: args.allowOther ?? false,
      log: args.log ?? { level: 'warn' },
      onExit: () => say({ type: 'gone' }), // nothing else keeps the process alive: it ends
    })
  } catch (err) {
    const e = err as Error & { code?: string }
    say({ type: 'error', code: e.code, message: e.message })
    process.exit(1)
  }
  say({ type: 'ready', pid: process.pid })
}

void main()
