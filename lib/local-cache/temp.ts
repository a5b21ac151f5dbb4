/**
 * Temp files of the local cache (`<cache>/tmp/`): how they are named, and the clean-up of those
 * whose writer is gone. A name says who wrote it (pid, process start time, pid namespace), so
 * several processes can share one cache and still remove only what a dead process left.
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { threadId } from 'node:worker_threads'

/** Temp files of dead processes younger than this are left alone (another pid namespace may
 * share the cache; its pids look dead from here). */
const TMP_GRACE_MS = 60_000
/** Temp files older than this go whatever their owner. */
const TMP_MAX_AGE_MS = 24 * 3600_000

/** Start time of this process (clock ticks since boot, /proc), the same in every thread. */
function procStart(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

const MY_START = procStart(process.pid) ?? '0'

/**
 * This kernel boot and pid namespace, as 8 hex digits: a temp file named with the same tag was
 * written by a process whose pid and start time we can look up here, so whether it is alive is
 * certain. Without it (another host sharing the cache, another container), only age tells.
 */
function pidSpaceTag(): string {
  let id = ''
  try {
    id += fs.readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim()
    id += fs.readlinkSync('/proc/self/ns/pid')
  } catch {
    return '00000000'
  }
  return crypto.createHash('md5').update(id).digest('hex').slice(0, 8)
}

const MY_SPACE = pidSpaceTag()

let seq = 0

/**
 * A new temp file name in `tmpDir` for `label` (a blob's md5, `md-<id>`, `evicted.…`):
 * `<pid>.<start>.<space>.<thread>.<n>.<label>`, which {@link cleanTmp} reads back.
 */
export function tempName(tmpDir: string, label: string): string {
  return path.join(tmpDir, `${process.pid}.${MY_START}.${MY_SPACE}.${threadId}.${++seq}.${label}`)
}

/**
 * Remove temp files in `<cache>/tmp` whose writer is gone: the pid in the name is not running, or
 * runs with another start time (pid reused). Returns how many were removed.
 */
export function cleanTmp(tmpDir: string, now = Date.now()): number {
  let removed = 0
  let names: string[]
  try {
    names = fs.readdirSync(tmpDir)
  } catch {
    return 0
  }
  for (const name of names) {
    const file = path.join(tmpDir, name)
    let st: fs.Stats
    try {
      st = fs.lstatSync(file)
    } catch {
      continue
    }
    const age = now - st.mtimeMs
    // <pid>.<start>.[<space>.]...: see tempName.
    const m = /^(\d+)\.(\d+)\.(?:([0-9a-f]{8})\.)?/.exec(name)
    let dead = age > TMP_MAX_AGE_MS
    // In our pid space the lookup is certain: a SIGKILLed writer's file goes at once. From
    // elsewhere, the pid we see may be another process: wait for the grace period.
    if (!dead && m && (m[3] === MY_SPACE || age > TMP_GRACE_MS)) {
      const pid = Number(m[1])
      const start = pid === process.pid ? MY_START : procStart(pid)
      dead = start !== m[2]
    }
    if (!dead) continue
    try {
      fs.rmSync(file, { force: true, recursive: st.isDirectory() })
      removed++
    } catch {
      // someone else cleaned it
    }
  }
  return removed
}
