// Heavy dependencies load where they are used (lib/lazy.ts): neither require() of the package nor
// the command line's --help or status loads undici, axios, pino, pino-pretty or cli-progress; a
// pipeline loads its HTTP clients at their first use, or all at once with preload() (what the
// miss worker calls): undici for direct GETs, axios only for pushes and proxies.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { tmpdir } from '../helpers/tmp'

const ROOT = path.resolve(__dirname, '../..')
const HEAVY = ['undici', 'axios', 'https-proxy-agent', 'pino', 'pino-pretty', 'cli-progress']

/** Which of {@link HEAVY} the main thread of `node …args` had loaded when it exited. */
function loadedBy(t: Test, args: string[], env: NodeJS.ProcessEnv = {}): { loaded: string[]; code: number | null; stdout: string } {
  const probe = path.join(tmpdir(t), 'probe.js')
  fs.writeFileSync(
    probe,
    `process.on('exit', () => {
      const keys = Object.keys(require.cache)
      const heavy = ${JSON.stringify(HEAVY)}.filter((p) => keys.some((k) => k.includes('/node_modules/' + p + '/')))
      process.stderr.write('\\nLOADED ' + JSON.stringify(heavy) + '\\n')
    })\n`,
  )
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env }
  delete childEnv.NODE_OPTIONS // nothing of the test runner's
  for (const k of ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY']) if (!(k in env)) delete childEnv[k]
  const r = spawnSync(process.execPath, ['-r', probe, ...args], { cwd: ROOT, env: childEnv, encoding: 'utf8', timeout: 60_000 })
  const m = /\nLOADED (.*)\n$/.exec(r.stderr)
  if (!m) throw new Error(`no LOADED line (status ${r.status}): ${r.stderr}`)
  return { loaded: JSON.parse(m[1]!) as string[], code: r.status, stdout: r.stdout }
}

t.test("require('aysfs-native') loads none of them", async (t) => {
  t.same(loadedBy(t, ['-e', "require('./dist/lib/index.js')"]).loaded, [])
})

t.test('the command line: --help and status load none of them', async (t) => {
  const help = loadedBy(t, ['dist/lib/cli.js', '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /Usage: aysfs-native/)
  t.same(help.loaded, [])
  const status = loadedBy(t, ['dist/lib/cli.js', 'status', tmpdir(t)])
  t.not(status.code, 0, 'nothing mounted there')
  t.same(status.loaded, [])
})

t.test('createLogger: pino, and pino-pretty for text only', async (t) => {
  const log = (format: string): string[] => loadedBy(t, ['-e', `require('./dist/lib/log.js').createLogger({ format: '${format}' })`]).loaded
  t.same(log('json'), ['pino'])
  t.same(log('text'), ['pino', 'pino-pretty'])
})

t.test("a pipeline's HTTP clients: none until used; preload() loads what its sources can need", async (t) => {
  /** What a pipeline with `sources` loaded when made, and after preload(). */
  const pipeline = (sources: object, env: NodeJS.ProcessEnv = {}): string[][] => {
    const config = { main: { cache: path.join(tmpdir(t), 'cache') }, ays: [{ id: 'svc' }], ...sources }
    const script = `
      const { createFetcher } = require('./dist/lib/pipeline/index.js')
      const { checkConfig } = require('./dist/lib/config.js')
      const heavy = () => ${JSON.stringify(HEAVY)}.filter((p) => Object.keys(require.cache).some((k) => k.includes('/node_modules/' + p + '/')))
      const f = createFetcher({ config: checkConfig(${JSON.stringify(config)}) })
      const made = heavy()
      f.preload()
      process.stdout.write(JSON.stringify([made, heavy()]))
      f.close()`
    const r = loadedBy(t, ['-e', script], env)
    t.equal(r.code, 0)
    return JSON.parse(r.stdout) as string[][]
  }
  const store = { store: [{ url: 'http://store.invalid/s' }] }
  t.same(pipeline(store), [[], ['undici']], 'a store: undici, for direct GETs')
  t.same(pipeline({ ...store, cache: [{ url: 'http://cache.invalid/c' }] }), [[], ['undici', 'axios', 'https-proxy-agent']], 'a grid cache it pushes to: axios too, for PUTs')
  t.same(pipeline({ ...store, cache: [{ url: 'http://cache.invalid/c', push: false }] }), [[], ['undici']], 'one it does not push to: undici only')
  t.same(pipeline(store, { HTTPS_PROXY: 'http://proxy.invalid:3128' }), [[], ['undici', 'axios', 'https-proxy-agent']], 'a proxy for the other scheme: a redirect may need axios')
  t.same(pipeline(store, { http_proxy: 'http://proxy.invalid:3128' }), [[], ['axios', 'https-proxy-agent']], "a proxy for the store's own scheme: axios only")
  t.same(pipeline({ store: [{ url: path.join(tmpdir(t), 'dir-store') }] }), [[], []], 'a directory store: neither')
})
