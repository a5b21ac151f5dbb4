/**
 * The kind of file an `lstat` or `fstat` found, and how messages name it: one classification
 * for publish's walk, its hashing workers and directory sources.
 */
import type * as fs from 'node:fs'

/** A kind of file, as flists have them (one per `ftype`). */
export type FileKind = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chardev' | 'blockdev'

/** How messages name each kind. */
const KIND_WORDS: Readonly<Record<FileKind, string>> = {
  file: 'regular file',
  dir: 'directory',
  symlink: 'symbolic link',
  fifo: 'fifo',
  socket: 'socket',
  chardev: 'character device',
  blockdev: 'block device',
}

/** The kind of file `st` describes; undefined for one Linux does not have. */
export function fileKindOf(st: fs.Stats | fs.BigIntStats): FileKind | undefined {
  if (st.isFile()) return 'file'
  if (st.isDirectory()) return 'dir'
  if (st.isSymbolicLink()) return 'symlink'
  if (st.isFIFO()) return 'fifo'
  if (st.isSocket()) return 'socket'
  if (st.isCharacterDevice()) return 'chardev'
  if (st.isBlockDevice()) return 'blockdev'
  return undefined
}

/** `st`'s kind in words (`fifo`, `directory`), for messages. */
export function kindWords(st: fs.Stats | fs.BigIntStats): string {
  const kind = fileKindOf(st)
  return kind === undefined ? 'file of unknown type' : KIND_WORDS[kind]
}
