// The benchmark's smoke run (`--quick`: tiny sizes, two runs): every workload runs through a real
// mount and natively, and the JSON has sane numbers. No target is enforced here; the full run
// (`npm run bench`, docs/benchmarks.md) is not for CI.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { mountsBelow } from '../helpers/mount'

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
}

interface Summary {
  min: number
  median: number
  max: number
  runs: number[]
}

t.test('npm run bench --quick: every workload, as a table and as JSON', { timeout: 600_000 }, async (t) => {
  const tmpBefore = new Set(fs.readdirSync('/tmp').filter((n) => n.startsWith('aysfs-bench-')))
  const r = spawnSync(process.execPath, [RUN, '--quick', '--json'], { encoding: 'utf8', timeout: 540_000, maxBuffer: 64 << 20 })
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
  t.same(doc.results.map((x) => x.id).sort(), Object.keys(EXPECTED).sort(), 'every workload, once')
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
  t.equal(doc.allMet, doc.results.every((x) => x.met))
  t.match(r.stderr, /workload\s+unit\s+mount min \/ median \/ max/, 'the table on stderr')

  t.same(mountsBelow('/tmp').filter((m) => m.includes('aysfs-bench-')), [], 'nothing left mounted')
  const left = fs.readdirSync('/tmp').filter((n) => n.startsWith('aysfs-bench-') && !tmpBefore.has(n))
  t.same(left, [], 'its temp dir removed')
})
