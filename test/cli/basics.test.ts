// The command's surface: help, version, usage errors, configuration errors and what it says about
// mountpoints, all as exit statuses and messages a shell user sees. No mount succeeds here.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { tmpdir } from '../helpers/mount'
import { ROOT, run } from '../helpers/cli'

const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }

t.test('--help and --version exit 0', async (t) => {
  const help = await run(['--help'])
  t.equal(help.code, 0)
  for (const cmd of ['demo', 'unmount', 'status', 'prefetch', 'publish', 'record', 'verify', 'keygen', 'rebuild']) t.match(help.stdout, new RegExp(`^  ${cmd}\\b`, 'm'), `lists ${cmd}`)
  t.match(help.stdout, /--mount <dir>/)
  t.match(help.stdout, /Exit status: 0 success, 1 failure at run time, 2 usage or configuration error/)
  const v = await run(['--version'])
  t.equal(v.code, 0)
  t.equal(v.stdout.trim(), pkg.version)
  const sub = await run(['publish', '--help'])
  t.equal(sub.code, 0)
  t.match(sub.stdout, /--format <format>/)
})

t.test('usage errors exit 2 and say what is wrong', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['--bogus'], /unknown option '--bogus'/],
    [['publish', '/tmp'], /required option '--id <id>' not specified/],
    [['status'], /missing required argument 'mountpoint'/],
    [['--log-level', 'loud'], /Allowed choices are trace, debug, info/],
    [['publish', '/tmp', '--id', 'x', '--store', '/tmp/s', '--jobs', '0'], /--jobs 0: expected a positive integer/],
    [['publish', '/tmp', '--id', 'x', '--store', 'https://stor.example.com/r'], /publish writes to a store directory/],
    [['publish', '/nonexistent-dir', '--id', 'x', '--store', '/tmp/s'], /\/nonexistent-dir: no such directory/],
    [['publish', '/tmp', '--id', 'a/b', '--store', '/tmp/s'], /--id "a\/b": a service id must be usable as a file name/],
  ]
  for (const [args, re] of cases) {
    const r = await run(args)
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.match(r.stderr, re, `${args.join(' ')}: ${re}`)
  }
})

t.test('configuration errors exit 2 naming the file, the key and the line', async (t) => {
  const dir = tmpdir(t)
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  const bad = path.join(dir, 'bad.toml')
  fs.writeFileSync(bad, `[main]\ncache = "${dir}/cache"\ntimeout = 10\n\n[[ays]]\nid = "x"\n`)
  let r = await run(['--mount', mnt, '--config', bad])
  t.equal(r.code, 2)
  t.match(r.stderr, `config ${bad} line 3: main.timeout: expected a duration like "10s", got 10`)

  fs.writeFileSync(bad, `[main]\ncahce = "/var/cache/aysfs"\n\n[[ays]]\nid = "x"\n`)
  r = await run(['--mount', mnt], { env: { AYSFS_CONFIG: bad } })
  t.equal(r.code, 2, 'AYSFS_CONFIG is read')
  t.match(r.stderr, /main\.cahce: unknown key \(did you mean "cache"\?\)/)

  r = await run(['--mount', mnt, '--config', path.join(dir, 'missing.toml')])
  t.equal(r.code, 2)
  t.match(r.stderr, `config ${path.join(dir, 'missing.toml')}: cannot read: no such file`)

  r = await run(['--mount', mnt, '--config', bad, '--log-format', 'json'])
  t.equal(r.code, 2)
  const line = JSON.parse(r.stderr.trim().split('\n').pop()!)
  t.equal(line.level, 60, 'a fatal record')
  t.match(line.msg, /main\.cahce/)

  // prefetch and verify read the same config.
  r = await run(['prefetch', '--config', bad])
  t.equal(r.code, 2)
  t.match(r.stderr, /main\.cahce/)
  r = await run(['verify'], { env: { AYSFS_CONFIG: bad } })
  t.equal(r.code, 2)
  t.match(r.stderr, /main\.cahce/)
})

t.test('mountpoints: missing, not a directory, not given', async (t) => {
  const dir = tmpdir(t)
  const config = path.join(dir, 'config.toml')
  fs.writeFileSync(config, `[main]\ncache = "${dir}/cache"\n\n[[ays]]\nid = "x"\n\n[[store]]\nurl = "${dir}/store"\n`)
  let r = await run(['--mount', path.join(dir, 'nope'), '--config', config])
  t.equal(r.code, 2)
  t.match(r.stderr, `mountpoint ${path.join(dir, 'nope')} does not exist: create it first`)
  fs.writeFileSync(path.join(dir, 'file'), '')
  r = await run(['--mount', path.join(dir, 'file'), '--config', config])
  t.equal(r.code, 2)
  t.match(r.stderr, `mountpoint ${path.join(dir, 'file')} is not a directory`)
  r = await run(['--config', config])
  t.equal(r.code, 2)
  t.match(r.stderr, `no mountpoint: pass --mount DIR, or set main.mount in ${config}`)
  // Relative --mount is taken from the working directory.
  r = await run(['--mount', 'nope', '--config', config], { cwd: dir })
  t.match(r.stderr, `mountpoint ${path.join(dir, 'nope')} does not exist`)
})

t.test('unmount and status of something that is not a mount', async (t) => {
  const dir = tmpdir(t)
  let r = await run(['unmount', dir])
  t.equal(r.code, 1)
  t.match(r.stderr, `aysfs-native: ${dir} is not mounted`)
  r = await run(['status', dir])
  t.equal(r.code, 1)
  t.match(r.stderr, `${dir} is not mounted`)
  r = await run(['status', '/proc', '--json'])
  t.equal(r.code, 2)
  t.match(r.stderr, '/proc is a proc mount, not an aysfs-native one')
  r = await run(['unmount', '/proc'])
  t.equal(r.code, 2)
  t.match(r.stderr, 'not unmounting it')
})

t.test('keygen writes a key pair and never overwrites one', async (t) => {
  const dir = tmpdir(t)
  const keys = path.join(dir, 'keys')
  const r = await run(['keygen', '--out', keys, '--name', 'ops'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, `public key:  ${path.join(keys, 'ops.pub')}`)
  t.match(r.stdout, `private key: ${path.join(keys, 'ops.key')}`)
  t.match(r.stdout, /key id:\s+[0-9a-f]{32}/)
  t.equal(fs.statSync(path.join(keys, 'ops.key')).mode & 0o777, 0o600, 'the private key is 0600')
  t.match(fs.readFileSync(path.join(keys, 'ops.pub'), 'utf8'), /BEGIN PUBLIC KEY/)
  const again = await run(['keygen', '--out', keys, '--name', 'ops'])
  t.equal(again.code, 1)
  t.match(again.stderr, /already exists; refusing to overwrite a key/)
})
