// Temp files that nobody can plant: `publish` writes into a store directory that others may be able
// to write too, so a temp file gets a random name and is created exclusively without following a
// link (a name someone guessed and linked elsewhere fails the open; it is never written through).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants
/** Created here or not at all: `O_EXCL` never opens what is there, `O_NOFOLLOW` says so twice. */
const CREATE_FLAGS = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW

/** A temp file {@link createTempFile} made: its path and an fd open for writing. */
export interface TempFile {
  path: string
  fd: number
}

/**
 * Creates a new file in `dir` for the content of `dir/<name>`: `.<name>.<16 random hex>.tmp`,
 * opened `O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW` with `mode` (less the umask). A name taken
 * already is never opened: a few new names are tried, then the `EEXIST` is thrown.
 * @throws the fs error of the open (`EEXIST`, `EACCES`, `ENOSPC`, …).
 */
export function createTempFile(dir: string, name: string, mode: number): TempFile {
  for (let attempt = 0; ; attempt++) {
    const file = path.join(dir, `.${name}.${crypto.randomBytes(8).toString('hex')}.tmp`)
    try {
      return { path: file, fd: fs.openSync(file, CREATE_FLAGS, mode) }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw err
    }
  }
}

/** Writes all of `data` to `fd` (through short writes). */
export function writeAll(fd: number, data: Buffer): void {
  let off = 0
  while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off)
}
