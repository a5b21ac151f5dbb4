// Messages that must say what to do (issue 15, "Errors that mislead or say nothing"): a mistyped
// subcommand, every config mistake at once, as a shell user sees them. No mount succeeds here.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { tmpdir } from '../helpers/mount'
import { run } from '../helpers/cli'

t.test('a mistyped subcommand: did you mean, exit 2', async (t) => {
  let r = await run(['stauts', '/mnt'])
  t.equal(r.code, 2)
  t.match(r.stderr, /unknown command 'stauts' \(did you mean 'status'\?/)
  r = await run(['umont', '/mnt'])
  t.equal(r.code, 2)
  t.match(r.stderr, /did you mean 'umount' or 'unmount'\?/, 'aliases count')
  r = await run(['frobnicate'])
  t.equal(r.code, 2)
  t.notMatch(r.stderr, /did you mean/, 'nothing close: no guess')
})

t.test('every config mistake at once, each with its line', async (t) => {
  const dir = tmpdir(t)
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  const bad = path.join(dir, 'bad.toml')
  fs.writeFileSync(bad, `[main]\ncahce = "/x"\ntimeout = 10\n\n[[ays]]\nid = "x"\n\n[[stores]]\nurl = "/s"\n`)
  const r = await run(['--mount', mnt, '--config', bad])
  t.equal(r.code, 2)
  t.match(r.stderr, `config ${bad} line 2: main.cahce: unknown key (did you mean "cache"?)\nconfig ${bad} line 3: main.timeout: expected a duration`)
  t.match(r.stderr, `\nconfig ${bad} line 8: stores: unknown key (the arrays are [[ays]], [[cache]] and [[store]])`)
})

t.test('a signature refusal: one line, with the hint that fits (not the FUSE one)', async (t) => {
  const dir = tmpdir(t)
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  fs.mkdirSync(path.join(dir, 'src/bin'), { recursive: true })
  fs.writeFileSync(path.join(dir, 'src/bin/a'), 'hello\n')
  for (const k of ['ours', 'theirs']) t.equal((await run(['keygen', '--out', path.join(dir, k)])).code, 0)
  const store = path.join(dir, 'store')
  const pub = await run(['publish', path.join(dir, 'src'), '--id', 'svc', '--store', store, '--prefix', '/opt/x', '--sign', path.join(dir, 'theirs/aysfs.key')])
  t.equal(pub.code, 0, pub.stderr)
  const config = path.join(dir, 'config.toml')
  fs.writeFileSync(config, `[main]\ncache = "${dir}/cache"\nprefix = "/opt/x"\ntrusted_keys = ["${dir}/ours/aysfs.pub"]\n[[ays]]\nid = "svc"\n[[store]]\nurl = "${store}"\n`)
  let r = await run(['--mount', mnt, '--config', config])
  t.equal(r.code, 1)
  const lines = r.stderr.trim().split('\n')
  t.equal(lines.length, 1, `one line:\n${r.stderr}`)
  t.match(lines[0], /FATAL: service svc: flist from store\[0\] .* refused: signed by key [0-9a-f]{32}, which is not trusted .*: if that key is yours, add its \.pub file to main\.trusted_keys/)
  t.notMatch(r.stderr, /fusermount3|\/dev\/fuse/, 'no hint about FUSE')

  // Unsigned now: the hint says to sign it.
  t.equal((await run(['publish', path.join(dir, 'src'), '--id', 'svc', '--store', store, '--prefix', '/opt/x', '--unsign'])).code, 0)
  r = await run(['--mount', mnt, '--config', config])
  t.equal(r.code, 1)
  t.equal(r.stderr.trim().split('\n').length, 1, `one line:\n${r.stderr}`)
  t.match(r.stderr, /it has no signature \(svc\.flist\.sig\).*publish it with --sign KEY/)
  t.notMatch(r.stderr, /fusermount3|\/dev\/fuse/)
})

t.test('no store and no kept flist: the message says what to add', async (t) => {
  const dir = tmpdir(t)
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  const config = path.join(dir, 'config.toml')
  fs.writeFileSync(config, `[main]\ncache = "${dir}/cache"\n[[ays]]\nid = "svc"\n`)
  const r = await run(['--mount', mnt, '--config', config])
  t.equal(r.code, 1)
  t.match(r.stderr, /flist svc: no store is configured, and no copy is kept in \S+: add a store that has md\/svc\.flist to the config, e.g\. \[\[store\]\] with url = "https:\/\/stor\.example\.com\/dedupe"/)
})
