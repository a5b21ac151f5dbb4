// The soak in CI: 60 seconds (AYSFS_SOAK_SECONDS; the first 20 are warm-up) of concurrent mixed reads over 50,000 files
// (AYSFS_SOAK_FILES) through a real mount whose first store fails at random, with a cache quota
// that evicts all along: zero wrong bytes, no failed read, RSS and open fds flat after warm-up.
// `npm run soak` is the same for 10 minutes (bench/soak/run.ts).
import t from 'tap'
import { runSoak, summary } from '../../bench/soak/run'

const SECONDS = Number(process.env.AYSFS_SOAK_SECONDS ?? 60)
const FILES = Number(process.env.AYSFS_SOAK_FILES ?? 50_000)
t.setTimeout((SECONDS + 180) * 1000)

t.test(`soak: ${SECONDS} s over ${FILES} files`, async (t) => {
  const r = await runSoak({ durationMs: SECONDS * 1000, files: FILES, log: (line) => t.comment(line) })
  t.comment(summary(r))
  t.equal(r.wrong, 0, 'zero wrong bytes')
  t.same(r.errors, {}, 'no failed operation')
  t.ok(Object.values(r.ops).reduce((a, b) => a + b, 0) > SECONDS * 20, 'reads kept going')
  t.ok(Object.keys(r.faults).filter((k) => k !== 'good').length >= 5, 'the faulty store served faults of many kinds')
  t.ok(r.rss.growth <= 0.1, `RSS flat after warm-up (${(r.rss.growth * 100).toFixed(1)}%)`)
  t.ok(r.fds.growth <= 0.1, `open fds flat after warm-up (${(r.fds.growth * 100).toFixed(1)}%)`)
  t.same(r.failures, [], 'no failure')
})
