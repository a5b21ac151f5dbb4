// Type tests for the native contract (binding.d.ts) and the engine's options: `tsc --noEmit`
// (part of `npm test`) checks this file; nothing runs it. Each @ts-expect-error must stay an
// error, or the compile fails.
import type { NativeMountOptions, NativeStats } from '../../binding'
import type { EngineOptions, EngineTunables } from '../../lib/engine'

export function usage(table: Buffer): void {
  const base = { mountpoint: '/m', cacheDir: '/c', table, fetcher: { module: '/f.js' } }
  const fewest: EngineOptions = base
  const tuned: EngineOptions = { ...base, readAround: 0, pushFiles: 64 << 10, fsname: 'svc', debug: true }
  // @ts-expect-error readAround is a number of bytes, not a size string
  const mistyped: EngineOptions = { ...base, readAround: '128k' }
  // @ts-expect-error the native side takes a complete set: lib/engine.ts fills in the defaults
  const partial: NativeMountOptions = { mountpoint: '/m', cacheDir: '/c' }
  // Every tunable is a native option but the two paths.
  const tunables: EngineTunables = { fsname: 'aysfs', allowOther: false, suid: false, dev: false, debug: false, stallTimeoutMs: 1, spliceMinSize: 1, readAheadKb: 0, readAround: 0, pushFiles: 0 }
  // @ts-expect-error the paths are no tunables
  const withPath: EngineTunables = { ...tunables, mountpoint: '/m' }
  const mounted: boolean = ({} as NativeStats).mounted
  void [fewest, tuned, mistyped, partial, withPath, mounted]
}
