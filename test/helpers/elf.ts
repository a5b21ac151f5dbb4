// What a built addon needs from the system it loads on, read with binutils' objdump, checked
// against the floor docs/packaging.md promises: glibc 2.34, libfuse 3.10, no libstdc++ (linked
// statically), and from Node only Node-API.
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'

/** One undefined dynamic symbol: what the addon needs at load time. */
export interface NeededSymbol {
  name: string
  /** The symbol version (`GLIBC_2.34`, `FUSE_3.2`), or undefined when unversioned. */
  version?: string
  weak: boolean
}

export interface DynamicInfo {
  /** DT_NEEDED entries. */
  needed: string[]
  symbols: NeededSymbol[]
}

// ELF e_machine -> the binutils that read it (Debian's plain objdump knows only x86).
const OBJDUMP_BY_MACHINE: Record<number, string> = { 0x3e: 'x86_64-linux-gnu-objdump', 0xb7: 'aarch64-linux-gnu-objdump' }

/**
 * The objdump that reads `file`: the plain one for this machine's own binaries, else the cross
 * binutils for its architecture (e.g. binutils-aarch64-linux-gnu); undefined when not installed.
 */
export function objdumpFor(file: string): string | undefined {
  const header = Buffer.alloc(20)
  const fd = fs.openSync(file, 'r')
  try {
    fs.readSync(fd, header, 0, 20, 0)
  } finally {
    fs.closeSync(fd)
  }
  const own = { x64: 0x3e, arm64: 0xb7 }[process.arch as string]
  const machine = header.readUInt16LE(18)
  if (machine === own) return 'objdump'
  const cross = OBJDUMP_BY_MACHINE[machine]
  if (cross && spawnSync(cross, ['--version'], { stdio: 'ignore' }).status === 0) return cross
  return undefined
}

export function dynamicInfo(file: string): DynamicInfo {
  const objdump = objdumpFor(file)
  if (!objdump) throw new Error(`no objdump here reads ${file}`)
  const headers = execFileSync(objdump, ['-p', file], { encoding: 'utf8' })
  const needed = [...headers.matchAll(/^\s*NEEDED\s+(\S+)$/gm)].map((m) => m[1]!)
  const table = execFileSync(objdump, ['-T', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
  const symbols: NeededSymbol[] = []
  // 0000000000000000  w   DF *UND*	0000000000000000 (GLIBC_2.34) __pthread_key_create
  // 0000000000000000      D  *UND*	0000000000000000  Base        napi_throw
  for (const line of table.split('\n')) {
    const m = /^[0-9a-f]+ (.{7}) \*UND\*\s+[0-9a-f]+\s+(\(?[\w.@]+\)?)\s+(\S+)$/.exec(line)
    if (!m) continue
    const flags = m[1]!
    const ver = m[2]!.replace(/[()]/g, '')
    symbols.push({ name: m[3]!, version: ver === 'Base' ? undefined : ver, weak: flags.includes('w') })
  }
  return { needed, symbols }
}

/**
 * libfuse 3.10's exports by version node (its lib/fuse_versionscript). The names are checked,
 * not just the node: libfuse has put functions added later into old nodes (fuse_lseek, 3.8,
 * is in FUSE_3.0), so a FUSE_3.0 reference alone does not prove 3.10 has it.
 */
export const LIBFUSE_310: Readonly<Record<string, readonly string[]>> = {
  'FUSE_3.0': [
    'fuse_destroy', 'fuse_exit', 'fuse_loop', 'fuse_loop_mt', 'fuse_reply_attr', 'fuse_reply_buf',
    'fuse_reply_entry', 'fuse_reply_err', 'fuse_reply_none', 'fuse_reply_readlink', 'fuse_reply_write',
    'fuse_reply_xattr', 'fuse_req_userdata', 'fuse_session_destroy', 'fuse_session_exit',
    'fuse_session_exited', 'fuse_session_loop', 'fuse_session_loop_mt', 'fuse_session_reset',
    'fuse_session_fd', 'fuse_opt_parse', 'fuse_opt_add_opt', 'fuse_opt_add_arg', 'fuse_opt_free_args',
    'fuse_opt_match', 'fuse_parse_cmdline', 'fuse_remove_signal_handlers', 'fuse_reply_create',
    'fuse_reply_open', 'fuse_reply_statfs', 'fuse_set_signal_handlers', 'fuse_add_direntry',
    'fuse_add_direntry_plus', 'fuse_daemonize', 'fuse_get_session', 'fuse_interrupted',
    'fuse_session_new', 'fuse_main_real', 'fuse_mount', 'fuse_session_mount', 'fuse_new',
    'fuse_opt_insert_arg', 'fuse_reply_lock', 'fuse_req_interrupt_func', 'fuse_req_interrupted',
    'fuse_unmount', 'fuse_session_unmount', 'fuse_fs_access', 'fuse_fs_bmap', 'fuse_fs_chmod',
    'fuse_fs_chown', 'fuse_fs_create', 'fuse_fs_destroy', 'fuse_fs_flush', 'fuse_fs_fsync',
    'fuse_fs_fsyncdir', 'fuse_fs_getattr', 'fuse_fs_getxattr', 'fuse_fs_init', 'fuse_fs_link',
    'fuse_fs_listxattr', 'fuse_fs_lock', 'fuse_fs_mkdir', 'fuse_fs_mknod', 'fuse_fs_new', 'fuse_fs_open',
    'fuse_fs_opendir', 'fuse_fs_read', 'fuse_fs_readdir', 'fuse_fs_readlink', 'fuse_fs_release',
    'fuse_fs_releasedir', 'fuse_fs_removexattr', 'fuse_fs_rename', 'fuse_fs_rmdir', 'fuse_fs_setxattr',
    'fuse_fs_statfs', 'fuse_fs_symlink', 'fuse_fs_truncate', 'fuse_fs_unlink', 'fuse_fs_utimens',
    'fuse_fs_write', 'fuse_register_module', 'fuse_reply_iov', 'fuse_version', 'fuse_pkgversion',
    'fuse_reply_bmap', 'cuse_lowlevel_new', 'cuse_lowlevel_main', 'cuse_lowlevel_setup',
    'cuse_lowlevel_teardown', 'fuse_fs_ioctl', 'fuse_fs_poll', 'fuse_get_context', 'fuse_getgroups',
    'fuse_lowlevel_notify_inval_entry', 'fuse_lowlevel_notify_inval_inode', 'fuse_lowlevel_notify_poll',
    'fuse_notify_poll', 'fuse_opt_add_opt_escaped', 'fuse_pollhandle_destroy', 'fuse_reply_ioctl',
    'fuse_reply_ioctl_iov', 'fuse_reply_ioctl_retry', 'fuse_reply_poll', 'fuse_req_ctx',
    'fuse_req_getgroups', 'fuse_buf_copy', 'fuse_buf_size', 'fuse_fs_read_buf', 'fuse_fs_write_buf',
    'fuse_lowlevel_notify_retrieve', 'fuse_lowlevel_notify_store', 'fuse_reply_data',
    'fuse_session_process_buf', 'fuse_session_receive_buf', 'fuse_start_cleanup_thread',
    'fuse_stop_cleanup_thread', 'fuse_clean_cache', 'fuse_lowlevel_notify_delete', 'fuse_fs_flock',
    'fuse_fs_fallocate', 'fuse_lowlevel_help', 'fuse_lowlevel_version', 'fuse_cmdline_help',
    'fuse_apply_conn_info_opts', 'fuse_parse_conn_info_opts', 'fuse_fs_lseek', 'fuse_reply_lseek',
  ],
  'FUSE_3.1': ['fuse_lib_help', 'fuse_invalidate_path', 'fuse_new_30', 'fuse_new'],
  'FUSE_3.2': ['fuse_session_loop_mt', 'fuse_session_loop_mt_31', 'fuse_session_loop_mt_32', 'fuse_loop_mt', 'fuse_loop_mt_31'],
  'FUSE_3.3': ['fuse_open_channel'],
  'FUSE_3.4': ['fuse_fs_copy_file_range', 'fuse_reply_copy_file_range'],
  'FUSE_3.7': ['fuse_set_log_func', 'fuse_log'],
}

/** The oldest glibc the prebuild promises to run on (Ubuntu 22.04 has 2.35, Debian 12 2.36, RHEL 9 2.34). */
export const GLIBC_FLOOR = '2.34'
/** libgcc_s: anything GCC 7 had (every glibc-2.34 distribution ships a far newer one). */
export const LIBGCC_FLOOR = '7.0.0'

/** Libraries the addon may link: libc's family, libgcc_s (Node needs it too) and libfuse3. */
const ALLOWED_NEEDED = /^(libfuse3\.so\.3|libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libgcc_s\.so\.1|ld-linux-[\w-]+\.so\.\d)$/

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number)
  const pb = b.split('.').map(Number)
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0)
    if (d !== 0) return d
  }
  return 0
}

/** Everything `file` needs that a glibc-2.34 / libfuse-3.10 system with any Node >= 20 may lack. */
export function floorViolations(file: string): string[] {
  const { needed, symbols } = dynamicInfo(file)
  const out: string[] = []
  for (const lib of needed) if (!ALLOWED_NEEDED.test(lib)) out.push(`links ${lib}`)
  for (const s of symbols) {
    const v = s.version
    if (v === undefined) {
      // Unversioned: Node-API from the node binary, or weak hooks nobody has to provide.
      if (!s.weak && !/^(napi_|node_api_)/.test(s.name)) out.push(`${s.name}: unversioned, not Node-API`)
      continue
    }
    let m: RegExpExecArray | null
    if ((m = /^GLIBC_(\d+(?:\.\d+)*)$/.exec(v))) {
      if (compareVersions(m[1]!, GLIBC_FLOOR) > 0) out.push(`${s.name}@${v}: newer than glibc ${GLIBC_FLOOR}`)
    } else if ((m = /^GCC_(\d+(?:\.\d+)*)$/.exec(v))) {
      if (compareVersions(m[1]!, LIBGCC_FLOOR) > 0) out.push(`${s.name}@${v}: newer than libgcc_s of GCC ${LIBGCC_FLOOR}`)
    } else if (/^(GLIBCXX|CXXABI)_/.test(v)) {
      out.push(`${s.name}@${v}: needs the system libstdc++ (it is meant to be linked statically)`)
    } else if (/^FUSE_/.test(v)) {
      if (!LIBFUSE_310[v]?.includes(s.name)) out.push(`${s.name}@${v}: not exported by libfuse 3.10`)
    } else {
      out.push(`${s.name}@${v}: unknown symbol version`)
    }
  }
  return out
}
