/**
 * Where things are in a local cache directory `C`:
 *
 *     C/<h0>/<h1>/<md5>     a blob, only ever renamed in once checked (read by the native side)
 *     C/md/<id>.flist       the last flist of a service fetched from a store (and its .sig)
 *     C/md/<id>.startup     the start-up list that came with it (and its .sig)
 *     C/tmp/                temp files: blobs being written, victims of the quota being freed
 *     C/bad/<md5>.<ms>      blobs `verify` found corrupt, kept for a look
 */
import * as path from 'node:path'
import { blobRel } from '../blob'

/** Kept flists, start-up lists and their signatures. */
export const KEPT_DIR = 'md'
/** Temp files (lib/local-cache/temp.ts names them). */
export const TMP_DIR = 'tmp'
/** Blobs `verify` moved aside. */
export const BAD_DIR = 'bad'

/** `C/<h0>/<h1>/<md5>`: where the local cache (and the native side) keeps a blob. */
export function blobPath(cacheDir: string, md5: string): string {
  return path.join(cacheDir, blobRel(md5))
}

/** `C/md/<id>.flist`: the copy of a service's flist a node remounts from without a store. */
export function keptFlistPath(cacheDir: string, id: string): string {
  return path.join(cacheDir, KEPT_DIR, `${id}.flist`)
}

/** `C/md/<id>.startup`: the copy of a service's start-up list, beside its flist's. */
export function keptStartupPath(cacheDir: string, id: string): string {
  return path.join(cacheDir, KEPT_DIR, `${id}.startup`)
}
