// One list per fact, checked: the counters (native/counters.h) and the mount options
// (native/options.h) are declared once in C++, and the addon exports their names; binding.d.ts
// (NativeOpCounters, NativeStats, NativeMountOptions) and the engine's tunables (lib/engine.ts)
// must list the same keys in the same order. Loads the addon; mounts nothing.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import ts from 'typescript'
import { ENGINE_DEFAULTS } from '../../lib/engine'
import { loadBinding } from '../../lib/native'
import { packageRoot } from '../../lib/package-root'

/** The property names of each interface of binding.d.ts, in the order they are written. */
function bindingInterfaces(): Map<string, string[]> {
  const file = path.join(packageRoot(), 'binding.d.ts')
  const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true)
  const out = new Map<string, string[]>()
  for (const statement of source.statements) {
    if (!ts.isInterfaceDeclaration(statement)) continue
    out.set(
      statement.name.text,
      statement.members.filter(ts.isPropertySignature).map((m) => m.name.getText(source)),
    )
  }
  return out
}

const binding = loadBinding()
const interfaces = bindingInterfaces()

t.test('NativeOpCounters lists the op counters of AYSFS_OPS, in order', async (t) => {
  t.ok(binding.statNames.ops.length > 0)
  t.same(interfaces.get('NativeOpCounters'), binding.statNames.ops)
})

t.test('NativeStats lists `ops`, the counters and gauges of AYSFS_STATS, then `mounted`', async (t) => {
  t.ok(binding.statNames.stats.length > 0)
  t.same(interfaces.get('NativeStats'), ['ops', ...binding.statNames.stats, 'mounted'])
})

t.test('NativeMountOptions lists the options of AYSFS_MOUNT_OPTIONS, in order', async (t) => {
  t.ok(binding.mountOptionNames.length > 0)
  t.same(interfaces.get('NativeMountOptions'), binding.mountOptionNames)
})

t.test("the engine's tunables are the native options but the two paths, in order", async (t) => {
  t.same(['mountpoint', 'cacheDir', ...Object.keys(ENGINE_DEFAULTS)], binding.mountOptionNames)
})

t.test('no name is listed twice', async (t) => {
  for (const names of [binding.statNames.ops, binding.statNames.stats, binding.mountOptionNames]) {
    t.equal(new Set(names).size, names.length, names.join(','))
  }
})
