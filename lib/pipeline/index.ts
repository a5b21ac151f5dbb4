/**
 * The content pipeline: the fetcher module the engine's miss worker loads (lib/fetcher.ts says
 * what one is), also used on the main thread for flists at mount and reload, prefetch and the
 * `prefetch` command. fetcher.ts is the fetcher itself; this file is its entry.
 */
import { Pipeline, type FetcherData } from './fetcher'

export { Pipeline, type FetcherData, type FetcherStats } from './fetcher'
export type { FlistResult } from './flists'
export type { SourceStats } from './source-stats'

/** The real fetcher. The engine loads this module on its miss worker (`createFetcher(data)`). */
export function createFetcher(data: FetcherData): Pipeline {
  return new Pipeline(data)
}
