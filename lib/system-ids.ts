/**
 * Users and groups of this machine by name and by id, from `/etc/passwd` and `/etc/group`, read
 * synchronously (this also runs where libuv's threadpool must not be used) once per process.
 * Names known only to NSS services (LDAP…) are not in them: flists map such names to the mounting
 * user, and publish writes the number.
 */
import { readFileSync } from 'node:fs'
import { forbiddenCharIn } from './paths'

/** Both directions of one file. */
export interface IdMaps {
  /** Name to id; the first line for a name wins, as in getpwnam. */
  byName: ReadonlyMap<string, number>
  /** Id to name; the first line for an id wins, as in getpwuid. Names a flist cannot hold (a
   * `|`, CR or LF in them) are left out. */
  byId: ReadonlyMap<number, string>
}

let cached: { users: IdMaps; groups: IdMaps } | undefined

function readIdFile(file: string): IdMaps {
  const byName = new Map<string, number>()
  const byId = new Map<number, string>()
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return { byName, byId } // no file (a minimal container): every name is unknown
  }
  for (const line of text.split('\n')) {
    const f = line.split(':')
    const name = f[0]!
    if (f.length < 3 || name === '' || name.startsWith('#')) continue
    const id = Number(f[2])
    if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) continue
    if (!byName.has(name)) byName.set(name, id)
    if (!byId.has(id) && forbiddenCharIn(name) === undefined) byId.set(id, name)
  }
  return { byName, byId }
}

/** The users (`/etc/passwd`) and groups (`/etc/group`) of this machine. */
export function systemIds(): { users: IdMaps; groups: IdMaps } {
  cached ??= { users: readIdFile('/etc/passwd'), groups: readIdFile('/etc/group') }
  return cached
}
