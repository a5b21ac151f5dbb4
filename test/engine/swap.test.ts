// Table swaps (what a reload does): open files keep their bytes, new opens see new content,
// removed names go and added ones appear at once despite the kernel's long cache timeouts.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fixtureFetcher, mountEngine, tmpdir } from '../helpers/mount'
import { md5, tableFor, type GenEntry } from '../helpers/tree'

t.test('a swap while a file is held open', async (t) => {
  const dir = tmpdir(t)
  const blobs = path.join(dir, 'blobs')
  fs.mkdirSync(blobs)
  const file = (p: string, text: string, perms = 0o644): GenEntry => {
    const content = Buffer.from(text)
    fs.writeFileSync(path.join(blobs, md5(content)), content)
    return { path: p, kind: 'file', perms, size: content.length, md5: md5(content), mtime: 1_700_000_000, content }
  }
  const v1 = [file('/etc/app.conf', 'version one\n'), file('/bin/old', 'removed later\n'), file('/keep', 'kept\n')]
  const v2 = [file('/etc/app.conf', 'version two, longer\n'), file('/bin/new', 'added\n'), file('/keep', 'kept\n', 0o600)]
  const cacheDir = path.join(dir, 'cache')
  const mnt = path.join(dir, 'mnt')
  const engine = await mountEngine(t, {
    mountpoint: mnt,
    cacheDir,
    table: tableFor(v1),
    fetcher: fixtureFetcher({ cacheDir, mode: 'copy', sourceDir: blobs }),
  })

  const conf = path.join(mnt, 'etc/app.conf')
  const held = fs.openSync(conf, 'r')
  t.teardown(() => fs.closeSync(held))
  const buf = Buffer.alloc(64)
  t.equal(buf.toString('utf8', 0, fs.readSync(held, buf, 0, 64, 0)), 'version one\n')
  t.throws(() => fs.statSync(path.join(mnt, 'bin/new')), { code: 'ENOENT' }, 'not there yet (and cached as absent)')
  t.same(fs.readdirSync(path.join(mnt, 'bin')), ['old'])
  t.equal(fs.statSync(path.join(mnt, 'keep')).mode & 0o777, 0o644)

  const result = engine.swap(tableFor(v2))
  t.ok(result.invalidatedEntries > 0, 'the kernel was told what changed')

  t.equal(buf.toString('utf8', 0, fs.readSync(held, buf, 0, 64, 0)), 'version one\n', 'the open file keeps its bytes')
  t.equal(fs.readFileSync(conf, 'utf8'), 'version two, longer\n', 'a new open sees the new content')
  t.throws(() => fs.statSync(path.join(mnt, 'bin/old')), { code: 'ENOENT' }, 'a removed name is gone at once')
  t.equal(fs.readFileSync(path.join(mnt, 'bin/new'), 'utf8'), 'added\n', 'an added name appears at once')
  t.same(fs.readdirSync(path.join(mnt, 'bin')), ['new'], 'listings are fresh')
  t.equal(fs.statSync(path.join(mnt, 'keep')).mode & 0o777, 0o600, 'changed attributes are fresh')
  t.equal(engine.stats().retiredTables, 1, 'the old table lives while the kernel holds its inode')

  // Swapping back and forth must keep inode numbers stable for unchanged entries.
  const keepIno = fs.statSync(path.join(mnt, 'keep')).ino
  engine.swap(tableFor(v1))
  t.equal(fs.statSync(path.join(mnt, 'keep')).ino, keepIno, 'an unchanged path keeps its inode number')
})
