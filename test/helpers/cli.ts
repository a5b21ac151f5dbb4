// The aysfs-native command as a user runs it: `node dist/lib/cli.js …` in a child process (built by
// `npm run build:ts`, which `npm test` runs first). Every child is killed in teardown, and at the
// latest when the test process exits, so a failed test cannot leave a daemon (or its mount) behind.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { clearMounts, mountsBelow } from './mount'

export const ROOT = path.resolve(__dirname, '../..')
export const CLI = path.join(ROOT, 'dist', 'lib', 'cli.js')

if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build:ts\` first`)
{
  const built = fs.statSync(CLI).mtimeMs
  const stale = fs.readdirSync(path.join(ROOT, 'lib')).filter((f) => f.endsWith('.ts') && fs.statSync(path.join(ROOT, 'lib', f)).mtimeMs > built + 1000)
  if (stale.length > 0) process.stderr.write(`# warning: dist/ is older than lib/${stale[0]}: run \`npm run build:ts\`\n`)
}

type Test = { teardown(fn: () => unknown): void }

export interface Ran {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Kill it after this long (ms); default 60 s. */
  timeout?: number
}

const children = new Set<ChildProcess>()
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL')
    } catch {
      // gone
    }
  }
})

/** A running `aysfs-native …`. */
export class Cli {
  readonly child: ChildProcess
  stdout = ''
  stderr = ''
  readonly exited: Promise<Ran>
  private listeners = new Set<() => void>()

  constructor(args: string[], opts: RunOptions = {}) {
    this.child = spawn(process.execPath, [CLI, ...args], {
      cwd: opts.cwd ?? ROOT,
      env: { ...process.env, NOTIFY_SOCKET: '', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    children.add(this.child)
    this.child.stdout!.on('data', (d: Buffer) => {
      this.stdout += d.toString()
      for (const l of this.listeners) l()
    })
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString()
      for (const l of this.listeners) l()
    })
    const timer = setTimeout(() => this.child.kill('SIGKILL'), opts.timeout ?? 60_000)
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        clearTimeout(timer)
        children.delete(this.child)
        for (const l of this.listeners) l()
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr })
      })
    })
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  /** Resolves when stdout or stderr matches; rejects when the process exits first or after `ms`. */
  waitFor(re: RegExp, ms = 20_000): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const m = this.stdout.match(re) ?? this.stderr.match(re)
        if (m) {
          done()
          resolve(m)
        } else if (!this.running) {
          done()
          reject(new Error(`exited (${this.child.exitCode ?? this.child.signalCode}) before printing ${re}\nstdout: ${this.stdout}\nstderr: ${this.stderr}`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`no ${re} within ${ms} ms\nstdout: ${this.stdout}\nstderr: ${this.stderr}`))
      }, ms)
      const done = (): void => {
        clearTimeout(timer)
        this.listeners.delete(check)
      }
      this.listeners.add(check)
      check()
    })
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal)
  }
}

/** Runs to completion. */
export function run(args: string[], opts: RunOptions = {}): Promise<Ran> {
  return new Cli(args, opts).exited
}

/** Starts a long-running command; killed (SIGKILL) in teardown if it is still running. */
export function start(t: Test, args: string[], opts: RunOptions = {}): Cli {
  const cli = new Cli(args, { timeout: 120_000, ...opts })
  t.teardown(async () => {
    if (cli.running) {
      cli.kill('SIGKILL')
      await cli.exited
    }
  })
  return cli
}

export function isMounted(mnt: string): boolean {
  return mountsBelow(mnt).includes(mnt)
}

/** Polls the mount table until `mnt` is (or is no longer) mounted. */
export async function waitMount(mnt: string, mounted = true, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  while (isMounted(mnt) !== mounted) {
    if (Date.now() > deadline) throw new Error(`${mnt} ${mounted ? 'not mounted' : 'still mounted'} after ${ms} ms`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/**
 * Starts `aysfs-native --mount MNT --config CONFIG …` and waits until it serves (log level info or
 * lower); unmounted (and the process killed) in teardown whatever happened.
 */
export async function serveCli(t: Test, mnt: string, config: string, extra: string[] = [], opts: RunOptions = {}): Promise<Cli> {
  try {
    fs.mkdirSync(mnt, { recursive: true })
  } catch (err) {
    // A stale mount of a killed daemon: the new one clears it.
    if ((err as NodeJS.ErrnoException).code !== 'ENOTCONN') throw err
  }
  const cli = start(t, ['--mount', mnt, '--config', config, ...extra], opts)
  t.teardown(() => clearMounts(mnt))
  // Visible in the mount table a moment before mount() resolved: wait for the log line too.
  await Promise.race([
    waitMount(mnt).then(() => cli.waitFor(/INFO: mounted|"msg":"mounted"/)),
    cli.exited.then((r) => {
      throw new Error(`aysfs-native exited (${r.code ?? r.signal}) before mounting\n${r.stderr}`)
    }),
  ])
  return cli
}

/** A config file with a store (and optionally a grid cache) for tests. */
export function writeConfig(file: string, opts: { cache: string; stores: string[]; caches?: string[]; ays?: string[]; prefix?: string; main?: string }): string {
  const lines = ['[main]', `cache = ${JSON.stringify(opts.cache)}`, 'timeout = "2s"']
  if (opts.prefix) lines.push(`prefix = ${JSON.stringify(opts.prefix)}`)
  if (opts.main) lines.push(opts.main)
  for (const id of opts.ays ?? ['jumpscale__base']) lines.push('', '[[ays]]', `id = ${JSON.stringify(id)}`)
  for (const url of opts.caches ?? []) lines.push('', '[[cache]]', `url = ${JSON.stringify(url)}`)
  for (const url of opts.stores) lines.push('', '[[store]]', `url = ${JSON.stringify(url)}`)
  fs.writeFileSync(file, `${lines.join('\n')}\n`)
  return file
}
