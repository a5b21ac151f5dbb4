// A node without libfuse3 installed: loading the addon must say which package to install, not
// print a raw dlopen error. Simulated honestly: in a private mount namespace (root only) an
// overlay hides libfuse3.so.3 from the library directory, as if `libfuse3-3` were not installed.
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { packageRoot } from '../../lib/package-root'
import { tmpdir } from '../helpers/mount'

const root = packageRoot()

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0
}

const isRoot = process.getuid?.() === 0
const skip = !isRoot ? 'needs root (a mount namespace)' : !hasCommand('unshare') ? 'needs unshare (util-linux)' : false

t.test('a missing libfuse3.so.3 names libfuse3-3 and fuse3', { skip }, async (t) => {
  const addon = require('node-gyp-build').path(root) as string
  // Where the loader finds libfuse3 today: that directory gets the overlay.
  const ldd = execFileSync('ldd', [addon], { encoding: 'utf8' })
  const found = /^\s*libfuse3\.so\.3 => (\S+)/m.exec(ldd)
  t.ok(found, `ldd finds libfuse3.so.3 for ${addon}`)
  if (!found) return
  const libdir = fs.realpathSync(path.dirname(found[1]!))
  const hide = ['libfuse3.so.3', path.basename(fs.realpathSync(found[1]!))].join(' ')

  const dir = tmpdir(t, 'aysfs-nolibfuse-')
  const scratch = path.join(dir, 'scratch')
  fs.mkdirSync(scratch)
  const hider = path.join(dir, 'hide.sh')
  fs.writeFileSync(
    hider,
    [
      'set -e',
      'scratch=$1; libdir=$2; shift 2',
      'mount -t tmpfs tmpfs "$scratch"',
      'mkdir "$scratch/upper" "$scratch/work"',
      // An overlay whiteout (a 0/0 character device) makes the name absent in the merged view.
      'for name in $HIDE; do mknod "$scratch/upper/$name" c 0 0; done',
      'mount -t overlay overlay -o "lowerdir=$libdir,upperdir=$scratch/upper,workdir=$scratch/work" "$libdir"',
      'exec "$@"',
    ].join('\n') + '\n',
  )
  const probe = path.join(dir, 'probe.js')
  fs.writeFileSync(
    probe,
    `const { execFileSync, spawnSync } = require('child_process')
const out = {}
out.ldd = execFileSync('ldd', [${JSON.stringify(addon)}], { encoding: 'utf8' })
try {
  require(${JSON.stringify(path.join(root, 'dist', 'lib', 'native.js'))}).loadBinding()
  out.loaded = true
} catch (err) {
  out.error = { name: err.name, code: err.code, message: err.message, cause: String(err.cause && err.cause.message) }
}
const install = spawnSync(process.execPath, [${JSON.stringify(path.join(root, 'scripts', 'install.js'))}], { encoding: 'utf8' })
out.install = { status: install.status, stderr: install.stderr }
process.stdout.write(JSON.stringify(out))
`,
  )
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: os.homedir(), LANG: 'C.UTF-8', HIDE: hide }
  const run = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', hider, scratch, libdir, process.execPath, probe], {
    env,
    encoding: 'utf8',
    timeout: 60_000,
  })
  t.equal(run.status, 0, `the namespace ran: ${run.stderr}`)
  if (run.status !== 0) return
  const out = JSON.parse(run.stdout) as {
    ldd: string
    loaded?: boolean
    error?: { name: string; code: string; message: string; cause: string }
    install: { status: number; stderr: string }
  }
  t.match(out.ldd, /libfuse3\.so\.3 => not found/, 'libfuse3.so.3 is really gone in the namespace')
  t.notOk(out.loaded, 'the addon does not load')
  t.equal(out.error?.code, 'ENOENT')
  t.match(out.error?.message, /apt-get install libfuse3-3 fuse3/, 'the error names both packages')
  t.match(out.error?.cause, /libfuse3\.so\.3: cannot open shared object file/, 'the dlopen error is kept as the cause')
  t.equal(out.install.status, 0, 'the install script does not fail: the prebuild is right, the library is missing')
  t.match(out.install.stderr, /libfuse3 is not: install it with `apt-get install libfuse3-3 fuse3`/)
  t.notMatch(out.install.stderr, /compiling/, 'and it does not try to compile')
  // Outside the namespace nothing changed.
  t.match(execFileSync('ldd', [addon], { encoding: 'utf8' }), /libfuse3\.so\.3 => \//, 'the host still has libfuse3')
})
