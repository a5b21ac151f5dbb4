/**
 * The fetcher module contract: what the engine's miss worker (lib/miss-worker.ts) loads to put a
 * missing blob in the local cache. lib/pipeline/ is the real one; tests load small fixture
 * fetchers (test/fixtures/fetcher.js). docs/design.md, "The miss path", says what code that runs
 * there may and may not do.
 */

/** What a caller of {@link Fetcher.fetch} may say besides the blob. */
export interface FetchOptions {
  /**
   * The caller gives up when this aborts: its promise rejects at once (`EIO`). The download goes
   * on while another caller of the same blob still waits for it; once the last one gave up it
   * ends: its download slot (or its place in the queue) is freed at once, a source that is still
   * sending has its next chunk refused (and drops the connection), no further source is tried,
   * and nothing is put in the cache.
   */
  signal?: AbortSignal
  /**
   * The same as `signal`, for less (no `AbortSignal` to make and listen to): the engine's miss
   * worker passes both, `signal` made only if read. It aborts exactly when `signal` does; a
   * fetcher may use either.
   */
  cancel?: CancelSignal
  /**
   * Called whenever the download moves: bytes arrive from a source, or it moves on to the next
   * source; while it waits for a download slot or for room in the cache, whenever another
   * download moves (a few times a second at most). Called per chunk: keep it cheap. The engine's
   * backstop of parked reads counts this as progress.
   */
  onProgress?: () => void
  /**
   * The caller found the blob missing from the local cache just before this call (the engine's
   * read path, which parks a read only when its blob could not be opened): a new download that
   * gets a slot at once does not look for it there again (one `lstat` less per miss; it does
   * after a wait for a slot, or when a download of the blob settled lately). A blob that landed
   * meanwhile otherwise is downloaded again and replaced, never served wrong.
   */
  absent?: boolean
}

/** An abort flag with listeners: see {@link FetchOptions.cancel}. */
export interface CancelSignal {
  readonly aborted: boolean
  readonly reason: unknown
  /** Calls `fn` once when it aborts (never if it already has); returns what takes `fn` back. */
  onAbort(fn: () => void): () => void
}

/** The checked chunk index a {@link Fetcher.fetchRange} used: the engine serves reads from it. */
export interface ChunkedFile {
  /** Every chunk's size but the last one's. */
  chunkSize: number
  /** The chunks' MD5s (lower-case hex), in file order. */
  chunks: readonly string[]
}

/** What a fetcher module's `createFetcher` makes. */
export interface Fetcher {
  /**
   * Put a verified copy of the blob at `<cache>/<h0>/<h1>/<md5>`; reject (`EIO`) if no source can.
   * `onVerified`, when given, may be called once with the blob's checked bytes before they are in
   * the cache (the engine answers its waiting readers from them); the promise still settles
   * only once the blob is in place.
   */
  fetch(md5: string, size: number, onVerified?: (data: Buffer) => void, options?: FetchOptions): Promise<void>
  /**
   * Optional: the mount's tree changed (a reload); `data` is what the fetcher may guess from
   * (lib/pipeline/locality.ts), as `createFetcher`'s data carried it at the start.
   */
  setLocality?(data: unknown): void
  /**
   * Optional: the blobs of the mount's start-up lists to fetch now, behind any miss
   * (lib/pipeline/startup.ts); at the start `createFetcher`'s data carries them, then each new tree
   * brings its own, which replaces what is left of the last.
   */
  setStartup?(data: unknown): void

  /**
   * Optional: a file stored as chunks too (`index`: the MD5 of its chunk index). Puts the chunks
   * that cover `[off, off + len)` in the local cache, each as a blob of its own, and resolves
   * with the checked index; or with undefined when the index cannot be used (absent everywhere,
   * or it fails its checks): the caller then fetches the file whole. Rejects (`EIO`) when a chunk
   * no source can serve.
   */
  fetchRange?(md5: string, size: number, index: string, off: number, len: number, options?: FetchOptions): Promise<ChunkedFile | undefined>
  /** Counters for `status`: a JSON-serialisable object, published as the status document's `pipeline`. */
  stats(): object
  /** Stop; resolves once what it put in hand is done (bounded: the engine does not wait long). */
  close(): Promise<void>
  /**
   * Load now every module its fetches can need. The miss worker calls it right after
   * `createFetcher`, before it answers a miss: loading a module later, while a thread may be
   * blocked reading the mount, is not allowed there (lib/lazy.ts).
   */
  preload?(): void
}

/** A fetcher module: `require(module).createFetcher(data)`, `data` as the engine was given it. */
export interface FetcherModule {
  createFetcher(data: unknown): Fetcher | Promise<Fetcher>
}
