/**
 * "Did you mean": the candidates closest to a mistyped word (a config key, a subcommand).
 */

/** Levenshtein distance: typos are the commonest mistake in keys and command names. */
export function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!
    prev[0] = i
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1))
      diag = up
    }
  }
  return prev[b.length]!
}

/** The candidates at most `max` edits from `word` (default 2), closest first. */
export function closest(word: string, candidates: readonly string[], max = 2): string[] {
  return candidates
    .map((c) => ({ c, d: distance(word, c) }))
    .filter(({ d }) => d <= max)
    .sort((x, y) => x.d - y.d)
    .map(({ c }) => c)
}
