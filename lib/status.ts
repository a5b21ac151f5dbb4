/**
 * `aysfs-native status MOUNTPOINT`: the counters of a running mount, read from the
 * `user.aysfs.status` xattr of its root, so any process can ask without a registry or a
 * socket of its own.
 *
 * Node has no xattr API, and an addon call would load libfuse for nothing: the value is read with
 * `getfattr` (Debian/Ubuntu package `attr`), which every distribution ships.
 */
import { spawnSync } from 'node:child_process'
import type { MountStats } from './index'
import { AysfsError } from './errors'
import { AYSFS_FSTYPE, canonicalMountpoint, findMount } from './mounts'
import { formatBytes } from './progress'

const STATUS_XATTR = 'user.aysfs.status'

/**
 * The status document of the mount at `mountpoint`.
 * @throws AysfsError `ENOENT` (not mounted), `EINVAL` (not an aysfs-native mount), `ENOTCONN`
 *   (a stale mount: its process is gone), `EACCES`, or `ENOSYS` when getfattr is missing.
 */
export function readStatus(mountpoint: string): MountStats {
  const where = canonicalMountpoint(mountpoint)
  const m = findMount(where)
  if (!m) throw new AysfsError('ENOENT', `${where} is not mounted`)
  if (m.fstype !== AYSFS_FSTYPE) throw new AysfsError('EINVAL', `${where} is a ${m.fstype} mount, not an aysfs-native one`)
  const r = spawnSync('getfattr', ['--only-values', '--absolute-names', '-n', STATUS_XATTR, '--', where], {
    encoding: 'utf8',
    timeout: 10_000,
    maxBuffer: 64 << 20,
  })
  if (r.error) {
    if ((r.error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new AysfsError('ENOSYS', 'status needs getfattr: install it with `apt-get install attr`')
    }
    throw new AysfsError('EIO', `getfattr: ${r.error.message}`)
  }
  if (r.status !== 0) {
    const err = r.stderr.trim()
    if (/not connected/i.test(err)) {
      throw new AysfsError('ENOTCONN', `${where} is a stale mount: the process that served it is gone; clear it with \`aysfs-native unmount ${where}\``)
    }
    if (/permission denied/i.test(err)) {
      throw new AysfsError('EACCES', `${where}: permission denied (a mount without allow_other is visible to the user who mounted it only)`)
    }
    if (/no such attribute|not supported/i.test(err)) {
      throw new AysfsError('EINVAL', `${where} has no ${STATUS_XATTR} attribute: not an aysfs-native mount`)
    }
    throw new AysfsError('EIO', `getfattr ${where}: ${err || `exit status ${r.status}`}`)
  }
  try {
    const doc = JSON.parse(r.stdout) as MountStats
    if (doc.version !== 1) throw new Error(`unknown status document version ${String(doc.version)}`)
    return doc
  } catch (err) {
    throw new AysfsError('EIO', `${where}: unreadable ${STATUS_XATTR}: ${(err as Error).message}`)
  }
}

/** Columns padded to their widest cell; numbers right-aligned. */
function table(rows: (string | number)[][], indent = '  '): string {
  const widths: number[] = []
  for (const row of rows) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, String(c).length)))
  return rows
    .map((row) =>
      indent +
      row
        .map((c, i) => (typeof c === 'number' ? String(c).padStart(widths[i]!) : i === row.length - 1 ? c : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}

/** The status document as the human-readable text `status` prints. */
export function formatStatus(doc: MountStats): string {
  const out: string[] = []
  const e = doc.engine
  const m = doc.mount
  out.push(`aysfs-native mount at ${doc.mountpoint}`)
  if (m) {
    const facts: (string | number)[][] = [['prefix', m.prefix]]
    if (m.config) facts.push(['config', m.config])
    facts.push(['mounted at', m.mountedAt])
    facts.push(['signatures', m.signed ? 'checked (trusted_keys)' : 'not checked'])
    let reloads = String(m.reloads)
    if (m.lastReload) reloads += `; last ${m.lastReload.at} ${m.lastReload.ok ? 'ok' : `FAILED: ${m.lastReload.error ?? ''}`}`
    facts.push(['reloads', reloads])
    if (m.refresh) {
      const every = m.refresh.intervalMs > 0 ? `every ${m.refresh.intervalMs / 1000}s` : 'off'
      facts.push(['refresh', `${every}; ${m.refresh.checks} run${m.refresh.lastAt ? `, last ${m.refresh.lastAt}` : ''}`])
    }
    facts.push(['entries', String(e.entries)])
    out.push(table(facts))
    out.push('', 'Services')
    const revisions = m.services.some((s) => s.revision !== undefined || s.refresh !== undefined)
    out.push(
      table(
        revisions
          ? [
              ['id', 'from', 'revision', 'entries', 'ignored (outside prefix)', 'last refresh'],
              ...m.services.map((s) => [s.id, s.source, s.revision ?? '-', s.entries, s.ignored, s.refresh ? `${s.refresh.result} at ${s.refresh.checkedAt}` : '-']),
            ]
          : [['id', 'from', 'entries', 'ignored (outside prefix)'], ...m.services.map((s) => [s.id, s.source, s.entries, s.ignored])],
      ),
    )
    for (const s of m.services) if (s.refresh?.error) out.push(`  ${s.id}: ${s.refresh.error}`)
    for (const s of m.services) if (s.warning) out.push(`  warning: ${s.warning}`)
    if (m.flists) out.push(`  flists: ${m.flists.fetched} fetched from stores, ${m.flists.kept} kept copies used, ${m.flists.refused} refused (untrusted)`)
    for (const r of m.rollbacks ?? []) out.push(`  ${r.message} (last at ${r.at})`)
  } else {
    out.push(table([['entries', String(e.entries)]]))
  }

  out.push('', 'Reads')
  out.push(
    table([
      ['bytes read', formatBytes(e.bytesRead)],
      ['hits (local cache)', e.hits],
      ['misses', e.misses],
      ['fetches', e.missCalls],
      ['failed fetches', e.missFailures],
      ['timed out', e.missTimeouts],
      ['EIO replies', e.errors],
      ['waiting now', e.parked],
      ['fetching now', e.fetching],
    ]),
  )

  const ops = Object.entries(e.ops).filter(([, n]) => n > 0)
  out.push('', 'Requests by op')
  out.push(ops.length ? table(ops.map(([op, n]) => [op, n])) : '  none')

  const p = doc.pipeline
  if (p) {
    out.push('', 'Pipeline')
    out.push(
      table([
        ['downloads', `${p.downloads.active} active, ${p.downloads.queued} queued, at most ${p.downloads.max}`],
        // A document of a version before the counter has none.
        ...(p.started !== undefined ? [['started by reads', String(p.started)]] : []),
        ['served', String(p.served)],
        ['failed', String(p.failed)],
        ['merged', String(p.merged)],
        ['pushes', `${p.pushes.active} active, ${p.pushes.queued} queued, ${p.pushes.dropped} dropped`],
        // A document of a version before the decoders' budget has none.
        ...(p.decoders
          ? [['.bro decoders', `${p.decoders.active} active, holding ${formatBytes(p.decoders.reserved)} of ${formatBytes(p.decoders.budget)}; ${p.decoders.queued} queued, ${p.decoders.waited} waited`]]
          : []),
        // A document of a version before start-up sets has none.
        ...(p.startup?.listed
          ? [['start-up set', `${p.startup.listed} listed (${p.startup.dropped} not in the tree), ${p.startup.fetched} fetched (${formatBytes(p.startup.bytes)}), ${p.startup.alreadyCached} already cached, ${p.startup.failed} failed, ${p.startup.queued} queued`]]
          : []),
      ]),
    )
    if (p.sources.length > 0) {
      out.push('', 'Sources')
      out.push(
        table([
          ['source', 'hits', 'misses', 'errors', 'bytes', 'pushes', 'push errors', 'url'],
          ...p.sources.map((s) => [s.key, s.hits, s.misses, s.errors, formatBytes(s.bytes), s.pushes, s.pushErrors, s.url]),
        ]),
      )
      for (const s of p.sources) {
        if (s.errors === 0) continue
        const kinds = Object.entries(s.errorKinds).map(([k, n]) => `${k} ${n}`).join(', ')
        out.push(`  ${s.key} errors: ${kinds}${s.lastError ? ` (last: ${s.lastError})` : ''}`)
      }
    }
  }
  return out.join('\n') + '\n'
}
