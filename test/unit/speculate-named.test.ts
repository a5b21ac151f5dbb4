// The order of guesses (lib/pipeline/speculate.ts) once a checked blob names files: what a
// program read names first, then what those name, level by level, before any guess from
// locality; what a guess from locality names is not guessed. On a fake host: no network.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { buildLocality } from '../../lib/pipeline/locality'
import { Speculator, type GuessOutcome } from '../../lib/pipeline/speculate'
import { fakeMd5 as md5, flistLines, treeOf } from '../helpers/flist-lines'
import { PYC } from '../helpers/pyc'
import { tmpdir } from '../helpers/tmp'

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v))

/**
 * A speculator over `lines` whose host records the guesses started and lets the test end them.
 * `cache`: the local cache, one file a blob (`path`); a blob there is not started (cached).
 */
function speculator(lines: [string, number, number][], cache?: string) {
  const started: string[] = []
  const pending = new Map<string, (o: GuessOutcome) => void>()
  /** Blobs a miss is fetching (the host's start() refuses them, as the pipeline's does). */
  const missed = new Set<string>()
  const s = new Speculator(
    {
      canStart: () => true,
      start: (m) => {
        if (pending.has(m) || missed.has(m) || (cache !== undefined && fs.existsSync(path.join(cache, m)))) return undefined
        started.push(m.replace(/^0+/, ''))
        return new Promise<GuessOutcome>((resolve) => pending.set(m, resolve))
      },
      path: (m) => (cache === undefined ? '/nonexistent' : path.join(cache, m)),
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

t.test('a miss of byte code nothing named (a module of the command line) names its directory too; what it imports goes first once read', async (t) => {
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
  t.same(started, ['4'], 'no cousin of its name; its directory, smallest first (maxDownloads 1)')
  s.verified(md5(2), PYC, true, true)
  await land()
  t.same(started, ['4', '6'], 'then os: what it imports, before the rest of its directory')
  await land()
  t.same(started, ['4', '6', '3'], 'then its sibling, in order')
  await land()
  t.same(started, ['4', '6', '3', '5'], 'then other (no such module in its package: the package of the root)')
  await land()
  t.same(started, ['4', '6', '3', '5', '1'], 'then the rest of its directory')
  s.close()
})

t.test('a miss of byte code a read named names its cousins, not its directory: its imports name what is read of it', async (t) => {
  const T = '.cpython-311.pyc'
  const { s, started, land, miss } = speculator([
    [`/lib/__pycache__/first${T}`, 1, PYC.length],
    [`/lib/__pycache__/os${T}`, 2, 100],
    [`/lib/__pycache__/sibling${T}`, 3, 100],
    [`/lib/__pycache__/zzz${T}`, 4, 10],
  ])
  s.verified(md5(1), PYC, true, true) // read (a guess the read joined): names os and sibling
  t.same(started, ['2'])
  miss(3)
  await land()
  t.same(started, ['2'], "sibling's miss: zzz beside it not guessed")
  s.close()
})

t.test('byte code of a version not read names its directory once read', async (t) => {
  const T = '.cpython-39.pyc'
  const { s, started, land, miss } = speculator([
    [`/lib/__pycache__/first${T}`, 1, PYC.length],
    [`/lib/__pycache__/sibling${T}`, 2, 200],
    [`/lib/__pycache__/zzz${T}`, 3, 100],
  ])
  s.verified(md5(1), PYC, true, true) // a read names sibling
  t.same(started, ['2'])
  miss(2) // (it joins the guess)
  const old = Buffer.from(PYC)
  old.writeUInt16LE(3425, 0) // 3.9
  s.verified(md5(2), old, true, true)
  await land()
  t.same(started, ['2', '3'], 'its directory, as before content was read')
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

t.test("a bare require names the package's package.json, then its entry file as the tree tells; a file's package scope before it", async (t) => {
  const main = Buffer.from("require('a')\nrequire('b/sub/x')\nrequire('c')\nrequire('d')\n")
  const { s, started, land } = speculator([
    ['/app/main.js', 1, main.length],
    ['/app/node_modules/a/package.json', 2, 100],
    ['/app/node_modules/a/index.js', 3, 100],
    ['/app/node_modules/a/other.js', 4, 100],
    ['/app/node_modules/b/package.json', 5, 100],
    ['/app/node_modules/b/sub/package.json', 6, 100],
    ['/app/node_modules/b/sub/x.js', 7, 100],
    ['/app/node_modules/c/package.json', 8, 100],
    ['/app/node_modules/c/lib/index.js', 9, 100],
    ['/app/node_modules/d/package.json', 10, 100],
    ['/app/node_modules/d/only.js', 11, 100],
    ['/app/node_modules/d/bin/cli.js', 12, 100],
  ])
  s.verified(md5(1), main, true, true)
  for (let i = 0; i < 8; i++) await land()
  t.same(started, ['2', '3', '5', '6', '7', '8', '9', 'a', 'b'], "each package.json, then what the tree tells of its entry: index.js, b's scope, lib/index.js, the only .js beside it")
  s.close()
})

t.test('a package whose tree tells no entry file: only its package.json, until that lands', async (t) => {
  const { s, started, land } = speculator([
    ['/app/main.js', 1, 100],
    ['/app/node_modules/e/package.json', 2, 100],
    ['/app/node_modules/e/one.js', 3, 100],
    ['/app/node_modules/e/two.js', 4, 100],
  ])
  s.verified(md5(1), Buffer.from("require('e')"), true, true)
  t.same(started, ['2'])
  s.verified(md5(2), json({ main: 'two.js' }), true, false)
  await land()
  t.same(started, ['2', '4'], 'two .js beside it: none guessed until its package.json came, naming its main')
  s.close()
})

t.test('a named file already in the local cache names what it asks for at once', async (t) => {
  const cache = tmpdir(t)
  const y = Buffer.from("require('../q/w')")
  const { s, started, land } = speculator(
    [
      ['/p/x.js', 2, 100],
      ['/p/y.js', 3, y.length],
      ['/q/w.js', 4, 100],
      ['/q/package.json', 5, 100],
    ],
    cache,
  )
  // y.js landed before (a guess from locality): in the cache, never downloaded again.
  fs.writeFileSync(path.join(cache, md5(3)), y)
  const st = fs.statSync(path.join(cache, md5(3)))
  fs.utimesSync(path.join(cache, md5(3)), st.mtime, st.mtime) // landed, not read: atime = mtime
  const before = fs.statSync(path.join(cache, md5(3)))
  s.verified(md5(2), Buffer.from("require('./y')"), true, true) // x.js read
  t.same(started, ['5'], "y.js cached: what it requires named at once (w.js's package scope first)")
  t.equal(fs.statSync(path.join(cache, md5(3))).atimeMs, before.atimeMs, 'its atime untouched: the program has not read it')
  await land()
  t.same(started, ['5', '4'])
  s.close()
})

t.test('a landed guess the program is seen to read (its atime moved) names what it asks for at the next miss', async (t) => {
  const cache = tmpdir(t)
  const y = Buffer.from("require('../b/w')")
  const { s, started, land, miss } = speculator(
    [
      ['/a/x.js', 2, 100],
      ['/a/y.js', 3, y.length],
      ['/b/w.js', 4, 100],
      ['/c/v.js', 5, 100],
      ['/d/u.js', 6, 100],
    ],
    cache,
  )
  miss(2) // x.js: y.js beside it, from locality
  t.same(started, ['3'])
  s.verified(md5(3), y, true, false)
  fs.writeFileSync(path.join(cache, md5(3)), y)
  await land()
  const st = fs.statSync(path.join(cache, md5(3)))
  fs.utimesSync(path.join(cache, md5(3)), st.mtime, st.mtime) // landed, not read: atime = mtime
  miss(5)
  t.same(started, ['3'], 'not read yet: w.js not named')
  fs.utimesSync(path.join(cache, md5(3)), new Date(st.mtimeMs + 10_000), st.mtime) // read
  miss(6)
  t.same(started, ['3', '4'], 'read: w.js named, as by a read of the program')
  s.close()
})
