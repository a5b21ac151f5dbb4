#include "ops.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "session.h"

namespace aysfs {

namespace {

// Content never changes under an inode number (new content, new number), so the kernel may
// keep entries, attributes and pages for as long as it likes; reloads invalidate explicitly.
constexpr double kTimeout = 86400.0;

constexpr const char kHashXattr[] = "user.aysfs.hash";
constexpr const char kStatusXattr[] = "user.aysfs.status";

Session* S(fuse_req_t req) { return static_cast<Session*>(fuse_req_userdata(req)); }

void FillEntry(const Node& n, fuse_entry_param* e) {
  memset(e, 0, sizeof(*e));
  n.table->Stat(n.index, &e->attr);
  e->ino = n.e().ino;
  e->attr_timeout = kTimeout;
  e->entry_timeout = kTimeout;
}

int do_lookup(Session* s, fuse_ino_t parent, const char* name, Node* out) {
  Node dir;
  if (!s->tables.Resolve(parent, &dir)) return ESTALE;
  if (!dir.table->IsDir(dir.index)) return ENOTDIR;
  out->table = dir.table;
  out->index = dir.table->Lookup(dir.index, name);
  return 0;  // out->index == kNone: a negative entry
}

void fs_init(void* userdata, fuse_conn_info* conn) {
  Session* s = static_cast<Session*>(userdata);
  s->counters.init++;
  // One READDIRPLUS answers a listing and every lookup after it; AUTO would fall back to plain
  // READDIR plus a LOOKUP per name.
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  // Pages stay valid for the life of an inode: never drop them on an mtime change.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  // libfuse asks for asynchronous direct I/O by default: the kernel then sends an O_DIRECT read
  // as a background request and its reader waits uninterruptibly, SIGKILL included, until it is
  // answered; no FUSE_INTERRUPT ever comes. Without it the read is an ordinary request, which a
  // signal interrupts and a parked read answers EINTR (MissPath::OnInterrupt). A large O_DIRECT
  // read is then sent as sequential requests instead of parallel ones.
  conn->want &= ~FUSE_CAP_ASYNC_DIO;
  // libfuse derives max_pages from max_write: 1 MiB requests for large sequential reads.
  conn->max_write = 1 << 20;
  s->NotifyInit();
}

void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Session* s = S(req);
  s->counters.lookup++;
  Node n;
  int err = do_lookup(s, parent, name, &n);
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_entry_param e;
  if (n.index == kNone) {
    memset(&e, 0, sizeof e);
    e.entry_timeout = kTimeout;  // ino 0: the kernel caches that the name does not exist
    fuse_reply_entry(req, &e);
    return;
  }
  FillEntry(n, &e);
  s->tables.CountLookup(e.ino);
  if (fuse_reply_entry(req, &e) != 0)
    s->tables.Forget(e.ino, 1);
  else
    s->reads.PushOnLookup(n);
}

void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Session* s = S(req);
  s->counters.forget++;
  s->tables.Forget(ino, nlookup);
  fuse_reply_none(req);
}

void fs_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  Session* s = S(req);
  s->counters.forget++;
  for (size_t i = 0; i < count; i++) s->tables.Forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void fs_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Session* s = S(req);
  s->counters.getattr++;
  Node n;
  if (!s->tables.Resolve(ino, &n)) {
    fuse_reply_err(req, ESTALE);
    return;
  }
  struct stat st;
  n.table->Stat(n.index, &st);
  fuse_reply_attr(req, &st, kTimeout);
}

void fs_readlink(fuse_req_t req, fuse_ino_t ino) {
  Session* s = S(req);
  s->counters.readlink++;
  Node n;
  if (!s->tables.Resolve(ino, &n)) {
    fuse_reply_err(req, ESTALE);
    return;
  }
  if (!S_ISLNK(n.e().mode)) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  fuse_reply_readlink(req, std::string(n.table->Target(n.index)).c_str());
}

// Declining open and opendir puts the kernel in no-open mode: it stops sending open, opendir,
// release and releasedir, and keeps page and directory caches (FOPEN_KEEP_CACHE and
// FOPEN_CACHE_DIR are its defaults there). A miss then parks at the first read instead.
void fs_open(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  S(req)->counters.open++;
  fuse_reply_err(req, ENOSYS);
}

void fs_opendir(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  S(req)->counters.opendir++;
  fuse_reply_err(req, ENOSYS);
}

void fs_release(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  S(req)->counters.release++;
  fuse_reply_err(req, 0);
}

void fs_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  S(req)->counters.releasedir++;
  fuse_reply_err(req, 0);
}

void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Session* s = S(req);
  s->counters.read++;
  Node n;
  if (!s->tables.Resolve(ino, &n)) {
    fuse_reply_err(req, ESTALE);
    return;
  }
  // Answered from the local cache; a blob not there parks the read on its fetch.
  std::string md5;
  if (s->reads.Serve(n, req, size, off, ReadPath::Attempt::kFirst, &md5) ==
      ReadPath::Served::kAbsent)
    s->misses.Park(md5, n.e().size, ParkedRead{req, n.e().ino, off, size});
}

void Readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  Session* s = S(req);
  Node dir;
  if (!s->tables.Resolve(ino, &dir)) {
    fuse_reply_err(req, ESTALE);
    return;
  }
  const InodeTable& t = *dir.table;
  if (!t.IsDir(dir.index)) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  const RawEntry& d = dir.e();
  // Offsets: 0 ".", 1 "..", 2 + i the i-th child. A listing that straddles a reload goes on
  // in the new table at the same position.
  const uint64_t total = 2 + uint64_t(d.child_count);
  std::vector<char> buf(size);
  size_t pos = 0;
  std::string name;
  for (uint64_t k = off < 0 ? 0 : static_cast<uint64_t>(off); k < total; k++) {
    uint32_t idx;
    if (k == 0) {
      idx = dir.index;
      name = ".";
    } else if (k == 1) {
      idx = d.parent;
      name = "..";
    } else {
      idx = d.first_child + static_cast<uint32_t>(k - 2);
      name = t.Name(idx);
    }
    size_t need;
    fuse_entry_param e;
    if (plus) {
      Node child{dir.table, idx};
      FillEntry(child, &e);
      if (k < 2) e.ino = 0;  // the kernel links no dentry for "." and "..": no lookup to count
      need = fuse_add_direntry_plus(req, buf.data() + pos, size - pos, name.c_str(), &e,
                                    static_cast<off_t>(k + 1));
    } else {
      t.Stat(idx, &e.attr);
      need = fuse_add_direntry(req, buf.data() + pos, size - pos, name.c_str(), &e.attr,
                               static_cast<off_t>(k + 1));
    }
    if (need > size - pos) break;
    if (plus && k >= 2) s->tables.CountLookup(e.ino);
    pos += need;
  }
  fuse_reply_buf(req, buf.data(), pos);
}

void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  S(req)->counters.readdir++;
  Readdir(req, ino, size, off, false);
}

void fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  S(req)->counters.readdirplus++;
  Readdir(req, ino, size, off, true);
}

void fs_statfs(fuse_req_t req, fuse_ino_t) {
  Session* s = S(req);
  s->counters.statfs++;
  auto t = s->tables.live();
  struct statvfs st;
  memset(&st, 0, sizeof st);
  st.f_bsize = 4096;
  st.f_frsize = 4096;
  st.f_blocks = (t->total_bytes() + 4095) / 4096;
  st.f_files = t->count();
  st.f_namemax = 255;
  st.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &st);
}

// The value of an extended attribute, or an errno.
int do_getxattr(Session* s, fuse_ino_t ino, const char* name, std::string* value) {
  Node n;
  if (!s->tables.Resolve(ino, &n)) return ESTALE;
  if (strcmp(name, kHashXattr) == 0 && n.table->IsReg(n.index)) {
    *value = n.table->Md5Hex(n.index);
    return 0;
  }
  if (strcmp(name, kStatusXattr) == 0 && ino == FUSE_ROOT_ID) {
    *value = s->Status();
    return 0;
  }
  return ENODATA;
}

void ReplyXattr(fuse_req_t req, const std::string& value, size_t size) {
  if (size == 0)
    fuse_reply_xattr(req, value.size());
  else if (size < value.size())
    fuse_reply_err(req, ERANGE);
  else
    fuse_reply_buf(req, value.data(), value.size());
}

void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Session* s = S(req);
  s->counters.getxattr++;
  std::string value;
  int err = do_getxattr(s, ino, name, &value);
  if (err != 0)
    fuse_reply_err(req, err);
  else
    ReplyXattr(req, value, size);
}

void fs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Session* s = S(req);
  s->counters.listxattr++;
  Node n;
  if (!s->tables.Resolve(ino, &n)) {
    fuse_reply_err(req, ESTALE);
    return;
  }
  std::string list;
  if (n.table->IsReg(n.index)) list.append(kHashXattr, sizeof kHashXattr);
  if (ino == FUSE_ROOT_ID) list.append(kStatusXattr, sizeof kStatusXattr);
  ReplyXattr(req, list, size);
}

// Everything that would change the tree. A read-only mount rarely lets these through, but a
// request that does reach us gets the errno users expect.
void Reject(fuse_req_t req) {
  S(req)->counters.rejected++;
  fuse_reply_err(req, EROFS);
}
void fs_setattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) { Reject(req); }
void fs_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { Reject(req); }
void fs_mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { Reject(req); }
void fs_unlink(fuse_req_t req, fuse_ino_t, const char*) { Reject(req); }
void fs_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { Reject(req); }
void fs_rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned int) {
  Reject(req);
}
void fs_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { Reject(req); }
// The kernel forwards every ioctl on a file of the mount (isatty() is TCGETS: Python asks it of
// each file it opens) and remembers no answer, so each costs a round trip; none is ours to serve.
void fs_ioctl(fuse_req_t req, fuse_ino_t, unsigned int, void*, fuse_file_info*, unsigned,
              const void*, size_t, size_t) {
  S(req)->counters.ioctl++;
  fuse_reply_err(req, ENOTTY);
}

void fs_write(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, fuse_file_info*) {
  Reject(req);
}
void fs_setxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) { Reject(req); }
void fs_removexattr(fuse_req_t req, fuse_ino_t, const char*) { Reject(req); }
void fs_create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) { Reject(req); }
void fs_fallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) { Reject(req); }

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops;
  memset(&ops, 0, sizeof ops);
  ops.init = fs_init;
  ops.lookup = fs_lookup;
  ops.forget = fs_forget;
  ops.forget_multi = fs_forget_multi;
  ops.getattr = fs_getattr;
  ops.readlink = fs_readlink;
  ops.open = fs_open;
  ops.opendir = fs_opendir;
  ops.release = fs_release;
  ops.releasedir = fs_releasedir;
  ops.read = fs_read;
  ops.readdir = fs_readdir;
  ops.readdirplus = fs_readdirplus;
  ops.statfs = fs_statfs;
  ops.getxattr = fs_getxattr;
  ops.listxattr = fs_listxattr;
  ops.ioctl = fs_ioctl;
  ops.setattr = fs_setattr;
  ops.mknod = fs_mknod;
  ops.mkdir = fs_mkdir;
  ops.unlink = fs_unlink;
  ops.rmdir = fs_unlink;
  ops.symlink = fs_symlink;
  ops.rename = fs_rename;
  ops.link = fs_link;
  ops.write = fs_write;
  ops.setxattr = fs_setxattr;
  ops.removexattr = fs_removexattr;
  ops.create = fs_create;
  ops.fallocate = fs_fallocate;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& Operations() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

}  // namespace aysfs
