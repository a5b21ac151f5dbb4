// `aysfs-native record` and `publish --startup`: a command run against a fresh mount writes the
// blobs it read, in order, as a start-up list; publish stores it beside the flist (signed with
// --sign) and refuses one that names a blob the flist does not. The store counts every blob
// request: what the recording mount fetched is what the command read, and nothing else. The
// temporary cache goes on SIGTERM and Ctrl-C; one a SIGKILL left behind goes at the next record.
import { once } from 'node:events'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { loadTrustedKeys, verifyStartup } from '../../lib/sign'
import { formatStartupList } from '../../lib/startup'
import { isMounted, run, start } from '../helpers/cli'
import { startStore } from '../helpers/counting-store'
import { md5 } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'
import { until } from '../helpers/wait'

const PREFIX = '/opt/rec'
const ID = 'rec__svc'

/** A tree of small files: six of one kind in one directory (what speculation would guess), and a tool. */
function makeTree(dir: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>()
  for (let i = 0; i < 6; i++) files.set(`lib/m${i}.py`, Buffer.from(`module ${i}\n`.repeat(50 + i)))
  files.set('bin/tool', Buffer.from('#!/bin/sh\necho tool\n'))
  for (const [rel, data] of files) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true })
    fs.writeFileSync(path.join(dir, rel), data)
  }
  return files
}

function tmpEntries(): Set<string> {
  return new Set(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('aysfs-record-')))
}

t.test('record writes the blobs a command read, first read first; the mount fetched those and nothing else', async (t) => {
  // The config of a node: speculation on (the default), a cache of its own; record uses neither.
  const { dir, mnt, config, out, files, srv, nodeCache } = await recordSetup(t, { main: 'refresh = "1s"\n', ays: 'prefetch = true\n' })
  const before = tmpEntries()
  // Relative paths, from a working directory that is the mountpoint: the command sees the mount.
  const r = await run(['record', '--config', config, '--ays', ID, '--out', out, '--', 'sh', '-c', 'cat lib/m3.py bin/tool lib/m0.py lib/m3.py; exit 7'], { cwd: mnt })
  t.equal(r.code, 7, `the command's exit status: ${r.stderr}`)
  const want = ['lib/m3.py', 'bin/tool', 'lib/m0.py'].map((f) => md5(files.get(f)!))
  t.equal(r.stdout, [files.get('lib/m3.py'), files.get('bin/tool'), files.get('lib/m0.py'), files.get('lib/m3.py')].join(''), 'its output passed through')
  t.match(r.stderr, new RegExp(`recorded 3 blobs read by sh \\(which exited with status 7\\) to ${out.replace(/[.]/g, '\\.')}`))
  t.equal(fs.readFileSync(out, 'utf8'), `aysfs-native startup 1\n${want.join('\n')}\n`)
  t.same(srv.log.map((e) => e.md5), want, 'the store was asked for exactly those, in that order: no guess, no prefetch')
  t.notOk(isMounted(mnt), 'unmounted')
  t.notOk(fs.existsSync(nodeCache), "the node's cache untouched")
  t.same([...tmpEntries()].filter((n) => !before.has(n)), [], 'the temp cache removed')
  t.same(fs.readdirSync(dir).filter((n) => n.includes('.tmp')), [], 'no temp file left beside the list')

  // A command that cannot run: nothing written, nothing left mounted.
  fs.rmSync(out)
  const missing = await run(['record', '--config', config, '--ays', ID, '--out', out, '--', path.join(dir, 'no-such-command')])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /cannot run .*no-such-command: spawn .* ENOENT/)
  t.notOk(fs.existsSync(out))
  t.notOk(isMounted(mnt))
})

t.test('record refuses what it cannot do before it mounts', async (t) => {
  const dir = tmpdir(t)
  const config = path.join(dir, 'config.toml')
  fs.writeFileSync(config, `[main]\nprefix = "${PREFIX}"\n\n[[ays]]\nid = "${ID}"\n\n[[store]]\nurl = "${dir}/store"\n`)
  const noMount = await run(['record', '--config', config, '--ays', ID, '--out', path.join(dir, 'l'), '--', 'true'])
  t.equal(noMount.code, 2)
  t.match(noMount.stderr, /no mountpoint: pass --mount DIR, or set main\.mount/)
  const noDir = await run(['record', '--config', config, '--ays', ID, '--mount', dir, '--out', path.join(dir, 'nope', 'l'), '--', 'true'])
  t.equal(noDir.code, 2)
  t.match(noDir.stderr, /--out .*nope\/l: .*nope is not a directory/)
  const noCommand = await run(['record', '--config', config, '--ays', ID, '--out', path.join(dir, 'l')])
  t.equal(noCommand.code, 2)
  const badId = await run(['record', '--config', config, '--ays', 'a/b', '--mount', dir, '--out', path.join(dir, 'l'), '--', 'true'])
  t.equal(badId.code, 2)
  t.match(badId.stderr, /--ays "a\/b": a service id must be/)
})

t.test('publish --startup stores the list beside the flist, signed with --sign; a blob the flist does not name is refused', async (t) => {
  const dir = tmpdir(t)
  const src = path.join(dir, 'src')
  const files = makeTree(src)
  const store = path.join(dir, 'store')
  const keys = path.join(dir, 'keys')
  t.equal((await run(['keygen', '--out', keys])).code, 0)
  const md5s = ['bin/tool', 'lib/m2.py'].map((f) => md5(files.get(f)!))
  const list = path.join(dir, 'in.list')
  // Written by hand: upper case, a comment, a blob twice; the store gets the canonical text.
  fs.writeFileSync(list, `aysfs-native startup 1\n# by hand\n${md5s[0]!.toUpperCase()}\n${md5s[1]}\n${md5s[0]}\n`)
  const r = await run(['publish', src, '--id', ID, '--store', store, '--prefix', PREFIX, '--sign', path.join(keys, 'aysfs.key'), '--startup', list])
  t.equal(r.code, 0, r.stderr)
  const stored = path.join(store, 'md', `${ID}.startup`)
  t.match(r.stdout, `start-up list: ${stored}, 2 blobs, signed (${stored}.sig)`)
  t.equal(fs.readFileSync(stored, 'utf8'), formatStartupList(md5s).toString())
  const trusted = loadTrustedKeys([path.join(keys, 'aysfs.pub')])
  const sig = fs.readFileSync(`${stored}.sig`)
  const flistRevision = /revision: (\d+)/.exec(fs.readFileSync(path.join(store, 'md', `${ID}.flist.sig`), 'utf8'))![1]
  t.same(verifyStartup(fs.readFileSync(stored), sig, trusted, { id: ID, source: 'test' }).revision, Number(flistRevision), 'signed, with the flist\'s revision')

  // A list naming a blob this tree does not have: refused with its line, before the flist moves.
  const flistBefore = fs.readFileSync(path.join(store, 'md', `${ID}.flist`))
  fs.writeFileSync(list, `aysfs-native startup 1\n${md5s[0]}\n${md5(Buffer.from('elsewhere'))}\n`)
  fs.writeFileSync(path.join(src, 'new-file'), 'new\n')
  const stray = await run(['publish', src, '--id', ID, '--store', store, '--prefix', PREFIX, '--sign', path.join(keys, 'aysfs.key'), '--startup', list])
  t.equal(stray.code, 2)
  t.match(stray.stderr, new RegExp(`--startup ${list.replace(/[.]/g, '\\.')} line 3: blob ${md5(Buffer.from('elsewhere'))} is not named by the flist of ${ID} being published`))
  t.same(fs.readFileSync(path.join(store, 'md', `${ID}.flist`)), flistBefore, 'the flist in the store is the old one')
  t.equal(fs.readFileSync(stored, 'utf8'), formatStartupList(md5s).toString(), 'and so is the list')

  // A bad line: refused before any file is hashed.
  fs.writeFileSync(list, `aysfs-native startup 1\n${md5s[0]}\nnot-a-hash\n`)
  const bad = await run(['publish', src, '--id', ID, '--store', store, '--prefix', PREFIX, '--sign', path.join(keys, 'aysfs.key'), '--startup', list])
  t.equal(bad.code, 2)
  t.match(bad.stderr, new RegExp(`start-up list ${list.replace(/[.]/g, '\\.')} line 3: "not-a-hash": expected an MD5`))
  t.notMatch(bad.stderr, /publishing:/, 'nothing hashed')

  // Unsigned from now on: the list's stale signature goes with the flist's.
  fs.writeFileSync(list, `aysfs-native startup 1\n${md5s[1]}\n`)
  const unsigned = await run(['publish', src, '--id', ID, '--store', store, '--prefix', PREFIX, '--unsign', '--startup', list])
  t.equal(unsigned.code, 0, unsigned.stderr)
  t.equal(fs.readFileSync(stored, 'utf8'), formatStartupList([md5s[1]!]).toString())
  t.notOk(fs.existsSync(`${stored}.sig`))
  t.same(fs.readdirSync(path.join(store, 'md')).filter((n) => n.endsWith('.tmp')), [], 'no temp file left')
})

/**
 * A published tree served by a store of the test's own, a mountpoint, a config of a node (with
 * `extra` lines in its `[main]` and `[[ays]]`), and a TMPDIR of the test's own for the record
 * runs (their temp caches go there).
 */
async function recordSetup(
  t: Test,
  extra: { main?: string; ays?: string } = {},
): Promise<{ dir: string; mnt: string; config: string; tmp: string; out: string; files: Map<string, Buffer>; srv: Awaited<ReturnType<typeof startStore>>; nodeCache: string }> {
  const dir = tmpdir(t)
  const files = makeTree(path.join(dir, 'src'))
  const store = path.join(dir, 'store')
  const pub = await run(['publish', path.join(dir, 'src'), '--id', ID, '--store', store, '--prefix', PREFIX])
  t.equal(pub.code, 0, pub.stderr)
  const srv = await startStore(t, store)
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  const nodeCache = path.join(dir, 'node-cache')
  const config = path.join(dir, 'config.toml')
  fs.writeFileSync(config, `[main]\nmount = ${JSON.stringify(mnt)}\nprefix = "${PREFIX}"\ncache = ${JSON.stringify(nodeCache)}\n${extra.main ?? ''}\n[[ays]]\nid = "${ID}"\n${extra.ays ?? ''}\n[[store]]\nurl = "${srv.url}"\n`)
  const tmp = path.join(dir, 'tmp')
  fs.mkdirSync(tmp)
  return { dir, mnt, config, tmp, out: path.join(dir, 'startup.list'), files, srv, nodeCache }
}

/** The record temp caches in `tmp`. */
function recordDirs(tmp: string): string[] {
  return fs.readdirSync(tmp).filter((n) => n.startsWith('aysfs-record-')).sort()
}

/** A command for record that reads one file, says `running <its pid>` and then runs until killed. */
function readAndWait(mnt: string): string[] {
  return ['sh', '-c', `cat ${JSON.stringify(path.join(mnt, 'lib/m1.py'))} >/dev/null && echo running $$ && exec tail -f /dev/null`]
}

/** Kills pid with SIGKILL in teardown if it is still there. */
function killLater(t: Test, pid: number): void {
  t.teardown(() => {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // gone
    }
  })
}

t.test('SIGTERM, and Ctrl-C (SIGINT to record and the command), while the command runs: it ends, the mount and the temp cache go, the list is written', async (t) => {
  const s = await recordSetup(t)
  const want = `aysfs-native startup 1\n${md5(s.files.get('lib/m1.py')!)}\n`
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    const c = start(t, ['record', '--config', s.config, '--ays', ID, '--out', s.out, '--', ...readAndWait(s.mnt)], { env: { TMPDIR: s.tmp } })
    const child = Number((await c.waitFor(/running (\d+)\n/))[1])
    killLater(t, child)
    t.ok(isMounted(s.mnt), `${sig}: mounted while the command runs`)
    t.equal(recordDirs(s.tmp).length, 1, `${sig}: a temp cache while the command runs`)
    // SIGTERM is passed on by record; a terminal sends SIGINT to the whole foreground group.
    c.kill(sig)
    if (sig === 'SIGINT') process.kill(child, 'SIGINT')
    const r = await c.exited
    t.equal(r.code, sig === 'SIGTERM' ? 143 : 130, `${sig}: the command's status: ${r.stderr}`)
    t.match(r.stderr, `which was killed by ${sig}`)
    t.equal(fs.readFileSync(s.out, 'utf8'), want, `${sig}: the list is written`)
    t.notOk(isMounted(s.mnt), `${sig}: unmounted`)
    t.same(recordDirs(s.tmp), [], `${sig}: the temp cache removed`)
    fs.rmSync(s.out)
  }
})

t.test('SIGTERM, or Ctrl-C, while record mounts: the command does not run, the mount and the temp cache go, nothing is written', async (t) => {
  const s = await recordSetup(t)
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    // The flist's answer is held: record is inside mount() when the signal comes.
    s.srv.hold.add(`md/${ID}.flist`)
    const ran = path.join(s.dir, `ran-${sig}`)
    const c = start(t, ['record', '--config', s.config, '--ays', ID, '--out', s.out, '--', 'touch', ran], { env: { TMPDIR: s.tmp } })
    t.ok(await until(() => s.srv.held === 1, 20_000), `${sig}: record asked for the flist`)
    c.kill(sig)
    await c.waitFor(new RegExp(`${sig}: record stops once the mount and its temporary cache are gone`))
    s.srv.release()
    const r = await c.exited
    t.equal(r.code, 1, `${sig}: ${r.stderr}`)
    t.match(r.stderr, `${sig} while mounting ${s.mnt}: the command did not run`)
    t.notOk(fs.existsSync(ran), `${sig}: the command did not run`)
    t.notOk(fs.existsSync(s.out), `${sig}: no list written`)
    t.notOk(isMounted(s.mnt), `${sig}: unmounted`)
    t.same(recordDirs(s.tmp), [], `${sig}: the temp cache removed`)
  }
})

t.test('a record killed with SIGKILL leaves its temp cache; the next record removes it, and no other', async (t) => {
  const s = await recordSetup(t)
  const c = start(t, ['record', '--config', s.config, '--ays', ID, '--out', s.out, '--', ...readAndWait(s.mnt)], { env: { TMPDIR: s.tmp } })
  const command = Number((await c.waitFor(/running (\d+)\n/))[1])
  killLater(t, command)
  const pid = c.child.pid!
  const left = recordDirs(s.tmp)
  t.equal(left.length, 1, 'one temp cache while the command runs')
  t.match(left[0], new RegExp(`^aysfs-record-${pid}-\\d+-\\d+-[A-Za-z0-9]{6}$`), 'named for its owner')
  const leftDir = path.join(s.tmp, left[0]!)
  t.ok(fs.readdirSync(leftDir).length > 0, 'with the cache in it')
  // The command outlives record, holding its stdout and stderr: wait for record's exit, not
  // for its pipes to close, then end the command too.
  const exit = once(c.child, 'exit')
  c.kill('SIGKILL')
  t.same(await exit, [null, 'SIGKILL'], 'record killed')
  process.kill(command, 'SIGKILL')
  await c.exited
  t.ok(fs.existsSync(leftDir), 'left behind by the SIGKILL')

  // Beside it, temp caches that must stay: this test process's (alive), a link named like a dead
  // owner's, a name of another shape; and one that must go: a pid that is alive but started at
  // another time (used again since). As root, another user's directory too, which stays.
  const self = fs.readFileSync('/proc/self/stat', 'latin1')
  const selfStart = Number(self.slice(self.lastIndexOf(')') + 2).split(' ')[19])
  const ns = /\[(\d+)\]/.exec(fs.readlinkSync('/proc/self/ns/pid'))![1]
  const alive = `aysfs-record-${process.pid}-${selfStart}-${ns}-alive1`
  const reused = `aysfs-record-${process.pid}-${selfStart + 1}-${ns}-reused`
  const link = `aysfs-record-${process.pid}-${selfStart + 1}-${ns}-link01`
  const other = `aysfs-record-${process.pid}-${selfStart + 1}-${ns}-other1`
  const unnamed = 'aysfs-record-Ab12Cd'
  for (const n of [alive, reused, unnamed]) fs.mkdirSync(path.join(s.tmp, n, 'md'), { recursive: true })
  const victim = path.join(s.dir, 'victim')
  fs.mkdirSync(victim)
  fs.writeFileSync(path.join(victim, 'keep'), 'keep me\n')
  fs.symlinkSync(victim, path.join(s.tmp, link))
  const root = process.getuid!() === 0
  if (root) {
    fs.mkdirSync(path.join(s.tmp, other))
    fs.chownSync(path.join(s.tmp, other), 65534, 65534)
  }

  const r = await run(['record', '--config', s.config, '--ays', ID, '--out', s.out, '--', 'cat', path.join(s.mnt, 'lib/m2.py')], { env: { TMPDIR: s.tmp } })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stderr, `removed ${leftDir}: the temporary cache of a record run (pid ${pid}) that ended without removing it`)
  t.match(r.stderr, `removed ${path.join(s.tmp, reused)}`)
  t.same(recordDirs(s.tmp), [alive, link, ...(root ? [other] : []), unnamed].sort(), 'the stale ones removed, and its own; the rest stay')
  t.ok(fs.lstatSync(path.join(s.tmp, link)).isSymbolicLink(), 'the link is left as it is')
  t.equal(fs.readFileSync(path.join(victim, 'keep'), 'utf8'), 'keep me\n', 'and what it points to untouched')
  t.equal(fs.readFileSync(s.out, 'utf8'), `aysfs-native startup 1\n${md5(s.files.get('lib/m2.py')!)}\n`)
  t.notOk(isMounted(s.mnt), 'unmounted')
})
