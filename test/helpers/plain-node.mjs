// Loaded into every test process (.taprc `node-arg`), after tap's own loaders.
//
// tap puts its process-info loader (@tapjs/processinfo: which process ran which file, for
// coverage and `--changed`) into NODE_OPTIONS, and re-adds it to the environment of every
// process a test spawns. Node runs NODE_OPTIONS' `--import` in every worker thread too, so each
// mount's miss worker, each `publish` hash worker and each `node` child (the CLI, mounter
// children) loaded it first: 0.5-1 s of CPU apiece, most of a mount's start in a test. The suite
// reports no coverage (.taprc), so test processes start their threads and children as users do:
// without it. (A forked child still gets this process's execArgv, TypeScript loader included.)
import { createRequire } from 'node:module'

delete process.env.NODE_OPTIONS
const require = createRequire(createRequire(import.meta.url).resolve('@tapjs/processinfo'))
require('process-on-spawn').addListener((opts) => {
  delete opts.env.NODE_OPTIONS
})
