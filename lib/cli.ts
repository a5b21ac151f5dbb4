#!/usr/bin/env node
/**
 * The `aysfs-native` command (docs/cli.md is the reference). Arguments are parsed by
 * commander; each subcommand's work lives in a module of its own (serve, demo, status, mounts,
 * prefetch, publish, verify), so this file only maps options to calls and results to output and
 * exit statuses: 0 success, 1 failure at run time, 2 usage or configuration error.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Command, CommanderError, Option } from 'commander'
import { DEFAULT_CONFIG_PATH, loadConfig, type Config } from './config'
import { AysfsError, exitCodeFor } from './errors'
import { createLogger, LOG_LEVELS, type LogFormat, type LogLevel } from './log'
import { packageRoot } from './package-root'
import { formatBytes } from './progress'
import { closest } from './suggest'

interface LogFlags {
  logLevel?: LogLevel
  logFormat?: LogFormat
}

function version(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version
  } catch {
    return 'unknown'
  }
}

/** `--config`, else `$AYSFS_CONFIG`, else /etc/aysfs/config.toml; absolute. */
function configPath(flag?: string): string {
  return path.resolve(flag ?? (process.env.AYSFS_CONFIG || DEFAULT_CONFIG_PATH))
}

function withLogOptions(cmd: Command, dflt: LogLevel): Command {
  return cmd
    .addOption(new Option('--log-level <level>', `log level (default: main.log_level of the config, else ${dflt})`).choices(LOG_LEVELS.slice()))
    .addOption(new Option('--log-format <format>', 'text: one readable line per record; json: one JSON object per line').choices(['text', 'json']).default('text'))
}

/** The command's logger: pino's, whose `fatal` says why the command failed. */
function logger(flags: LogFlags, config: Config | undefined, dflt: LogLevel): ReturnType<typeof createLogger> {
  const level = flags.logLevel ?? config?.main.logLevel ?? dflt
  return createLogger({ level, format: flags.logFormat ?? 'text' })
}

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`)
}

/** The exit status of the command that ran; set by actions. */
let status = 0

function buildProgram(): Command {
  const program = new Command('aysfs-native')
  program
    .description(
      'Serve AYS flists from content-addressed stores as a read-only FUSE file system.\n\n' +
        'Without a command: mount every [[ays]] of the config and serve in the foreground until ' +
        'SIGINT/SIGTERM or an outside unmount; SIGHUP reloads the config and the flists.',
    )
    .version(version(), '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .enablePositionalOptions()
    .allowExcessArguments(true)
    .exitOverride()
    .showSuggestionAfterError(true)
    .option('-m, --mount <dir>', 'mountpoint (default: main.mount of the config); flist paths under the prefix (default: this path) are exposed')
    .option('-c, --config <file>', `config file (default: $AYSFS_CONFIG, else ${DEFAULT_CONFIG_PATH})`)
    .option('--allow-other', 'let other users see the mount (non-root: needs user_allow_other in /etc/fuse.conf)')
    .option('--debug', "libfuse's debug output on stderr")
    .option('--metrics <addr>', 'serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9469 (default: main.metrics; off)')
  withLogOptions(program, 'info')
  program.addHelpText(
    'after',
    '\nExit status: 0 success, 1 failure at run time, 2 usage or configuration error.\nReference and troubleshooting: docs/cli.md of the package.',
  )
  program.action(async (opts: { mount?: string; config?: string; allowOther?: boolean; debug?: boolean; metrics?: string } & LogFlags, cmd: Command) => {
    if (cmd.args.length > 0) {
      const names = program.commands.flatMap((c) => [c.name(), ...c.aliases()])
      const near = closest(cmd.args[0]!, names)
      const hint = near.length > 0 ? `did you mean ${near.map((n) => `'${n}'`).join(' or ')}? ` : ''
      throw new AysfsError('EUSAGE', `unknown command '${cmd.args[0]}' (${hint}commands: ${program.commands.map((c) => c.name()).join(', ')}; see aysfs-native --help)`)
    }
    const file = configPath(opts.config)
    // Before the logger: the config may set the log level. Its errors are logged all the same.
    let config: Config
    try {
      config = loadConfig(file)
    } catch (err) {
      const log = logger(opts, undefined, 'info')
      if (err instanceof AysfsError && /cannot read: no such file/.test(err.message) && opts.config === undefined && !process.env.AYSFS_CONFIG) {
        log.fatal(`${err.message}; pass --config FILE (or set AYSFS_CONFIG), or try \`aysfs-native demo\``)
      } else log.fatal(err instanceof Error ? err.message : String(err))
      status = exitCodeFor(err)
      return
    }
    const log = logger(opts, config, 'info')
    const mountpoint = opts.mount !== undefined ? path.resolve(opts.mount) : config.main.mount
    try {
      if (mountpoint === undefined) {
        throw new AysfsError('EUSAGE', `no mountpoint: pass --mount DIR, or set main.mount in ${file}`, { key: 'main.mount', file })
      }
      const { serve } = await import('./serve')
      status = await serve({ mountpoint, config: file, log, allowOther: opts.allowOther ?? false, debug: opts.debug ?? false, ...(opts.metrics !== undefined ? { metrics: opts.metrics } : {}) })
    } catch (err) {
      log.fatal(mountError(err, mountpoint))
      status = exitCodeFor(err)
    }
  })

  withLogOptions(
    program
      .command('demo')
      .description('mount a bundled sample service from a bundled store (no config, no server); Ctrl-C unmounts')
      .option('-m, --mount <dir>', 'mount here (an existing empty directory) instead of a new temp directory')
      .option('--allow-other', 'let other users see the mount'),
    'warn',
  ).action(async (opts: { mount?: string; allowOther?: boolean } & LogFlags) => {
    const log = logger(opts, undefined, 'warn')
    try {
      const { demo } = await import('./demo')
      status = await demo({ mount: opts.mount, log, allowOther: opts.allowOther ?? false })
    } catch (err) {
      log.fatal(mountError(err, opts.mount))
      status = exitCodeFor(err)
    }
  })

  program
    .command('unmount')
    .alias('umount')
    .description('unmount a mount served by any process, lazily: open files keep working, and the serving process exits once they are closed')
    .argument('<mountpoint>')
    .action(async (mountpoint: string) => {
      const { unmountPath } = await import('./mounts')
      const m = unmountPath(mountpoint)
      out(`unmounted ${m.target}`)
    })

  program
    .command('status')
    .description('counters of a running mount: requests by op, hits and misses, bytes and errors per source')
    .argument('<mountpoint>')
    .option('--json', 'print the status document as JSON (its `version` says the shape)')
    .action(async (mountpoint: string, opts: { json?: boolean }) => {
      const { readStatus, formatStatus } = await import('./status')
      const doc = readStatus(mountpoint)
      out(opts.json ? JSON.stringify(doc, null, 2) : formatStatus(doc))
    })

  withLogOptions(
    program
      .command('prefetch')
      .description('fill the local cache with every blob of the services, with a progress bar')
      .option('-c, --config <file>', `config file (default: $AYSFS_CONFIG, else ${DEFAULT_CONFIG_PATH})`)
      .option('--ays <id...>', 'only these services (default: every [[ays]] of the config)')
      .option('--prefix <path>', 'only flist paths under this prefix (default: main.prefix, else main.mount, else all)'),
    'warn',
  ).action(async (opts: { config?: string; ays?: string[]; prefix?: string } & LogFlags) => {
    const config = loadConfig(configPath(opts.config))
    const log = logger(opts, config, 'warn')
    const { prefetch } = await import('./prefetch')
    const r = await prefetch({ config, ays: opts.ays, prefix: opts.prefix, log })
    for (const w of r.warnings) process.stderr.write(`aysfs-native: warning: ${w}\n`)
    out(
      `prefetch ${r.services.join(', ')}: ${r.blobs} blobs (${formatBytes(r.bytes)}): ${r.cached} already cached, ` +
        `${r.fetched} fetched (${formatBytes(r.fetchedBytes)}), ${r.failed} failed`,
    )
    if (r.failed > 0) {
      for (const e of r.errors) process.stderr.write(`aysfs-native: ${e}\n`)
      if (r.failed > r.errors.length) process.stderr.write(`aysfs-native: … and ${r.failed - r.errors.length} more\n`)
      status = 1
    }
  })

  program
    .command('publish')
    .description('build or extend a store from a directory: blobs first, then the flist, atomically; safe to run again')
    .argument('<dir>', 'the directory to publish')
    .requiredOption('--id <id>', 'service id: the flist becomes <store>/md/<id>.flist')
    .requiredOption('--store <root>', 'store root: a path or file:// URL')
    .option('--prefix <path>', "flist path of <dir> (default: <dir>'s absolute path)")
    .addOption(new Option('--format <format>', 'extended keeps modes, owners, mtimes, symlinks, empty dirs and special files; seed lists regular files only').choices(['seed', 'extended']).default('extended'))
    .option('--sign <keyfile>', 'also write <id>.flist.sig, signed with this private key (aysfs-native keygen)')
    .option('--unsign', 'remove the signature of the older flist (without it, publishing unsigned over a signed flist is refused)')
    .option('--revision <n>', "the revision the signature carries (with --sign): greater than the store's (default: the current Unix time in seconds)", (v) => revisionArg(v))
    .option('-j, --jobs <n>', 'files hashed at once (default: CPUs, at most 8)', (v) => positiveInt(v, '--jobs'))
    .option('--strict', 'a file that changes while it is published fails the run (exit status 1, naming it) instead of being left out with a warning')
    .option('--chunks', 'also store files larger than the chunk size as chunks, with a chunk index (extended format; nodes read ranges of them)')
    .option('--chunk-size <size>', 'with --chunks: bytes a chunk, 256KiB to 64MiB (default 4MiB)')
    .option('--no-whole', "with --chunks: leave chunked files' whole blobs out (only for stores whose nodes all read chunks)")
    .option('--startup <file>', 'also store this start-up list (aysfs-native record) as <id>.startup, signed with --sign; nodes fetch its blobs at mount')
    .action(async (dir: string, opts: { id: string; store: string; prefix?: string; format: 'seed' | 'extended'; sign?: string; unsign?: boolean; revision?: number; jobs?: number; strict?: boolean; chunks?: boolean; chunkSize?: string; whole: boolean; startup?: string }) => {
      const { publish } = await import('./publish')
      const { parseChunkSize } = await import('./chunks')
      const chunkSize = opts.chunkSize === undefined ? undefined : parseChunkSize(opts.chunkSize)
      const { id, store, prefix, format, sign, revision, jobs, whole } = opts
      const r = await publish({ dir, id, store, prefix, format, sign, unsign: opts.unsign ?? false, revision, jobs, strict: opts.strict ?? false, chunks: opts.chunks ?? false, chunkSize, whole, startup: opts.startup })
      for (const c of r.changed) process.stderr.write(`aysfs-native: warning: ${c.file} left out: it ${c.reason}\n`)
      const lines = [
        `published ${opts.id} (${r.format}, prefix ${r.prefix}) to ${r.flist}${r.unchanged ? ' (unchanged)' : ''}`,
        `  ${r.files} files (${formatBytes(r.bytes)}), ${r.directories} directories, ${r.symlinks} symlinks, ${r.special} special files`,
        `  ${r.blobs} distinct contents: ${r.written} written (${formatBytes(r.writtenBytes)}), ${r.blobs - r.written} already in the store`,
      ]
      if (r.chunked) lines.push(`  ${r.chunked.files} files as chunks: ${r.chunked.written} chunks written (${formatBytes(r.chunked.writtenBytes)}), ${r.chunked.indexesWritten} chunk indexes written`)
      if (r.signature) lines.push(`  signature: ${r.signature} (revision ${r.revision})`)
      if (r.startup) lines.push(`  start-up list: ${r.startup.file}, ${r.startup.blobs} blobs${r.startup.signature ? `, signed (${r.startup.signature})` : ''}`)
      if (r.removedSignature) lines.push(`  signature: removed ${r.removedSignature} (--unsign): nodes with main.trusted_keys refuse ${opts.id} from now on`)
      const skipped = Object.entries(r.skipped)
      if (skipped.length > 0) {
        const total = skipped.reduce((n, [, c]) => n + c, 0)
        lines.push(`  skipped ${total} entries the seed format cannot hold: ${skipped.map(([k, c]) => `${c} ${k}${c === 1 ? '' : 's'}`).join(', ')} (--format extended keeps them)`)
      }
      if (r.changed.length > 0) lines.push(`  left out ${r.changed.length} file(s) that changed while they were published (warnings on stderr; --strict fails instead)`)
      out(lines.join('\n'))
    })

  withLogOptions(
    program
      .command('record')
      .description('on a staging host: run a command against a fresh mount of one service (empty cache, no speculation) and write the blobs it read, in order, as a start-up list for publish --startup')
      .requiredOption('--ays <id>', 'the service to mount (only it)')
      .requiredOption('--out <file>', 'where to write the start-up list')
      .option('-c, --config <file>', `config file: its stores, keys and prefix (default: $AYSFS_CONFIG, else ${DEFAULT_CONFIG_PATH})`)
      .option('-m, --mount <dir>', 'mount here (default: main.mount of the config: where the nodes mount it)')
      .argument('<command...>', 'the command and its arguments, after --')
      .passThroughOptions(),
    'warn',
  ).action(async (command: string[], opts: { ays: string; out: string; config?: string; mount?: string } & LogFlags) => {
    const config = loadConfig(configPath(opts.config))
    const log = logger(opts, config, 'warn')
    const { record } = await import('./record')
    const r = await record({ config, ays: opts.ays, out: opts.out, command, ...(opts.mount !== undefined ? { mountpoint: path.resolve(opts.mount) } : {}), log })
    const ended = r.signal !== null ? `was killed by ${r.signal}` : `exited with status ${r.code}`
    process.stderr.write(`aysfs-native: recorded ${r.blobs} blobs read by ${command[0]} (which ${ended}) to ${r.out}\n`)
    // The command's status, as time(1) and strace(1) give it.
    status = r.signal !== null ? 128 + (os.constants.signals[r.signal] ?? 0) : (r.code ?? 1)
  })

  program
    .command('verify')
    .description('re-hash the local cache; move bad blobs aside to <cache>/bad/ (exit status 1 if any)')
    .option('--cache <dir>', 'the cache directory (default: main.cache of the config)')
    .option('-c, --config <file>', `config file, for main.cache (default: $AYSFS_CONFIG, else ${DEFAULT_CONFIG_PATH})`)
    .action(async (opts: { cache?: string; config?: string }) => {
      const cache = opts.cache ?? loadConfig(configPath(opts.config)).main.cache
      const { verify } = await import('./verify')
      const r = await verify({ cache })
      const lines = [`verify ${r.cache}: ${r.checked} blobs (${formatBytes(r.bytes)}): ${r.ok} ok, ${r.bad.length} bad`]
      if (r.bad.length > 0) lines.push(`  moved aside to ${r.badDir}: ${r.bad.slice(0, 10).join(', ')}${r.bad.length > 10 ? ', …' : ''}`)
      if (r.vanished > 0) lines.push(`  ${r.vanished} went away while being checked (evicted or moved by another process)`)
      if (r.tmpRemoved > 0) lines.push(`  removed ${r.tmpRemoved} temp files of writers that are gone`)
      out(lines.join('\n'))
      if (r.bad.length > 0) status = 1
    })

  program
    .command('keygen')
    .description('make an ed25519 key pair for signing flists (publish --sign KEY; trusted_keys = [PUB])')
    .requiredOption('--out <dir>', 'directory for the key files (created if missing)')
    .option('--name <name>', 'base name of the key files: <name>.pub and <name>.key (default: aysfs)')
    .action(async (opts: { out: string; name?: string }) => {
      const { generateKeyPair } = await import('./sign')
      const { publicKey, privateKey, keyId } = generateKeyPair(path.resolve(opts.out), opts.name)
      out(
        [
          `public key:  ${publicKey}   (list it in main.trusted_keys of the nodes)`,
          `private key: ${privateKey}   (keep it secret, off the nodes; aysfs-native publish … --sign ${privateKey})`,
          `key id:      ${keyId}`,
        ].join('\n'),
      )
    })

  program
    .command('rebuild')
    .description('compile the native addon here (no prebuild fits this platform); needs cmake, g++, libfuse3-dev, libbrotli-dev')
    .action(async () => {
      const { rebuild } = await import('./rebuild')
      status = await rebuild()
    })

  return program
}

function positiveInt(v: string, flag: string): number {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new AysfsError('EUSAGE', `${flag} ${v}: expected a positive integer`)
  return n
}

function revisionArg(v: string): number {
  if (!/^(0|[1-9][0-9]*)$/.test(v) || !Number.isSafeInteger(Number(v))) throw new AysfsError('EUSAGE', `--revision ${v}: expected an integer from 0 to ${Number.MAX_SAFE_INTEGER}`)
  return Number(v)
}

/** A mount failure with what to do about it. */
function mountError(err: unknown, mountpoint: string | undefined): string {
  const msg = err instanceof Error ? err.message : String(err)
  const code = (err as { code?: string })?.code
  if (code === 'EBUSY' && mountpoint && !msg.includes('aysfs-native unmount')) return `${msg}; if no process serves it any more: aysfs-native unmount ${mountpoint}`
  // A flist refused by its signature says what to do itself: the FUSE hint would mislead.
  if ((code === 'EPERM' || code === 'EACCES') && (err as { key?: string }).key !== 'main.trusted_keys') {
    return `${msg} (mounting as a user other than root needs fusermount3 (package fuse3) and access to /dev/fuse; see docs/cli.md, Troubleshooting)`
  }
  return msg
}

/** Runs the command line; resolves to the exit status. */
export async function main(argv: string[] = process.argv): Promise<number> {
  status = 0
  const program = buildProgram()
  try {
    await program.parseAsync(argv)
    return status
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; every parse error is a usage error (commander printed it).
      return err.exitCode === 0 ? 0 : 2
    }
    process.stderr.write(`aysfs-native: ${err instanceof Error ? err.message : String(err)}\n`)
    return exitCodeFor(err)
  }
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`aysfs-native: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
      process.exit(1)
    },
  )
}
