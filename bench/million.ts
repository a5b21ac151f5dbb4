// Child of the benchmark: `node million.js SPEC_JSON` mounts one configuration with mount() and
// prints, as JSON, how long until the tree was visible and the whole process's resident memory
// then. Its own process, so the figure is the memory of a mount and nothing else.
import * as fs from 'node:fs'
import { mount } from '../lib/index'

interface Spec {
  mountpoint: string
  config: Record<string, unknown>
}

function status(key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync('/proc/self/status', 'utf8'))
  return m ? Number(m[1]) * 1024 : NaN
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2]!) as Spec
  const before = status('VmRSS')
  const t0 = process.hrtime.bigint()
  const m = await mount({ mountpoint: spec.mountpoint, config: spec.config, log: { level: 'warn' } })
  const names = fs.readdirSync(spec.mountpoint)
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  const rss = status('VmRSS')
  const hwm = status('VmHWM')
  const entries = m.stats().engine.entries
  await m.unmount()
  process.stdout.write(JSON.stringify({ seconds, rss, hwm, before, entries, top: names.length }) + '\n')
}

main().catch((err: Error) => {
  process.stderr.write(`${err.stack ?? err.message}\n`)
  process.exit(1)
})
