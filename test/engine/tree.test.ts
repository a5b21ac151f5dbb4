// A generated tree of >= 10,000 entries of every kind, compared entry by entry through a real
// mount, then walked again to prove the warm path never enters JavaScript.
import { execFileSync } from 'node:child_process'
import path from 'node:path'
import t from 'tap'
import { fixtureFetcher, mountEngine, tmpdir } from '../helpers/mount'
import { compareTree, generateTree, tableFor, writeFlatBlobs } from '../helpers/tree'

t.test('a 10,000-entry tree reads back exactly, and a second pass never enters JS', async (t) => {
  const dir = tmpdir(t)
  const entries = generateTree({ entries: 10_000, seed: 7, bigFiles: 3 })
  writeFlatBlobs(entries, path.join(dir, 'blobs'))
  const mnt = path.join(dir, 'mnt')
  const cacheDir = path.join(dir, 'cache')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor(entries),
    // Hard links, not copies: the engine reads the same bytes from the cache, without ~8,000 more
    // new inodes to write (seconds of kernel time).
    fetcher: fixtureFetcher({ cacheDir, mode: 'link', sourceDir: path.join(dir, 'blobs') }),
    suid: true,
    dev: true,
  })

  const kinds = new Set(entries.map((e) => e.kind))
  t.same([...kinds].sort(), ['blk', 'chr', 'dir', 'fifo', 'file', 'socket', 'symlink'], 'every kind is in the tree')
  t.ok(entries.some((e) => e.target?.includes('|')), 'a symlink target has a |')
  t.ok(entries.some((e) => e.perms & 0o4000), 'a setuid file')
  t.ok(entries.some((e) => e.kind === 'file' && e.size === 0), 'an empty file')

  t.same(compareTree(entries, mnt, true), [], 'first pass: every entry and every byte match')
  const blobs = new Set(entries.filter((e) => e.kind === 'file' && e.size > 0).map((e) => e.md5))
  const afterFirst = engine.stats()
  t.equal(afterFirst.missCalls, blobs.size, 'one fetch per distinct non-empty blob (dedupe)')
  t.equal(afterFirst.errors, 0, 'no errors')

  // find, ls -lR and stat(1) agree with the generator.
  const found = execFileSync('find', ['.', '-mindepth', '1'], { cwd: mnt, encoding: 'utf8', maxBuffer: 64 << 20 })
    .split('\n')
    .filter(Boolean)
    .map((p) => p.slice(1))
    .sort()
  t.same(found, entries.map((e) => e.path).sort(), 'find lists exactly the tree')
  const ls = execFileSync('ls', ['-lRn', '--time-style=+%s'], { cwd: mnt, encoding: 'utf8', maxBuffer: 64 << 20 })
  const lsEntries = ls.split('\n').filter((l) => /^[-dlcbps][-rwxsStT]{9}/.test(l))
  t.equal(lsEntries.length, entries.length, 'ls -lR shows every entry')
  const sample = entries.filter((_, i) => i % 997 === 0)
  const stat = execFileSync('stat', ['-c', '%a %s %Y %F', ...sample.map((e) => mnt + e.path)], { encoding: 'utf8' })
    .trim()
    .split('\n')
  sample.forEach((e, i) => {
    const [perms, size, mtime] = stat[i]!.split(' ')
    t.equal(`${perms} ${e.kind === 'file' ? size : ''} ${mtime}`, `${e.perms.toString(8)} ${e.kind === 'file' ? e.size : ''} ${e.mtime}`, `stat ${e.path}`)
  })

  const before = engine.stats()
  t.same(compareTree(entries, mnt, true), [], 'second pass: still identical')
  execFileSync('find', ['.', '-ls'], { cwd: mnt, stdio: 'ignore', maxBuffer: 64 << 20 })
  const after = engine.stats()
  t.equal(after.missCalls, before.missCalls, 'the second pass made no JS call')
  t.equal(after.misses, before.misses, 'and no read missed the cache')
})
