/**
 * Flists: the metadata of a service, one entry a line, in two shapes. `parse.ts` reads one into a
 * tree (`tree.ts`), `merge.ts` merges the trees of a mount's services, `format.ts` writes a line
 * (for publish). This file only gathers what the rest of the package uses.
 */
export { EMPTY_MD5 } from '../blob'
export { MAX_NAME_BYTES, MAX_PATH_BYTES } from '../paths'
export { formatFlistLine, type FlistLineInput } from './format'
export { mergeServices } from './merge'
export { parseFlist, type ParsedFlist, type ParseFlistOptions } from './parse'
export { FType, FlistTree, type FlistEntry } from './tree'
