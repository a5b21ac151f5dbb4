// The progress display of prefetch, publish and verify: a bar on a terminal, lines otherwise.
import { PassThrough } from 'node:stream'
import t from 'tap'
import { createProgress, formatBytes, formatDuration } from '../../lib/progress'
import { within } from '../helpers/wait'

t.test('units', async (t) => {
  t.equal(formatBytes(0), '0 B')
  t.equal(formatBytes(1023), '1023 B')
  t.equal(formatBytes(1536), '1.50 KiB')
  t.equal(formatBytes(20 * 2 ** 30), '20.0 GiB')
  t.equal(formatBytes(300 * 2 ** 20), '300 MiB')
  t.equal(formatDuration(42), '42s')
  t.equal(formatDuration(185), '3m05s')
  t.equal(formatDuration(3720), '1h02m')
  t.equal(formatDuration(Infinity), '?')
})

function capture(): { stream: PassThrough & { isTTY?: boolean; columns?: number }; text: () => string } {
  const stream = new PassThrough() as PassThrough & { isTTY?: boolean; columns?: number }
  let out = ''
  stream.on('data', (d: Buffer) => (out += d.toString()))
  return { stream, text: () => out }
}

t.test('not a TTY: a plain line now and then, and a last one', async (t) => {
  const { stream, text } = capture()
  // The first periodic line (after 50 ms): capture() has seen it when this listener runs.
  const periodic = new Promise((resolve) => stream.once('data', resolve))
  const p = createProgress({ label: 'prefetch', files: 4, bytes: 4096, stream, every: 0.05 })
  p.add(1, 1024)
  await within(periodic, 10_000, 'a periodic line') // the display's timer is unref'd: this one keeps the test alive
  t.match(text(), /^prefetch: 1\/4 files, 1\.00 KiB\/4\.00 KiB, \S+ \S+\/s, ETA \S+\n/, 'a periodic line with the ETA')
  p.add(3, 3072)
  p.stop()
  p.stop()
  const lines = text().trim().split('\n')
  t.match(lines.at(-1), /^prefetch: 4\/4 files, 4\.00 KiB\/4\.00 KiB, .* in \d+s$/)
  t.equal(lines.filter((l) => / in \d+s$/.test(l)).length, 1, 'stop() is idempotent')
})

t.test('a TTY: a bar with files, bytes, rate and ETA', async (t) => {
  const { stream, text } = capture()
  stream.isTTY = true
  stream.columns = 200
  const p = createProgress({ label: 'hashing', files: 2, bytes: 2048, stream })
  p.add(1, 1024)
  p.add(1, 1024)
  p.stop()
  t.match(text(), /hashing \[[^\]]+\] 100% \| 2\/2 files \| 2\.00 KiB\/2\.00 KiB \| \S+ \S+\/s \| ETA 0s/)
})

t.test('rates in whole units, as the bar shows them (not 20.2020202020202 B/s)', async (t) => {
  t.equal(formatBytes(20.2020202020202), '20 B')
  t.equal(formatBytes(1023.7), '1024 B')
  const { stream, text } = capture()
  let clock = 1_000_000
  const p = createProgress({ label: 'prefetch', files: 4, bytes: 4096, stream, now: () => clock })
  p.add(1, 101)
  clock += 5000
  p.stop()
  t.match(text(), /^prefetch: 1\/4 files, 101 B\/4\.00 KiB, 20 B\/s, in 5s\n$/, 'a whole number of bytes a second')
  const q = capture()
  const r = createProgress({ label: 'hashing', files: 3, bytes: 0, stream: q.stream, now: () => clock })
  r.add(2, 0)
  clock += 3000
  r.stop()
  t.match(q.text(), /, 1 files\/s, in 3s\n$/, 'files a second without bytes')
})
