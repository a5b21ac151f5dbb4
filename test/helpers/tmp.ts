// Temp directories for tests that clean up after themselves, unmounting anything left below
// them first (a test that failed half way through a mount). No engine here: tests that never
// mount use it too.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

type Test = { teardown(fn: () => unknown): void }

/** Mount points at or below `dir`, deepest first. */
export function mountsBelow(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[1])
    .filter((mp): mp is string => !!mp)
    .map((mp) => mp.replace(/\\040/g, ' '))
    .filter((mp) => mp === dir || mp.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length)
}

/** Lazily unmounts whatever is mounted at or below `dir` (a test that failed half way). */
export function clearMounts(dir: string): void {
  for (const mp of mountsBelow(dir)) {
    try {
      execFileSync('umount', ['-l', mp], { stdio: 'ignore' })
    } catch {
      // already gone
    }
  }
}

/**
 * A fresh temp directory, removed in teardown after anything mounted below it is cleared.
 *
 * unmount() waits about a second for blobs already handed to the committer (native threads)
 * to be in place; a commit slower than that (a loaded disk) lands after it, and a rename into a
 * directory being removed makes rmdir fail with ENOTEMPTY: the removal is retried then.
 */
export function tmpdir(t: Test, prefix = 'aysfs-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  t.teardown(() => {
    clearMounts(dir)
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 })
  })
  return dir
}

/**
 * A fresh {@link tmpdir} holding a tree to publish: `src/` with `files` (name → content), and
 * the path of `store/` (not created) to publish it to.
 */
export function publishDirs(t: Test, files: Record<string, string>, prefix?: string): { dir: string; src: string; store: string } {
  const dir = tmpdir(t, prefix)
  const src = path.join(dir, 'src')
  fs.mkdirSync(src)
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(src, name), content)
  return { dir, src, store: path.join(dir, 'store') }
}
