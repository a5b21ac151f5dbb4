// What the native side relies on in every table (docs/design.md), as a list of violations.
import type { TableEntry } from '../../lib/table'

const S_IFMT = 0o170000
const S_IFDIR = 0o040000

/** Every broken invariant of a decoded table; empty when it is sound. */
export function tableViolations(entries: TableEntry[]): string[] {
  const bad: string[] = []
  const root = entries[0]
  if (!root) return ['no root']
  if (root.ino !== 1n || root.name !== '' || root.parent !== 0 || (root.mode & S_IFMT) !== S_IFDIR) bad.push('root is not entry 0 with ino 1, no name, a directory')
  const inos = new Set<bigint>()
  const depth: number[] = [0]
  const childrenOf = new Map<number, number[]>()
  for (const e of entries) {
    if (inos.has(e.ino)) bad.push(`${e.path}: ino ${e.ino} used twice`)
    inos.add(e.ino)
    if (e.index === 0) continue
    if (e.ino === 0n || e.ino === 1n) bad.push(`${e.path}: ino ${e.ino}`)
    if (e.name === '' || e.name.includes('/') || e.name.includes('\0') || e.name === '.' || e.name === '..') bad.push(`${e.path}: bad name`)
    if (e.parent >= e.index) bad.push(`${e.path}: parent ${e.parent} not before ${e.index}`)
    if ((entries[e.parent]!.mode & S_IFMT) !== S_IFDIR) bad.push(`${e.path}: parent is not a directory`)
    depth[e.index] = depth[e.parent]! + 1
    if (depth[e.index]! < depth[e.index - 1]!) bad.push(`${e.path}: not breadth first`)
    const list = childrenOf.get(e.parent) ?? []
    list.push(e.index)
    childrenOf.set(e.parent, list)
  }
  for (const e of entries) {
    const kids = childrenOf.get(e.index) ?? []
    if (kids.length !== e.childCount) bad.push(`${e.path}: childCount ${e.childCount}, has ${kids.length}`)
    if (kids.length === 0) {
      if (e.firstChild !== 0) bad.push(`${e.path}: firstChild ${e.firstChild} without children`)
      continue
    }
    // Contiguous, starting at firstChild, strictly sorted by name bytes.
    kids.forEach((k, i) => {
      if (k !== e.firstChild + i) bad.push(`${e.path}: children not contiguous from ${e.firstChild}`)
      if (i > 0 && Buffer.compare(Buffer.from(entries[kids[i - 1]!]!.name), Buffer.from(entries[k]!.name)) >= 0) {
        bad.push(`${e.path}: children not sorted by bytes at ${entries[k]!.name}`)
      }
    })
  }
  return bad
}
