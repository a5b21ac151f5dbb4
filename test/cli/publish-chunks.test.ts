// `aysfs-native publish --chunks`: chunk blobs, the chunk index the flist line names, the whole
// blob (or not, with --no-whole), reruns, and the bounds and combinations it refuses.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { checkChunkIndex } from '../../lib/chunks'
import { parseFlist } from '../../lib/flist'
import { publishDirs, tmpdir } from '../helpers/mount'
import { randomBytes } from '../helpers/store'
import { run } from '../helpers/cli'

const KiB = 1024
const md5 = (b: Buffer): string => crypto.createHash('md5').update(b).digest('hex')
const blobAt = (store: string, m: string): string => path.join(store, 'files', m[0]!, m[1]!, m)

/** Every blob in a store's files/ tree, by name. */
function storeBlobs(store: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>()
  const files = path.join(store, 'files')
  if (!fs.existsSync(files)) return out
  for (const h0 of fs.readdirSync(files)) for (const h1 of fs.readdirSync(path.join(files, h0))) {
    for (const name of fs.readdirSync(path.join(files, h0, h1))) out.set(name, fs.readFileSync(path.join(files, h0, h1, name)))
  }
  return out
}

t.test('--chunks: chunk blobs, an index named by the flist line, the whole blob; --no-whole; reruns', async (t) => {
  const dir = tmpdir(t, 'aysfs-chunks-')
  const src = path.join(dir, 'src')
  fs.mkdirSync(src)
  const big = randomBytes(1000 * KiB + 123, 7) // 300 KiB chunks: 3 full and a short one, not a multiple of 1 MiB reads
  const exact = randomBytes(600 * KiB, 8) // two full chunks
  const small = randomBytes(300 * KiB, 9) // the chunk size itself: not chunked
  fs.writeFileSync(path.join(src, 'big'), big)
  fs.writeFileSync(path.join(src, 'exact'), exact)
  fs.writeFileSync(path.join(src, 'small'), small)
  const store = path.join(dir, 'store')
  const r = await run(['publish', src, '--id', 'svc', '--store', store, '--prefix', '/p', '--chunks', '--chunk-size', '300KiB'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /2 files as chunks: 6 chunks written .*2 chunk indexes written/)
  const flist = parseFlist(fs.readFileSync(path.join(store, 'md', 'svc.flist')), { name: 'svc', prefix: '/p' })
  const blobs = storeBlobs(store)
  for (const [name, data, n] of [['big', big, 4], ['exact', exact, 2]] as const) {
    const e = flist.tree.get(`/${name}`)!
    t.equal(e.md5, md5(data))
    t.ok(blobs.has(e.md5), `${name}: the whole blob is written`)
    t.ok(e.chunks, `${name}: its line names a chunk index`)
    const index = checkChunkIndex(blobs.get(e.chunks!)!, e.chunks!, data.length)
    if ('problem' in index) throw new Error(index.problem)
    t.equal(index.chunkSize, 300 * KiB)
    t.equal(index.chunks.length, n)
    t.equal(blobs.get(e.chunks!)!.toString(), index.chunks.map((c) => `${c.md5}|${c.size}\n`).join(''), 'md5|size lines, LF each')
    let off = 0
    for (const c of index.chunks) {
      const piece = data.subarray(off, off + c.size)
      t.equal(c.md5, md5(piece))
      t.same(blobs.get(c.md5), piece, `${name}: chunk at ${off} is its blob`)
      off += c.size
    }
  }
  t.notOk(flist.tree.get('/small')!.chunks, 'a file no larger than the chunk size is not chunked')
  t.ok(blobs.has(md5(small)))
  const line = fs.readFileSync(path.join(store, 'md', 'svc.flist'), 'utf8').split('\n').find((l) => l.startsWith('/p/big|'))!
  t.match(line, new RegExp(`\\|chunks=${flist.tree.get('/big')!.chunks}$`), 'the extended field is chunks=<md5>')

  // Again: nothing new.
  const again = await run(['publish', src, '--id', 'svc', '--store', store, '--prefix', '/p', '--chunks', '--chunk-size', '300KiB'])
  t.equal(again.code, 0, again.stderr)
  t.match(again.stdout, /2 files as chunks: 0 chunks written .*0 chunk indexes written/)
  t.match(again.stdout, /0 written/)

  // --no-whole into a new store: chunks and indexes, no whole blob of a chunked file.
  const store2 = path.join(dir, 'store2')
  const nw = await run(['publish', src, '--id', 'svc', '--store', store2, '--prefix', '/p', '--chunks', '--chunk-size', `${300 * KiB}`, '--no-whole'])
  t.equal(nw.code, 0, nw.stderr)
  const blobs2 = storeBlobs(store2)
  t.notOk(blobs2.has(md5(big)), '--no-whole: no whole blob of big')
  t.notOk(blobs2.has(md5(exact)), '--no-whole: no whole blob of exact')
  t.ok(blobs2.has(md5(small)), 'an unchunked file keeps its whole blob')
  t.equal(blobs2.size, 1 + 6 + 2, 'small, 6 chunks, 2 indexes')
  t.same(fs.readFileSync(path.join(store2, 'md', 'svc.flist')), fs.readFileSync(path.join(store, 'md', 'svc.flist')), 'the same flist')

  // --chunks into a store that has the whole blob only (published before without chunks): the chunks are added.
  const store3 = path.join(dir, 'store3')
  t.equal((await run(['publish', src, '--id', 'svc', '--store', store3, '--prefix', '/p'])).code, 0)
  const before = storeBlobs(store3).size
  const add = await run(['publish', src, '--id', 'svc', '--store', store3, '--prefix', '/p', '--chunks', '--chunk-size', '300KiB'])
  t.equal(add.code, 0, add.stderr)
  t.equal(storeBlobs(store3).size, before + 6 + 2)
  t.ok(fs.existsSync(blobAt(store3, flist.tree.get('/big')!.chunks!)))
})

t.test('chunk sizes out of bounds and combinations publish refuses, naming the flag', async (t) => {
  const { src, store } = publishDirs(t, { f: 'x' }, 'aysfs-chunks-')
  const cases: [string[], RegExp][] = [
    [['--chunks', '--chunk-size', '255KiB'], /--chunk-size 261120: the chunk size must be from 256KiB \(262144\) to 64MiB \(67108864\) bytes/],
    [['--chunks', '--chunk-size', '65MiB'], /--chunk-size 68157440: the chunk size must be from 256KiB/],
    [['--chunks', '--chunk-size', '4M'], /--chunk-size "4M": expected a size like 4MiB/],
    [['--chunks', '--chunk-size', 'lots'], /--chunk-size "lots"/],
    [['--chunks', '--format', 'seed'], /--chunks needs the extended format/],
    [['--chunk-size', '4MiB'], /--chunk-size needs --chunks/],
    [['--no-whole'], /--no-whole needs --chunks/],
  ]
  for (const [args, re] of cases) {
    const r = await run(['publish', src, '--id', 'svc', '--store', store, ...args])
    t.equal(r.code, 2, `${args.join(' ')}: exit status 2`)
    t.match(r.stderr, re, args.join(' '))
  }
  t.notOk(fs.existsSync(store), 'nothing written')
  const ok = await run(['publish', src, '--id', 'svc', '--store', store, '--chunks', '--chunk-size', '256KiB'])
  t.equal(ok.code, 0, `the bounds themselves are fine: ${ok.stderr}`)
  t.equal((await run(['publish', src, '--id', 'svc', '--store', store, '--chunks', '--chunk-size', '64MiB'])).code, 0)
})
