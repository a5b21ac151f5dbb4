// A cheap abort flag for the miss path (see Cancel).
import type { CancelSignal } from './fetcher'

/**
 * What the miss path needs of an `AbortController` and its signal (a flag, a reason, listeners),
 * without their cost: Node 20 spends ~10 µs making an `AbortController` and as much adding and
 * removing a listener, several times per blob on the miss path.
 */
export class Cancel implements CancelSignal {
  aborted = false
  reason: unknown = undefined
  private listeners: (() => void)[] | undefined

  /** Sets the flag and calls the listeners, once. */
  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    const listeners = this.listeners
    this.listeners = undefined
    if (listeners) for (const l of listeners) l()
  }

  /** Calls `fn` when it aborts (never if it has already: check `aborted` first); returns what
   * takes `fn` back. */
  onAbort(fn: () => void): () => void {
    if (this.aborted) return noop
    ;(this.listeners ??= []).push(fn)
    return () => {
      const i = this.listeners?.indexOf(fn) ?? -1
      if (i >= 0) this.listeners!.splice(i, 1)
    }
  }
}

function noop(): void {}
