// The suite's layout (test/README.md): test/unit/ and test/fuzz/ need no mount and no server;
// every other directory mounts or starts servers. All files run side by side (.taprc `jobs`),
// which is sound because each works in a temp directory of its own and listens on ports the
// kernel picks: this file checks the layout and that no test or helper fixes a port.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'

const ROOT = path.resolve(__dirname, '../..')
const TEST = path.join(ROOT, 'test')
const PARALLEL = ['unit', 'fuzz']
// Helpers that mount, start servers or run the command line: not for unit and fuzz files.
const SERIAL_HELPERS = ['mount', 'cli', 'hardening', 'nginx', 'private-nginx', 'faults', 'package']
// The directories of test/README.md's table, each for one kind of test.
const KNOWN = ['artifact', 'unit', 'fuzz', 'engine', 'pipeline', 'e2e', 'cli', 'hardening', 'trust', 'fleet', 'package', 'bench']

/** Files below `dir` ending in `ext`, relative to the project root. */
function filesBelow(dir: string, ext: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => f.endsWith(ext))
    .map((f) => path.relative(ROOT, path.join(dir, f)))
}

/** Test files below `dir`, relative to the project root. */
function testFiles(dir: string): string[] {
  return filesBelow(dir, '.test.ts')
}

t.test('every directory with test files is one of the layout\'s, documented in test/README.md', async (t) => {
  const readme = fs.readFileSync(path.join(TEST, 'README.md'), 'utf8')
  const top = fs.readdirSync(TEST, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name)
  for (const name of top) {
    if (testFiles(path.join(TEST, name)).length === 0) continue
    t.ok(KNOWN.includes(name), `test/${name} is a directory of the layout`)
    t.ok(readme.includes(`\`test/${name}/\``), `test/README.md describes test/${name}/`)
  }
  t.same(testFiles(TEST).filter((f) => path.dirname(f) === 'test'), [], 'no test file at the top of test/')
})

t.test('no test, helper or server they start listens on a fixed port', async (t) => {
  // A literal port in listen(), in a server's options or in an nginx `listen`; URLs of names
  // that never resolve (test/pipeline/sources.test.ts) are not listened on. The examples/
  // configurations keep their ports: the tests that run them rewrite those.
  const fixed = /\blisten\(\s*[1-9]\d*\s*[,)]|\bport:\s*[1-9]\d*\b|\blisten\s+(127\.0\.0\.1:)?[1-9]\d*\s*;/
  const files = [...filesBelow(TEST, '.ts'), ...filesBelow(path.join(ROOT, 'bench'), '.ts')]
  t.ok(files.length > 100, `${files.length} files looked at`)
  for (const file of files) {
    // What a test replaces in a copied example is the example's port, not one it listens on.
    const text = fs.readFileSync(path.join(ROOT, file), 'utf8').replace(/\.replace(All)?\(\s*(\/(\\.|[^/\n])+\/[a-z]*|'[^'\n]*'|"[^"\n]*")/g, '.replace(SEARCH')
    const m = fixed.exec(text)
    t.notOk(m, `${file}: no fixed port${m ? ` (${m[0]})` : ''}`)
  }
})

t.test('unit and fuzz files use no helper that mounts or starts a server', async (t) => {
  for (const name of PARALLEL) {
    for (const file of testFiles(path.join(TEST, name))) {
      const text = fs.readFileSync(path.join(ROOT, file), 'utf8')
      const used = SERIAL_HELPERS.filter((h) => new RegExp(`from '(\\.\\./)+helpers/${h}'`).test(text))
      t.same(used, [], `${file}: no ${SERIAL_HELPERS.join('/')} helper`)
    }
  }
})
