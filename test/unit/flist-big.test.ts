// A generated 1,000,000-line flist: parsed and packed within generous time bounds (the 3 s
// target is measured by the benchmark, not here), with the counts and a sample checked.
import t from 'tap'
import { mergeServices, parseFlist } from '../../lib/flist'
import { buildTable, readTable } from '../../lib/table'

const LINES = 1_000_000
const FILES_PER_DIR = 20

/** Seed lines under /opt/big: 50,000 directories of 20 files, three levels deep. */
function generate(): Buffer {
  const parts: string[] = []
  for (let i = 0; i < LINES; i++) {
    const d = Math.floor(i / FILES_PER_DIR)
    const md5 = (i.toString(16) + 'abcdef0123456789abcdef0123456789').slice(0, 32)
    parts.push(`/opt/big/lib${d % 50}/pkg${Math.floor(d / 50) % 100}/m${d}/file_${i}.py|${md5}|${i % 65536}\n`)
  }
  return Buffer.from(parts.join(''))
}

t.test('a 1,000,000-line flist', async (t) => {
  const flist = generate()
  const t0 = process.hrtime.bigint()
  const p = parseFlist(flist, { name: 'big', prefix: '/opt/big' })
  const parseMs = Number(process.hrtime.bigint() - t0) / 1e6
  const dirs = LINES / FILES_PER_DIR
  t.equal(p.lines, LINES)
  t.equal(p.entries, LINES + dirs + 50 + 50 * 100, 'files, leaf directories, lib* and lib*/pkg* directories')
  t.equal(p.ignored, 0)
  const last = p.tree.get(`/lib${(dirs - 1) % 50}/pkg${Math.floor((dirs - 1) / 50) % 100}/m${dirs - 1}/file_${LINES - 1}.py`)
  t.equal(last?.size, (LINES - 1) % 65536, 'the last line is there')
  t.ok(parseMs < 10_000, `parsed in ${parseMs.toFixed(0)} ms`)

  const t1 = process.hrtime.bigint()
  const { buffer, count } = buildTable(mergeServices([p]))
  const tableMs = Number(process.hrtime.bigint() - t1) / 1e6
  t.equal(count, p.entries + 1)
  t.equal(buffer.readUInt32LE(8), count)
  t.ok(tableMs < 10_000, `packed in ${tableMs.toFixed(0)} ms`)
  t.comment(`parse ${parseMs.toFixed(0)} ms, table ${tableMs.toFixed(0)} ms, rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`)
  // The first level decodes (all of it would take seconds: an object an entry).
  const head = readTable(buffer, { limit: 51 }).entries
  t.same(head.slice(1).map((e) => e.name), Array.from({ length: 50 }, (_, i) => `lib${i}`).sort())
})
