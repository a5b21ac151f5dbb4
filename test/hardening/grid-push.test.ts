// Pushes into a directory grid cache, which other nodes and users may write (it is shared by
// design): nothing below the grid cache's root is followed through a symlink, so a link planted
// at `G/h0` or `G/h0/h1` cannot redirect a write of ours outside it; the push fails (counted,
// logged) and the read it followed is served all the same. What a push creates takes the root's
// group and permission bits (files: its read bits), whatever our umask.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { DirSource } from '../../lib/sources/dir'
import type { SourceConfig } from '../../lib/config'
import { PREFIX, SERVICE, files, mountHere, readAsync, until, writeStore, type File } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'
import { md5hex, randomBytes } from '../helpers/store'

const USERS_GID = 100 // Debian's `users` group

const mode = (file: string): string => (fs.lstatSync(file).mode & 0o7777).toString(8).padStart(4, '0')

/** Every path below `dir` (files and directories), relative to it. */
function listAll(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true }).map(String).sort()
}

/** Blobs whose names start with distinct hex digits (their `h0`s all differ). */
function distinctH0(n: number, seed: number): File[] {
  const out: File[] = []
  const seen = new Set<string>()
  for (const f of files(64, 20_000, seed)) {
    if (seen.has(f.md5[0]!)) continue
    seen.add(f.md5[0]!)
    out.push({ ...f, path: `/f${out.length}` })
    if (out.length === n) return out
  }
  throw new Error('not enough distinct first digits')
}

function grid(root: string): DirSource {
  const cfg: SourceConfig = { url: root, headers: {}, push: true, key: 'cache[0]' }
  return new DirSource(cfg, 'cache')
}

t.test('a symlink planted at G/h0 or G/h0/h1: nothing is written outside G, the push fails and is counted, the read is served', async (t) => {
  const dir = tmpdir(t)
  const [viaH0, viaH1, plain] = distinctH0(3, 321)
  const store = path.join(dir, 'store')
  writeStore(store, [viaH0!, viaH1!, plain!])
  const g = path.join(dir, 'grid')
  const outside = path.join(dir, 'outside')
  fs.mkdirSync(g)
  fs.mkdirSync(outside)
  fs.symlinkSync(outside, path.join(g, viaH0!.md5[0]!))
  fs.mkdirSync(path.join(g, viaH1!.md5[0]!))
  fs.symlinkSync(outside, path.join(g, viaH1!.md5[0]!, viaH1!.md5[1]!))

  const cfg = {
    main: { cache: path.join(dir, 'cache'), prefix: PREFIX, timeout: '1s' },
    ays: [{ id: SERVICE }],
    cache: [{ url: g, push: true }],
    store: [{ url: store }],
  }
  const m = await mountHere(t, path.join(dir, 'mnt'), cfg)
  for (const f of [viaH0!, viaH1!, plain!]) {
    t.ok((await readAsync(path.join(m.mountpoint, f.path))).equals(f.data), `${f.path} is served`)
  }
  const gridStats = () => m.stats().pipeline?.sources.find((s) => s.key === 'cache[0]')
  t.ok(await until(() => (gridStats()?.pushes ?? 0) + (gridStats()?.pushErrors ?? 0) >= 3, 30_000), 'the three pushes ended')
  t.equal(gridStats()?.pushErrors, 2, 'the two pushes through a symlink failed and are counted')
  t.equal(gridStats()?.pushes, 1, 'the other one went through')
  t.same(listAll(outside), [], 'nothing was written outside the grid cache')
  const pushed = path.join(g, plain!.md5[0]!, plain!.md5[1]!, plain!.md5)
  t.ok(fs.readFileSync(pushed).equals(plain!.data), 'the plain push is in place')
  t.ok(fs.lstatSync(path.join(g, viaH0!.md5[0]!)).isSymbolicLink(), 'the planted links are left as they are')
  t.same(
    listAll(g).filter((p) => p.includes('.tmp')),
    [],
    'no temp file left in the grid cache',
  )
  // The engine still serves the blobs from its own cache.
  for (const f of [viaH0!, viaH1!]) {
    t.ok((await readAsync(path.join(m.mountpoint, f.path))).equals(f.data), `${f.path} reads again`)
  }
})

t.test('what a push creates takes the root group and permission bits, whatever the umask', async (t) => {
  const old = process.umask(0o077)
  t.teardown(() => void process.umask(old))
  const dir = tmpdir(t)
  const src = path.join(dir, 'blob')
  const data = randomBytes(300_000, 322)
  const md5 = md5hex(data)
  fs.writeFileSync(src, data)
  const rel = `${md5[0]}/${md5[1]}/${md5}`
  for (const [rootMode, dirMode, fileMode] of [
    [0o2770, '2770', '0640'],
    [0o755, '0755', '0644'],
    [0o700, '0700', '0600'],
  ] as const) {
    const g = path.join(dir, `grid-${rootMode.toString(8)}`)
    fs.mkdirSync(g)
    fs.chownSync(g, 0, USERS_GID)
    fs.chmodSync(g, rootMode)
    await grid(g).put(rel, src, data.length)
    const file = path.join(g, rel)
    t.ok(fs.readFileSync(file).equals(data), `root ${rootMode.toString(8)}: the blob is in place`)
    for (const d of [path.join(g, md5[0]!), path.join(g, md5[0]!, md5[1]!)]) {
      t.equal(mode(d), dirMode, `root ${rootMode.toString(8)}: ${path.relative(g, d)}/ is ${dirMode}`)
      t.equal(fs.statSync(d).gid, USERS_GID, `root ${rootMode.toString(8)}: ${path.relative(g, d)}/ has the root's group`)
    }
    t.equal(mode(file), fileMode, `root ${rootMode.toString(8)}: the file is ${fileMode}`)
    t.equal(fs.statSync(file).gid, USERS_GID, `root ${rootMode.toString(8)}: the file has the root's group`)
  }

  // Directories that exist keep what the operator gave them.
  const g = path.join(dir, 'grid-755')
  const h0 = path.join(g, 'f')
  fs.mkdirSync(h0, { mode: 0o750 })
  fs.chmodSync(h0, 0o750)
  const other = randomBytes(1000, 323)
  const otherSrc = path.join(dir, 'other')
  fs.writeFileSync(otherSrc, other)
  await grid(g).put(`f/0/${'f0'.padEnd(32, '0')}`, otherSrc, other.length)
  t.equal(mode(h0), '0750', 'an existing h0/ is left as it was')
  t.equal(mode(path.join(h0, '0')), '0755', 'a new h1/ under it takes the root bits')
})

t.test('push: links are never followed, neither in the grid cache nor as the source', async (t) => {
  const dir = tmpdir(t)
  const g = path.join(dir, 'grid')
  fs.mkdirSync(g)
  const data = randomBytes(70_000, 324)
  const md5 = md5hex(data)
  const rel = `${md5[0]}/${md5[1]}/${md5}`
  const src = path.join(dir, 'blob')
  fs.writeFileSync(src, data)
  const victim = path.join(dir, 'victim')
  fs.writeFileSync(victim, 'keep me')

  // The final name is a symlink: it is replaced by the blob, the file it points at untouched.
  fs.mkdirSync(path.join(g, md5[0]!, md5[1]!), { recursive: true })
  fs.symlinkSync(victim, path.join(g, rel))
  await grid(g).put(rel, src, data.length)
  t.notOk(fs.lstatSync(path.join(g, rel)).isSymbolicLink(), 'the link at the final name was replaced')
  t.ok(fs.readFileSync(path.join(g, rel)).equals(data), 'by the blob')
  t.equal(fs.readFileSync(victim, 'utf8'), 'keep me', 'what it pointed at is untouched')

  // A symlink at h1: the push fails with a clear fault.
  const other = randomBytes(5000, 325)
  const otherMd5 = md5hex(other)
  const otherSrc = path.join(dir, 'other')
  fs.writeFileSync(otherSrc, other)
  const outside = path.join(dir, 'outside')
  fs.mkdirSync(outside)
  fs.mkdirSync(path.join(g, otherMd5[0]!), { recursive: true })
  fs.rmSync(path.join(g, otherMd5[0]!, otherMd5[1]!), { recursive: true, force: true })
  fs.symlinkSync(outside, path.join(g, otherMd5[0]!, otherMd5[1]!))
  await t.rejects(grid(g).put(`${otherMd5[0]}/${otherMd5[1]}/${otherMd5}`, otherSrc, other.length), {
    name: 'SourceFault',
    kind: 'symlink',
    message: `${path.join(g, otherMd5[0]!, otherMd5[1]!)} is a symbolic link in the grid cache: not followed`,
  })
  t.same(listAll(outside), [], 'nothing written through it')

  // The source (a local-cache blob) as a symlink, or a FIFO: refused, nothing created.
  const g2 = path.join(dir, 'grid2')
  fs.mkdirSync(g2)
  const link = path.join(dir, 'link')
  fs.symlinkSync(src, link)
  await t.rejects(grid(g2).put(rel, link, data.length), { name: 'SourceFault', kind: 'symlink', message: `${link} is a symbolic link: not followed` })
  const fifo = path.join(dir, 'fifo')
  execFileSync('mkfifo', [fifo])
  await t.rejects(grid(g2).put(rel, fifo, data.length), { name: 'SourceFault', kind: 'not-a-file' }, 'a FIFO as the source fails at once')
  await t.rejects(grid(g2).put(rel, src, data.length + 1), { name: 'SourceFault', kind: 'not-a-file', message: /not a regular file of 70001 bytes/ })
  t.same(listAll(g2), [], 'nothing created for a refused source')

  // The root itself is the operator's: a root that is a symlink is followed.
  const g3 = path.join(dir, 'grid3')
  fs.symlinkSync(g2, g3)
  await grid(g3).put(rel, src, data.length)
  t.ok(fs.readFileSync(path.join(g2, rel)).equals(data), 'a root given as a symlink is used')
})
