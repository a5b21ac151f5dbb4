/**
 * Fetching a service's flist at mount and reload: from the first store that has it, checked by
 * the caller's `validate` (its signature, then its lines), kept in the local cache for a later
 * start without a store, and read from that kept copy when no store answers. Its start-up list
 * (lib/startup.ts) comes the same way, from where the flist came.
 */
import { AysfsError } from '../errors'
import type { LocalCache } from '../local-cache'
import type { Logger } from '../log'
import { isServiceId, SERVICE_ID_RULE } from '../paths'
import { RollbackRefused, sha256, type RefusedOffer } from '../revisions'
import { MAX_STARTUP_SIZE } from '../startup'
import { BufferSink, hasValidators, storeFlistRel, storeStartupRel, type Source, type Validators } from '../sources/source'
import { asFault, type SourceCounters } from './source-stats'

/** Largest `.flist.sig` accepted. */
const MAX_SIG_SIZE = 64 * 1024

/** What {@link fetchFlist} found. */
export interface FlistResult<T> {
  /** What `validate` returned. */
  value: T
  /** The flist's exact bytes. */
  data: Buffer
  /** The detached signature, when asked for and present. */
  signature?: Buffer
  /** `store[0]`… or `kept` for the copy in `<cache>/md/`. */
  source: string
  /** True when no store answered and the kept copy was used. */
  kept: boolean
  /**
   * What the store's responses said of the pair accepted (HTTP stores: `ETag`, `Last-Modified`),
   * for a later conditional request; absent for the kept copy.
   */
  validators?: { flist: Validators; signature?: Validators }
}

/**
 * What a caller remembers of the flists of one service that stores offered and that were refused
 * as rollbacks (lib/revisions.ts), per store: a store that still offers one answers its
 * conditional request with 304s, and the refusal is made again without a download.
 */
export interface RefusedOffers {
  /** What `store` offered last that was refused. */
  at(store: Source): RefusedOffer | undefined
  /** `store` still offers it: the refusal made again (undefined: it would not be refused now). */
  again(store: Source, offer: RefusedOffer): RollbackRefused | undefined
  /** `store`'s flist was just refused as a rollback. */
  refused(store: Source, offer: RefusedOffer): void
}

/** Checks a flist's bytes: returns what the caller wants of them, or throws (see {@link fetchFlist}). */
export type ValidateFlist<T> = (data: Buffer, signature: Buffer | undefined, source: string) => T

/** What {@link fetchFlist} works with: the pipeline's stores, cache and counters. */
export interface FlistContext {
  stores: readonly Source[]
  /** `main.max_flist_size`. */
  maxFlistSize: number
  cache: LocalCache
  counters: SourceCounters
  log: Logger
  /** Flists fetched from a store, and kept copies used. */
  tally: { fetched: number; kept: number }
}

/**
 * Fetch the flist of service `id`: `R/md/<id>.flist` from the first store that has it, checked
 * with `validate` (which may parse it and return the result; a throw rejects the fetch as is:
 * a store's invalid flist is an error, not a reason to fall back) and then kept under
 * `<cache>/md/<id>.flist`. With `signature`, `R/md/<id>.flist.sig` from the same store is
 * handed to `validate` and kept too.
 *
 * `validate`'s third argument says where the bytes came from, for messages:
 * `store[0] (<url>)` or `the copy kept in <file>`.
 *
 * One kind of throw is not final: an `AysfsError` coded `EACCES` (the signature does not vouch
 * for the flist). The pair is then fetched from that store once more and validated again: a
 * `publish` renames the new flist and then its signature, and a fetch between the two renames
 * gets a mismatched pair that the second fetch finds whole. A pair still refused marks that
 * store's copy as refused, is logged and counted (`untrusted`), and the next store is tried. A
 * `RollbackRefused` (lib/revisions.ts: a signed older revision) is not fetched again nor counted
 * here: the next store is tried at once. With `refused`, what that store's responses said of it
 * is remembered, and the next fetch from that store is a conditional request: while the store
 * still offers the refused pair (two 304s), it is refused again without a download. If
 * no store has an accepted copy, the fetch rejects with `EACCES` and the kept copy is not used:
 * a store answered, and what it says must be looked at.
 *
 * When no store answers, the kept copy is validated and used, with a warning. When every store
 * answers 404, the service does not exist: `ENOENT`, whatever is kept. No store and no copy:
 * `EIO`. An flist over `max_flist_size` is a failure of that store. An `id` that breaks the
 * service-id rule (lib/paths.ts) is `EINVAL`, before any store or file is asked.
 */
export async function fetchFlist<T>(ctx: FlistContext, id: string, validate: ValidateFlist<T>, opts: { signature?: boolean; refused?: RefusedOffers } = {}): Promise<FlistResult<T>> {
  if (!isServiceId(id)) throw new AysfsError('EINVAL', `not a valid ays id: ${JSON.stringify(id)}: a service id must be ${SERVICE_ID_RULE}`)
  const { stores } = ctx
  const rel = storeFlistRel(id)
  const failures: string[] = []
  const refused: AysfsError[] = []
  let absent = 0
  stores: for (const store of stores) {
    let first: AysfsError | undefined
    for (let attempt = 1; ; attempt++) {
      let data: Buffer
      let signature: Buffer | undefined
      const validators: { flist: Validators; signature?: Validators } = { flist: {} }
      try {
        // The refused pair this store offered last: still the same (304s), refused again as it is.
        const offer = opts.signature && attempt === 1 ? opts.refused?.at(store) : undefined
        if (offer && (await offersAgain(store, rel, offer))) {
          const again = opts.refused!.again(store, offer)
          if (again) {
            refused.push(again)
            failures.push(`${store.key}: rollback refused`)
            continue stores
          }
        }
        const sink = new BufferSink(ctx.maxFlistSize, `flist ${id}`)
        if ((await store.get(rel, sink)) === 'absent') {
          absent++
          failures.push(`${store.key}: not found`)
          continue stores
        }
        data = sink.data()
        validators.flist = sink.received ?? {}
        if (opts.signature) {
          const sigSink = new BufferSink(MAX_SIG_SIZE, `signature of flist ${id}`)
          if ((await store.get(`${rel}.sig`, sigSink)) === 'ok') signature = sigSink.data()
          validators.signature = sigSink.received ?? {}
        }
      } catch (err) {
        const fault = asFault(err)
        ctx.counters.fault(store, fault)
        failures.push(`${store.key}: ${fault.kind}`)
        continue stores
      }
      let value: T
      try {
        value = validate(data, signature, `${store.key} (${store.url})`)
      } catch (err) {
        if (!(err instanceof AysfsError && err.code === 'EACCES')) throw err
        if (err instanceof RollbackRefused) {
          // A signed older revision (a mirror that lags, or an attack): no second fetch, since a
          // publish between its renames cannot look like this; logged once per pair by whoever
          // refused it. The next store may have the revision in force or a newer one.
          opts.refused?.refused(store, { revision: err.refusal.offered, digest: err.digest, ...(signature ? { signature: sha256(signature) } : {}), validators })
          refused.push(err)
          failures.push(`${store.key}: rollback refused`)
          continue stores
        }
        if (attempt === 1) {
          // Perhaps a publish between its two renames (the new flist, the old signature): the
          // pair once more from the same store, before this store's copy counts as refused.
          ctx.log.debug({ id, source: store.key, url: store.url }, `${err.message}; fetching the flist and its signature from ${store.key} once more`)
          first = err
          continue
        }
        // Refused (never kept): another store may have the genuine copy. Logged only if one
        // has: otherwise the refusal is the error the caller gets, and one line says it.
        ctx.counters.untrusted(store, err)
        refused.push(err)
        failures.push(`${store.key}: refused`)
        continue stores
      }
      if (first) ctx.log.info({ id, source: store.key, url: store.url }, `${first.message}; fetched once more from ${store.key}, the pair verified (a publish was between its two renames)`)
      for (const e of refused) ctx.log.warn({ id, source: store.key, kind: 'untrusted' }, `${e.message}; ${store.key} served a trusted copy`)
      ctx.cache.keepFlist(id, data, opts.signature ? signature : null)
      ctx.tally.fetched++
      return { value, data, signature, source: store.key, kept: false, validators }
    }
  }
  if (refused.length > 0) {
    if (refused.length === 1 && failures.length === 1) throw refused[0]
    throw new AysfsError('EACCES', `flist ${id}: no store has a copy that can be trusted (${failures.join(', ')}): ${refused.map((e) => e.message).join('; ')}`, {
      key: 'main.trusted_keys',
    })
  }
  if (stores.length > 0 && absent === stores.length) {
    throw new AysfsError('ENOENT', `flist ${id}: not found in any store (${stores.map((s) => s.key).join(', ')})`)
  }
  const why = stores.length === 0 ? 'no store is configured' : `no store answered (${failures.join(', ')})`
  let kept
  try {
    kept = ctx.cache.readKeptFlist(id, opts.signature === true)
  } catch (err) {
    // A first start with no [[store]] at all: say what to add (an offline node needs a kept copy).
    const add = stores.length === 0 ? `: add a store that has md/${id}.flist to the config, e.g. [[store]] with url = "https://stor.example.com/dedupe" (or a directory path)` : ''
    throw new AysfsError('EIO', `flist ${id}: ${why}, and no copy is kept in ${ctx.cache.keptFlistFile(id)}${add}`, { cause: err, ...(stores.length === 0 ? { key: 'store' } : {}) })
  }
  const value = validate(kept.data, kept.signature, `the copy kept in ${kept.file}`)
  ctx.tally.kept++
  ctx.log.warn({ id, file: kept.file }, `flist ${id}: ${why}; using the copy kept in ${kept.file}`)
  return { value, data: kept.data, signature: kept.signature, source: 'kept', kept: true }
}

/**
 * Whether `store` still offers the refused pair `offer`, by conditional requests with the
 * validators of the responses that delivered it (false when it has none: the pair is fetched).
 */
export async function offersAgain(store: Source, rel: string, offer: RefusedOffer): Promise<boolean> {
  if (store.revalidate === undefined || !hasValidators(offer.validators.flist) || !hasValidators(offer.validators.signature)) return false
  if ((await store.revalidate(rel, offer.validators.flist)) !== 'unchanged') return false
  return (await store.revalidate(`${rel}.sig`, offer.validators.signature)) === 'unchanged'
}

/**
 * What the caller makes of a start-up list's bytes (and signature, when asked for): its value, or
 * undefined when the list is not to be used (the caller says why: unsigned, badly signed, bad).
 */
export type ValidateStartup<T> = (data: Buffer, signature: Buffer | undefined, source: string) => T | undefined

/** What {@link fetchStartup} found: the list's value, and what a refresh compares the store with. */
export interface StartupResult<T> {
  /** What `validate` returned; undefined: no list, or one not used. */
  value?: T
  /** SHA-256 of the list's bytes as offered (used or not); undefined: there is none. */
  list?: string
  /** SHA-256 of its signature as offered (only when signatures were asked for); undefined: none. */
  signature?: string
  /** The store the list came from (absent: the kept copy, or none answered). */
  store?: Source
  /** What that store's responses said of the list and its signature (HTTP stores), for a later conditional request. */
  validators?: { list: Validators; signature?: Validators }
}

/**
 * The start-up list of service `id` (`R/md/<id>.startup`), from where its flist came: `from` is
 * that store's key, or `kept`. With `signature`, `R/md/<id>.startup.sig` too. No list is no error:
 * no value. A list `validate` accepts is kept in `<cache>/md/<id>.startup`; a store that has none
 * any more has the kept copy removed. When the flist came from the kept copy, or the store fails
 * to serve the list, the kept list is used (validated again); an unreadable one is logged.
 */
export async function fetchStartup<T>(ctx: FlistContext, id: string, from: string, validate: ValidateStartup<T>, opts: { signature?: boolean } = {}): Promise<StartupResult<T>> {
  const store = ctx.stores.find((s) => s.key === from)
  if (store) {
    const rel = storeStartupRel(id)
    let data: Buffer | undefined
    let signature: Buffer | undefined
    const validators: { list: Validators; signature?: Validators } = { list: {} }
    try {
      const sink = new BufferSink(MAX_STARTUP_SIZE, `start-up list ${id}`)
      if ((await store.get(rel, sink)) === 'absent') {
        ctx.cache.keepStartup(id, undefined, null)
        return { store, validators }
      }
      data = sink.data()
      validators.list = sink.received ?? {}
      if (opts.signature) {
        const sigSink = new BufferSink(MAX_SIG_SIZE, `signature of start-up list ${id}`)
        if ((await store.get(`${rel}.sig`, sigSink)) === 'ok') signature = sigSink.data()
        validators.signature = sigSink.received ?? {}
      }
    } catch (err) {
      // Counted and logged (once per kind) as the store's failure; the kept copy stands in.
      ctx.counters.fault(store, asFault(err))
      data = undefined
    }
    if (data !== undefined) {
      const value = validate(data, signature, `${store.key} (${store.url})`)
      if (value !== undefined) ctx.cache.keepStartup(id, data, opts.signature ? signature : null)
      return { ...(value !== undefined ? { value } : {}), ...digests(data, opts.signature ? signature : undefined), store, validators }
    }
  }
  let kept
  try {
    kept = ctx.cache.readKeptStartup(id, opts.signature === true, MAX_STARTUP_SIZE)
  } catch (err) {
    ctx.log.warn({ id }, `start-up list ${id}: the kept copy cannot be read (${(err as Error).message}); none is used`)
    return {}
  }
  if (!kept) return {}
  const value = validate(kept.data, kept.signature, `the copy kept in ${kept.file}`)
  return { ...(value !== undefined ? { value } : {}), ...digests(kept.data, opts.signature ? kept.signature : undefined) }
}

function digests(data: Buffer, signature: Buffer | undefined): { list: string; signature?: string } {
  return { list: sha256(data), ...(signature !== undefined ? { signature: sha256(signature) } : {}) }
}
