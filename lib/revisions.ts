/**
 * Signed revisions never go backwards: per service, the highest revision this node has accepted
 * (lib/sign.ts says where a revision comes from), kept beside the flist in `<cache>/md/` so that
 * it outlives a restart, and the check that refuses a signed flist with a lower revision, or the
 * same revision with other bytes ("rollback refused").
 *
 * The record is `<cache>/md/<id>.flist.revision`, two `name: value` lines:
 *
 *     revision: 1764657000
 *     sha256: <64 hex digits: the SHA-256 of the accepted flist's bytes>
 *
 * written to a temp file in `<cache>/tmp/` (0600) and renamed into place, read without following
 * a link. A node whose cache is wiped has no record and accepts any validly signed revision.
 *
 * Revision 0 (signatures made before revisions existed) carries no order: any bytes signed at
 * revision 0 are accepted while the record says 0, as before revisions existed; once a higher
 * revision is accepted, revision 0 is refused like any lower one.
 *
 * Main thread only (synchronous file calls at mount, reload and refresh).
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { AysfsError } from './errors'
import { CACHE_FILE_MODE, makeCacheSubdir } from './local-cache/dir'
import { KEPT_DIR, TMP_DIR, keptFlistPath } from './local-cache/layout'
import { readRegularFile } from './local-cache/read-kept'
import { tempName } from './local-cache/temp'
import type { Logger } from './log'
import type { Validators } from './sources/source'
import { writeAll } from './temp-file'

/** Largest record read: two short lines. */
const MAX_RECORD = 4096

/** What a node accepted for one service. */
export interface RevisionRecord {
  revision: number
  /** SHA-256 of the flist's bytes, hex. */
  sha256: string
}

/** One refusal, as `status` shows it (`mount.rollbacks`). */
export interface RollbackRefusal {
  /** The service. */
  id: string
  /** The highest revision this node has accepted. */
  have: number
  /** The revision a store offered. */
  offered: number
  /** Where the offer came from: `store[0] (<url>)`, or the kept copy. */
  source: string
  /** When it was last refused (ISO 8601). */
  at: string
  /** The log line: `service <id>: rollback refused: …`. */
  message: string
}

/**
 * A signed flist refused because this node has accepted a higher revision (or the same one with
 * other bytes). Coded `EACCES` like any refused flist: the pipeline tries the next store, since a
 * mirror that lags behind looks the same as an attack.
 */
export class RollbackRefused extends AysfsError {
  readonly refusal: RollbackRefusal
  /** SHA-256 of the refused flist's bytes. */
  readonly digest: string
  constructor(refusal: RollbackRefusal, digest: string) {
    super('EACCES', refusal.message, { key: 'main.trusted_keys' })
    this.refusal = refusal
    this.digest = digest
  }
}

/**
 * A signed flist a store offered that was refused as a rollback: what it was, and what the
 * responses that delivered it said (HTTP stores), so that the next request for it is conditional.
 */
export interface RefusedOffer {
  /** The revision it was signed at. */
  revision: number
  /** SHA-256 of the flist and of its signature. */
  digest: string
  signature?: string
  validators: { flist: Validators; signature?: Validators }
}

/** The SHA-256 of some bytes, hex: how a record names the bytes it accepted. */
export function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex')
}

/** The highest accepted revision per service of one local cache; see the module comment. */
export class Revisions {
  private readonly cacheDir: string
  private readonly log: Logger
  private readonly now: () => Date
  /** What was read or written, so a record that cannot be written still holds for this process. */
  private readonly known = new Map<string, RevisionRecord>()
  /**
   * Refused flists so far (`aysfs_rollbacks_refused_total`): each (service, source, revision,
   * bytes) counted once, however often a store offers it again.
   */
  refusedCount = 0
  /** Refusals made so far, repeats included (a caller compares it before and after a load to tell a refusal from a failure). */
  refusalEvents = 0
  /** What {@link refusedCount} counted (bounded: cleared at 10,000). */
  private readonly counted = new Set<string>()
  /** Pairs (service, have, offered) already logged: each is logged once. */
  private readonly logged = new Set<string>()
  private readonly refused = new Map<string, RollbackRefusal>()

  constructor(opts: { cacheDir: string; log: Logger; now?: () => Date }) {
    this.cacheDir = opts.cacheDir
    this.log = opts.log
    this.now = opts.now ?? (() => new Date())
  }

  /** `<cache>/md/<id>.flist.revision`. */
  file(id: string): string {
    return `${keptFlistPath(this.cacheDir, id)}.revision`
  }

  /** The highest revision accepted for `id`, or undefined (none, or an unreadable record: logged). */
  highest(id: string): RevisionRecord | undefined {
    const onDisk = this.read(id)
    const mem = this.known.get(id)
    const best = mem === undefined || (onDisk !== undefined && onDisk.revision > mem.revision) ? onDisk : mem
    if (best !== undefined) this.known.set(id, best)
    return best
  }

  /**
   * Throws {@link RollbackRefused} when `data` signed at `revision` would take service `id`
   * backwards; logs each (service, have, offered) once, and remembers the last refusal per
   * service for `status`.
   */
  check(id: string, revision: number, data: Buffer, source: string): void {
    let digest: string | undefined
    const refused = this.judge(id, revision, () => (digest ??= sha256(data)), source)
    if (refused) throw refused
  }

  /**
   * The refusal of a flist refused before (`digest`: its SHA-256, signed at `revision`) that
   * `source` still offers (a conditional request said so, or the same bytes came back), made
   * again without its bytes: `status` shows it as the last refusal, it is logged only if its pair
   * of revisions was not, and counted in {@link refusedCount} only if this flist was not.
   * Undefined if it would not be refused now.
   */
  again(id: string, revision: number, digest: string, source: string): RollbackRefused | undefined {
    return this.judge(id, revision, () => digest, source)
  }

  private judge(id: string, revision: number, digest: () => string, source: string): RollbackRefused | undefined {
    const have = this.highest(id)
    if (have === undefined) return undefined
    let why: string | undefined
    if (revision < have.revision) why = `${source} offers revision ${revision}, older than revision ${have.revision} this node has accepted`
    else if (revision === have.revision && revision > 0 && digest() !== have.sha256) {
      why = `${source} offers revision ${revision} with other bytes than the revision ${have.revision} this node has accepted`
    }
    if (why === undefined) return undefined
    const refusal: RollbackRefusal = {
      id,
      have: have.revision,
      offered: revision,
      source,
      at: this.now().toISOString(),
      message: `service ${id}: rollback refused: ${why}`,
    }
    this.refused.set(id, refusal)
    this.refusalEvents++
    const flist = `${id}\0${source}\0${revision}\0${digest()}`
    if (!this.counted.has(flist)) {
      if (this.counted.size >= 10_000) this.counted.clear()
      this.counted.add(flist)
      this.refusedCount++
    }
    const pair = `${id}\0${have.revision}\0${revision}`
    if (!this.logged.has(pair)) {
      this.logged.add(pair)
      this.log.warn({ id, have: have.revision, offered: revision, source, kind: 'rollback' }, refusal.message)
    }
    return new RollbackRefused(refusal, digest())
  }

  /**
   * Records that the flist whose SHA-256 is `digest`, signed at `revision`, is what service `id`
   * runs now (a no-op unless it is higher than the record, or the first). A record that cannot be
   * written is logged, and still holds for the life of this process.
   */
  accept(id: string, revision: number, digest: string): void {
    const have = this.highest(id)
    if (have !== undefined && (have.revision > revision || (have.revision === revision && have.sha256 === digest))) return
    const rec: RevisionRecord = { revision, sha256: digest }
    this.known.set(id, rec)
    this.refused.delete(id)
    try {
      this.write(id, rec)
    } catch (err) {
      this.log.warn({ id, file: this.file(id) }, `service ${id}: cannot record revision ${revision} in ${this.file(id)}: ${(err as Error).message}`)
    }
  }

  /** The last refusal of every service still refused (a later accept clears it). */
  refusals(): RollbackRefusal[] {
    return [...this.refused.values()]
  }

  /** `<cache>/md`, checked to be a directory and not a link to one. */
  private mdDir(create: boolean): string {
    const dir = path.join(this.cacheDir, KEPT_DIR)
    if (create) makeCacheSubdir(dir)
    const st = fs.lstatSync(dir)
    if (!st.isDirectory()) throw new Error(`${dir} is not a directory (a symbolic link is not followed)`)
    return dir
  }

  private read(id: string): RevisionRecord | undefined {
    const file = this.file(id)
    let text: string
    try {
      this.mdDir(false)
      text = readRegularFile(file, MAX_RECORD).toString('utf8')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') return undefined
      this.log.warn({ id, file }, `service ${id}: revision record ${file} not read: ${code === 'ELOOP' ? 'a symbolic link (not followed)' : (err as Error).message}`)
      return undefined
    }
    const rev = /^revision: (0|[1-9][0-9]{0,15})$/m.exec(text)
    const sum = /^sha256: ([0-9a-f]{64})$/m.exec(text)
    if (!rev || !sum || !Number.isSafeInteger(Number(rev[1]))) {
      this.log.warn({ id, file }, `service ${id}: revision record ${file} ignored: not a revision record`)
      return undefined
    }
    return { revision: Number(rev[1]), sha256: sum[1]! }
  }


  private write(id: string, rec: RevisionRecord): void {
    const dir = this.mdDir(true)
    const tmpDir = path.join(this.cacheDir, TMP_DIR)
    makeCacheSubdir(tmpDir)
    const tmp = tempName(tmpDir, `rev-${id.length > 64 ? id.slice(0, 64) : id}`)
    // 'wx': a new file, never through a link; the rename replaces a link planted at the name.
    const fd = fs.openSync(tmp, 'wx', CACHE_FILE_MODE)
    try {
      writeAll(fd, Buffer.from(`revision: ${rec.revision}\nsha256: ${rec.sha256}\n`))
      fs.fsyncSync(fd)
    } catch (err) {
      fs.closeSync(fd)
      fs.rmSync(tmp, { force: true })
      throw err
    }
    fs.closeSync(fd)
    fs.renameSync(tmp, path.join(dir, path.basename(this.file(id))))
  }
}
