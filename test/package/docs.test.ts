// The reference pages stay in step with the code they describe:
// - docs/config.md has a section for every key the config checker accepts, and none for a key it
//   refuses; its complete example passes the checker;
// - docs/api.md names every field of a real status document (a mount of the demo service).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { checkConfig, parseConfig } from '../../lib/config'
import { mount, type MountStats } from '../../lib/index'
import { ROOT } from '../helpers/cli'
import { until } from '../helpers/hardening'
import { tmpdir } from '../helpers/mount'

const CONFIG_MD = fs.readFileSync(path.join(ROOT, 'docs', 'config.md'), 'utf8')
const API_MD = fs.readFileSync(path.join(ROOT, 'docs', 'api.md'), 'utf8')

type Table = 'main' | 'ays' | 'cache' | 'store'

/** The keys lib/config.ts accepts per table, from its key lists (`MAIN_KEYS = [...]` …). */
function acceptedKeys(): Record<Table, string[]> {
  const src = fs.readFileSync(path.join(ROOT, 'lib', 'config.ts'), 'utf8')
  const lists = new Map<string, string[]>()
  for (const m of src.matchAll(/const (\w+)_KEYS = \[([^\]]*)\]/g)) {
    const items: string[] = []
    for (const part of m[2]!.split(',').map((p) => p.trim()).filter(Boolean)) {
      const spread = /^\.\.\.(\w+)_KEYS$/.exec(part)
      if (spread) items.push(...(lists.get(spread[1]!) ?? []))
      else items.push(JSON.parse(part.replace(/^'|'$/g, '"')) as string)
    }
    lists.set(m[1]!, items)
  }
  return { main: lists.get('MAIN') ?? [], ays: lists.get('AYS') ?? [], cache: lists.get('CACHE') ?? [], store: lists.get('STORE') ?? [] }
}

/** Whether the checker knows `key` in `table` (any complaint but "unknown key" means it does). */
function known(table: Table, key: string): boolean {
  const probe = Symbol('probe') as unknown // a value no key accepts: only its type is refused
  const obj: Record<string, unknown> = { ays: [{ id: 'x' }] }
  if (table === 'main') obj.main = { [key]: probe }
  else if (table === 'ays') obj.ays = [{ id: 'x', [key]: probe }]
  else obj[table] = [{ url: 'http://h/x', [key]: probe }]
  if (key === 'id' || key === 'url') return true
  try {
    checkConfig(obj)
    return true
  } catch (err) {
    return !/unknown key/.test((err as Error).message)
  }
}

/** The `### \`key\`` sections of docs/config.md, by the table they sit under. */
function documentedKeys(): Record<Table, Set<string>> {
  const out: Record<Table, Set<string>> = { main: new Set(), ays: new Set(), cache: new Set(), store: new Set() }
  let tables: Table[] = []
  for (const line of CONFIG_MD.split('\n')) {
    const h2 = /^## (.*)$/.exec(line)
    if (h2) {
      const title = h2[1]!
      tables = title.includes('[main]') ? ['main'] : title.includes('[[ays]]') ? ['ays'] : /\[\[cache\]\].*\[\[store\]\]/.test(title) ? ['cache', 'store'] : title.includes('[[cache]]') ? ['cache'] : title.includes('[[store]]') ? ['store'] : []
      continue
    }
    const h3 = /^### `([a-z_]+)`$/.exec(line)
    if (h3) for (const tb of tables) out[tb].add(h3[1]!)
  }
  return out
}

/** The keys a table's summary lists (rows like "| [`key`](#key) | type | default |"). */
function summaryKeys(table: Table): string[] {
  const heading = table === 'main' ? '## `[main]`' : `## \`[[${table}]]\``
  const start = CONFIG_MD.indexOf(heading)
  if (start < 0) return []
  const next = CONFIG_MD.indexOf('\n## ', start + 1)
  const body = CONFIG_MD.slice(start, next < 0 ? undefined : next)
  return [...body.matchAll(/^\| \[`([a-z_]+)`\]/gm)].map((m) => m[1]!)
}

t.test('docs/config.md documents every key the checker accepts, and no other', async (t) => {
  const accepted = acceptedKeys()
  const documented = documentedKeys()
  for (const table of ['main', 'ays', 'cache', 'store'] as const) {
    t.ok(accepted[table].length > 0, `found the ${table} keys in lib/config.ts (if this fails, the key lists moved: update acceptedKeys())`)
    for (const key of accepted[table]) {
      t.ok(known(table, key), `${table}.${key} is a key the checker knows`)
      t.ok(documented[table].has(key), `${table}.${key} has a section in docs/config.md`)
    }
    t.same([...summaryKeys(table)].sort(), [...accepted[table]].sort(), `the [${table}] summary table lists exactly the accepted keys`)
    for (const key of documented[table]) t.ok(known(table, key), `documented ${table}.${key} is accepted by the checker`)
  }
})

t.test('the complete example of docs/config.md passes the checker and sets every [main] key', async (t) => {
  const m = /## A complete example\s+```toml\n([\s\S]*?)```/.exec(CONFIG_MD)
  if (!m) return t.fail('docs/config.md has a "## A complete example" with a toml block')
  const cfg = parseConfig(m[1]!, '/etc/aysfs/config.toml')
  t.ok(cfg.ays.length > 0 && cfg.caches.length > 0 && cfg.stores.length > 0, 'it has services, grid caches and stores')
  const inText = new Set([...m[1]!.matchAll(/^\s*([a-z_]+)\s*=/gm)].map((x) => x[1]!))
  for (const key of acceptedKeys().main) t.ok(inText.has(key), `the example sets main.${key}`)
})

/** Every key name of a JSON value, but the free-form keys of `errorKinds`. */
function keyNames(v: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(v)) for (const x of v) keyNames(x, out)
  else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      out.add(k)
      if (k !== 'errorKinds') keyNames(x, out)
    }
  }
  return out
}

t.test('docs/api.md names every field of the status document', async (t) => {
  const dir = tmpdir(t, 'aysfs-docs-')
  const mnt = path.join(dir, 'mnt')
  const grid = path.join(dir, 'grid')
  fs.mkdirSync(mnt)
  fs.mkdirSync(grid)
  // The demo service from the bundled store, a grid cache that misses (so it is pushed to), and a
  // config file (so `mount.config` is there), reloaded once (so `mount.lastReload` is).
  const configFile = path.join(dir, 'config.toml')
  fs.writeFileSync(
    configFile,
    [
      '[main]',
      `cache = ${JSON.stringify(path.join(dir, 'cache'))}`,
      'prefix = "/opt/jumpscale7"',
      '[[ays]]',
      'id = "demo__hello"',
      '[[cache]]',
      `url = ${JSON.stringify(grid)}`,
      '[[store]]',
      `url = ${JSON.stringify(path.join(ROOT, 'demo', 'store'))}`,
      '',
    ].join('\n'),
  )
  const m = await mount({ mountpoint: mnt, config: configFile, log: { level: 'silent' } })
  let doc: MountStats
  try {
    t.ok(fs.readFileSync(path.join(mnt, 'README.md')).length > 0, 'a file reads (a miss)')
    await m.reload()
    doc = m.stats()
    t.ok(await until(() => (doc = m.stats()).pipeline?.sources.some((s) => s.pushes > 0) === true, 20_000), 'the pipeline published its counters, a push included')
  } finally {
    // Before tmpdir's teardown (registered first, so run first) clears what is below it.
    await m.unmount()
  }
  t.equal(doc.version, 1, 'version 1')
  t.ok(doc.mount?.config && doc.mount.lastReload, 'mount.config and mount.lastReload are there')
  const names = [...keyNames(doc)]
  t.ok(names.length > 60, `the document has its fields (${names.length})`)
  for (const name of names) t.ok(API_MD.includes(`\`${name}\``), `docs/api.md names \`${name}\``)
  t.ok(API_MD.includes(`\`version\` is \`${doc.version}\``), 'docs/api.md says which version it describes')
})
