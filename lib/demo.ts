/**
 * `aysfs-native demo`: the first command of the README. No config, no server: mounts the sample
 * service shipped in `demo/store` (a plain directory, reached as a `file://` store) at a temp
 * directory, says what to try, and unmounts on Ctrl-C. Everything it writes (the local cache, the
 * mountpoint) is in a temp directory, so it works from a read-only install.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Logger } from './log'
import { packageRoot } from './package-root'
import { serve } from './serve'

/** The bundled service and where its flist paths live. */
const DEMO_ID = 'demo__hello'
const DEMO_PREFIX = '/opt/jumpscale7'

/** The bundled store: `demo/store` of the package. */
function demoStore(): string {
  return path.join(packageRoot(), 'demo', 'store')
}

/** Options of {@link demo}. */
export interface DemoOptions {
  /** Where to mount; default a new temp directory. Must exist and be empty. */
  mount?: string
  log: Logger
  allowOther?: boolean
  /** Where to print the instructions; default stdout. */
  out?: NodeJS.WritableStream
}

/** Mounts the demo and serves until SIGINT/SIGTERM or an unmount; resolves to the exit status. */
export async function demo(opts: DemoOptions): Promise<number> {
  const out = opts.out ?? process.stdout
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'aysfs-demo-'))
  // Removed however the process ends (an exit during startup skips the finally below).
  const removeWork = (): void => {
    try {
      fs.rmSync(work, { recursive: true, force: true })
    } catch {
      // a mount still below it: left for the next boot's tmp cleaning
    }
  }
  process.once('exit', removeWork)
  const mountpoint = opts.mount ? path.resolve(opts.mount) : path.join(work, 'mnt')
  if (!opts.mount) fs.mkdirSync(mountpoint)
  const config = {
    main: { cache: path.join(work, 'cache'), prefix: DEMO_PREFIX, timeout: '5s' },
    ays: [{ id: DEMO_ID }],
    store: [{ url: pathToFileURL(demoStore()).href }],
  }
  try {
    return await serve({
      mountpoint,
      config,
      log: opts.log,
      allowOther: opts.allowOther ?? false,
      onReady: (m) => {
        const q = (p: string): string => (/^[\w@%+=:,./-]+$/.test(p) ? p : `'${p.replace(/'/g, `'\\''`)}'`)
        const mp = q(mountpoint)
        out.write(
          [
            '',
            `The demo service ${DEMO_ID} is mounted at ${mountpoint}`,
            `(${m.stats().engine.entries} entries from the bundled store ${demoStore()}; local cache in ${path.join(work, 'cache')}).`,
            '',
            'Try, in another terminal:',
            `  ls -la ${mp} ${mp}/bin`,
            `  cat ${mp}/README.md`,
            `  ${mp}/bin/hello you`,
            `  aysfs-native status ${mp}`,
            '',
            'Press Ctrl-C to unmount and quit.',
            '',
          ].join('\n'),
        )
      },
    })
  } finally {
    process.off('exit', removeWork)
    removeWork()
  }
}
