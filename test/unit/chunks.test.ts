// lib/chunks.ts: cutting a stream into chunks, the index's bytes, the checks a node makes of an
// index before it trusts it, and which chunks cover a read.
import crypto from 'node:crypto'
import t from 'tap'
import { AysfsError } from '../../lib/errors'
import {
  ChunkHasher, MAX_CHUNKS, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, checkChunkIndex, checkChunkSize, chunksCovering, formatChunkIndex, parseChunkSize, type Chunk,
} from '../../lib/chunks'
import { formatFlistLine, parseFlist } from '../../lib/flist'

const md5 = (b: Buffer | string): string => crypto.createHash('md5').update(b).digest('hex')
const KiB = 1024

function cut(data: Buffer, size: number): Chunk[] {
  const out: Chunk[] = []
  for (let o = 0; o < data.length; o += size) out.push({ md5: md5(data.subarray(o, o + size)), size: Math.min(size, data.length - o) })
  return out
}

t.test('ChunkHasher cuts at chunk boundaries whatever the pieces it is fed', async (t) => {
  const data = crypto.randomBytes(1000 * KiB + 7)
  for (const piece of [1, 4096, 300 * KiB, 1 << 20, 333_333]) {
    const h = new ChunkHasher(256 * KiB)
    for (let o = 0; o < data.length; o += piece) h.update(data.subarray(o, o + piece))
    t.same(h.finish(), cut(data, 256 * KiB), `pieces of ${piece}`)
  }
  const exact = new ChunkHasher(256 * KiB)
  exact.update(Buffer.alloc(512 * KiB))
  t.equal(exact.finish().length, 2, 'no empty last chunk')
})

t.test('checkChunkIndex accepts what publish writes, refuses every bad index', async (t) => {
  const C = 256 * KiB
  const data = crypto.randomBytes(3 * C + 5)
  const chunks = cut(data, C)
  const idx = formatChunkIndex(chunks)
  t.same(checkChunkIndex(idx, md5(idx).toUpperCase(), data.length), { chunkSize: C, chunks })
  const crlf = Buffer.from(idx.toString().replace(/\n/g, '\r\n').toUpperCase().replace(/\r\n$/, ''))
  t.same(checkChunkIndex(crlf, md5(crlf), data.length), { chunkSize: C, chunks }, 'CR LF, upper case, no final line end')
  const one = formatChunkIndex([{ md5: md5('x'), size: 1 }])
  t.same(checkChunkIndex(one, md5(one), 1), { chunkSize: 1, chunks: [{ md5: md5('x'), size: 1 }] }, 'one chunk may be small')

  const bad = (text: string | Buffer, size: number, re: RegExp, hash?: string): void => {
    const b = Buffer.isBuffer(text) ? text : Buffer.from(text)
    const r = checkChunkIndex(b, hash ?? md5(b), size)
    t.ok('problem' in r, `refused: ${re}`)
    if ('problem' in r) t.match(r.problem, re)
  }
  bad(idx, data.length, /its MD5 is .*, not 0{32}/, '0'.repeat(32))
  const l = (c: Chunk[]): string => c.map((x) => `${x.md5}|${x.size}\n`).join('')
  bad(l(chunks), data.length + 1, /sum to 786437 bytes, the file has 786438/)
  bad(l([chunks[0]!, { ...chunks[1]!, size: C - 1 }, chunks[2]!, chunks[3]!]), data.length - 1, /chunk 2 has 262143 bytes/)
  bad(l([...chunks.slice(0, 3), { ...chunks[3]!, size: C + 1 }]), 4 * C + 1, /chunk 4 has 262145 bytes/)
  bad(l([...chunks.slice(0, 3), { ...chunks[3]!, size: 0 }]), 3 * C, /chunk 4 has 0 bytes/)
  bad(l([{ md5: chunks[0]!.md5, size: 1000 }, { md5: chunks[1]!.md5, size: 5 }]), 1005, /a chunk size of 1000 bytes/)
  bad(l([{ md5: chunks[0]!.md5, size: MAX_CHUNK_SIZE + 1 }]), MAX_CHUNK_SIZE + 1, /a chunk size of/)
  bad('', 0, /lists no chunks/)
  bad(`${chunks[0]!.md5}|${C}\n\n`, C, /line 2 is not md5\|size/)
  bad(`${chunks[0]!.md5}|${C}|x\n`, C, /line 1 is not md5\|size/)
  bad(`${chunks[0]!.md5.slice(1)}|${C}\n`, C, /line 1/)
  bad(`${chunks[0]!.md5}|-1\n`, C, /line 1/)
  bad(`${chunks[0]!.md5}|123456789\n`, C, /line 1/, undefined)
  bad(`# comment\n${chunks[0]!.md5}|${C}\n`, C, /line 1/)
  const many = Buffer.from(`${chunks[0]!.md5}|${MIN_CHUNK_SIZE}\n`.repeat(MAX_CHUNKS + 1))
  bad(many, (MAX_CHUNKS + 1) * MIN_CHUNK_SIZE, /more than 262144 chunks/)
})

t.test('chunksCovering', async (t) => {
  const index = { chunkSize: 100, chunks: cut(Buffer.alloc(350), 100) }
  t.same(chunksCovering(index, 0, 1), { first: 0, last: 0 })
  t.same(chunksCovering(index, 99, 2), { first: 0, last: 1 })
  t.same(chunksCovering(index, 150, 4096), { first: 1, last: 3 }, 'clamped to the last chunk')
  t.same(chunksCovering(index, 349, 1), { first: 3, last: 3 })
})

t.test('chunk size bounds, named by the flag', async (t) => {
  t.equal(checkChunkSize(MIN_CHUNK_SIZE), MIN_CHUNK_SIZE)
  t.equal(checkChunkSize(MAX_CHUNK_SIZE), MAX_CHUNK_SIZE)
  t.throws(() => checkChunkSize(MIN_CHUNK_SIZE - 1), { code: 'EUSAGE', message: /^--chunk-size 262143: the chunk size must be from 256KiB/ })
  t.throws(() => checkChunkSize(1.5 * MIN_CHUNK_SIZE + 0.5), AysfsError)
  t.equal(parseChunkSize('4MiB'), 4 * 1024 * KiB)
  t.equal(parseChunkSize('262144'), MIN_CHUNK_SIZE)
  t.throws(() => parseChunkSize('4M'), { code: 'EUSAGE', message: /--chunk-size "4M": expected a size/ })
})

t.test('formatFlistLine writes chunks= in the extended shape only, and the parser reads it back', async (t) => {
  const m = md5('content')
  const i = md5('index')
  const line = formatFlistLine({ path: '/a', md5: m, size: 7, chunks: i.toUpperCase() }, 'extended')
  t.ok(line.endsWith(`|chunks=${i}`), line)
  t.equal(parseFlist(Buffer.from(line), { name: 's', prefix: '/' }).tree.get('/a')!.chunks, i)
  t.throws(() => formatFlistLine({ path: '/a', md5: m, size: 7, chunks: i }, 'seed'), /the seed format cannot name a chunk index/)
  t.throws(() => formatFlistLine({ path: '/a', md5: m, size: 7, chunks: 'xyz' }, 'extended'), /bad chunk index md5 "xyz"/)
})
