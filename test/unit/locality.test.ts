// Directory locality (lib/pipeline/locality.ts): which blobs a miss names, in which order.
import t from 'tap'
import { LocalityIndex, SMALL_BLOB, buildLocality, kindOf } from '../../lib/pipeline/locality'
import { fakeMd5 as md5, flistLines, localityOf, treeOf } from '../helpers/flist-lines'

function index(entries: [string, number, number][]): LocalityIndex {
  return localityOf(flistLines(entries))
}

function tree(entries: [string, number, number][]): ReturnType<typeof treeOf> {
  return treeOf(flistLines(entries))
}

function named(ix: LocalityIndex, miss: number): string[][] {
  return ix.neighbours(md5(miss)).map(({ range }) => {
    const out: string[] = []
    for (let i = range.from; i < range.to; i++) out.push(ix.md5Of(range.perm ? range.perm[i]! : i).replace(/^0+/, ''))
    return out
  })
}

t.test('kinds', async (t) => {
  t.equal(kindOf('os.cpython-311.pyc'), '.cpython-311.pyc')
  t.equal(kindOf('os.cpython-311.opt-1.pyc'), '.cpython-311.opt-1.pyc')
  t.equal(kindOf('index.js'), '.js')
  t.equal(kindOf('.bashrc'), '', 'a leading dot is part of the name')
  t.equal(kindOf('README'), '')
})

t.test('a miss names the files of its kind in its directory, smallest first, large and empty ones left out', async (t) => {
  const ix = index([
    ['/pkg/a.js', 1, 300],
    ['/pkg/b.js', 2, 100],
    ['/pkg/c.js', 3, 200],
    ['/pkg/d.json', 4, 50],
    ['/pkg/e.js', 5, 0],
    ['/pkg/f.js', 6, SMALL_BLOB + 1],
    ['/pkg/sub/g.js', 7, 10],
    ['/other/h.js', 8, 10],
  ])
  t.same(named(ix, 1), [['2', '3', '1']], 'the same kind only, by size; the empty and the large not at all')
  t.same(named(ix, 4), [['4']])
  t.same(named(ix, 6), [], 'a large blob names nothing')
  t.same(named(ix, 99), [], 'an unknown blob names nothing')
})

t.test('a miss beside a __pycache__ also names its byte code of the main kind', async (t) => {
  const ix = index([
    ['/lib/os.py', 1, 500],
    ['/lib/__pycache__/os.cpython-311.pyc', 2, 400],
    ['/lib/__pycache__/io.cpython-311.pyc', 3, 300],
    ['/lib/__pycache__/os.cpython-311.opt-1.pyc', 4, 100],
  ])
  t.same(named(ix, 1), [['1'], ['3', '2']])
  t.same(named(ix, 3), [['3', '2']], 'a miss in __pycache__: its own kind there')
})

t.test('a miss names its cousins (one name in sibling directories, at one and two levels) before its directory (which goes first)', async (t) => {
  const ix = index([
    ['/nm/a/package.json', 1, 300],
    ['/nm/a/index.js', 2, 50],
    ['/nm/b/package.json', 3, 100],
    ['/nm/c/package.json', 4, 200],
    ['/nm/c/lib/index.js', 5, 40],
    ['/nm/d/lib/index.js', 6, 30],
    ['/nm/d/lib/util.js', 7, 20],
    ['/nm/e/README', 8, 10],
    ['/lib/x/__pycache__/__init__.cpython-311.pyc', 9, 90],
    ['/lib/y/__pycache__/__init__.cpython-311.pyc', 10, 80],
    ['/lib/y/__pycache__/z.cpython-311.pyc', 11, 70],
  ])
  t.same(named(ix, 1), [['3', '4', '1'], ['1']], 'the package.json of every package, smallest first, then its directory (package.json alone of its kind)')
  t.same(named(ix, 5), [['6', '5'], ['5']], 'lib/index.js of the other packages (two levels)')
  t.same(named(ix, 7), [['7', '6']], 'a name no sibling has: its directory only')
  t.same(named(ix, 8), [['8']])
  t.same(named(ix, 9), [['a', '9'], ['9']], 'the __init__ byte code of the other packages')
  t.same(named(ix, 11), [['b', 'a']])
})

t.test('a blob in two directories names both', async (t) => {
  const ix = index([
    ['/a/x.js', 1, 10],
    ['/a/y.js', 2, 20],
    ['/b/x.js', 1, 10],
    ['/b/z.js', 3, 30],
  ])
  const got = named(ix, 1).map((r) => r.sort()).sort()
  t.same(got, [['1', '1'], ['1', '2'], ['1', '3']], 'both directories, and x.js in each (its cousins: one name in sibling directories), once')
})

t.test('a tree with more small files than the bound is not guessed from', async (t) => {
  const lines: [string, number, number][] = [
    ['/a/x.js', 1, 10],
    ['/a/y.js', 2, 20],
    ['/a/z.js', 3, 30],
  ]
  t.ok(buildLocality(tree(lines), 3))
  t.equal(buildLocality(tree(lines), 2), undefined)
})
