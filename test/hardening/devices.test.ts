// Device entries of flists are left out unless main.dev is set: with `dev = false` (the default)
// nothing lists, stats or copies a char or block device out of the mount (`cp -a` as root would
// make the node: a /dev/mem twin), and each service says how many it lost, in status and in one
// warning. With `dev = true` they are served.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import pino from 'pino'
import t from 'tap'
import { PREFIX, SERVICE, config, files, mountHere, writeStore } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'

/** A store with a char device 1,1 (/dev/mem's numbers) and a block device 8,0 (sda). */
function store(dir: string): string {
  const root = path.join(dir, 'store')
  const [f] = files(1, 100, 95)
  writeStore(root, [f!])
  fs.writeFileSync(
    path.join(root, 'md', `${SERVICE}.flist`),
    [
      `${PREFIX}||0|root|root|755|4|0|0|`,
      `${PREFIX}/dev|||root|root|755|4|0|0|`,
      `${PREFIX}/dev/mem|||root|root|600|5|0|0|1,1`,
      `${PREFIX}/dev/sda|||root|root|600|3|0|0|8,0`,
      `${PREFIX}/dev/fifo|||root|root|644|6|0|0|`,
      `${PREFIX}/file|${f!.md5}|100|root|root|644|2|0|0|`,
    ].join('\n') + '\n',
  )
  return root
}

/** A pino logger that keeps what it writes. */
function memoryLog(): { log: pino.Logger; lines: () => { level: number; msg: string; droppedDevices?: number }[] } {
  const out: string[] = []
  const log = pino({ level: 'warn' }, { write: (s: string) => void out.push(s) })
  return { log, lines: () => out.map((l) => JSON.parse(l) as { level: number; msg: string; droppedDevices?: number }) }
}

/** Device nodes under `dir`, as `find` sees them. */
function devicesUnder(dir: string): string[] {
  return execFileSync('find', [dir, '(', '-type', 'c', '-o', '-type', 'b', ')'], { encoding: 'utf8' }).split('\n').filter(Boolean)
}

t.test('dev = false (the default): devices are not listed, not copied, and counted', async (t) => {
  const dir = tmpdir(t)
  const { log, lines } = memoryLog()
  const m = await mountHere(t, path.join(dir, 'mnt'), config(path.join(dir, 'cache'), [store(dir)]), { log })
  t.same(fs.readdirSync(path.join(m.mountpoint, 'dev')).sort(), ['fifo'], 'ls shows neither mem nor sda (the fifo stays)')
  t.throws(() => fs.statSync(path.join(m.mountpoint, 'dev', 'mem')), { code: 'ENOENT' })
  t.throws(() => fs.statSync(path.join(m.mountpoint, 'dev', 'sda')), { code: 'ENOENT' })
  const ls = execFileSync('ls', ['-la', path.join(m.mountpoint, 'dev')], { encoding: 'utf8' })
  t.notMatch(ls, /^[cb]/m, 'ls -la lists no device')

  const copy = path.join(dir, 'copy')
  execFileSync('cp', ['-a', m.mountpoint, copy])
  t.same(devicesUnder(copy), [], 'cp -a as root makes no device node')
  t.ok(fs.existsSync(path.join(copy, 'file')), 'and copies the rest')

  t.equal(m.stats().mount?.services[0]?.droppedDevices, 2, 'status: 2 devices dropped for the service')
  const warned = lines().filter((l) => /device/.test(l.msg))
  t.equal(warned.length, 1, 'one warning for the service')
  t.match(warned[0], { level: 40, droppedDevices: 2, msg: new RegExp(`^service ${SERVICE}: 2 device entries \\(block or char\\) left out: main\\.dev is off`) })

  // A reload says it again (the tree is built again), once.
  await m.reload()
  t.equal(lines().filter((l) => /device/.test(l.msg)).length, 2, 'one more warning at the reload')
  t.equal(m.stats().mount?.services[0]?.droppedDevices, 2)
})

t.test('dev = true: devices are served as the flist says', async (t) => {
  const dir = tmpdir(t)
  const { log, lines } = memoryLog()
  const m = await mountHere(t, path.join(dir, 'mnt'), config(path.join(dir, 'cache'), [store(dir)], { dev: true }), { log })
  t.same(fs.readdirSync(path.join(m.mountpoint, 'dev')).sort(), ['fifo', 'mem', 'sda'])
  const mem = fs.statSync(path.join(m.mountpoint, 'dev', 'mem'))
  t.ok(mem.isCharacterDevice(), 'mem is a char device')
  t.equal(mem.rdev, (1 << 8) | 1, 'rdev 1,1')
  const sda = fs.statSync(path.join(m.mountpoint, 'dev', 'sda'))
  t.ok(sda.isBlockDevice(), 'sda is a block device')
  t.equal(sda.rdev, 8 << 8, 'rdev 8,0')
  const copy = path.join(dir, 'copy')
  execFileSync('cp', ['-a', m.mountpoint, copy])
  t.same(devicesUnder(copy).map((p) => path.relative(copy, p)).sort(), ['dev/mem', 'dev/sda'], 'cp -a copies them (what dev = true asks for)')
  t.equal(m.stats().mount?.services[0]?.droppedDevices, 0)
  t.same(lines().filter((l) => /device/.test(l.msg)), [], 'no warning')
})
