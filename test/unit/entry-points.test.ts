// A package's entry file from its package.json (lib/pipeline/entry-points.ts), and the lookup in
// the tree that keeps it inside the package (LocalityIndex.entryPoints, lib/pipeline/locality.ts).
import t from 'tap'
import { MAX_PACKAGE_JSON, exportsTarget, packageEntryFiles, packageRelative } from '../../lib/pipeline/entry-points'
import { MAX_PATH_ENTRIES } from '../../lib/pipeline/locality'
import { fakeMd5 as md5, localityOf } from '../helpers/flist-lines'

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v))

t.test('a main or an exports target as a path inside the package', async (t) => {
  t.equal(packageRelative('./lib/index.js'), 'lib/index.js')
  t.equal(packageRelative('lib//./index.js'), 'lib/index.js')
  t.equal(packageRelative('lib/../index.js'), 'index.js', '.. that stays inside')
  t.equal(packageRelative('.'), '', 'the package directory itself')
  t.equal(packageRelative('./'), '')
  t.equal(packageRelative('../other/index.js'), undefined, 'out of the package')
  t.equal(packageRelative('lib/../../x.js'), undefined, 'out of the package, further down first')
  t.equal(packageRelative('/etc/passwd'), undefined, 'absolute')
  t.equal(packageRelative('lib/a|b.js'), undefined, 'not a flist path')
  t.equal(packageRelative('lib/a\nb.js'), undefined)
  t.equal(packageRelative('a\0b'), undefined)
  t.equal(packageRelative(`${'x/'.repeat(600)}i.js`), undefined, 'too long')
  for (const v of [undefined, null, 1, true, ['index.js'], { x: 'index.js' }]) t.equal(packageRelative(v), undefined, `not a string: ${JSON.stringify(v)}`)
})

t.test('exports: the "." target under the conditions of require()', async (t) => {
  t.equal(exportsTarget('./a.js'), './a.js')
  t.equal(exportsTarget({ '.': './a.js', './sub': './s.js' }), './a.js')
  t.equal(exportsTarget({ './sub': './s.js' }), undefined, 'no "."')
  t.equal(exportsTarget({ import: './a.mjs', require: './a.cjs' }), './a.cjs', 'conditions of "." itself; import is not one')
  t.equal(exportsTarget({ '.': { node: { require: './n.js' }, default: './d.js' } }), './n.js', 'nested, the first matching key in order')
  t.equal(exportsTarget({ '.': [{ browser: './b.js' }, './d.js'] }), './d.js', 'an array: the first that resolves')
  t.equal(exportsTarget({ '.': 'a.js' }), undefined, 'a target must start with ./')
  t.equal(exportsTarget(42), undefined)
  t.equal(exportsTarget(null), undefined)
  let deep: unknown = './deep.js'
  for (let i = 0; i < 20; i++) deep = { default: deep }
  t.equal(exportsTarget({ '.': deep }), undefined, 'nesting is bounded')
})

t.test("Node's resolution of main, against what the package holds", async (t) => {
  const files = new Map([
    ['lib/main.js', 1],
    ['lib/dir/index.js', 2],
    ['index.js', 3],
    ['a.json', 4],
    ['dist/cjs/x.js', 5],
  ])
  const has = (rel: string): number | undefined => files.get(rel)
  t.same(packageEntryFiles(json({ main: 'lib/main.js' }), has), [1])
  t.same(packageEntryFiles(json({ main: './lib/main' }), has), [1], 'M.js')
  t.same(packageEntryFiles(json({ main: 'lib/dir' }), has), [2], 'M/index.js')
  t.same(packageEntryFiles(json({ main: 'a' }), has), [4], 'M.json')
  t.same(packageEntryFiles(json({ name: 'p' }), has), [3], 'no main: index.js')
  t.same(packageEntryFiles(json({ main: 'missing.js' }), has), [3], 'a main not there: index.js, as Node falls back')
  t.same(packageEntryFiles(json({ main: 'lib/main.js', exports: { '.': { require: './dist/cjs/x.js' } } }), has), [5], 'exports first; main is then not looked at')
  t.same(packageEntryFiles(json({ main: 'lib/main.js', exports: './nothing.js' }), has), [1], 'exports naming nothing: main')
})

t.test('a hostile package.json names nothing outside the package, and never throws', async (t) => {
  const asked: string[] = []
  const has = (rel: string): number | undefined => {
    asked.push(rel)
    return rel === 'index.js' ? 9 : undefined
  }
  const cases: [string, Buffer][] = [
    ['not JSON', Buffer.from('{"main": "lib/x.js",')],
    ['not UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d])],
    ['an array', json(['main'])],
    ['a string', json('index.js')],
    ['null', json(null)],
    ['empty', Buffer.alloc(0)],
  ]
  for (const [what, b] of cases) t.same(packageEntryFiles(b, has), [], what)
  t.same(asked, [], 'nothing looked up for those')
  const huge = Buffer.alloc(MAX_PACKAGE_JSON + 1, 0x20)
  json({ main: 'index.js' }).copy(huge)
  t.same(packageEntryFiles(huge, has), [], 'larger than the bound: not parsed')
  for (const main of ['../../../etc/passwd', '/etc/passwd', '..', 'lib/../../x']) {
    asked.length = 0
    t.same(packageEntryFiles(json({ main }), has), [9], `main ${main}: only the default index.js`)
    t.ok(
      asked.every((a) => !a.startsWith('/') && !a.split('/').includes('..')),
      'nothing outside asked for',
    )
  }
  for (const main of [42, null, ['x.js'], { x: 1 }, true]) t.same(packageEntryFiles(json({ main }), has), [9], `main ${JSON.stringify(main)}: not a string`)
  t.same(packageEntryFiles(json({ exports: { '.': { require: '../x.js' } } }), has), [9], 'an exports target out of the package')
})

t.test('in the tree: a package.json names a file of its own package only, never through a symlink', async (t) => {
  const ix = localityOf([
    `/nm/a/package.json|${md5(1)}|100`,
    `/nm/a/lib/index.js|${md5(2)}|50`,
    `/nm/a/lib/link.js|||root|root|777|1|0|0|/secret/x.js`,
    `/nm/a/node_modules/b/index.js|${md5(3)}|60`,
    `/nm/c/package.json|${md5(4)}|100`,
    `/nm/c/index.js|${md5(5)}|70`,
    `/nm/d/package.json|${md5(6)}|100`,
    `/nm/x.js|${md5(7)}|10`,
    `/secret/x.js|${md5(8)}|10`,
    `/nm/e/not-package.json|${md5(9)}|100`,
  ])
  const at = (i: number): string => ix.md5Of(i).replace(/^0+/, '')
  const points = (h: number, v: unknown): string[] => ix.entryPoints(md5(h), json(v)).map(at)
  t.same(points(1, { main: 'lib/index.js' }), ['2'])
  t.same(points(1, { main: './lib' }), ['2'], 'a directory: its index.js')
  t.same(points(1, { main: 'lib/link.js' }), [], 'a symlink is not followed (and no index.js to fall back on)')
  t.same(points(1, { main: 'node_modules/b/index.js' }), ['3'], 'below the package: allowed')
  t.same(points(1, { main: '../x.js' }), [], 'the parent directory: not inside')
  t.same(points(1, { main: '../c/index.js' }), [], "another package's file: not inside")
  t.same(points(1, { main: '/secret/x.js' }), [], 'absolute')
  t.same(points(4, {}), ['5'], 'the default index.js')
  t.same(points(6, {}), [], 'a package with no entry file')
  t.same(points(9, { main: 'x.js' }), [], 'a file not named package.json is not one')
  t.same(points(2, { main: 'index.js' }), [], 'a .js is not a package.json whatever it holds')
  const a = ix.dirOf(ix.entriesOf(md5(1))[0]!)
  t.ok(ix.lookup(a, 'lib'), 'a directory below')
  for (const rel of ['..', '../c/index.js', 'lib/../../c/index.js', './lib', 'lib//index.js', '']) t.equal(ix.lookup(a, rel), undefined, `no way up or around: ${JSON.stringify(rel)}`)
})

t.test('a tree of more entries than the bound has no paths: nothing is named by content', async (t) => {
  const lines = [`/p/package.json|${md5(1)}|100`, `/p/index.js|${md5(2)}|10`]
  for (let i = 0; i < MAX_PATH_ENTRIES / 5; i++) lines.push(`/a${i}/b/c/d/f.js|${md5(100 + i)}|10`)
  const ix = localityOf(lines)
  t.equal(ix.hasPaths, false)
  t.same(ix.entryPoints(md5(1), json({})), [])
  const small = localityOf(lines.slice(0, 2))
  t.same(small.entryPoints(md5(1), json({})).map((i) => small.md5Of(i)), [md5(2)], 'the same package in a small tree')
})
