// Run by `npm test` before tap: rebuilds tap's Test class when it still carries a plugin that
// .taprc turns off.
//
// tap 21 rebuilds that class itself when the configured plugins differ from the ones it was built
// with, but only after its runner has read the old build's loaders: the first run after
// `npm ci` started every test file with the default plugins' loaders, tap's TypeScript plugin
// (ts-node, ~1 s of CPU a process) among them, ~100 CPU-s more for the suite. Later runs were
// right. A no-op (~50 ms) once the build matches.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const taprc = fs.readFileSync(path.join(root, '.taprc'), 'utf8')
const excluded = [...taprc.matchAll(/^\s*-\s*"!([^"]+)"/gm)].map((m) => m[1])
const built = fs.readFileSync(path.join(root, 'node_modules', '@tapjs', 'test', 'test-built', 'dist', 'esm', 'index.js'), 'utf8')
const signature = /export const signature = `([^`]*)`/.exec(built)?.[1].split('\n') ?? []
const stale = excluded.filter((plugin) => signature.includes(plugin))
if (stale.length > 0) {
  console.error(`tap's Test class still has ${stale.join(', ')}: rebuilding it (tap build)`)
  execFileSync(path.join(root, 'node_modules', '.bin', 'tap'), ['build'], { cwd: root, stdio: 'inherit' })
}
