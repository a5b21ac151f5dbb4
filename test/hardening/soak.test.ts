// A short soak in `npm test`: 5 seconds (AYSFS_SOAK_SECONDS) of concurrent mixed reads by four
// processes over 5,000 files (AYSFS_SOAK_FILES) through a real mount whose first store fails at
// random (seed 1), with a cache quota that evicts all along: zero wrong bytes, no failed read, a
// fault of every common kind served. Nothing else in the suite has faults, evictions and many
// readers at once. Whether RSS and open fds stay flat needs a long run: `npm run soak` (10
// minutes, bench/soak/run.ts) checks that, and so does this file with AYSFS_SOAK_SECONDS >= 60.
import t from 'tap'
import { runSoak, summary } from '../../bench/soak/run'

// 5 s: enough for every one of the 11 random fault kinds to be served several times (7 or more
// each in seven runs of 4 to 6 s on a loaded 2-core machine; >= 5 kinds are asserted) and for
// ~400-900 operations (> 20/s asserted). The rest of the file's cost is set-up, not seconds.
const SECONDS = Number(process.env.AYSFS_SOAK_SECONDS ?? 5)
const FILES = Number(process.env.AYSFS_SOAK_FILES ?? 5_000)
const FLATNESS = SECONDS >= 60
t.setTimeout((SECONDS + 180) * 1000)

t.test(`soak: ${SECONDS} s over ${FILES} files`, async (t) => {
  const r = await runSoak({ durationMs: SECONDS * 1000, files: FILES, seed: 1, log: (line) => t.comment(line) })
  t.comment(summary(r))
  t.equal(r.wrong, 0, 'zero wrong bytes')
  t.same(r.errors, {}, 'no failed operation')
  t.ok(Object.values(r.ops).reduce((a, b) => a + b, 0) > SECONDS * 20, 'reads kept going')
  t.ok(Object.keys(r.faults).filter((k) => k !== 'good').length >= 5, 'the faulty store served faults of many kinds')
  if (FLATNESS) {
    t.ok(r.rss.growth <= 0.1, `RSS flat after warm-up (${(r.rss.growth * 100).toFixed(1)}%)`)
    t.ok(r.fds.growth <= 0.1, `open fds flat after warm-up (${(r.fds.growth * 100).toFixed(1)}%)`)
    t.same(r.failures, [], 'no failure')
  } else {
    // A short run's RSS and fd samples say nothing about a trend; every other check counts.
    t.same(
      r.failures.filter((f) => !/^(RSS grew|open fds grew|only \d+ samples)/.test(f)),
      [],
      'no failure (RSS and fds flatness: a long run)',
    )
  }
})
