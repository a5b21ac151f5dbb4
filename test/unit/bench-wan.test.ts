// The WAN rows' bookkeeping (bench/wan.ts), without a mount: the needed set read from strace's
// output, and the profile of a mount run read from the proxy's trace.
import t from 'tap'
import { wanTable, type Summary, type WorkloadResult } from '../../bench/report'
import { exchanges, openedBelow, profile } from '../../bench/wan'
import type { TraceEvent } from '../../bench/wan-proxy'

t.test('openedBelow: the files strace saw opened below the root, first open first', async (t) => {
  const out = [
    '101 openat(AT_FDCWD</tmp/cwd>, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3</etc/ld.so.cache>',
    '101 openat(AT_FDCWD</tmp/cwd>, "/py/lib/python3.11/encodings/__pycache__/__init__.cpython-311.pyc", O_RDONLY|O_CLOEXEC) = 3</py/lib/python3.11/encodings/__pycache__/__init__.cpython-311.pyc>',
    '101 openat(AT_FDCWD</tmp/cwd>, "/py/lib/python3.11/json", O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_DIRECTORY) = 3</py/lib/python3.11/json>',
    // A symlink (or a relative name): the kernel's path is what counts.
    '102 openat(AT_FDCWD</tmp/cwd>, "/link/os.pyc", O_RDONLY <unfinished ...>',
    '102 <... openat resumed>) = 4</py/lib/python3.11/__pycache__/os.cpython-311.pyc>',
    '101 openat(AT_FDCWD</tmp/cwd>, "/py/lib/python3.11/encodings/__pycache__/__init__.cpython-311.pyc", O_RDONLY|O_CLOEXEC) = 5</py/lib/python3.11/encodings/__pycache__/__init__.cpython-311.pyc>',
    '101 open("/py/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so", O_RDONLY) = 6</py/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so>',
    '101 openat(AT_FDCWD</tmp/cwd>, "/pyx/other", O_RDONLY) = 7</pyx/other>',
    '101 +++ exited with 0 +++',
  ].join('\n')
  t.same(openedBelow(out, '/py/'), [
    'lib/python3.11/encodings/__pycache__/__init__.cpython-311.pyc',
    'lib/python3.11/json',
    'lib/python3.11/__pycache__/os.cpython-311.pyc',
    'lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so',
  ])
})

/** A trace: `[conn, event, t, due?, request?]`. */
function trace(rows: [number, TraceEvent['e'], number, number?, string?][]): TraceEvent[] {
  return rows.map(([c, e, tt, due, req]) => ({ c, e, t: tt, ...(due !== undefined ? { due, n: 100 } : {}), ...(req ? { req } : {}) }))
}

t.test('profile: sequential requests, the gaps between them, round trips, connections', async (t) => {
  const tr = trace([
    [1, 'open', 0],
    [1, 'up', 0, 60, 'GET /store/md/wan-python.flist HTTP/1.1'],
    [1, 'down', 60, 80],
    [2, 'open', 99],
    [2, 'up', 100, 160, 'GET /store/files/a/b/ab01 HTTP/1.1'],
    [2, 'down', 160, 170],
    [2, 'down', 171, 180],
    [2, 'up', 185, 205, 'GET /store/files/c/d/cd02 HTTP/1.1'],
    [2, 'down', 205, 225],
    [2, 'up', 230, 250, 'GET /store/files/e/f/ef03 HTTP/1.1'],
    [2, 'down', 250, 270],
    [3, 'open', 239],
    [3, 'up', 240, 300, 'GET /store/files/0/1/0104 HTTP/1.1'],
    [3, 'fin-down', 330, 340],
    [3, 'down', 300, 320],
  ])
  t.same(
    exchanges(tr).map((x) => [x.conn, x.start, x.first, x.end, x.fresh]),
    [
      [1, 0, 80, 80, true],
      [2, 100, 170, 180, true],
      [2, 185, 225, 225, false],
      [2, 230, 270, 270, false],
      [3, 240, 320, 320, true],
    ],
    'each request paired with its response on its connection',
  )
  const p = profile(tr, 40)
  t.equal(p.requests, 4, 'blob requests only')
  t.equal(p.otherRequests, 1, 'the flist is counted apart')
  t.equal(p.connections, 2)
  t.equal(p.newConnectionRequests, 2)
  t.equal(p.sequential, 3, 'three were sent with nothing else in flight')
  t.equal(p.maxInFlight, 2)
  t.same(p.gapMs, { median: 5, p90: 5 }, 'each sent 5 ms after the one before came back')
  t.same(p.latencyMs, { median: 80, p90: 80 })
  t.equal(p.roundTripsPerRequest, 2)
  t.equal(p.busySeconds, 0.21, 'time with a request in flight: 80 + 40 + 90 ms')
  t.equal(p.spanSeconds, 0.22)
})

t.test('profile of an empty trace', async (t) => {
  const p = profile([], 40)
  t.equal(p.requests, 0)
  t.equal(p.sequential, 0)
  t.equal(p.busySeconds, 0)
})

t.test('wanTable: the downloads reads started themselves, per row', async (t) => {
  const s: Summary = { min: 1, median: 1, max: 1, runs: [1] }
  const wan = { rttMs: 40, rateMbit: 100, neededBlobs: 92, neededBytes: 450_000, fetchedBlobs: 120, fetchedBytes: 900_000, extraBlobs: 28, extraBytes: 450_000, missingBlobs: 0, floorSeconds: 3.68, floorRatio: 0.5 }
  const row = (id: string, started?: number): WorkloadResult => ({ id, title: id, unit: 's', mount: s, target: { of: 'ratio', op: '<=', bound: 3 }, met: true, info: { wan: { ...wan, started } } })
  const lines = wanTable([row('wan-node', 31), row('old-row')]).split('\n')
  const col = lines[0]!.indexOf('started by reads')
  t.ok(col > 0, 'a column')
  t.equal(lines[2]!.slice(col).split(/\s+/)[0], '31')
  t.notMatch(lines[3]!.slice(col, col + 16), /\d/, 'empty for a row without the count')
})
