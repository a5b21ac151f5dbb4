/**
 * How a blob is named: by the MD5 of its content, and under any root (a store's `files/`, a grid
 * cache, the local cache) at `<h0>/<h1>/<md5>`, `h0` and `h1` its first two hex digits.
 */
import fs from 'node:fs'
import path from 'node:path'
import { AysfsError } from './errors'

/** The MD5 of empty content: a zero-size file never needs a source. */
export const EMPTY_MD5 = 'd41d8cd98f00b204e9800998ecf8427e'

/** A blob's file name: 32 lower-case hex digits. */
export const BLOB_NAME = /^[0-9a-f]{32}$/

/** Whether `s` is an MD5 as flists and callers may write it: 32 hex digits, either case. */
export function isMd5(s: unknown): s is string {
  return typeof s === 'string' && /^[0-9a-fA-F]{32}$/.test(s)
}

/** `<h0>/<h1>/<md5>`: where the blob sits under a root. */
export function blobRel(md5: string): string {
  return `${md5[0]}/${md5[1]}/${md5}`
}

/**
 * Whether `file` is a blob of `size` bytes in place: a regular file of that size, by `lstat`. A
 * link at a blob's name is not the blob, whatever it points to (a file of the right size
 * elsewhere, in or out of the store), and neither is anything else that is not a regular file:
 * `publish` then writes the blob as it writes any other (a temp file renamed over the name, which
 * replaces the link itself and never follows it).
 */
export function isBlobInPlace(file: string, size: number): boolean {
  const st = fs.lstatSync(file, { throwIfNoEntry: false })
  return st !== undefined && st.isFile() && st.size === size
}

/**
 * Makes the directories a blob's file `dest` (`<root>/files/<h0>/<h1>/<md5>`) goes in: `files`,
 * `<h0>`, `<h1>`, each a real directory, never followed through a link. A link (or anything but a
 * directory) at one of them is refused, with its path: a blob written through it would land
 * outside the store, wherever the link points. (The root itself may be a link: the operator's.)
 *
 * @throws AysfsError `ENOTDIR` naming the path; the fs error for anything else.
 */
export function makeBlobDirs(dest: string): void {
  const h1 = path.dirname(dest)
  const h0 = path.dirname(h1)
  const files = path.dirname(h0)
  fs.mkdirSync(path.dirname(files), { recursive: true })
  for (const d of [files, h0, h1]) {
    let st = fs.lstatSync(d, { throwIfNoEntry: false })
    if (st === undefined) {
      try {
        fs.mkdirSync(d)
        continue
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        st = fs.lstatSync(d) // made meanwhile by another writer: look at what it is
      }
    }
    if (!st.isDirectory()) {
      const what = st.isSymbolicLink() ? 'a symbolic link' : 'not a directory'
      throw new AysfsError('ENOTDIR', `${d} is ${what}: no blob is written through it (a link may stand for the store's root, not for a directory inside it)`)
    }
  }
}
