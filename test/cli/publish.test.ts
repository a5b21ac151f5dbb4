// `aysfs-native publish`: a real directory tree (every kind of entry) published into a store,
// served by nginx, mounted by the CLI and compared byte for byte; reruns; what it refuses.
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { parseFlist } from '../../lib/flist'
import { loadTrustedKeys, verifyFlist } from '../../lib/sign'
import { tmpdir } from '../helpers/mount'
import { startNginx } from '../helpers/nginx'
import { compareTree, generateTree, type GenEntry } from '../helpers/tree'
import { run, serveCli, writeConfig } from '../helpers/cli'

const PREFIX = '/opt/jumpscale7'
const root = process.getuid?.() === 0

/** Creates `entries` below `dir` as real files, with their modes and mtimes. */
function materialise(entries: GenEntry[], dir: string): GenEntry[] {
  const made: GenEntry[] = []
  for (const e of entries) {
    const p = path.join(dir, e.path)
    switch (e.kind) {
      case 'dir':
        fs.mkdirSync(p)
        break
      case 'file':
        fs.writeFileSync(p, e.content!)
        break
      case 'symlink':
        fs.symlinkSync(e.target!, p)
        break
      case 'fifo':
        execFileSync('mkfifo', [p])
        break
      case 'socket':
        // A socket file outlives a process killed while listening on it.
        spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => process.kill(process.pid, 'SIGKILL'))`])
        break
      case 'chr':
      case 'blk':
        if (!root) continue // mknod needs root
        execFileSync('mknod', [p, e.kind === 'chr' ? 'c' : 'b', String(e.major), String(e.minor)])
        break
    }
    if (e.kind !== 'symlink') fs.chmodSync(p, e.perms)
    made.push(e)
  }
  // Times last, children before parents: creating an entry changes its directory's mtime.
  for (const e of [...made].reverse()) fs.lutimesSync(path.join(dir, e.path), e.mtime, e.mtime)
  return made
}

t.test('extended and seed publishes mount back byte for byte; reruns store nothing twice', async (t) => {
  const dir = tmpdir(t, 'aysfs-pub-')
  const src = path.join(dir, 'src')
  fs.mkdirSync(src)
  // Directories 0700 and the like are fine as root; a user could not read them back to publish.
  const entries = materialise(
    generateTree({ entries: 1500, seed: 5, bigFiles: 1 }).map((e) => (root || e.kind !== 'dir' ? e : { ...e, perms: e.perms | 0o700 })),
    src,
  )
  fs.chmodSync(src, 0o755)
  fs.utimesSync(src, 1_650_000_000, 1_650_000_000)
  const store = path.join(dir, 'store')

  // Extended, to a file:// URL.
  const r = await run(['publish', src, '--id', 'full__svc', '--store', `file://${store}`, '--prefix', PREFIX])
  t.equal(r.code, 0, r.stderr)
  const files = entries.filter((e) => e.kind === 'file')
  const blobs = new Set(files.filter((e) => e.size > 0).map((e) => e.md5))
  t.match(r.stdout, `published full__svc (extended, prefix ${PREFIX}) to ${store}/md/full__svc.flist`)
  t.match(r.stdout, `${files.length} files`)
  t.match(r.stdout, `${blobs.size} distinct contents: ${blobs.size} written`)
  t.match(r.stderr, /publishing: \d+\/\d+ files/, 'plain progress lines when stderr is not a TTY')
  t.notMatch(r.stderr, /\(node:\d+\) Warning/, 'no warning from Node (a file is read and closed by the worker that opened it)')
  const stored = (): string[] => execFileSync('find', [path.join(store, 'files'), '-type', 'f'], { encoding: 'utf8' }).trim().split('\n').sort()
  t.same(stored(), [...blobs].map((m) => path.join(store, 'files', m[0]!, m[1]!, m)).sort(), 'one file per distinct content, nothing else')
  const flist = fs.readFileSync(path.join(store, 'md', 'full__svc.flist'))
  t.equal(parseFlist(flist, { name: 'full__svc', prefix: PREFIX }).entries, entries.length, 'every entry has a line')

  // A rerun changes nothing.
  const mtimes = stored().map((f) => fs.statSync(f).mtimeMs)
  const again = await run(['publish', src, '--id', 'full__svc', '--store', store, '--prefix', PREFIX])
  t.equal(again.code, 0, again.stderr)
  t.match(again.stdout, '(unchanged)')
  t.match(again.stdout, `0 written (0 B), ${blobs.size} already in the store`)
  t.same(stored().map((f) => fs.statSync(f).mtimeMs), mtimes, 'no blob rewritten')
  t.ok(fs.readFileSync(path.join(store, 'md', 'full__svc.flist')).equals(flist), 'the same flist')

  // Seed: regular files only; the rest is counted.
  const seed = await run(['publish', src, '--id', 'seed__svc', '--store', store, '--prefix', PREFIX, '--format', 'seed'])
  t.equal(seed.code, 0, seed.stderr)
  t.match(seed.stdout, `0 written (0 B), ${blobs.size} already in the store`, 'the same contents: nothing new to store')
  const symlinks = entries.filter((e) => e.kind === 'symlink').length
  t.match(seed.stdout, new RegExp(`skipped \\d+ entries the seed format cannot hold: .*${symlinks} symlinks`))
  const seedText = fs.readFileSync(path.join(store, 'md', 'seed__svc.flist'), 'utf8')
  t.equal(seedText.trim().split('\n').length, files.length, 'one line per regular file')
  t.ok(seedText.split('\n').every((l) => l === '' || l.split('|').length === 3), 'all 3-field lines')

  // Served by nginx, mounted by the CLI.
  const nginx = await startNginx({ store })
  t.teardown(() => nginx.stop())
  const mntFull = path.join(dir, 'mnt-full')
  const cfgFull = writeConfig(path.join(dir, 'full.toml'), { cache: path.join(dir, 'cache'), prefix: PREFIX, stores: [`${nginx.url}/store`], ays: ['full__svc'], main: 'suid = true\ndev = true' })
  const full = await serveCli(t, mntFull, cfgFull)
  t.same(compareTree(entries, mntFull, true), [], 'extended: types, modes, sizes, mtimes, targets, devices and bytes match the source')
  const rootSt = fs.statSync(mntFull)
  t.equal(rootSt.mode & 0o7777, 0o755, 'the root directory has the published directory\'s mode')
  t.equal(Math.floor(rootSt.mtimeMs / 1000), 1_650_000_000, 'and its mtime')

  const mntSeed = path.join(dir, 'mnt-seed')
  const cfgSeed = writeConfig(path.join(dir, 'seed.toml'), { cache: path.join(dir, 'cache'), prefix: PREFIX, stores: [`${nginx.url}/store`], ays: ['seed__svc'] })
  const seedMount = await serveCli(t, mntSeed, cfgSeed)
  for (const e of files) {
    const p = path.join(mntSeed, e.path)
    const st = fs.statSync(p)
    if ((st.mode & 0o7777) !== 0o555 || !fs.readFileSync(p).equals(e.content!)) {
      t.fail(`seed: ${e.path} differs`)
      break
    }
  }
  t.pass('seed: every regular file reads back byte for byte, mode 0555')
  t.notOk(fs.existsSync(path.join(mntSeed, entries.find((e) => e.kind === 'symlink')!.path)), 'seed: no symlinks')

  full.kill('SIGINT')
  seedMount.kill('SIGINT')
  t.equal((await full.exited).code, 0)
  t.equal((await seedMount.exited).code, 0)
})

t.test('a changed tree: new blobs only, the flist replaced; the store may live inside the tree', async (t) => {
  const dir = tmpdir(t, 'aysfs-pub-')
  fs.mkdirSync(path.join(dir, 'etc'))
  fs.writeFileSync(path.join(dir, 'etc', 'a.conf'), 'a\n')
  fs.writeFileSync(path.join(dir, 'etc', 'b.conf'), 'b\n')
  let r = await run(['publish', '.', '--id', 'svc', '--store', 'store'], { cwd: dir })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, `prefix ${dir})`, 'the prefix defaults to the directory\'s absolute path')
  t.match(r.stdout, '2 distinct contents: 2 written')
  fs.writeFileSync(path.join(dir, 'etc', 'b.conf'), 'b, changed\n')
  fs.writeFileSync(path.join(dir, 'etc', 'c.conf'), 'a\n')
  r = await run(['publish', '.', '--id', 'svc', '--store', 'store'], { cwd: dir })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, '3 files')
  t.match(r.stdout, '2 distinct contents: 1 written')
  const text = fs.readFileSync(path.join(dir, 'store', 'md', 'svc.flist'), 'utf8')
  t.notMatch(text, /\/store\//, 'the store was not published into itself')
  t.match(text, `${dir}/etc/c.conf|`)
  t.same(fs.readdirSync(path.join(dir, 'store', 'md')), ['svc.flist'], 'no temp file left')
})

t.test('names a flist cannot hold are refused, each named; nothing is written', async (t) => {
  const dir = tmpdir(t, 'aysfs-pub-')
  const src = path.join(dir, 'src')
  fs.mkdirSync(path.join(src, 'ok'), { recursive: true })
  fs.writeFileSync(path.join(src, 'ok', 'fine'), 'x')
  fs.writeFileSync(path.join(src, 'a|b'), 'x')
  fs.writeFileSync(path.join(src, 'ok', 'line\nfeed'), 'x')
  const r = await run(['publish', src, '--id', 'svc', '--store', path.join(dir, 'store')])
  t.equal(r.code, 2)
  t.match(r.stderr, 'cannot publish 2 path(s)')
  t.match(r.stderr, `${JSON.stringify(path.join(src, 'a|b'))}: its name contains a "|"`)
  t.match(r.stderr, `${JSON.stringify(path.join(src, 'ok', 'line\nfeed'))}: its name contains a line feed (LF)`)
  t.notOk(fs.existsSync(path.join(dir, 'store')), 'no store written')
})

t.test('--sign writes a signature that verifies against the public key', async (t) => {
  const dir = tmpdir(t, 'aysfs-pub-')
  const src = path.join(dir, 'src')
  fs.mkdirSync(src)
  fs.writeFileSync(path.join(src, 'f'), 'signed content\n')
  const k = await run(['keygen', '--out', path.join(dir, 'keys')])
  t.equal(k.code, 0, k.stderr)
  const store = path.join(dir, 'store')
  let r = await run(['publish', src, '--id', 'svc', '--store', store, '--sign', path.join(dir, 'keys', 'aysfs.key')])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, `signature: ${store}/md/svc.flist.sig`)
  const data = fs.readFileSync(path.join(store, 'md', 'svc.flist'))
  const sig = fs.readFileSync(path.join(store, 'md', 'svc.flist.sig'))
  t.doesNotThrow(() => verifyFlist(data, sig, loadTrustedKeys([path.join(dir, 'keys', 'aysfs.pub')]), { id: 'svc', source: 'test' }))

  r = await run(['publish', src, '--id', 'svc', '--store', store, '--sign', path.join(dir, 'keys', 'aysfs.pub')])
  t.equal(r.code, 2, 'signing with the public key is a usage mistake')
  t.match(r.stderr, /is a public key; sign with the private key/)

  // An unsigned publish over a signed flist would leave a signature that no longer matches, or
  // none: it is refused unless --unsign says so, and then the summary says it.
  fs.writeFileSync(path.join(src, 'g'), 'more\n')
  const before = fs.readFileSync(path.join(store, 'md', 'svc.flist'))
  r = await run(['publish', src, '--id', 'svc', '--store', store])
  t.equal(r.code, 2, 'refused without --unsign')
  t.match(r.stderr, `${store}/md/svc.flist.sig: the flist in the store is signed; publishing without --sign would remove its signature, and nodes with main.trusted_keys would refuse svc: sign it (--sign KEY), or pass --unsign to remove the signature`)
  t.ok(fs.readFileSync(path.join(store, 'md', 'svc.flist')).equals(before), 'the flist is untouched')
  t.ok(fs.existsSync(path.join(store, 'md', 'svc.flist.sig')), 'and so is its signature')
  r = await run(['publish', src, '--id', 'svc', '--store', store, '--unsign'])
  t.equal(r.code, 0, r.stderr)
  t.notOk(fs.existsSync(path.join(store, 'md', 'svc.flist.sig')), 'stale signature removed')
  t.match(r.stdout, `  signature: removed ${store}/md/svc.flist.sig (--unsign): nodes with main.trusted_keys refuse svc from now on`)
  r = await run(['publish', src, '--id', 'svc', '--store', store, '--unsign'])
  t.equal(r.code, 0, '--unsign with no signature to remove is fine')
  t.notMatch(r.stdout, /signature/)
  r = await run(['publish', src, '--id', 'svc', '--store', store, '--unsign', '--sign', path.join(dir, 'keys', 'aysfs.key')])
  t.equal(r.code, 2)
  t.match(r.stderr, '--sign and --unsign: give one of them')
})

t.test('--sign and the store are checked before any file is hashed or stored', async (t) => {
  const dir = tmpdir(t, 'aysfs-pub-')
  fs.chmodSync(dir, 0o755)
  const src = path.join(dir, 'src')
  fs.mkdirSync(src, { mode: 0o755 })
  fs.writeFileSync(path.join(src, 'f'), 'content\n', { mode: 0o644 })
  t.equal((await run(['keygen', '--out', path.join(dir, 'keys')])).code, 0)
  // The test hook runs after the walk, before the first file is opened: it leaves a mark if the
  // work started.
  const marks = path.join(dir, 'marks')
  fs.mkdirSync(marks, { mode: 0o777 })
  fs.chmodSync(marks, 0o777)
  const hook = path.join(dir, 'hook.js')
  fs.writeFileSync(hook, `module.exports = () => require('fs').writeFileSync(${JSON.stringify(path.join(marks, 'hashed'))}, '')\n`, { mode: 0o644 })
  const env = { AYSFS_PUBLISH_TEST_HOOK: hook }
  const started = (): boolean => fs.existsSync(path.join(marks, 'hashed'))
  const store = path.join(dir, 'store')

  let r = await run(['publish', src, '--id', 'svc', '--store', store, '--sign', path.join(dir, 'keys', 'aysfs.pub')], { env })
  t.equal(r.code, 2, 'the public key: a usage mistake')
  t.match(r.stderr, /is a public key; sign with the private key/)
  t.notOk(started(), 'nothing was hashed')
  t.notOk(fs.existsSync(store), 'nothing was written')

  r = await run(['publish', src, '--id', 'svc', '--store', store, '--sign', path.join(dir, 'keys', 'missing.key')], { env })
  t.equal(r.code, 2, 'a missing key')
  t.match(r.stderr, `signing key ${path.join(dir, 'keys', 'missing.key')}: cannot read: no such file`)
  t.notOk(started(), 'nothing was hashed')
  t.notOk(fs.existsSync(store), 'nothing was written')

  // A store under a regular file cannot be written.
  fs.writeFileSync(path.join(dir, 'plain'), '')
  r = await run(['publish', src, '--id', 'svc', '--store', path.join(dir, 'plain', 'store')], { env })
  t.equal(r.code, 1)
  t.match(r.stderr, `store ${path.join(dir, 'plain', 'store')}: ${path.join(dir, 'plain')} is not a directory`)
  t.notOk(started(), 'nothing was hashed')

  // A store this user may not write (root's, published to as nobody).
  if (root) {
    fs.mkdirSync(store, { mode: 0o755 })
    const as = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, path.join(__dirname, '../../dist/lib/cli.js'), 'publish', src, '--id', 'svc', '--store', store], {
      encoding: 'utf8',
      env: { ...process.env, NODE_OPTIONS: '', ...env },
      cwd: '/',
    })
    t.equal(as.status, 1, as.stderr)
    t.match(as.stderr, `store ${store}: cannot write to ${store}: EACCES`)
    t.notOk(started(), 'nothing was hashed')
    t.same(fs.readdirSync(store), [], 'nothing was written')
  }
})
