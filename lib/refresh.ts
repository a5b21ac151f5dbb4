/**
 * Automatic refresh (`main.refresh`): every interval, plus up to a tenth of it at random (so a
 * fleet does not ask its stores all at once), a mount asks its stores whether any service's flist
 * changed, and applies a change in place as a reload does (lib/index.ts).
 *
 * This module holds the two parts that are not the reload itself: {@link RefreshSchedule}, the
 * timer (injected, so tests advance it instead of sleeping), and {@link checkService}, the cheap
 * question "is the pair this node accepted still what the stores serve?". For an HTTP store that
 * answered with validators, that is a conditional GET of the flist and of its signature: an
 * unchanged pair costs two 304s and nothing else. Validators are only ever those of the responses
 * that delivered a pair this node accepted and applied ({@link AcceptedPairs}); for a store
 * without them (a directory, a server that sends neither `ETag` nor `Last-Modified`, a store
 * never asked yet) the pair is fetched and compared by hash.
 *
 * A store whose flist was refused as a rollback (lib/revisions.ts) is asked with the validators
 * of the refused responses: while it still offers that pair (two 304s) the refusal is made again
 * without a download or a reload, and the next store is asked; anything else it offers is
 * fetched and judged by the reload.
 *
 * The start-up list (`md/<id>.startup`, and its `.sig` on a signed service) is asked about the
 * same way once the pair is found unchanged: `publish --startup` of an unchanged tree leaves the
 * flist as it is and replaces only the list, so a check of the pair alone never saw a new list.
 * A list that changed makes the service `changed`; the reload that follows fetches the list and
 * checks it (its own signature, then its lines) as a mount does.
 *
 * Main thread only.
 */
import { offersAgain } from './pipeline/flists'
import { sha256, type RefusedOffer } from './revisions'
import { BufferSink, hasValidators, storeFlistRel, storeStartupRel, type Source, type Validators } from './sources/source'
import { MAX_STARTUP_SIZE } from './startup'

/** Largest `.flist.sig` read (as the pipeline's flist fetch). */
const MAX_SIG_SIZE = 64 * 1024

/** What the last refresh found for one service (`status`: `mount.services[].refresh.result`). */
export type RefreshResult = 'unchanged' | 'applied' | 'refused' | 'unreachable' | 'failed'

/** One service's refresh state, in `status`. */
export interface ServiceRefresh {
  /** When a refresh last asked the stores about it (ISO 8601). */
  checkedAt: string
  result: RefreshResult
  /** Why, for `refused`, `unreachable` and `failed`. */
  error?: string
}

/** What {@link MountOptions.onRefresh} is told: a refresh applied, refused or failed. */
export interface RefreshEvent {
  type: 'applied' | 'refused' | 'failed'
  /** When the refresh ended (ISO 8601). */
  at: string
  /** The services whose flist changed (applied), or whose new flist was refused or failed. */
  services: { id: string; revision?: number; previous?: number }[]
  /** For `refused` and `failed`: the message (also in the log and in `status`). */
  error?: string
}

/** A pair (flist and signature) in force for one service. */
export interface InForce {
  flist: string
  /** SHA-256 of the signature, when signatures are checked (undefined: none). */
  signature?: string
  /**
   * The start-up list that came with it, as offered (used or not): SHA-256 of the list and of its
   * signature (undefined: none). Absent when lists are not fetched (`main.startup = false`).
   */
  startup?: { list?: string; signature?: string }
}

/** What the responses that delivered a pair (and its start-up list) said, for conditional requests. */
export interface PairValidators {
  flist: Validators
  signature?: Validators
  startup?: Validators
  startupSignature?: Validators
}

function sameInForce(a: InForce, b: InForce): boolean {
  return a.flist === b.flist && a.signature === b.signature && a.startup?.list === b.startup?.list && a.startup?.signature === b.startup?.signature && (a.startup === undefined) === (b.startup === undefined)
}

/**
 * What a refresh knows of the pairs in force: per service their hashes, and per (store, service)
 * the validators of the responses that delivered an accepted pair.
 */
export class AcceptedPairs {
  private readonly inForce = new Map<string, InForce>()
  private readonly validators = new Map<string, PairValidators>()
  /** Per (store, service): the flist it offered last that was refused as a rollback. */
  private readonly refusedOffers = new Map<string, RefusedOffer>()

  private static key(store: Source, id: string): string {
    return `${store.key}\0${store.url}\0${id}`
  }

  /** The pair of `id` applied now; `from` and `validators` when it came from a store that gave them. */
  applied(id: string, pair: InForce, from?: { store: Source; validators?: PairValidators }): void {
    const before = this.inForce.get(id)
    if (before === undefined || !sameInForce(before, pair)) {
      // Validators of another pair would answer 304 for bytes no longer in force.
      for (const k of [...this.validators.keys()]) if (k.endsWith(`\0${id}`)) this.validators.delete(k)
    }
    this.inForce.set(id, pair)
    // That store offers an accepted pair now, not the one it was refused for.
    if (from) this.refusedOffers.delete(AcceptedPairs.key(from.store, id))
    if (from?.validators && hasValidators(from.validators.flist)) this.validators.set(AcceptedPairs.key(from.store, id), from.validators)
  }

  /** The pair in force for `id`. */
  get(id: string): InForce | undefined {
    return this.inForce.get(id)
  }

  /** Validators of the accepted pair at `store`. */
  validatorsAt(store: Source, id: string): PairValidators | undefined {
    return this.validators.get(AcceptedPairs.key(store, id))
  }

  remember(store: Source, id: string, v: PairValidators): void {
    if (hasValidators(v.flist)) this.validators.set(AcceptedPairs.key(store, id), v)
  }

  /** What `store` offered last for `id` that was refused as a rollback. */
  refusedAt(store: Source, id: string): RefusedOffer | undefined {
    return this.refusedOffers.get(AcceptedPairs.key(store, id))
  }

  /** `store`'s flist for `id` was refused as a rollback: what it was, and its responses' validators. */
  refused(store: Source, id: string, offer: RefusedOffer): void {
    this.refusedOffers.set(AcceptedPairs.key(store, id), offer)
  }

  /** Forget everything (the stores changed with a reload). */
  clear(): void {
    this.inForce.clear()
    this.validators.clear()
    this.refusedOffers.clear()
  }
}

/** What {@link checkService} found. */
export interface CheckOutcome {
  result: 'unchanged' | 'changed' | 'unreachable' | 'refused'
  /** For `unreachable`: what each store said; for `refused`: the refusal. */
  error?: string
}

/**
 * Asks the stores, in order, whether service `id`'s pair changed since the one in force: the
 * first store that answers decides (as a reload takes the flist from the first store that has
 * it). `changed` also stands for "this store cannot say" (it lacks the flist, or serves other
 * bytes): the reload that follows decides, with every check a reload makes. Once the pair is
 * found unchanged, so is the start-up list at that store (when lists are fetched): a new list
 * alone makes the service `changed` too.
 *
 * A store that still offers the flist it was refused for as a rollback (its conditional requests
 * answered 304) is refused again by `again` (its message; undefined: not refused now) and the
 * next store asked: `refused` when no store decided otherwise.
 */
export async function checkService(
  stores: readonly Source[],
  id: string,
  signed: boolean,
  pairs: AcceptedPairs,
  maxFlistSize: number,
  again?: (store: Source, offer: RefusedOffer) => string | undefined,
): Promise<CheckOutcome> {
  const inForce = pairs.get(id)
  if (inForce === undefined) return { result: 'changed' }
  const rel = storeFlistRel(id)
  const failures: string[] = []
  const refusals: string[] = []
  for (const store of stores) {
    try {
      const v = pairs.validatorsAt(store, id)
      const offer = signed ? pairs.refusedAt(store, id) : undefined
      if (offer !== undefined) {
        if (await offersAgain(store, rel, offer)) {
          const refusal = again?.(store, offer)
          if (refusal !== undefined) {
            refusals.push(refusal)
            continue
          }
        } else if (v === undefined && hasValidators(offer.validators.flist) && hasValidators(offer.validators.signature)) {
          // Something new there: the reload fetches and judges it.
          return { result: 'changed' }
        }
      }
      let got: PairValidators
      if (v !== undefined && store.revalidate !== undefined) {
        const flist = await store.revalidate(rel, v.flist)
        if (flist !== 'unchanged') return { result: 'changed' }
        if (signed) {
          // The signature is a file of its own: a new revision of the same bytes changes only it.
          if (!hasValidators(v.signature)) return { result: 'changed' }
          const sig = await store.revalidate(`${rel}.sig`, v.signature!)
          if (sig !== 'unchanged') return { result: 'changed' }
        }
        got = v
      } else {
        // No validators: fetch the pair and compare it with the one in force.
        const sink = new BufferSink(maxFlistSize, `flist ${id}`)
        if ((await store.get(rel, sink)) === 'absent') return { result: 'changed' }
        const digest = sha256(sink.data())
        got = { flist: sink.received ?? {} }
        let sig: string | undefined
        if (signed) {
          const sigSink = new BufferSink(MAX_SIG_SIZE, `signature of flist ${id}`)
          sig = (await store.get(`${rel}.sig`, sigSink)) === 'ok' ? sha256(sigSink.data()) : undefined
          got.signature = sigSink.received ?? {}
        }
        if (digest !== inForce.flist || sig !== inForce.signature) {
          // The very pair this store was refused for (a store without validators): refused again.
          const refusal = offer !== undefined && digest === offer.digest && sig === offer.signature ? again?.(store, offer) : undefined
          if (refusal === undefined) return { result: 'changed' }
          refusals.push(refusal)
          continue
        }
      }
      // This store serves the pair in force; now its start-up list.
      if (inForce.startup !== undefined && !(await sameStartup(store, id, signed, inForce.startup, got))) return { result: 'changed' }
      // Its validators are those of an accepted pair (and list).
      pairs.remember(store, id, got)
      return { result: 'unchanged' }
    } catch (err) {
      failures.push(`${store.key}: ${(err as Error & { kind?: string }).kind ?? (err as Error).message}`)
    }
  }
  if (refusals.length > 0) return { result: 'refused', error: refusals.join('; ') }
  return { result: 'unreachable', error: stores.length === 0 ? 'no store is configured' : `no store answered (${failures.join(', ')})` }
}

/**
 * Whether `store` still offers service `id`'s start-up list in force (and its signature, on a
 * signed service): a conditional GET with the validators in `v` (updated in place), else a GET
 * compared by hash; a list that was absent costs a GET answered 404. A store that fails to
 * answer about the list does not make it changed (the list only saves time: the next refresh
 * asks again).
 */
async function sameStartup(store: Source, id: string, signed: boolean, inForce: { list?: string; signature?: string }, v: PairValidators): Promise<boolean> {
  const rel = storeStartupRel(id)
  try {
    const list = await sameFile(store, rel, inForce.list, v.startup, MAX_STARTUP_SIZE, `start-up list ${id}`)
    if (!list.same) return false
    if (list.validators) v.startup = list.validators
    // No list: no signature is fetched for it either (as at mount).
    if (!signed || inForce.list === undefined) return true
    const sig = await sameFile(store, `${rel}.sig`, inForce.signature, v.startupSignature, MAX_SIG_SIZE, `signature of start-up list ${id}`)
    if (sig.validators) v.startupSignature = sig.validators
    return sig.same
  } catch {
    return true
  }
}

/** Whether `store`'s object at `rel` is the one whose SHA-256 is `digest` (undefined: none). */
async function sameFile(store: Source, rel: string, digest: string | undefined, v: Validators | undefined, max: number, what: string): Promise<{ same: boolean; validators?: Validators }> {
  if (digest !== undefined && hasValidators(v) && store.revalidate !== undefined) return { same: (await store.revalidate(rel, v!)) === 'unchanged' }
  const sink = new BufferSink(max, what)
  if ((await store.get(rel, sink)) === 'absent') return { same: digest === undefined }
  return { same: sha256(sink.data()) === digest, ...(sink.received ? { validators: sink.received } : {}) }
}

/** The timer a {@link RefreshSchedule} uses; tests pass their own. */
export interface RefreshTimers {
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
  /** A number in [0, 1): the jitter. */
  random(): number
}

const REAL_TIMERS: RefreshTimers = {
  setTimeout: (fn, ms) => {
    const h = setTimeout(fn, ms)
    // A refresh alone never keeps a process alive (the mount does, while it is mounted).
    h.unref()
    return h
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  random: Math.random,
}

/** The most jitter added to an interval: a tenth of it. */
export const REFRESH_JITTER = 0.1

/** The delay before the next refresh: `intervalMs` plus up to {@link REFRESH_JITTER} of it. */
export function refreshDelay(intervalMs: number, random: number): number {
  return Math.round(intervalMs * (1 + REFRESH_JITTER * Math.min(Math.max(random, 0), 1)))
}

/**
 * Runs `run` every interval (plus jitter), the next run armed only when the last one has ended:
 * two refreshes never overlap. (`run` itself queues behind a reload: lib/index.ts.)
 */
export class RefreshSchedule {
  private handle: unknown
  private stopped = true
  /** Bumped by start and stop: a run that ends after them does not arm the old schedule again. */
  private generation = 0
  private readonly timers: RefreshTimers

  constructor(
    private intervalMs: number,
    private readonly run: () => Promise<unknown>,
    timers?: Partial<RefreshTimers>,
  ) {
    this.timers = { ...REAL_TIMERS, ...timers }
  }

  /** The interval in force (0: off). */
  get interval(): number {
    return this.intervalMs
  }

  /** Starts (or restarts, with a new interval) the schedule; 0 stops it. */
  start(intervalMs = this.intervalMs): void {
    this.stop()
    this.intervalMs = intervalMs
    if (intervalMs <= 0) return
    this.stopped = false
    this.arm()
  }

  stop(): void {
    this.generation++
    this.stopped = true
    if (this.handle !== undefined) this.timers.clearTimeout(this.handle)
    this.handle = undefined
  }

  private arm(): void {
    if (this.stopped) return
    const generation = this.generation
    this.handle = this.timers.setTimeout(() => {
      this.handle = undefined
      void this.run()
        .catch(() => undefined)
        .then(() => {
          if (generation === this.generation) this.arm()
        })
    }, refreshDelay(this.intervalMs, this.timers.random()))
  }
}
