// Type tests for the public API: `tsc --noEmit` (part of `npm test`) checks this file; nothing
// runs it. Each @ts-expect-error must stay an error, or the compile fails.
import { AysfsError, mount, type AysfsMount, type MountOptions, type MountStats, type ReloadResult } from '../../lib/index'

export async function usage(): Promise<void> {
  const fs: AysfsMount = await mount({ mountpoint: '/opt/jumpscale7', config: '/etc/aysfs/config.toml' })
  const stats: MountStats = fs.stats()
  const bytes: number = stats.engine.bytesRead
  const hits: number | undefined = stats.pipeline?.sources[0]?.hits
  const reloaded: ReloadResult = await fs.reload()
  const invalidated: number = reloaded.invalidated
  await fs.unmount()
  void [bytes, hits, invalidated]

  const options: MountOptions = {
    config: { main: { cache: '/var/cache/aysfs' }, ays: [{ id: 'jumpscale__base' }] },
    log: { level: 'warn', format: 'json' },
  }
  void options

  try {
    await mount({ config: '/nope' })
  } catch (err) {
    if (err instanceof AysfsError) {
      const where: [string, string | undefined, number | undefined, string | undefined] = [err.code, err.file, err.line, err.key]
      void where
    }
  }

  // @ts-expect-error config is required
  await mount({ mountpoint: '/opt/x' })
  // @ts-expect-error log levels are pino's names
  await mount({ config: '/c', log: { level: 'verbose' } })
  // @ts-expect-error stats are read-only counters, not a function to call with arguments
  fs.stats(1)
}
