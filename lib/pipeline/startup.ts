/**
 * Recorded start-up sets on a mount: which blobs of the services' start-up lists (lib/startup.ts)
 * a mount fetches. On the main thread, at mount and with each new tree, each list is checked
 * ({@link startupValidator}: its signature on a signed service, then its lines) and the lists are
 * matched against the merged tree ({@link startupSet}); the set goes to the miss worker, where the
 * speculator (./speculate.ts) fetches it behind the misses. Only blobs the tree names as regular
 * files (of 1 byte or more, not read by chunks) are kept, at the tree's size: a list can make a
 * node fetch blobs of the tree it serves, and nothing else.
 */
import { FType, type FlistTree } from '../flist'
import type { Logger } from '../log'
import { verifyStartup, type TrustedKey } from '../sign'
import { parseStartupList } from '../startup'
import type { ValidateStartup } from './flists'

/** The blobs a mount fetches for its start-up lists, in list order (structured-cloneable). */
export interface StartupSet {
  /** Lower-case hex. */
  md5: string[]
  /** The size the tree gives each. */
  size: number[]
  /** Blobs the lists name (each once). */
  listed: number
  /** Of those, blobs the tree does not name as a regular file of 1 byte or more, or reads by chunks. */
  dropped: number
}

/** No start-up set: what a mount whose services have no list fetches. */
export const NO_STARTUP: StartupSet = { md5: [], size: [], listed: 0, dropped: 0 }

/**
 * The `validate` of a service's start-up list: with trusted keys its signature first (a service
 * that is signed takes no list its keys did not sign), then its lines. A list refused is logged
 * once (a warning naming the service, where it came from and why) and not used: a start-up list
 * only ever saves time, so a bad one costs the mount nothing else.
 */
export function startupValidator(keys: TrustedKey[], id: string, log: Logger): ValidateStartup<string[]> {
  return (data, signature, source) => {
    try {
      if (keys.length > 0) verifyStartup(data, signature, keys, { id, source })
      return parseStartupList(data, `${id}.startup from ${source}`).map((e) => e.md5)
    } catch (err) {
      log.warn({ id, source }, `${(err as Error).message}; the start-up list is ignored`)
      return undefined
    }
  }
}

/**
 * The start-up set of a mount: the blobs of `lists` (one per service, in config order; a blob
 * listed twice keeps its first place) that `tree` names, each with the tree's size. One pass over
 * the tree's files, comparing 4 bytes of each MD5 before anything else.
 */
export function startupSet(tree: FlistTree, lists: readonly (readonly string[])[]): StartupSet {
  const listed = [...new Set(lists.flat())]
  if (listed.length === 0) return NO_STARTUP
  const byWord = new Map<number, string[]>()
  for (const md5 of listed) {
    const w = Buffer.from(md5, 'hex').readUInt32LE(0)
    const l = byWord.get(w)
    if (l) l.push(md5)
    else byWord.set(w, [md5])
  }
  const sizes = new Map<string, number>()
  const md5s = Buffer.from(tree.md5.buffer, tree.md5.byteOffset, tree.md5.byteLength)
  for (let id = 1; id < tree.count; id++) {
    if (tree.ftype[id] !== FType.file) continue
    const candidates = byWord.get(md5s.readUInt32LE(id * 16))
    if (!candidates) continue
    const md5 = md5s.toString('hex', id * 16, id * 16 + 16)
    const size = tree.size[id]!
    if (candidates.includes(md5) && size > 0 && tree.chunksOf(id) === undefined) sizes.set(md5, size)
  }
  const md5: string[] = []
  const size: number[] = []
  for (const m of listed) {
    const s = sizes.get(m)
    if (s === undefined) continue
    md5.push(m)
    size.push(s)
  }
  return { md5, size, listed: listed.length, dropped: listed.length - md5.length }
}
