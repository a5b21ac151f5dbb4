// The modules a .pyc imports (lib/pipeline/imports.ts), and the files of the tree they resolve to
// (LocalityIndex.pycImports, lib/pipeline/locality.ts).
import t from 'tap'
import { moduleParts, pycNames } from '../../lib/pipeline/imports'
import { SMALL_BLOB } from '../../lib/pipeline/locality'
import { fakeMd5 as md5, flistLines, localityOf } from '../helpers/flist-lines'
import { PYC } from '../helpers/pyc'


t.test('the names of the module-level code, in order; not those of functions', async (t) => {
  t.same(pycNames(PYC), ['os', 'json.decoder', 'json', '', 'sibling', 'other', 'thing', '_ext', 'ImportError', 'f', 'K'])
})

t.test('anything else names nothing, and nothing throws', async (t) => {
  t.equal(pycNames(Buffer.alloc(0)), undefined)
  t.equal(pycNames(Buffer.from('import os\n')), undefined, 'a source file')
  const other = Buffer.from(PYC)
  other.writeUInt16LE(3439, 0) // 3.10: another layout
  t.equal(pycNames(other), undefined, 'another version')
  for (let n = 0; n < PYC.length; n += 7) t.equal(pycNames(PYC.subarray(0, n)), undefined, `truncated at ${n}`)
  const deep = Buffer.concat([PYC.subarray(0, 16), Buffer.from([0x63]), Buffer.alloc(20), Buffer.alloc(10_000, 0x29 /* small tuple */)])
  for (let i = 37; i < deep.length; i += 2) deep[i] = 1 // small tuples of one, nested
  t.equal(pycNames(deep), undefined, 'nested deeper than the bound')
  const badRef = Buffer.concat([PYC.subarray(0, 16), Buffer.from([0x63]), Buffer.alloc(20), Buffer.from([0x72, 0xff, 0xff, 0, 0])])
  t.equal(pycNames(badRef), undefined, 'a reference to nothing')
  const huge = Buffer.concat([PYC.subarray(0, 16), Buffer.from([0x63]), Buffer.alloc(20), Buffer.from([0x28, 0xff, 0xff, 0xff, 0x7f])])
  t.equal(pycNames(huge), undefined, 'a tuple larger than the file')
  // Random corruption: an answer or undefined, never a throw.
  let seed = 7
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff)
  for (let k = 0; k < 2000; k++) {
    const b = Buffer.from(PYC)
    for (let j = 0; j < 3; j++) b[16 + (rnd() % (b.length - 16))] = rnd() & 0xff
    const got = pycNames(b)
    if (got !== undefined && !got.every((s) => typeof s === 'string')) t.fail('a name that is not a string')
  }
})

t.test('module names', async (t) => {
  t.same(moduleParts('json.decoder'), ['json', 'decoder'])
  t.same(moduleParts('_ext'), ['_ext'])
  for (const n of ['', '.', 'a..b', '../x', 'a/b', '1a', 'a-b', 'x'.repeat(201)]) t.equal(moduleParts(n), undefined, JSON.stringify(n))
})


t.test('in the tree: its own package, then the import root, then lib-dynload; byte code of its kind', async (t) => {
  const T = '.cpython-311.pyc'
  const lines: [string, number, number][] = [
    ['/lib/pkg/__init__.py', 1, 10],
    [`/lib/pkg/__pycache__/__init__${T}`, 2, 100],
    [`/lib/pkg/__pycache__/mod${T}`, 3, PYC.length],
    [`/lib/pkg/__pycache__/sibling${T}`, 4, 100],
    [`/lib/pkg/__pycache__/other${T}`, 5, 100],
    [`/lib/pkg/__pycache__/other.cpython-311.opt-1.pyc`, 6, 100],
    [`/lib/__pycache__/os${T}`, 7, 100],
    [`/lib/json/__pycache__/__init__${T}`, 8, 100],
    [`/lib/json/__pycache__/decoder${T}`, 9, 100],
    ['/lib/lib-dynload/_ext.cpython-311-x86_64-linux-gnu.so', 10, SMALL_BLOB * 2],
    [`/lib/__pycache__/lazy${T}`, 11, 100],
    [`/lib/__pycache__/K${T}`, 12, 100],
    [`/elsewhere/__pycache__/thing${T}`, 13, 100],
    ['/lib/lib-dynload/other.cpython-311-x86_64-linux-gnu.so', 14, 100],
  ]
  const ix = localityOf(flistLines(lines))
  const got = ix.pycImports(md5(3), PYC).map((i) => ix.md5Of(i).replace(/^0+/, ''))
  // os (root), json + json.decoder (root: the package, then the module), sibling and other (its
  // package), other's .so too (a name of one part), _ext (lib-dynload, larger than a miss names),
  // K (a name of the module that is a module of the root: a wrong guess the budget bounds).
  t.same(got, ['7', '8', '9', '4', '5', 'e', 'a', 'c'])
  t.notOk(got.includes('b'), 'lazy: imported in a function, not named')
  t.notOk(got.includes('6'), 'byte code of another kind')
  t.notOk(got.includes('d'), 'nothing outside the package and its root')
  t.same(ix.pycImports(md5(2), PYC).length > 0, true, 'any .pyc of a __pycache__ (the content decides)')
  t.same(ix.pycImports(md5(1), PYC), [], 'not in a __pycache__')
  t.same(ix.pycImports(md5(4), Buffer.from('garbage')), [], 'not byte code')
  t.same(ix.neighbours(md5(10)), [], 'a miss of a blob larger than a miss names still names nothing')
})

t.test('byte code that is one blob at every optimisation level names the plain imports', async (t) => {
  const T = '.cpython-311'
  const lines: [string, number, number][] = [
    [`/lib/__pycache__/mod${T}.opt-2.pyc`, 3, PYC.length],
    [`/lib/__pycache__/mod${T}.opt-1.pyc`, 3, PYC.length],
    [`/lib/__pycache__/mod${T}.pyc`, 3, PYC.length],
    [`/lib/__pycache__/os${T}.pyc`, 7, 100],
    [`/lib/__pycache__/os${T}.opt-1.pyc`, 8, 90],
    [`/lib/__pycache__/os${T}.opt-2.pyc`, 9, 80],
  ]
  const ix = localityOf(flistLines(lines))
  t.same(
    ix.pycImports(md5(3), PYC).map((i) => ix.md5Of(i).replace(/^0+/, '')),
    ['7'],
    'os.cpython-311.pyc, not the .opt-1 or .opt-2 one',
  )
})
