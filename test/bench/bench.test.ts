// The benchmark's smoke run (`--quick` at tinier sizes still, one run): it only proves the
// harness runs every workload through a real mount and natively, writes sane JSON and cleans up
// after itself. No target is enforced here; the full run (`npm run bench`, docs/benchmarks.md) is
// not for CI. The WAN rows (a minute or more: real trees of this machine over a 10 ms RTT) run
// on request, AYSFS_BENCH_WAN=1: as in the full run, on this machine's Python stdlib and npm;
// their needed sets come from strace, and the smoke run checks that the mount fetched exactly
// those.
// The run gets a TMPDIR of its own: what it mounted and left behind is looked for there only (a
// benchmark running at the same time has its own).
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { mountsBelow, tmpdir } from '../helpers/mount'

const RUN = path.resolve(__dirname, '../../dist/bench/run.js')

const EXPECTED: Record<string, { unit: string; reference?: string }> = {
  cold: { unit: 's', reference: 'curl' },
  'stat-first': { unit: 's', reference: 'native' },
  'stat-second': { unit: 's', reference: 'native' },
  'read-first': { unit: 's', reference: 'native' },
  'read-second': { unit: 's', reference: 'native' },
  'big-first': { unit: 'MB/s', reference: 'native' },
  'big-second': { unit: 'MB/s', reference: 'native' },
  'rand-first': { unit: 's', reference: 'native' },
  startup: { unit: 's', reference: 'native' },
  'node-startup': { unit: 's', reference: 'native' },
  'million-mount': { unit: 's' },
  'million-rss': { unit: 'B/entry' },
  'bro-decode': { unit: 'MB/s', reference: 'brotliDecompressSync' },
  'quota-pass': { unit: 's', reference: 'find' },
  'quota-evict': { unit: 's', reference: 'find' },
  'wan-python': { unit: 's', reference: 'curl' },
  'wan-node': { unit: 's', reference: 'curl' },
  'wan-tree': { unit: 's', reference: 'curl' },
  // The same with speculate = false, alternated with them (the engine before speculation).
  'wan-python-nospec': { unit: 's', reference: 'curl' },
  'wan-node-nospec': { unit: 's', reference: 'curl' },
  'wan-tree-nospec': { unit: 's', reference: 'curl' },
  'wan-python-recorded': { unit: 's', reference: 'curl' },
  'wan-node-recorded': { unit: 's', reference: 'curl' },
  'chunks-first': { unit: 's', reference: 'whole blob' },
  'chunks-middle': { unit: 's', reference: 'whole blob' },
}

interface Summary {
  min: number
  median: number
  max: number
  runs: number[]
}

// Sizes: enough for every workload to have work (a few hundred files, a 4 MiB "large" file), no
// more.
const WAN = process.env.AYSFS_BENCH_WAN === '1'
const GROUPS = ['stat', 'read', 'big', 'rand', 'startup', 'cold', 'million', 'bro', 'quota', 'chunks', ...(WAN ? ['wan'] : [])]
const ARGS = ['--quick', '--runs', '1', '--json', '--files', '300', '--big-size', String(4 << 20), '--million', '2000', '--quota-blobs', '500', '--only', GROUPS.join(',')]

t.test('npm run bench --quick: every workload, as a table and as JSON', { timeout: 600_000 }, async (t) => {
  const tmp = tmpdir(t, 'aysfs-bench-test-')
  const r = spawnSync(process.execPath, [RUN, ...ARGS], { encoding: 'utf8', timeout: 540_000, maxBuffer: 64 << 20, env: { ...process.env, TMPDIR: tmp } })
  t.equal(r.status, 0, `exits 0\n${r.stderr}`)
  const doc = JSON.parse(r.stdout) as {
    version: number
    machine: { cores: number; kernel: string }
    options: { quick: boolean; runs: number }
    results: {
      id: string
      unit: string
      mount: Summary
      reference?: Summary
      referenceName?: string
      ratio?: number
      target: { of: string; op: string; bound: number }
      met: boolean
      info?: Record<string, unknown>
    }[]
    allMet: boolean
  }
  t.equal(doc.version, 1)
  t.ok(doc.machine.cores >= 1 && doc.machine.kernel.length > 0, 'describes the machine')
  t.equal(doc.options.quick, true)
  const expected = Object.keys(EXPECTED).filter((id) => WAN || !id.startsWith('wan-'))
  t.same(doc.results.map((x) => x.id).sort(), expected.sort(), `every workload${WAN ? '' : ' but the WAN rows (AYSFS_BENCH_WAN=1)'}, once`)
  const sane = (s: Summary | undefined, what: string): void => {
    t.ok(s, `${what}: present`)
    if (!s) return
    t.equal(s.runs.length, doc.options.runs, `${what}: one figure a run`)
    t.ok(s.runs.every((x) => Number.isFinite(x) && x > 0), `${what}: positive numbers`)
    t.ok(s.min <= s.median && s.median <= s.max, `${what}: min <= median <= max`)
  }
  for (const res of doc.results) {
    const want = EXPECTED[res.id]!
    t.equal(res.unit, want.unit, `${res.id}: unit`)
    sane(res.mount, `${res.id} mount`)
    if (want.reference) {
      t.equal(res.referenceName, want.reference, `${res.id}: compared with ${want.reference}`)
      sane(res.reference, `${res.id} ${want.reference}`)
      t.ok(Number.isFinite(res.ratio) && res.ratio! > 0, `${res.id}: a ratio`)
      t.ok(Math.abs(res.ratio! - res.mount.median / res.reference!.median) < 1e-9, `${res.id}: ratio of the medians`)
    }
    t.equal(typeof res.met, 'boolean', `${res.id}: judged`)
    t.ok(['<=', '>='].includes(res.target.op) && res.target.bound > 0, `${res.id}: a target`)
  }
  const byId = new Map(doc.results.map((x) => [x.id, x]))
  // The first passes really went through FUSE, and the million-entry mount was that big.
  const ops = (id: string): Record<string, number> => (byId.get(id)!.info!.engine as Record<string, number>) ?? {}
  t.ok(ops('stat-first').readdirplus > 0, 'the stat pass listed directories through the mount')
  t.ok(ops('read-first').read > 0 && ops('read-first').misses === 0, 'the read pass read from the local cache')
  t.ok(ops('startup').lookup > 0 && ops('node-startup').lookup > 0, 'the start-ups looked their modules up through the mount')
  const million = byId.get('million-mount')!.info as { flistEntries: number; tableEntries: number }
  t.ok(million.tableEntries > million.flistEntries, 'the synthetic flist was mounted, its directories implied')
  // The WAN rows: the mount fetched at least what strace says the workload needs; the floor is one
  // RTT per needed blob.
  const bounds: Record<string, number> = WAN ? { 'wan-python': 2, 'wan-node': 3, 'wan-tree': 1.5, 'wan-python-recorded': 1.3, 'wan-node-recorded': 1.3 } : {}
  for (const id of Object.keys(bounds)) {
    const row = byId.get(id)!
    const w = row.info!.wan as Record<string, number>
    t.equal(row.target.bound, bounds[id], `${id}: the issue's target`)
    t.ok(w.neededBlobs > 10 && w.neededBytes > 0, `${id}: a needed set (${w.neededBlobs} blobs)`)
    t.equal(w.missingBlobs, 0, `${id}: the mount fetched every needed blob`)
    t.equal(w.fetchedBlobs, w.neededBlobs + w.extraBlobs, `${id}: fetched = needed + speculative`)
    t.equal(w.rttMs, 10)
    t.ok(Math.abs(w.floorSeconds - (w.neededBlobs * w.rttMs) / 1000) < 1e-9, `${id}: floor = needed blobs x RTT`)
    const runs = row.info!.runs as { profile: { requests: number; connections: number } }[]
    t.ok(runs.every((x) => x.profile.requests >= w.neededBlobs && x.profile.connections >= 1), `${id}: the proxy saw a request per blob`)
  }
  if (WAN) {
    // The recorded rows: the set `record` wrote was published, and the mount fetched it.
    for (const id of ['wan-python-recorded', 'wan-node-recorded']) {
      const w = byId.get(id)!.info!.wan as Record<string, number>
      t.ok(w.startupBlobs >= w.neededBlobs * 0.9, `${id}: a recorded set of ${w.startupBlobs} blobs for ${w.neededBlobs} needed`)
      const runs = byId.get(id)!.info!.runs as { startup: { listed: number; fetched: number; alreadyCached: number } }[]
      t.ok(runs.every((x) => x.startup.listed === w.startupBlobs && x.startup.fetched + x.startup.alreadyCached > 0), `${id}: each mount took the list`)
    }
    const treeBlobs = (byId.get('wan-tree')!.info!.wan as Record<string, number>).neededBlobs
    t.ok((byId.get('wan-node')!.info!.wan as Record<string, number>).neededBlobs < treeBlobs, 'npm --version needs part of the npm tree')
    t.match(r.stderr, /WAN row\s+link\s+needed blobs \/ bytes/, 'the WAN table on stderr')
  }
  t.equal(doc.allMet, doc.results.every((x) => x.met))
  t.match(r.stderr, /workload\s+unit\s+mount min \/ median \/ max/, 'the table on stderr')

  t.same(mountsBelow(tmp), [], 'nothing left mounted')
  t.same(fs.readdirSync(tmp), [], 'its temp dirs removed')
})
