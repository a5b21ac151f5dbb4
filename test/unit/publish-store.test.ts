// `publish` into a store someone else can write, and the order a signed pair is replaced in: temp
// names someone planted links at are never written through; a link planted at a blob's own name
// is not taken for the blob, and is replaced by it; the flist and its signature are both written
// and fsynced first, then renamed flist first, and an interruption before that leaves the old
// pair whole.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { formatChunkIndex, MIN_CHUNK_SIZE } from '../../lib/chunks'
import { publish } from '../../lib/publish'
import { generateKeyPair, loadTrustedKeys, verifyFlist } from '../../lib/sign'
import { tmpdir } from '../helpers/tmp'
import { md5 } from '../helpers/tree'

/** A source tree, a key and a store with one signed publish of it. */
async function signedStore(t: Test): Promise<{ dir: string; src: string; store: string; md: string; key: string; pub: string }> {
  const dir = tmpdir(t, 'aysfs-race-')
  const src = path.join(dir, 'src')
  fs.mkdirSync(src)
  fs.writeFileSync(path.join(src, 'f'), 'version one\n')
  const keys = generateKeyPair(path.join(dir, 'keys'))
  const store = path.join(dir, 'store')
  await publish({ dir: src, id: 'svc', store, sign: keys.privateKey, progress: false })
  return { dir, src, store, md: path.join(store, 'md'), key: keys.privateKey, pub: keys.publicKey }
}

function verifies(s: { md: string; pub: string }): boolean {
  try {
    verifyFlist(fs.readFileSync(path.join(s.md, 'svc.flist')), fs.readFileSync(path.join(s.md, 'svc.flist.sig')), loadTrustedKeys([s.pub]), { id: 'svc', source: 'test' })
    return true
  } catch {
    return false
  }
}

t.test('a link planted at any predictable temp name is never written through', async (t) => {
  const s = await signedStore(t)
  const target = path.join(s.dir, 'target')
  fs.writeFileSync(target, 'must stay as it is\n')
  const planted: string[] = []
  const plant = (file: string): void => {
    fs.mkdirSync(path.dirname(file), { recursive: true })
    fs.symlinkSync(target, file)
    planted.push(file)
  }
  const untouched = (what: string): void => {
    t.equal(fs.readFileSync(target, 'utf8'), 'must stay as it is\n', `${what}: the link target is untouched`)
    t.ok(
      planted.every((p) => fs.lstatSync(p).isSymbolicLink()),
      `${what}: the planted links are left alone`,
    )
    for (const f of ['svc.flist', 'svc.flist.sig']) t.ok(fs.lstatSync(path.join(s.md, f)).isFile(), `${what}: ${f} is a regular file, not a renamed link`)
    t.ok(verifies(s), `${what}: the new pair verifies`)
    t.same(
      fs.readdirSync(s.md).filter((n) => !planted.includes(path.join(s.md, n))),
      ['svc.flist', 'svc.flist.sig'],
      `${what}: no temp file of ours left`,
    )
  }

  // The names a publish in this process could pick from its pid, for the flist and its signature;
  // a new empty file changes the flist and stores no blob.
  plant(path.join(s.md, `svc.flist.${process.pid}.tmp`))
  plant(path.join(s.md, `svc.flist.sig.${process.pid}.tmp`))
  fs.writeFileSync(path.join(s.src, 'empty'), '')
  await publish({ dir: s.src, id: 'svc', store: s.store, sign: s.key, progress: false })
  t.match(fs.readFileSync(path.join(s.md, 'svc.flist'), 'utf8'), '/empty|')
  untouched('flist and signature')

  // And for a new blob: pid, worker thread id and a counter.
  const content = 'version two\n'
  const m = md5(content)
  const blob = path.join(s.store, 'files', m[0]!, m[1]!, m)
  for (let thread = 0; thread <= 64; thread++) for (let seq = 0; seq < 4; seq++) plant(`${blob}.${process.pid}.${thread}.${seq}.tmp`)
  fs.writeFileSync(path.join(s.src, 'f'), content)
  const r = await publish({ dir: s.src, id: 'svc', store: s.store, sign: s.key, progress: false })
  t.equal(r.written, 1)
  t.ok(fs.lstatSync(blob).isFile() && fs.readFileSync(blob, 'utf8') === content, 'the blob is a regular file with its bytes')
  untouched('blob')
})

t.test('a link planted at a blob\'s name (whole blob, chunk, chunk index) is not the blob: it is replaced, never followed', async (t) => {
  const dir = tmpdir(t, 'aysfs-race-')
  const src = path.join(dir, 'src')
  fs.mkdirSync(src)
  const store = path.join(dir, 'store')
  const blobPath = (m: string): string => path.join(store, 'files', m[0]!, m[1]!, m)
  // A small file, and one cut into 3 chunks (2 of MIN_CHUNK_SIZE bytes, then 1000).
  const small = 'the small file\n'
  const big = Buffer.alloc(2 * MIN_CHUNK_SIZE + 1000)
  let x = 1
  for (let i = 0; i < big.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    big[i] = x >>> 24
  }
  fs.writeFileSync(path.join(src, 'small'), small)
  fs.writeFileSync(path.join(src, 'big'), big)
  const chunks = [0, 1, 2].map((i) => {
    const data = big.subarray(i * MIN_CHUNK_SIZE, Math.min(big.length, (i + 1) * MIN_CHUNK_SIZE))
    return { md5: md5(data), size: data.length }
  })
  const index = formatChunkIndex(chunks)

  // Each planted link points outside the store at a file of the blob's size (another content),
  // so that a stat through the link finds "the blob, in place".
  const targets = new Map<string, Buffer>()
  const plant = (m: string, size: number): void => {
    const target = path.join(dir, `target-${m}`)
    const data = Buffer.alloc(size, 'x')
    fs.writeFileSync(target, data)
    targets.set(target, data)
    fs.mkdirSync(path.dirname(blobPath(m)), { recursive: true })
    fs.symlinkSync(target, blobPath(m))
  }
  plant(md5(small), small.length)
  plant(chunks[1]!.md5, chunks[1]!.size)
  plant(md5(index), index.length)

  const r = await publish({ dir: src, id: 'svc', store, chunks: true, chunkSize: MIN_CHUNK_SIZE, progress: false })
  t.equal(r.written, 2, 'both whole blobs written (the small one despite the link at its name)')
  t.same(r.chunked, { files: 1, written: 3, writtenBytes: big.length, indexesWritten: 1 }, 'every chunk and the index written')
  const inPlace = (m: string, data: Buffer | string, what: string): void => {
    const st = fs.lstatSync(blobPath(m))
    t.ok(st.isFile(), `${what}: a regular file, not a link`)
    t.ok(fs.readFileSync(blobPath(m)).equals(Buffer.from(data)), `${what}: its own bytes`)
  }
  inPlace(md5(small), small, 'the small blob')
  inPlace(md5(big), big, 'the whole big blob')
  chunks.forEach((c, i) => inPlace(c.md5, big.subarray(i * MIN_CHUNK_SIZE, i * MIN_CHUNK_SIZE + c.size), `chunk ${i}`))
  inPlace(md5(index), index, 'the chunk index')
  for (const [target, data] of targets) t.ok(fs.readFileSync(target).equals(data), `${path.basename(target)}: the link target is untouched`)
  t.same(
    (fs.readdirSync(path.join(store, 'files'), { recursive: true }) as string[]).filter((n) => n.endsWith('.tmp')),
    [],
    'no temp file left',
  )

  // Blobs in place now: a rerun writes nothing.
  const again = await publish({ dir: src, id: 'svc', store, chunks: true, chunkSize: MIN_CHUNK_SIZE, progress: false })
  t.equal(again.written, 0)
  t.same(again.chunked, { files: 1, written: 0, writtenBytes: 0, indexesWritten: 0 })
})

t.test('a link planted at a blob directory of the store (files/<h0>, <h0>/<h1>) is refused, never written through', async (t) => {
  for (const level of ['h0', 'h1'] as const) {
    const dir = tmpdir(t, 'aysfs-race-')
    const src = path.join(dir, 'src')
    fs.mkdirSync(src)
    const data = `a file of its own (${level})\n`
    fs.writeFileSync(path.join(src, 'f'), data)
    const m = md5(data)
    const store = path.join(dir, 'store')
    const outside = path.join(dir, 'outside')
    fs.mkdirSync(outside)
    const at = level === 'h0' ? path.join(store, 'files', m[0]!) : path.join(store, 'files', m[0]!, m[1]!)
    fs.mkdirSync(path.dirname(at), { recursive: true })
    fs.symlinkSync(outside, at)
    await t.rejects(publish({ dir: src, id: 'svc', store, progress: false }), { message: new RegExp(`${at.replace(/[.]/g, '\\.')} is a symbolic link: no blob is written through it`) }, `${level}: refused, naming the link`)
    t.same(fs.readdirSync(outside, { recursive: true }), [], `${level}: nothing written where the link points`)
    t.ok(fs.lstatSync(at).isSymbolicLink(), `${level}: the link itself left as it was`)
  }
})

t.test('the flist and its signature: both written and fsynced first, then renamed flist first; interrupted before, the old pair stays', async (t) => {
  const s = await signedStore(t)
  const oldFlist = fs.readFileSync(path.join(s.md, 'svc.flist'))
  const oldSig = fs.readFileSync(path.join(s.md, 'svc.flist.sig'))
  fs.writeFileSync(path.join(s.src, 'f'), 'version two\n')

  // What happens in md/, as publish does it (its fs calls on this thread).
  const events: string[] = []
  const names = new Map<number, string>()
  const inMd = (p: fs.PathLike): boolean => String(p) === s.md || String(p).startsWith(`${s.md}/`)
  const kind = (p: string): string => (p === s.md ? 'md/' : /\.tmp$/.test(p) ? (/\.sig\./.test(p) ? 'sig-temp' : 'flist-temp') : path.basename(p))
  let interruptAt: string | undefined
  const real = { openSync: fs.openSync, fsyncSync: fs.fsyncSync, renameSync: fs.renameSync }
  t.teardown(() => Object.assign(fs, real))
  Object.assign(fs, {
    openSync(p: fs.PathLike, ...rest: unknown[]): number {
      const fd = (real.openSync as (...a: unknown[]) => number)(p, ...rest)
      if (inMd(p)) {
        names.set(fd, kind(String(p)))
        events.push(`open ${kind(String(p))}`)
      }
      return fd
    },
    fsyncSync(fd: number): void {
      if (names.has(fd)) events.push(`fsync ${names.get(fd)}`)
      real.fsyncSync(fd)
    },
    renameSync(from: fs.PathLike, to: fs.PathLike): void {
      if (inMd(to)) {
        events.push(`rename ${kind(String(from))} -> ${path.basename(String(to))}`)
        if (path.basename(String(to)) === interruptAt) throw Object.assign(new Error('interrupted (test)'), { code: 'EINTR' })
      }
      real.renameSync(from, to)
    },
  })

  // Interrupted at the flist's rename: nothing of the new pair is in place.
  interruptAt = 'svc.flist'
  await t.rejects(publish({ dir: s.src, id: 'svc', store: s.store, sign: s.key, progress: false }), { message: 'interrupted (test)' })
  t.ok(fs.readFileSync(path.join(s.md, 'svc.flist')).equals(oldFlist), 'the old flist')
  t.ok(fs.readFileSync(path.join(s.md, 'svc.flist.sig')).equals(oldSig), 'with the old signature')
  t.ok(verifies(s), 'the pair in the store still verifies')
  t.same(fs.readdirSync(s.md).sort(), ['svc.flist', 'svc.flist.sig'], 'the temp files are removed')

  // Uninterrupted: the order.
  interruptAt = undefined
  events.length = 0
  await publish({ dir: s.src, id: 'svc', store: s.store, sign: s.key, progress: false })
  t.same(events, [
    'open svc.flist.sig', // the old signature, for the store's revision
    'open svc.flist', // the old one, read to compare
    'open flist-temp',
    'fsync flist-temp',
    'open sig-temp',
    'fsync sig-temp',
    'rename flist-temp -> svc.flist',
    'rename sig-temp -> svc.flist.sig',
    'open md/',
    'fsync md/',
  ])
  t.ok(verifies(s), 'the new pair verifies')
})
