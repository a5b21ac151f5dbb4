/**
 * The sources of blobs and flists: a directory or `file://` URL (dir.ts), an `http(s)://` URL
 * (http.ts), behind one interface (source.ts). This file makes the one a config entry names.
 */
import { redactUrl, type SourceConfig } from '../config'
import { AysfsError } from '../errors'
import { DirSource, dirRoot } from './dir'
import { HttpSource } from './http'
import type { LookupFunction } from './resolve'
import { SourceFault, type Source, type SourceRole } from './source'

/**
 * Make the source a config entry names: a directory/file:// or an http(s) URL.
 * @throws AysfsError `EINVAL` naming the key: an URL of another kind, an unreadable `ca` or
 *   `token_file`.
 */
export function createSource(cfg: SourceConfig, role: SourceRole, opts: { timeoutMs: number; lookup?: LookupFunction }): Source {
  if (dirRoot(cfg.url) !== undefined) return new DirSource(cfg, role)
  if (/^https?:\/\//i.test(cfg.url)) {
    try {
      return new HttpSource(cfg, role, opts)
    } catch (err) {
      // The token file is read at start, so that a missing one fails the mount, not its misses.
      if (err instanceof SourceFault && err.kind === 'token') {
        throw new AysfsError('EINVAL', err.message, { key: `${cfg.key}.token_file`, cause: err })
      }
      throw err
    }
  }
  throw new AysfsError('EINVAL', `${cfg.key}.url: not http(s)://, file:// or an absolute path: ${redactUrl(cfg.url)}`, { key: `${cfg.key}.url` })
}
