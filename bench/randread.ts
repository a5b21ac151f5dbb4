// Child of the benchmark: `node randread.js FILE COUNT [BLOCK]` reads COUNT distinct BLOCK-sized
// blocks (default 4 KiB) of FILE in a pseudo-random order with pread, and prints the seconds
// that took as JSON. Run as its own process so that nothing of the benchmark shares its thread.
import * as fs from 'node:fs'

const [file, countArg, blockArg] = process.argv.slice(2)
if (!file || !countArg) {
  process.stderr.write('usage: randread FILE COUNT [BLOCK]\n')
  process.exit(2)
}
const block = Number(blockArg ?? 4096)
const fd = fs.openSync(file, 'r')
const blocks = Math.floor(fs.fstatSync(fd).size / block)
const count = Math.min(Number(countArg), blocks)
// The same order every time: a Fisher-Yates shuffle driven by a fixed-seed generator.
const order = new Uint32Array(blocks)
for (let i = 0; i < blocks; i++) order[i] = i
let a = 12345
const rand = (): number => {
  a = (a + 0x6d2b79f5) >>> 0
  let t = a
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
for (let i = blocks - 1; i > 0; i--) {
  const j = Math.floor(rand() * (i + 1))
  const x = order[i]!
  order[i] = order[j]!
  order[j] = x
}
const buf = Buffer.alloc(block)
const t0 = process.hrtime.bigint()
for (let i = 0; i < count; i++) {
  if (fs.readSync(fd, buf, 0, block, order[i]! * block) !== block) throw new Error(`short read at block ${order[i]}`)
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9
fs.closeSync(fd)
process.stdout.write(JSON.stringify({ seconds, reads: count }) + '\n')
