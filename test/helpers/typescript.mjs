// Loaded into every test process (.taprc `node-arg`): runs the TypeScript of test/, lib/ and
// bench/ by stripping its types with swc, one native call per file.
//
// tap's own TypeScript plugin loads ts-node and the TypeScript compiler into every test process
// (~1.1 s of CPU each, more than most unit tests take); this does the same job in ~30 ms. Types
// are checked once for the whole tree by `tsc` in `npm test`. The package is CommonJS, so a file
// is compiled for `require`; the entry file, which Node hands to its ES module loader once any
// loader hook is registered, is passed back to `require` by the hook below.
import Module, { register } from 'node:module'
import fs from 'node:fs'
import { createRequire } from 'node:module'

const { transformSync } = createRequire(import.meta.url)('@swc/core')

Module._extensions['.ts'] = function compileTypeScript(module, filename) {
  const { code } = transformSync(fs.readFileSync(filename, 'utf8'), {
    filename,
    sourceMaps: 'inline',
    module: { type: 'commonjs' },
    jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
  })
  module._compile(code, filename)
}

register(
  'data:text/javascript,' +
    encodeURIComponent(`export async function load(url, context, next) {
  if (url.startsWith('file:') && url.endsWith('.ts')) return { format: 'commonjs', shortCircuit: true }
  return next(url, context)
}`),
)
