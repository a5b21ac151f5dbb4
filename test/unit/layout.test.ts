// The suite's layout (test/README.md): test/unit/ and test/fuzz/ need no mount and no server, so
// .taprc lets their files run in parallel; every other directory with test files is in .taprc's
// `serial` list, so its files run one at a time. A new directory must be added there.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'

const ROOT = path.resolve(__dirname, '../..')
const TEST = path.join(ROOT, 'test')
const PARALLEL = ['unit', 'fuzz']
// Helpers that mount, start servers or run the command line: not for parallel files.
const SERIAL_HELPERS = ['mount', 'cli', 'hardening', 'nginx', 'private-nginx', 'faults']

/** The `serial:` list of .taprc (a YAML list of plain strings). */
function serialDirs(): string[] {
  const lines = fs.readFileSync(path.join(ROOT, '.taprc'), 'utf8').split('\n')
  const start = lines.findIndex((l) => /^serial:\s*$/.test(l))
  const out: string[] = []
  for (const line of start < 0 ? [] : lines.slice(start + 1)) {
    const m = /^\s+-\s+"?([^"\s]+)"?\s*$/.exec(line)
    if (!m) break
    out.push(m[1]!.replace(/\/$/, ''))
  }
  return out
}

/** Test files below `dir`, relative to the project root. */
function testFiles(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => f.endsWith('.test.ts'))
    .map((f) => path.relative(ROOT, path.join(dir, f)))
}

t.test('every directory with test files outside test/unit and test/fuzz runs serially', async (t) => {
  const serial = serialDirs()
  t.ok(serial.length > 0, '.taprc has a serial list')
  const top = fs.readdirSync(TEST, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name)
  for (const name of top) {
    if (PARALLEL.includes(name) || testFiles(path.join(TEST, name)).length === 0) continue
    t.ok(serial.includes(`test/${name}`), `test/${name} is in .taprc's serial list`)
  }
  for (const name of PARALLEL) t.notOk(serial.includes(`test/${name}`), `test/${name} runs in parallel`)
  t.same(testFiles(TEST).filter((f) => path.dirname(f) === 'test'), [], 'no test file at the top of test/')
})

t.test('files that run in parallel use no helper that mounts or starts a server', async (t) => {
  for (const name of PARALLEL) {
    for (const file of testFiles(path.join(TEST, name))) {
      const text = fs.readFileSync(path.join(ROOT, file), 'utf8')
      const used = SERIAL_HELPERS.filter((h) => new RegExp(`from '(\\.\\./)+helpers/${h}'`).test(text))
      t.same(used, [], `${file}: no ${SERIAL_HELPERS.join('/')} helper`)
    }
  }
})
