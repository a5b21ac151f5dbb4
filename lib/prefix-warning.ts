/**
 * The warning for a service whose flist lies mostly (or wholly) outside the prefix: published
 * under one path (`publish` without `--prefix` defaults to the directory's own path) and mounted
 * with another, it would otherwise mount as an empty tree with nothing said.
 */
import type { ParsedFlist } from './flist'

/**
 * What to tell the operator when most of `parsed`'s lines (or all) are outside its prefix, naming
 * the service, the prefix and a path of the flist; `undefined` when most lines are under it.
 */
export function prefixWarning(parsed: ParsedFlist): string | undefined {
  const under = parsed.lines - parsed.ignored
  if (parsed.ignored === 0 || parsed.ignored <= under) return undefined
  const what = under === 0 ? `none of its ${parsed.lines} flist lines is` : `${parsed.ignored} of its ${parsed.lines} flist lines are not`
  return (
    `service ${parsed.name}: ${what} under the prefix ${parsed.prefix} (a line of the flist: ${parsed.firstIgnored ?? '?'}), ` +
    'so they are not served: set main.prefix (or mount at) the path the flist was published under, or publish it again with --prefix'
  )
}
