// Cancel: the miss path's cheap abort flag (lib/cancel.ts).
import t from 'tap'
import { Cancel } from '../../lib/cancel'

t.test('Cancel: listeners once, in order; taken back; none after the abort', async (t) => {
  const c = new Cancel()
  const calls: string[] = []
  c.onAbort(() => calls.push('a'))
  const forgetB = c.onAbort(() => calls.push('b'))
  c.onAbort(() => calls.push('c'))
  forgetB()
  forgetB() // twice is harmless
  t.notOk(c.aborted)
  const reason = new Error('why')
  c.abort(reason)
  c.abort(new Error('again'))
  t.same(calls, ['a', 'c'], 'each listener once, a taken-back one never')
  t.equal(c.reason, reason, 'the first reason stays')
  t.ok(c.aborted)
  const late = c.onAbort(() => calls.push('late'))
  late()
  t.same(calls, ['a', 'c'], 'a listener added after the abort is never called (callers check `aborted` first)')
})
