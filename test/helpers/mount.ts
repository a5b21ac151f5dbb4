// Helpers for tests that mount: temp dirs that clean up after themselves (unmounting anything
// left below them first) and an engine mount that always unmounts in teardown.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Engine, type EngineOptions, type FetcherSpec } from '../../lib/engine'
import { clearMounts } from './tmp'

type Test = { teardown(fn: () => unknown): void }

export { clearMounts, mountsBelow, publishDirs, tmpdir } from './tmp'

export const FIXTURE_FETCHER = path.resolve(__dirname, '../fixtures/fetcher.js')

/** Data for test/fixtures/fetcher.js. */
export interface FixtureData {
  cacheDir: string
  mode: 'copy' | 'link' | 'reject' | 'never' | 'early' | 'early-short' | 'progress' | 'gate' | 'block'
  sourceDir?: string
  delayMs?: number
  callsFile?: string
  /** Fetches whose signal aborted append their md5 here. */
  abortsFile?: string
  /** Each call of the fetcher's `preload()` appends `preload <fetches so far>` here. */
  preloadFile?: string
  /** `createFetcher` throws instead (a reconfigure that fails). */
  throwOnCreate?: boolean
  /** `preload()` throws (after appending to `preloadFile`). */
  throwOnPreload?: boolean
  /** Each call of the fetcher's `close()` appends `closed` here. */
  closedFile?: string
  /** `gate`: the fetch copies once this file exists. */
  gateFile?: string
  /** `block`: the FIFO whose open blocks the worker's thread. */
  fifo?: string
  /** `progress`: how often the fetch reports progress (default 100 ms). */
  progressEveryMs?: number
}

export function fixtureFetcher(data: FixtureData): FetcherSpec {
  return { module: FIXTURE_FETCHER, data }
}

/** Mounts with the engine and unmounts in teardown, whatever the test did. */
export async function mountEngine(t: Test, options: EngineOptions): Promise<Engine> {
  try {
    fs.mkdirSync(options.mountpoint, { recursive: true })
  } catch (err) {
    // A mount a dead process left behind: the engine clears it.
    if ((err as NodeJS.ErrnoException).code !== 'ENOTCONN') throw err
  }
  const engine = await Engine.mount(options)
  t.teardown(async () => {
    await engine.unmount()
    clearMounts(options.mountpoint)
  })
  return engine
}

/** Open file descriptors and threads of this process (for leak checks). */
export function processCounts(): { fds: number; threads: number } {
  const fds = fs.readdirSync('/proc/self/fd').length
  const status = fs.readFileSync('/proc/self/status', 'utf8')
  const threads = Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? NaN)
  return { fds, threads }
}
