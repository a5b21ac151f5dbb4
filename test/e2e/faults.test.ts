// The fault matrix through a real mount: a faulty grid cache alone (EIO within the bound, the
// mount healthy) and in front of a good store (the right bytes). Never a wrong byte served.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { mount } from '../../lib/index'
import { startFaultServer, type FaultMode } from '../helpers/faults'
import { clearMounts, tmpdir } from '../helpers/mount'
import { startNginx } from '../helpers/nginx'
import { md5, writeStore, type GenEntry } from '../helpers/tree'

const PREFIX = '/opt/app'
const TIMEOUT_MS = 1000
const MODES: FaultMode[] = ['e500', 'e401', 'wrong', 'truncated', 'stall', 'silent', 'reset', 'trickle', 'loop', 'long', 'longcl', 'endless']

t.test('each fault through a mount, alone and in front of a good store', async (t) => {
  const dir = tmpdir(t)
  const content = Buffer.alloc(200_000)
  for (let i = 0; i < content.length; i++) content[i] = (i * 31 + 7) & 255
  const cached = Buffer.from('already in the local cache\n')
  const entries: GenEntry[] = [
    { path: '/blob.bin', kind: 'file', perms: 0o644, size: content.length, md5: md5(content), mtime: 1_700_000_000, content },
    { path: '/cached.txt', kind: 'file', perms: 0o644, size: cached.length, md5: md5(cached), mtime: 1_700_000_000, content: cached },
  ]
  const good = path.join(dir, 'good')
  writeStore(entries, good, 'app', PREFIX)
  // A store with the flist only: the faulty grid cache is then the only source of the blob.
  const flistOnly = path.join(dir, 'flist-only')
  fs.mkdirSync(path.join(flistOnly, 'md'), { recursive: true })
  fs.copyFileSync(path.join(good, 'md', 'app.flist'), path.join(flistOnly, 'md', 'app.flist'))
  // The fault server serves grid-cache paths (<h0>/<h1>/<md5>) from this tree.
  const cacheTree = path.join(dir, 'cache-tree')
  fs.mkdirSync(path.join(cacheTree, entries[0]!.md5[0]!, entries[0]!.md5[1]!), { recursive: true })
  fs.writeFileSync(path.join(cacheTree, entries[0]!.md5[0]!, entries[0]!.md5[1]!, entries[0]!.md5), content)
  const faults = await startFaultServer({ store: cacheTree, trickleBps: 100 })
  t.teardown(() => faults.close())
  const nginx = await startNginx({ store: good })
  t.teardown(() => nginx.stop())

  for (const mode of MODES) {
    for (const alone of [true, false]) {
      await t.test(`${mode} ${alone ? 'alone' : 'in front of a good store'}`, async (t) => {
        const root = path.join(dir, `${mode}-${alone}`)
        const cacheDir = path.join(root, 'cache')
        const mnt = path.join(root, 'mnt')
        fs.mkdirSync(mnt, { recursive: true })
        // The small file is in the local cache already: it must keep working whatever the sources do.
        fs.mkdirSync(path.join(cacheDir, entries[1]!.md5[0]!, entries[1]!.md5[1]!), { recursive: true })
        fs.writeFileSync(path.join(cacheDir, entries[1]!.md5[0]!, entries[1]!.md5[1]!, entries[1]!.md5), cached)
        const m = await mount({
          mountpoint: mnt,
          log: { level: 'silent' },
          config: {
            main: { cache: cacheDir, prefix: PREFIX, timeout: `${TIMEOUT_MS}ms` },
            ays: [{ id: 'app' }],
            cache: [{ url: faults.base(mode), push: false }],
            store: [{ url: alone ? `file://${flistOnly}` : `${nginx.url}/store` }],
          },
        })
        t.teardown(async () => {
          await m.unmount()
          clearMounts(mnt)
        })
        const start = Date.now()
        let got: Buffer | undefined
        let error: NodeJS.ErrnoException | undefined
        try {
          // Asynchronously: the fault server runs on this thread and must be free to answer.
          got = await fs.promises.readFile(path.join(mnt, 'blob.bin'))
        } catch (err) {
          error = err as NodeJS.ErrnoException
        }
        const took = Date.now() - start
        if (alone) {
          t.equal(error?.code, 'EIO', 'EIO when no source can serve it')
          // timeout × sources tried (the grid cache; the store has no blobs) + 1 s
          t.ok(took < TIMEOUT_MS * 2 + 1000, `within the bound (${took} ms)`)
        } else {
          t.equal(error, undefined, 'no error')
          t.ok(got?.equals(content), 'the right bytes, from the store')
        }
        if (got) t.ok(got.equals(content), 'never a wrong byte')
        t.same(fs.readFileSync(path.join(mnt, 'cached.txt')), cached, 'the mount stays healthy')
        t.equal(m.stats().engine.parked, 0, 'nothing left waiting')
      })
    }
  }
})
