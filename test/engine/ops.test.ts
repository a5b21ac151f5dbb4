// The operations around reads: xattrs, statfs, and every write-type request refused.
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { loadBinding } from '../../lib/native'
import { fixtureFetcher, mountEngine, tmpdir } from '../helpers/mount'
import { md5, tableFor, type GenEntry } from '../helpers/tree'

t.test('xattrs, statfs and EROFS', async (t) => {
  const dir = tmpdir(t)
  const content = Buffer.from('#!/bin/sh\necho hi\n')
  const entries: GenEntry[] = [
    { path: '/bin/tool', kind: 'file', perms: 0o755, size: content.length, md5: md5(content), mtime: 1_700_000_000 },
    { path: '/bin/link', kind: 'symlink', perms: 0o777, size: 4, md5: '', mtime: 1_700_000_000, target: 'tool' },
  ]
  const cacheDir = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, { mountpoint: mnt, cacheDir, table: tableFor(entries), fetcher: fixtureFetcher({ cacheDir, mode: 'reject' }) })
  const tool = path.join(mnt, 'bin/tool')

  const getfattr = (name: string, file: string): string =>
    execFileSync('getfattr', ['--only-values', '-n', name, file], { encoding: 'utf8' })
  t.equal(getfattr('user.aysfs.hash', tool), md5(content), 'user.aysfs.hash on a regular file')
  t.match(execFileSync('getfattr', ['-d', '-m', '-', tool], { encoding: 'utf8' }), /user\.aysfs\.hash=/, 'listed')
  const status = JSON.parse(getfattr('user.aysfs.status', mnt)) as { version: number; engine: { entries: number } }
  t.equal(status.version, 1, 'user.aysfs.status on the root: a versioned document')
  t.equal(status.engine.entries, engine.stats().entries)
  // Both generated from the native list of counters (native/counters.h), in its order.
  const { statNames } = loadBinding()
  t.same(Object.keys(status.engine), ['ops', ...statNames.stats], 'the status document: the native list')
  t.same(Object.keys(engine.stats()), ['ops', ...statNames.stats, 'mounted'], 'stats(): the native list')
  t.same(Object.keys(engine.stats().ops), statNames.ops)
  t.not(spawnSync('getfattr', ['-n', 'user.other', tool]).status, 0, 'other names: no such attribute')

  t.equal(fs.readlinkSync(path.join(mnt, 'bin/link')), 'tool')
  const df = execFileSync('stat', ['-f', '-c', '%c %S', mnt], { encoding: 'utf8' }).trim().split(' ')
  t.equal(Number(df[0]), engine.stats().entries, 'statfs counts the entries as inodes')

  for (const [what, fn] of [
    ['write', () => fs.writeFileSync(tool, 'x')],
    ['create', () => fs.writeFileSync(path.join(mnt, 'new'), 'x')],
    ['mkdir', () => fs.mkdirSync(path.join(mnt, 'd'))],
    ['unlink', () => fs.unlinkSync(tool)],
    ['rename', () => fs.renameSync(tool, path.join(mnt, 'bin/t2'))],
    ['chmod', () => fs.chmodSync(tool, 0o777)],
    ['symlink', () => fs.symlinkSync('x', path.join(mnt, 'l2'))],
  ] as const) {
    t.throws(fn, { code: 'EROFS' }, `${what} is refused (read-only)`)
  }
  const setfattr = spawnSync('setfattr', ['-n', 'user.x', '-v', '1', tool], { encoding: 'utf8' })
  t.match(setfattr.stderr, /Read-only file system/, 'setxattr is refused (read-only)')
  t.same(fs.readdirSync(path.join(mnt, 'bin')).sort(), ['link', 'tool'], 'nothing changed')
})
