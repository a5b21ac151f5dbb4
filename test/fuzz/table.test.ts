// Fuzz target: the native inode table check (native/inode_table.cc `InodeTable::Adopt`), which
// the flist fuzzer never reaches (lib/table.ts only writes valid tables).
//
// test/fuzz/table_fuzz.cc is compiled with g++ and AddressSanitizer + UndefinedBehaviorSanitizer
// into build/fuzz/ (cached by the hash of its sources, the compiler and the flags, so a second
// run does not recompile), then run: generated tables in the documented layout, mutated at their
// bounds, each either refused with an error or served by every accessor without breaking a rule
// of the layout. Any sanitizer report, crash or broken rule fails this test. Files in
// ./table-corpus/ (raw buffers that once found a bug) run first on every pass.
//
// `npm test` runs a fixed number of inputs from a fixed seed (the same inputs on every run);
// AYSFS_FUZZ_SECONDS runs for that long from a new seed instead (`npm run fuzz`: 600 s).
// AYSFS_FUZZ_SEED replays a run (the seed is in the test's name; a failure prints the command
// that replays the one input that failed).
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'

/** Seconds of a long run; undefined: the short, fixed run of `npm test`. */
const SECONDS = process.env.AYSFS_FUZZ_SECONDS === undefined ? undefined : Number(process.env.AYSFS_FUZZ_SECONDS)
const FIXED_SEED = 14
const SEED = process.env.AYSFS_FUZZ_SEED !== undefined ? Number(process.env.AYSFS_FUZZ_SEED) : SECONDS === undefined ? FIXED_SEED : (Date.now() ^ (process.pid << 8)) >>> 0
/** Generated inputs of the short run (the corpus runs besides): a few seconds. */
const ITERATIONS = 2000
// The compile (about 30 s on a loaded machine) and the run, generously.
t.setTimeout(((SECONDS ?? 10) + 300) * 1000)

const ROOT = path.resolve(__dirname, '../..')
const HARNESS = 'test/fuzz/table_fuzz.cc'
const CORPUS = path.join(__dirname, 'table-corpus')
const CXX = process.env.CXX ?? 'g++'
// -g1: line tables, all a sanitizer's stack trace needs (file:line of each frame); -g's full
// debug info (types, locals: for a debugger) took a quarter of the compile, the code is the same.
const FLAGS = ['-std=c++17', '-O1', '-g1', '-fsanitize=address,undefined', '-fno-sanitize-recover=all']

/** The harness binary for the current sources: compiled once per content hash. */
function build(): string {
  const version = spawnSync(CXX, ['--version'], { encoding: 'utf8' })
  if (version.error) throw version.error
  // Every file the harness includes from the project (g++ -MM: not the system headers).
  const deps = spawnSync(CXX, ['-std=c++17', '-MM', HARNESS], { cwd: ROOT, encoding: 'utf8' })
  if (deps.status !== 0) throw new Error(`${CXX} -MM ${HARNESS} failed:\n${deps.stderr}`)
  const files = deps.stdout.replace(/\\\n/g, ' ').split(':').slice(1).join(':').trim().split(/\s+/).sort()
  const hash = crypto.createHash('sha256').update(version.stdout).update(FLAGS.join(' '))
  for (const f of files) hash.update(f).update('\0').update(fs.readFileSync(path.resolve(ROOT, f)))
  const dir = path.join(ROOT, 'build', 'fuzz')
  const bin = path.join(dir, `table_fuzz-${hash.digest('hex').slice(0, 16)}`)
  if (fs.existsSync(bin)) return bin
  fs.mkdirSync(dir, { recursive: true })
  // Compiled under a name of its own, then renamed: a concurrent run never sees half a binary.
  const tmp = `${bin}.${process.pid}.tmp`
  const cc = spawnSync(CXX, [...FLAGS, HARNESS, '-o', tmp], { cwd: ROOT, encoding: 'utf8' })
  if (cc.status !== 0) throw new Error(`${CXX} ${FLAGS.join(' ')} ${HARNESS} failed:\n${cc.stderr}`)
  fs.renameSync(tmp, bin)
  for (const old of fs.readdirSync(dir)) {
    if (old.startsWith('table_fuzz-') && path.join(dir, old) !== bin) fs.rmSync(path.join(dir, old), { force: true })
  }
  return bin
}

const skip = spawnSync(CXX, ['--version']).error ? `no ${CXX} to build the harness with` : false

t.test(`fuzz the native inode table check ${SECONDS === undefined ? `with ${ITERATIONS} inputs` : `for ${SECONDS} s`} (seed ${SEED})`, { skip }, async (t) => {
  const started = Date.now()
  const bin = build()
  t.comment(`harness ${path.relative(ROOT, bin)} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  const budget = SECONDS === undefined ? ['--iterations', String(ITERATIONS)] : ['--seconds', String(SECONDS)]
  const run = spawnSync(bin, ['--seed', String(SEED), ...budget, '--corpus', CORPUS], {
    cwd: ROOT,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: ((SECONDS ?? 10) + 120) * 1000,
    env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=1', UBSAN_OPTIONS: 'print_stacktrace=1' },
  })
  const report = `${run.stdout}\n${run.stderr}`.slice(-12000)
  const clean = run.status === 0 && run.signal === null && !/AddressSanitizer|LeakSanitizer|runtime error:|table_fuzz: /.test(run.stderr)
  t.ok(clean, `the harness exits 0 with no sanitizer report (AYSFS_FUZZ_SEED=${SEED} replays)`, { diagnostic: !clean, report, status: run.status, signal: run.signal })
  if (!clean) return
  const m = /(\d+) inputs in [\d.]+ s \((\d+) accepted, (\d+) refused, (\d+) valid as generated, (\d+) from the corpus\)/.exec(run.stdout)
  t.ok(m, 'the harness prints its summary')
  if (!m) return
  const [runs, accepted, refused, , corpus] = m.slice(1).map(Number) as [number, number, number, number, number]
  t.comment(run.stdout.trim())
  if (SECONDS === undefined) t.ok(runs >= ITERATIONS, `${runs} inputs`)
  else t.ok(runs > 1000 || SECONDS < 2, `${runs} inputs`)
  t.ok(accepted > 0 && refused > 0, 'both outcomes were exercised')
  t.equal(corpus, fs.readdirSync(CORPUS).filter((n) => !n.startsWith('.') && !n.endsWith('.md')).length, 'every corpus file ran')
})
