// A service's tree written from short flist lines, for the unit tests of locality, guesses and
// start-up sets: one service `svc` at /opt/x, blobs named by numbers, no store and no mount.
import { mergeServices, parseFlist } from '../../lib/flist'
import { LocalityIndex, buildLocality } from '../../lib/pipeline/locality'

/** Number `n` as an MD5 (hex, zero-padded): an expectation reads `n` back once the zeros go. */
export const fakeMd5 = (n: number): string => n.toString(16).padStart(32, '0')

/** `path|md5|size` lines of `[path, n, size]` entries, the blob of each `fakeMd5(n)`. */
export function flistLines(entries: [string, number, number][]): string[] {
  return entries.map(([p, n, size]) => `${p}|${fakeMd5(n)}|${size}`)
}

/** The merged tree of flist `lines` (paths below the mount, without the /opt/x prefix). */
export function treeOf(lines: string[]): ReturnType<typeof mergeServices> {
  const text = lines.map((l) => `/opt/x${l}\n`).join('')
  return mergeServices([parseFlist(Buffer.from(text), { name: 'svc', prefix: '/opt/x' })])
}

/** The locality index of flist `lines`. */
export function localityOf(lines: string[]): LocalityIndex {
  return new LocalityIndex(buildLocality(treeOf(lines))!)
}
