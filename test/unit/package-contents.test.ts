// What the tarball holds, as `npm pack` lists it (dry run, no scripts: nothing is built or moved):
// what a user reads and runs (the docs, the examples, the licence, the changelog) and not the
// benchmarks; every relative link of the shipped Markdown resolves to a shipped file (and an
// #anchor to a heading there); no shipped file points at a document outside the project.
// Run after `npm run build:ts` (as `npm test` does): dist/ is listed as it is on disk.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'

const ROOT = path.resolve(__dirname, '../..')

interface PackEntry {
  path: string
}

function packList(): string[] {
  // Without tap's NODE_OPTIONS (its TypeScript loader) and without lifecycle scripts: prepack
  // would build a prebuild and move build/Release away under the other tests.
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, env, encoding: 'utf8', timeout: 120_000 })
  if (r.status !== 0) throw new Error(`npm pack --dry-run: exit ${r.status}\n${r.stderr}`)
  const out = JSON.parse(r.stdout) as Array<{ files: PackEntry[] }>
  return out[0]!.files.map((f) => f.path).sort()
}

const files = packList()
const shipped = new Set(files)
/** `a/b/` is a shipped directory when a shipped file is below it. */
const isShippedDir = (dir: string): boolean => files.some((f) => f.startsWith(dir.endsWith('/') ? dir : `${dir}/`))

t.test('the tarball ships what a user reads and runs, not the benchmarks', async (t) => {
  for (const f of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/lib/cli.js', 'dist/binding.d.ts']) {
    t.ok(shipped.has(f), `ships ${f}`)
  }
  const docs = fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md'))
  t.ok(docs.length > 0, 'docs/ has pages')
  for (const d of docs) t.ok(shipped.has(`docs/${d}`), `ships docs/${d}`)
  for (const d of ['format.md', 'config.md', 'api.md', 'cli.md']) t.ok(shipped.has(`docs/${d}`), `ships the reference docs/${d}`)
  const examples = (fs.readdirSync(path.join(ROOT, 'examples'), { recursive: true }) as string[])
    .map((e) => `examples/${e}`)
    .filter((e) => fs.statSync(path.join(ROOT, e)).isFile())
  t.ok(examples.length > 0, 'examples/ has files')
  for (const e of examples) t.ok(shipped.has(e), `ships ${e}`)
  t.ok(fs.existsSync(path.join(ROOT, 'dist', 'bench')), 'dist/bench exists on disk (so its absence below means something)')
  t.same(files.filter((f) => /^(dist\/)?bench\//.test(f)), [], 'no benchmarks, compiled or not')
  t.same(files.filter((f) => /^(test|lib|build|node_modules|\.ci)\//.test(f)), [], 'no tests, TypeScript sources, build output or CI files')
  t.match(fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8'), /Apache License\s+Version 2\.0, January 2004/, 'LICENSE is the Apache-2.0 text')
})

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>()
  const seen = new Map<string, number>()
  for (const line of withoutCode(markdown).split('\n')) {
    const m = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    if (!m) continue
    const base = m[1]!
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\p{M} _-]/gu, '')
      .replace(/ /g, '-')
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    out.add(n === 0 ? base : `${base}-${n}`)
  }
  return out
}

/** The text without fenced code blocks (a heading or a link there is not one). */
function withoutCode(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '')
}

/** Targets of inline links `[text](target)`, the text possibly over several lines. */
function links(markdown: string): string[] {
  const text = withoutCode(markdown).replace(/`[^`\n]*`/g, 'code')
  return [...text.matchAll(/\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]!)
}

t.test('every relative link of the shipped Markdown resolves to a shipped file', async (t) => {
  const pages = files.filter((f) => f.endsWith('.md'))
  t.ok(pages.includes('README.md') && pages.some((p) => p.startsWith('docs/')), 'README.md and docs/ are checked')
  let checked = 0
  for (const page of pages) {
    const text = fs.readFileSync(path.join(ROOT, page), 'utf8')
    for (const link of links(text)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue // a URL (https:, mailto:)
      const [target, anchor] = link.split('#', 2) as [string, string | undefined]
      const file = target === '' ? page : path.posix.normalize(path.posix.join(path.posix.dirname(page), target))
      checked++
      if (file.startsWith('../') || path.posix.isAbsolute(file)) {
        t.fail(`${page}: link ${link} leaves the package`)
        continue
      }
      if (!shipped.has(file) && !isShippedDir(file)) {
        t.fail(`${page}: link ${link} names ${file}, which the package does not ship`)
        continue
      }
      if (anchor !== undefined && shipped.has(file) && file.endsWith('.md')) {
        const heads = anchors(fs.readFileSync(path.join(ROOT, file), 'utf8'))
        t.ok(heads.has(anchor), `${page}: ${link}: ${file} has a heading #${anchor}`)
      }
    }
  }
  t.ok(checked > 10, `links were found and checked (${checked})`)
})

t.test('no shipped file points at a document outside the project', async (t) => {
  // The names of the documents the project once pointed at (outside it), built so that this file
  // itself does not name them.
  const outside = new RegExp(['\\.\\./' + 'shared', 'spec' + '\\.md', 'spec' + ' §'].join('|'))
  const hits: string[] = []
  for (const f of files) {
    const buf = fs.readFileSync(path.join(ROOT, f))
    if (buf.includes(0)) continue // a binary (the prebuild)
    const text = buf.toString('utf8')
    text.split('\n').forEach((line, i) => {
      if (outside.test(line)) hits.push(`${f}:${i + 1}: ${line.trim().slice(0, 120)}`)
    })
  }
  t.same(hits, [], 'no pointer to a document outside the project')
})

t.test('every shipped source map carries its sources (none points at a file the package lacks)', async (t) => {
  const maps = files.filter((f) => f.endsWith('.js.map'))
  t.ok(maps.length > 0, 'source maps are shipped')
  const dangling: string[] = []
  for (const f of maps) {
    const map = JSON.parse(fs.readFileSync(path.join(ROOT, f), 'utf8')) as { sources: string[]; sourcesContent?: (string | null)[] }
    map.sources.forEach((src, i) => {
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(f), src))
      if (!shipped.has(target) && typeof map.sourcesContent?.[i] !== 'string') dangling.push(`${f}: ${src}`)
    })
  }
  t.same(dangling, [], 'each source is in the package, or inside the map (sourcesContent)')
  for (const f of files.filter((x) => x.endsWith('.js'))) {
    const m = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(fs.readFileSync(path.join(ROOT, f), 'utf8'))
    if (m) t.ok(shipped.has(path.posix.join(path.posix.dirname(f), m[1]!)), `${f}: its map ${m[1]} is shipped`)
  }
})
