/**
 * Merge the services of one mount into one tree, in config order: directories are merged, any
 * other path takes the last service's entry.
 */
import { AysfsError } from '../errors'
import type { ParsedFlist } from './parse'
import { FLAG_EXPLICIT, FType, FlistTree, KIND_NAME, type FlistSource, type MergedTree } from './tree'

const DIR = FType.dir

/** Options of {@link mergeServices}. */
export interface MergeOptions {
  /** More entries in the merged tree than this is an error. Default 5 000 000. */
  maxEntries?: number
}

function describeAt(tree: FlistTree, id: number): string {
  const src = tree.services[tree.service[id]!]!
  const where = src.file === undefined ? `flist ${src.name}` : `flist ${src.name} (${src.file})`
  const explicit = tree.ftype[id] !== DIR || (tree.flags[id]! & FLAG_EXPLICIT) !== 0
  return `${where} ${explicit ? 'line' : 'implied by line'} ${tree.line[id]}`
}

/**
 * Merge the services of one mount into one tree, in config order: directories are
 * merged (the union of their children) and keep the attributes of the last explicit directory
 * line (an implied directory never overrides an explicit one); any other path takes the last
 * service's entry; a path that is a directory in one service and not in another is an error
 * naming both. One flist is returned as is (its tree), without a copy.
 * @throws AysfsError `EINVAL` for a conflict (with the later flist's `file` and `line`) or too many entries.
 */
export function mergeServices(flists: ParsedFlist[], opts: MergeOptions = {}): MergedTree {
  const maxEntries = opts.maxEntries ?? 5_000_000
  if (flists.length === 1) {
    const t = flists[0]!.tree
    if (t.count - 1 > maxEntries) throw new AysfsError('EINVAL', `flist ${flists[0]!.name}: more than ${maxEntries} entries (main.max_entries)`)
    return t
  }
  const services: FlistSource[] = flists.map((f) => (f.file === undefined ? { name: f.name } : { name: f.name, file: f.file }))
  const defaults = flists[0]?.tree.defaults ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, time: 0 }
  const total = flists.reduce((n, f) => n + f.tree.count, 0)
  const out = new FlistTree(services, defaults, Math.min(total, maxEntries + 1), flists.reduce((n, f) => n + f.tree.namesLength, 0))
  flists.forEach((f, si) => {
    const src = f.tree
    if (src.flags[0]! & FLAG_EXPLICIT) out.copyAttrs(0, src, 0, si)
    const map = new Uint32Array(src.count)
    for (let id = 1; id < src.count; id++) {
      const parent = map[src.parent[id]!]!
      const off = src.nameOff[id]!
      const end = off + src.nameLen[id]!
      let d = out.lookup(parent, src.names, off, end)
      const srcDir = src.ftype[id] === DIR
      if (d < 0) {
        if (out.count > maxEntries) {
          throw new AysfsError('EINVAL', `services ${services.map((s) => s.name).join(', ')}: more than ${maxEntries} entries together (main.max_entries)`)
        }
        d = out.add(parent, src.names, off, end, src.line[id]!, si)
        out.copyAttrs(d, src, id, si)
      } else {
        const dstDir = out.ftype[d] === DIR
        if (srcDir !== dstDir) {
          throw new AysfsError(
            'EINVAL',
            `${src.pathOf(id)} is a ${KIND_NAME[src.ftype[id]!]} in ${describeAt(src, id)} but a ${KIND_NAME[out.ftype[d]!]} in ${describeAt(out, d)}: a path cannot be a directory in one service and not in another`,
            f.file === undefined ? { line: src.line[id]! } : { file: f.file, line: src.line[id]! },
          )
        }
        if (!srcDir || (src.flags[id]! & FLAG_EXPLICIT) !== 0) out.copyAttrs(d, src, id, si)
      }
      map[id] = d
    }
  })
  return out
}
