// The order of guesses (lib/pipeline/speculate.ts) once a checked blob names files: what a
// program read names first, then what those name, level by level, before any guess from
// locality; what a guess from locality names is not guessed. On a fake host: no network.
import t from 'tap'
import { buildLocality } from '../../lib/pipeline/locality'
import { Speculator, type GuessOutcome } from '../../lib/pipeline/speculate'
import { fakeMd5 as md5, flistLines, treeOf } from '../helpers/flist-lines'
import { PYC } from '../helpers/pyc'

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v))

/** A speculator over `lines` whose host records the guesses started and lets the test end them. */
function speculator(lines: [string, number, number][]) {
  const started: string[] = []
  const pending = new Map<string, (o: GuessOutcome) => void>()
  /** Blobs a miss is fetching (the host's start() refuses them, as the pipeline's does). */
  const missed = new Set<string>()
  const s = new Speculator(
    {
      canStart: () => true,
      start: (m) => {
        if (pending.has(m) || missed.has(m)) return undefined
        started.push(m.replace(/^0+/, ''))
        return new Promise<GuessOutcome>((resolve) => pending.set(m, resolve))
      },
      path: () => '/nonexistent',
    },
    { slots: 16, maxDownloads: 1 },
  )
  s.setLocality(buildLocality(treeOf(flistLines(lines)))!)
  /** Ends the running guess (one at a time: `maxDownloads: 1`). */
  const land = async (): Promise<void> => {
    const [m, resolve] = [...pending][0]!
    pending.delete(m)
    resolve('landed')
    await new Promise((r) => setImmediate(r))
  }
  const miss = (h: number): void => {
    missed.add(md5(h))
    s.demand(md5(h))
  }
  return { s, started, land, miss }
}

t.test("a package.json read names its entry file before the miss's directory; what that file requires next", async (t) => {
  const { s, started, land, miss } = speculator([
    ['/node_modules/a/package.json', 1, 100],
    ['/node_modules/a/lib/main.js', 2, 100],
    ['/node_modules/a/lib/dep.js', 3, 100],
    ['/node_modules/a/lib/zzz.js', 4, 10],
    ['/node_modules/c/package.json', 5, 50],
    ['/node_modules/@s/b/package.json', 6, 100],
    ['/node_modules/@s/b/index.js', 7, 100],
  ])
  miss(1) // the miss of a/package.json: c/package.json (a cousin), then a's directory
  t.same(started, ['5'], 'the cousin first (maxDownloads 1)')
  s.verified(md5(1), json({ main: 'lib/main.js' }), true, true)
  await land()
  t.same(started, ['5', '2'], "then a's entry file, before the rest of the ranges")
  s.verified(md5(2), Buffer.from("const d = require('./dep')\nrequire('@s/b')\nrequire('fs')\n"), true, false)
  await land()
  t.same(started, ['5', '2', '3'], 'what the entry file requires: ./dep.js')
  await land()
  t.same(started, ['5', '2', '3', '6'], "then @s/b's package.json")
  s.verified(md5(6), json({}), true, false)
  await land()
  t.same(started, ['5', '2', '3', '6', '7'], 'and its entry file: named by a file named by what the program read')
  s.close()
})

t.test('a guess from locality names nothing; nothing is named twice', async (t) => {
  const { s, started, land, miss } = speculator([
    ['/a/x.js', 2, 100],
    ['/a/y.js', 3, 200],
    ['/a/z.js', 4, 300],
    ['/a/w.js', 5, 400],
  ])
  miss(2) // x.js: its directory's .js, smallest first
  t.same(started, ['3'])
  s.verified(md5(3), Buffer.from("require('./w')"), true, false) // a guess from locality landed
  await land()
  t.same(started, ['3', '4'], 'w.js not moved up: the guess was not read')
  s.verified(md5(2), Buffer.from("require('./w')"), true, true) // x.js, read
  await land()
  t.same(started, ['3', '4', '5'])
  s.verified(md5(2), Buffer.from("require('./w')"), true, true)
  t.same(started, ['3', '4', '5'], 'once')
  s.close()
})

t.test('on a near link, nothing is named', async (t) => {
  const { s, started } = speculator([
    ['/nm/a/package.json', 1, 100],
    ['/nm/a/main.js', 2, 100],
  ])
  s.verified(md5(1), json({ main: 'main.js' }), false, true)
  t.same(started, [])
  s.verified(md5(1), json({ main: 'main.js' }), true, true)
  t.same(started, ['2'])
  s.close()
})

t.test('a miss of byte code names the cousins, and what it imports once read; not its directory', async (t) => {
  const T = '.cpython-311.pyc'
  const { s, started, land, miss } = speculator([
    [`/lib/pkg/__pycache__/__init__${T}`, 1, 100],
    [`/lib/pkg/__pycache__/mod${T}`, 2, PYC.length],
    [`/lib/pkg/__pycache__/sibling${T}`, 3, 100],
    [`/lib/pkg/__pycache__/unrelated${T}`, 4, 10],
    [`/lib/other/__pycache__/__init__${T}`, 5, 100],
    [`/lib/__pycache__/os${T}`, 6, 100],
  ])
  miss(2)
  t.same(started, [], 'no cousin of its name; its directory not guessed')
  s.verified(md5(2), PYC, true, true)
  t.same(started, ['6'], 'os first (maxDownloads 1)')
  await land()
  t.same(started, ['6', '3'], 'then its sibling: what it imports, in order')
  await land()
  t.same(started, ['6', '3', '5'], 'then other (no such module in its package: the package of the root)')
  await land()
  t.same(started, ['6', '3', '5'], 'nothing else: not unrelated.pyc beside it')
  s.close()
})

t.test('byte code of a version not read names its directory once read', async (t) => {
  const T = '.cpython-39.pyc'
  const { s, started, miss } = speculator([
    [`/lib/pkg/__pycache__/mod${T}`, 2, 200],
    [`/lib/pkg/__pycache__/other${T}`, 3, 100],
  ])
  miss(2)
  t.same(started, [])
  const old = Buffer.from(PYC)
  old.writeUInt16LE(3425, 0) // 3.9
  s.verified(md5(2), old, true, true)
  t.same(started, ['3'], 'its directory, as before content was read')
  s.close()
})

t.test('readers at once: a miss of byte code names its directory, and content names nothing', async (t) => {
  const T = '.cpython-311.pyc'
  const { s, started } = speculator([
    [`/lib/pkg/__pycache__/mod${T}`, 2, PYC.length],
    [`/lib/pkg/__pycache__/unrelated${T}`, 4, 10],
    [`/lib/__pycache__/os${T}`, 6, 100],
  ])
  s.demand(md5(2), true, false)
  t.same(started, ['4'], 'its directory (one guess at once), as on a near link')
  s.verified(md5(6), PYC, true, true, false)
  t.same(started, ['4'], 'no import named')
  s.close()
})
