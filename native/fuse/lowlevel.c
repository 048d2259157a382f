// The FUSE addon on libfuse's low-level API (libfuse2 or libfuse3): the kernel names files by
// inode number, and the filesystem answers each request when it is ready, from any point of the
// JS thread's work.
//
// Why not the high-level API (fuse-native, native/fuse/addon): there libfuse keeps a node per
// name the kernel ever looked up (a path table that grows with every entry listed, until the
// kernel forgets it under memory pressure), builds a path for every request, parks one of its
// threads per request until JS answers, and renames files deleted while open. Here a node is
// the filesystem's own inode number, nothing is kept per node, and a request costs a queue
// push and one wake-up of the JS thread.
//
// Threads:
//   - libfuse's multi-threaded session loop runs on a thread this addon starts, with every
//     signal blocked; its workers inherit that mask, so no signal handler of Node's (or glibc's
//     cancellation) ever runs on them. No callback waits for anything but a short lock (one
//     thread would do; the loop's few workers let a request be read while another is copied).
//   - A worker turns each request into a message (copying what it points at: names, written
//     bytes), pushes it onto the mount's queue and goes on. FORGET is answered there (the
//     filesystem keeps no lookup counts: its inode numbers are stable, and a file deleted while
//     open lives on through its handles), and so is a getxattr that can only find nothing, and
//     a getattr of a folder whose attributes the filesystem left here (attr_keep) since its
//     last change.
//   - Notices to the kernel (invalidations) and large answers (read data) are written by two
//     more threads of the addon's own (the notices and sends lanes).
//   - The JS thread drains the queue (uv_async) and calls the handler with each message; the
//     answer comes later through one of the `reply_*` functions with the request's id. A
//     request is answered exactly once: its id is forgotten when answered, and an id that is
//     not outstanding throws (a second answer would touch freed memory in libfuse).
//   - When the session ends (unmounted by anyone), the loop thread takes the mount's lock,
//     marks it ended, tears the session down and wakes the JS thread, which then tells the
//     handler (op ENDED). Answers after that are dropped: the kernel is gone.
//
// Names, link targets and xattr names cross as latin1 strings (one char per byte), so any byte
// sequence survives (native/fuse/adapter.ts, wireToName/nameToWire).
//
// Built against libfuse3 (FILESPACE_FUSE3) and against libfuse2 (see build-lowlevel.js).
// libfuse3 lets the kernel send requests of up to 1 MiB (max_pages, Linux 4.20) where libfuse2
// stays at 128 KiB: a sequential writer then costs an eighth of the requests; and it has
// readdirplus (listings that carry attributes). The rest is the same; the few calls that differ
// are marked.
#ifdef FILESPACE_FUSE3
#define FUSE_USE_VERSION 35
#else
#define FUSE_USE_VERSION 26
#endif
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <uv.h>

enum {
  OP_ENDED = 0,
  OP_LOOKUP,
  OP_GETATTR,
  OP_SETATTR,
  OP_READLINK,
  OP_MKNOD,
  OP_MKDIR,
  OP_UNLINK,
  OP_RMDIR,
  OP_SYMLINK,
  OP_RENAME,
  OP_LINK,
  OP_OPEN,
  OP_READ,
  OP_WRITE,
  OP_FLUSH,
  OP_RELEASE,
  OP_FSYNC,
  OP_OPENDIR,
  OP_READDIR,
  OP_RELEASEDIR,
  OP_FSYNCDIR,
  OP_STATFS,
  OP_SETXATTR,
  OP_GETXATTR,
  OP_LISTXATTR,
  OP_REMOVEXATTR,
  OP_CREATE,
  OP_READDIRPLUS,
  OP_COUNT
};

typedef struct msg {
  struct msg *next;
  fuse_req_t req;
  uint32_t op;
  uint64_t ino;
  uint64_t ino2;
  uint64_t fh;
  int has_fh;
  int64_t off;
  uint64_t size;
  uint32_t flags;
  uint32_t mode;
  uint32_t uid, gid, pid;
  // setattr: which fields (FUSE_SET_ATTR_*), and their values.
  uint32_t to_set;
  uint32_t a_mode, a_uid, a_gid;
  uint64_t a_size;
  double a_atime_ms, a_mtime_ms;
  char *name;
  size_t name_len;
  char *name2;
  size_t name2_len;
  char *data;
  size_t data_len;
  // The pool buffer holding the written bytes, or -1.
  int slab;
  // A request that may change its inode's attributes: the inode's slot's count of such
  // requests, this one included (see mount_t.attr_epochs).
  uint32_t epoch;
} msg_t;

#define MAX_PENDING 65536

// Inodes whose attributes the addon may keep at once (direct-mapped by inode number).
#define ATTR_SLOTS 1024

// Written bytes arrive in buffers of a pool (JS Buffers made once, so no allocation per write):
// libfuse's worker copies a write's bytes into a free one, the handler gets that Buffer, and the
// answer to the write gives it back. The pool grows on the JS thread when a worker found none
// free (it then copied the bytes into memory of its own, as for any other request's data).
#ifdef FILESPACE_FUSE3
#define SLAB_BYTES (1024 * 1024)
#define SLABS_MAX 32
#else
#define SLAB_BYTES (128 * 1024)
#define SLABS_MAX 64
#endif
#define SLABS_GROW 8

typedef struct {
  napi_ref ref;
  char *data;
} slab_t;

// A lane: a queue of jobs and the thread that does them in order (see notices and sends).
typedef struct job {
  struct job *next;
} job_t;

struct mount;

typedef struct lane {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  job_t *head, *tail;
  int stop;
  pthread_t thread;
  int started;
  struct mount *mt;
  void (*run)(struct mount *mt, job_t *job);
} lane_t;

typedef struct mount {
  napi_env env;
  napi_ref handler;
  uv_async_t async;
  pthread_t thread;
  int thread_started;
  struct fuse_session *se;
#ifndef FILESPACE_FUSE3
  struct fuse_chan *ch;
#endif
  char *mnt;
  // The queue from libfuse's workers to the JS thread.
  pthread_mutex_t lock;
  msg_t *head, *tail;
  // Whether the session ended: written under `alive` held for writing (as the session is torn
  // down); answers and notices hold it for reading while they use the session.
  pthread_rwlock_t alive;
  int ended;
  // Notices for the kernel (invalidations), sent by a thread of their own: the kernel may make
  // a notice wait for a request this process has not answered yet, so the JS thread never
  // sends one itself.
  struct lane notices;
  uint64_t notices_sent;
  // Large answers (read data, long listings), written to the kernel by a thread of their own:
  // the kernel copies them into the reader's pages as they are written, which would otherwise
  // take the JS thread's time. Replies keep their order per request only (each is one write).
  struct lane sends;
  // Answers of at least this many bytes go by the send thread (JS thread only; SIZE_MAX: none).
  size_t send_min;
  uint64_t sent_by_thread;
  int ended_told;
  int closed;
  // Outstanding requests by id (JS thread only): slot = id % MAX_PENDING, id never reused soon.
  fuse_req_t *pending;
  uint32_t *pending_id;
  // The pool buffer each outstanding request holds (index + 1; 0 for none).
  uint8_t *pending_slab;
  pthread_mutex_t slab_lock;
  slab_t slabs[SLABS_MAX];
  int slab_count;
  int slab_free[SLABS_MAX];
  int free_count;
  int slabs_wanted;
  uint32_t next_id;
  uint32_t outstanding;
  // Counts, per op: requests that crossed to JS, and those answered on libfuse's thread.
  uint64_t crossed[OP_COUNT];
  uint64_t answered[OP_COUNT];
  uint64_t forgets;
  // Extended-attribute names some inode may have (a superset), once the filesystem said them
  // all: a getxattr of any other name finds nothing, answered here (the kernel asks for
  // security.capability before every write).
  pthread_mutex_t names_lock;
  int names_known;
  char **names;
  size_t names_cap;
  size_t names_count;
  // Attributes of folders, kept by the filesystem (attr_keep) and answered here until it
  // forgets them (attr_forget, at any change that names the folder): after each entry created
  // in a folder, the kernel asks for the folder's attributes again before its next lookup
  // there (a permission check), a round trip to the JS thread per file created otherwise.
  // Direct-mapped by inode number (a collision replaces); allocated at the first attr_keep.
  pthread_mutex_t attrs_lock;
  struct attr_slot *attrs;
  // Per slot of `attrs`, the requests queued so far that may change an inode's attributes
  // (write, setattr, open, flush, release, fsync, link, setxattr, removexattr), counted in
  // queue order (under `lock`). Such a request makes the slot forget what it kept; and
  // attributes the filesystem keeps after a setattr are taken only if no such request for the
  // slot came after that setattr (attr_keep's `epoch`): a write queued behind it, which the
  // filesystem has not seen yet, would change them.
  uint32_t attr_epochs[ATTR_SLOTS];
  // Folders whose every name the addon knows (a superset of them), so a lookup of any other
  // name finds nothing, answered here as a missing name (kept by the kernel for `neg_timeout`):
  // a folder this mount made starts empty (names_complete), and the filesystem adds each name
  // a change gives it (names_add) before that change's request is answered; removals leave
  // names in (a lookup of a removed name crosses, and finds nothing there). Each name is kept as
  // its hash: another name of the same hash crosses too. Direct-mapped by folder inode number;
  // a folder whose names outgrow the budget is no longer answered for.
  pthread_mutex_t dirs_lock;
  struct dir_names *dirs;
  size_t dir_names_total;
  double neg_timeout;
} mount_t;

#define DIR_SLOTS 64
// Names kept over all folders (8 bytes each, in tables at most half full: about 3 MB at most).
#define DIR_NAMES_MAX 200000

typedef struct dir_names {
  uint64_t dir; // 0: empty
  uint64_t *hashes; // open addressing; 0 marks a free place (a hash of 0 is kept as 1)
  size_t cap, count;
} dir_names_t;

typedef struct attr_slot {
  uint64_t ino; // 0: empty
  double timeout;
  struct stat st;
} attr_slot_t;

// ---- extended-attribute names in use -------------------------------------------------------

static uint64_t name_hash(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) h = (h ^ (unsigned char) *s) * 1099511628211ULL;
  return h;
}

// ---- names of complete folders (see mount_t.dirs; dirs_lock held) ---------------------------

static int dir_has(const dir_names_t *d, uint64_t h) {
  if (h == 0) h = 1;
  for (size_t j = h & (d->cap - 1);; j = (j + 1) & (d->cap - 1)) {
    if (d->hashes[j] == h) return 1;
    if (d->hashes[j] == 0) return 0;
  }
}

static void dir_drop(mount_t *mt, dir_names_t *d) {
  mt->dir_names_total -= d->count;
  free(d->hashes);
  memset(d, 0, sizeof *d);
}

/** Adds hash `h` to folder `d`'s names; 0 when it cannot (the caller then drops the folder). */
static int dir_add(mount_t *mt, dir_names_t *d, uint64_t h) {
  if (h == 0) h = 1;
  if (dir_has(d, h)) return 1;
  if (mt->dir_names_total >= DIR_NAMES_MAX) return 0;
  if ((d->count + 1) * 2 > d->cap) {
    size_t cap = d->cap * 2;
    uint64_t *t = calloc(cap, sizeof(uint64_t));
    if (t == NULL) return 0;
    for (size_t i = 0; i < d->cap; i++) {
      if (d->hashes[i] == 0) continue;
      size_t j = d->hashes[i] & (cap - 1);
      while (t[j] != 0) j = (j + 1) & (cap - 1);
      t[j] = d->hashes[i];
    }
    free(d->hashes);
    d->hashes = t;
    d->cap = cap;
  }
  size_t j = h & (d->cap - 1);
  while (d->hashes[j] != 0) j = (j + 1) & (d->cap - 1);
  d->hashes[j] = h;
  d->count++;
  mt->dir_names_total++;
  return 1;
}

/** Adds `name` (names_lock held); 0 when out of memory (then the set is no longer trusted). */
static int names_add(mount_t *mt, const char *name, size_t len) {
  if ((mt->names_count + 1) * 2 > mt->names_cap) {
    size_t cap = mt->names_cap ? mt->names_cap * 2 : 64;
    char **slots = calloc(cap, sizeof(char *));
    if (slots == NULL) return 0;
    for (size_t i = 0; i < mt->names_cap; i++) {
      char *n = mt->names[i];
      if (n == NULL) continue;
      size_t j = name_hash(n) & (cap - 1);
      while (slots[j] != NULL) j = (j + 1) & (cap - 1);
      slots[j] = n;
    }
    free(mt->names);
    mt->names = slots;
    mt->names_cap = cap;
  }
  char *copy = malloc(len + 1);
  if (copy == NULL) return 0;
  memcpy(copy, name, len);
  copy[len] = 0;
  size_t j = name_hash(copy) & (mt->names_cap - 1);
  while (mt->names[j] != NULL) {
    if (strcmp(mt->names[j], copy) == 0) {
      free(copy);
      return 1;
    }
    j = (j + 1) & (mt->names_cap - 1);
  }
  mt->names[j] = copy;
  mt->names_count++;
  return 1;
}

static void names_clear(mount_t *mt) {
  for (size_t i = 0; i < mt->names_cap; i++) free(mt->names[i]);
  free(mt->names);
  mt->names = NULL;
  mt->names_cap = 0;
  mt->names_count = 0;
}

/** Whether no inode can have extended attribute `name` (only once all names were said). */
static int name_unused(mount_t *mt, const char *name) {
  pthread_mutex_lock(&mt->names_lock);
  int unused = 0;
  if (mt->names_known) {
    unused = 1;
    if (mt->names_cap > 0) {
      size_t j = name_hash(name) & (mt->names_cap - 1);
      while (mt->names[j] != NULL) {
        if (strcmp(mt->names[j], name) == 0) {
          unused = 0;
          break;
        }
        j = (j + 1) & (mt->names_cap - 1);
      }
    }
  }
  pthread_mutex_unlock(&mt->names_lock);
  return unused;
}

// ---- the queue ----------------------------------------------------------------------------

static char *copy_bytes(const char *src, size_t len) {
  char *out = malloc(len + 1);
  if (out == NULL) return NULL;
  if (len > 0) memcpy(out, src, len);
  out[len] = 0;
  return out;
}

static msg_t *msg_new(fuse_req_t req, uint32_t op, fuse_ino_t ino) {
  msg_t *m = calloc(1, sizeof(msg_t));
  if (m == NULL) {
    fuse_reply_err(req, ENOMEM);
    return NULL;
  }
  m->req = req;
  m->op = op;
  m->ino = ino;
  m->slab = -1;
  const struct fuse_ctx *ctx = fuse_req_ctx(req);
  m->uid = ctx->uid;
  m->gid = ctx->gid;
  m->pid = ctx->pid;
  return m;
}

static void msg_free(msg_t *m) {
  free(m->name);
  free(m->name2);
  free(m->data);
  free(m);
}

static int msg_name(msg_t *m, const char *name) {
  m->name_len = strlen(name);
  m->name = copy_bytes(name, m->name_len);
  return m->name != NULL;
}

static int msg_name2(msg_t *m, const char *name) {
  m->name2_len = strlen(name);
  m->name2 = copy_bytes(name, m->name2_len);
  return m->name2 != NULL;
}

static void msg_fi(msg_t *m, struct fuse_file_info *fi) {
  if (fi == NULL) return;
  m->fh = fi->fh;
  m->has_fh = 1;
  m->flags = (uint32_t) fi->flags;
}

/** Whether a request of this kind may change the attributes of the inode it names. */
static int changes_attrs(uint32_t op) {
  switch (op) {
    case OP_SETATTR:
    case OP_WRITE:
    case OP_OPEN:
    case OP_FLUSH:
    case OP_RELEASE:
    case OP_FSYNC:
    case OP_LINK:
    case OP_SETXATTR:
    case OP_REMOVEXATTR:
      return 1;
    default:
      return 0;
  }
}

static void push(fuse_req_t req, msg_t *m, int ok) {
  mount_t *mt = fuse_req_userdata(req);
  if (!ok) {
    fuse_reply_err(req, ENOMEM);
    msg_free(m);
    return;
  }
  pthread_mutex_lock(&mt->lock);
  if (changes_attrs(m->op)) {
    size_t slot = m->ino % ATTR_SLOTS;
    m->epoch = ++mt->attr_epochs[slot];
    pthread_mutex_lock(&mt->attrs_lock);
    if (mt->attrs != NULL && mt->attrs[slot].ino == m->ino) mt->attrs[slot].ino = 0;
    pthread_mutex_unlock(&mt->attrs_lock);
  }
  if (mt->tail) mt->tail->next = m;
  else mt->head = m;
  mt->tail = m;
  pthread_mutex_unlock(&mt->lock);
  uv_async_send(&mt->async);
}

#define NEW(op, ino)                              \
  msg_t *m = msg_new(req, op, ino);               \
  if (m == NULL) return;

// ---- libfuse's callbacks (its worker threads) -------------------------------------------------

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  (void) userdata;
#ifdef FILESPACE_FUSE3
  // Writes of up to a pool buffer (1 MiB; libfuse3 asks the kernel for that many pages). But
  // for readdirplus (below), the kernel's behaviour otherwise stays what the filesystem was
  // written for under libfuse2: libfuse3's other defaults are turned off (truncation stays a
  // setattr, folder operations stay one at a time per folder, the kernel drops suid bits and
  // keeps cached pages itself until told, direct I/O stays synchronous).
  if (conn->max_write > SLAB_BYTES) conn->max_write = SLAB_BYTES;
  // Reads stay at 128 KiB: the same as the max_read mount option lowlevel.ts gives (libfuse3
  // refuses the session when the two differ).
  conn->max_read = 128 * 1024;
  conn->want &= ~(unsigned) (FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_AUTO_INVAL_DATA |
                             FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_ASYNC_DIO | FUSE_CAP_SPLICE_READ |
                             FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_WRITEBACK_CACHE |
                             FUSE_CAP_POSIX_ACL);
  // What libfuse2 could not give: listings that carry each entry's attributes (readdirplus), at
  // the kernel's choice (the first read of a listing, and later ones where entries were looked up).
  conn->want |= FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO;
#else
  // Big writes (max_write) come with the mount option; nothing else is asked for.
  (void) conn;
#endif
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  mount_t *mt = fuse_req_userdata(req);
  double neg = -1;
  pthread_mutex_lock(&mt->dirs_lock);
  if (mt->dirs != NULL && mt->dirs[parent % DIR_SLOTS].dir == parent && !dir_has(&mt->dirs[parent % DIR_SLOTS], name_hash(name)))
    neg = mt->neg_timeout;
  pthread_mutex_unlock(&mt->dirs_lock);
  if (neg >= 0) {
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.entry_timeout = neg;
    __atomic_add_fetch(&mt->answered[OP_LOOKUP], 1, __ATOMIC_RELAXED);
    fuse_reply_entry(req, &e);
    return;
  }
  NEW(OP_LOOKUP, parent)
  push(req, m, msg_name(m, name));
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, unsigned long nlookup) {
  (void) ino;
  (void) nlookup;
  mount_t *mt = fuse_req_userdata(req);
  __atomic_add_fetch(&mt->forgets, 1, __ATOMIC_RELAXED);
  fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  (void) forgets;
  mount_t *mt = fuse_req_userdata(req);
  __atomic_add_fetch(&mt->forgets, count, __ATOMIC_RELAXED);
  fuse_reply_none(req);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  mount_t *mt = fuse_req_userdata(req);
  struct stat st;
  double timeout = -1;
  pthread_mutex_lock(&mt->attrs_lock);
  if (mt->attrs != NULL && mt->attrs[ino % ATTR_SLOTS].ino == ino) {
    st = mt->attrs[ino % ATTR_SLOTS].st;
    timeout = mt->attrs[ino % ATTR_SLOTS].timeout;
  }
  pthread_mutex_unlock(&mt->attrs_lock);
  if (timeout >= 0) {
    __atomic_add_fetch(&mt->answered[OP_GETATTR], 1, __ATOMIC_RELAXED);
    fuse_reply_attr(req, &st, timeout);
    return;
  }
  NEW(OP_GETATTR, ino)
  msg_fi(m, fi);
  push(req, m, 1);
}

static double ts_ms(const struct timespec *ts) { return (double) ts->tv_sec * 1000.0 + (double) ts->tv_nsec / 1e6; }

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  NEW(OP_SETATTR, ino)
  msg_fi(m, fi);
  m->to_set = (uint32_t) to_set;
  m->a_mode = attr->st_mode;
  m->a_uid = attr->st_uid;
  m->a_gid = attr->st_gid;
  m->a_size = (uint64_t) attr->st_size;
  m->a_atime_ms = ts_ms(&attr->st_atim);
  m->a_mtime_ms = ts_ms(&attr->st_mtim);
  push(req, m, 1);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino) {
  NEW(OP_READLINK, ino)
  push(req, m, 1);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  NEW(OP_MKNOD, parent)
  m->mode = mode;
  m->size = (uint64_t) rdev;
  push(req, m, msg_name(m, name));
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  NEW(OP_MKDIR, parent)
  m->mode = mode;
  push(req, m, msg_name(m, name));
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  NEW(OP_UNLINK, parent)
  push(req, m, msg_name(m, name));
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  NEW(OP_RMDIR, parent)
  push(req, m, msg_name(m, name));
}

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  NEW(OP_SYMLINK, parent)
  push(req, m, msg_name(m, name) && msg_name2(m, link));
}

#ifdef FILESPACE_FUSE3
static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
                      unsigned int flags) {
  // renameat2's flags (noreplace, exchange) are refused, as the kernel did itself with libfuse2.
  if (flags != 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
#else
static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname) {
#endif
  NEW(OP_RENAME, parent)
  m->ino2 = newparent;
  push(req, m, msg_name(m, name) && msg_name2(m, newname));
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  NEW(OP_LINK, ino)
  m->ino2 = newparent;
  push(req, m, msg_name(m, newname));
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW(OP_OPEN, ino)
  msg_fi(m, fi);
  push(req, m, 1);
}

/** A request for `size` bytes from `off` of an open file or folder (read, readdir, readdirplus). */
static void sized_request(fuse_req_t req, uint32_t op, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  NEW(op, ino)
  msg_fi(m, fi);
  m->size = size;
  m->off = off;
  push(req, m, 1);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  sized_request(req, OP_READ, ino, size, off, fi);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  NEW(OP_WRITE, ino)
  msg_fi(m, fi);
  m->off = off;
  m->size = size;
  // libfuse reuses its receive buffer once this returns: the bytes are copied, into a pool
  // buffer when one is free.
  mount_t *mt = fuse_req_userdata(req);
  if (size <= SLAB_BYTES) {
    pthread_mutex_lock(&mt->slab_lock);
    if (mt->free_count > 0) m->slab = mt->slab_free[--mt->free_count];
    else mt->slabs_wanted = 1;
    pthread_mutex_unlock(&mt->slab_lock);
  }
  if (m->slab >= 0) {
    memcpy(mt->slabs[m->slab].data, buf, size);
    push(req, m, 1);
    return;
  }
  m->data = copy_bytes(buf, size);
  m->data_len = size;
  push(req, m, m->data != NULL);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW(OP_FLUSH, ino)
  msg_fi(m, fi);
  push(req, m, 1);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW(OP_RELEASE, ino)
  msg_fi(m, fi);
  push(req, m, 1);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  NEW(OP_FSYNC, ino)
  msg_fi(m, fi);
  m->mode = (uint32_t) datasync;
  push(req, m, 1);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW(OP_OPENDIR, ino)
  msg_fi(m, fi);
  push(req, m, 1);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  sized_request(req, OP_READDIR, ino, size, off, fi);
}

#ifdef FILESPACE_FUSE3
static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  sized_request(req, OP_READDIRPLUS, ino, size, off, fi);
}
#endif

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW(OP_RELEASEDIR, ino)
  msg_fi(m, fi);
  push(req, m, 1);
}

static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  NEW(OP_FSYNCDIR, ino)
  msg_fi(m, fi);
  m->mode = (uint32_t) datasync;
  push(req, m, 1);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) {
  NEW(OP_STATFS, ino)
  push(req, m, 1);
}

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  NEW(OP_SETXATTR, ino)
  m->flags = (uint32_t) flags;
  m->data = copy_bytes(value, size);
  m->data_len = size;
  push(req, m, m->data != NULL && msg_name(m, name));
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  mount_t *mt = fuse_req_userdata(req);
  // Names the filesystem does not keep (POSIX ACLs and SELinux labels: vfs.ts UNKEPT_XATTR,
  // refused the same way there), and a name no inode has, which finds nothing: answered here.
  int unkept = strcmp(name, "system.posix_acl_access") == 0 || strcmp(name, "system.posix_acl_default") == 0 ||
               strcmp(name, "security.selinux") == 0;
  if (mt->names_known && (unkept || name_unused(mt, name))) {
    __atomic_add_fetch(&mt->answered[OP_GETXATTR], 1, __ATOMIC_RELAXED);
    fuse_reply_err(req, unkept ? EOPNOTSUPP : ENODATA);
    return;
  }
  NEW(OP_GETXATTR, ino)
  m->size = size;
  push(req, m, msg_name(m, name));
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  NEW(OP_LISTXATTR, ino)
  m->size = size;
  push(req, m, 1);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  NEW(OP_REMOVEXATTR, ino)
  push(req, m, msg_name(m, name));
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  NEW(OP_CREATE, parent)
  msg_fi(m, fi);
  m->mode = mode;
  push(req, m, msg_name(m, name));
}

// ---- the JS thread --------------------------------------------------------------------------

#define CHECK(call)                                                   \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error(env, NULL, "fuse lowlevel: " #call " failed"); \
      return NULL;                                                    \
    }                                                                 \
  } while (0)

static napi_value num(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

static napi_value latin1(napi_env env, const char *s, size_t len) {
  napi_value out;
  if (s == NULL) {
    napi_get_undefined(env, &out);
    return out;
  }
  napi_create_string_latin1(env, s, len, &out);
  return out;
}

static void slab_give_back(mount_t *mt, int slab) {
  if (slab < 0) return;
  pthread_mutex_lock(&mt->slab_lock);
  mt->slab_free[mt->free_count++] = slab;
  pthread_mutex_unlock(&mt->slab_lock);
}

/** Adds up to SLABS_GROW buffers to the pool (JS thread). */
static void slabs_grow(napi_env env, mount_t *mt) {
  // Called from the queue's async callback too, where no handle scope is open.
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  for (int i = 0; i < SLABS_GROW && mt->slab_count < SLABS_MAX; i++) {
    napi_value buf;
    void *data;
    if (napi_create_buffer(env, SLAB_BYTES, &data, &buf) != napi_ok) break;
    slab_t *sl = &mt->slabs[mt->slab_count];
    if (napi_create_reference(env, buf, 1, &sl->ref) != napi_ok) break;
    sl->data = data;
    pthread_mutex_lock(&mt->slab_lock);
    mt->slab_free[mt->free_count++] = mt->slab_count++;
    mt->slabs_wanted = 0;
    pthread_mutex_unlock(&mt->slab_lock);
  }
  napi_close_handle_scope(env, scope);
}

static uint32_t remember(mount_t *mt, fuse_req_t req, int slab) {
  // Ids are never 0; a slot still outstanding after MAX_PENDING newer ids is skipped.
  for (;;) {
    uint32_t id = ++mt->next_id;
    if (id == 0) id = ++mt->next_id;
    uint32_t slot = id % MAX_PENDING;
    if (mt->pending[slot] != NULL) continue;
    mt->pending[slot] = req;
    mt->pending_id[slot] = id;
    mt->pending_slab[slot] = (uint8_t) (slab + 1);
    mt->outstanding++;
    return id;
  }
}

/** The request `id` names, taken out of the table (NULL if it is not outstanding). */
static fuse_req_t take(mount_t *mt, uint32_t id) {
  uint32_t slot = id % MAX_PENDING;
  if (id == 0 || mt->pending[slot] == NULL || mt->pending_id[slot] != id) return NULL;
  fuse_req_t req = mt->pending[slot];
  mt->pending[slot] = NULL;
  slab_give_back(mt, (int) mt->pending_slab[slot] - 1);
  mt->pending_slab[slot] = 0;
  mt->outstanding--;
  return req;
}

static void free_data(napi_env env, void *data, void *hint) { free(data); }

static void call_handler(mount_t *mt, msg_t *m, uint32_t id) {
  napi_env env = mt->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value handler, global, result;
  napi_get_reference_value(env, mt->handler, &handler);
  napi_get_global(env, &global);
  napi_value args[16];
  args[0] = num(env, m->op);
  args[1] = num(env, id);
  args[2] = num(env, (double) m->ino);
  args[3] = m->has_fh ? num(env, (double) m->fh) : num(env, -1);
  args[4] = num(env, (double) m->off);
  args[5] = num(env, (double) m->size);
  args[6] = num(env, m->flags);
  args[7] = num(env, m->mode);
  args[8] = num(env, m->uid);
  args[9] = num(env, m->gid);
  args[10] = num(env, m->pid);
  args[11] = num(env, (double) m->ino2);
  args[12] = latin1(env, m->name, m->name_len);
  args[13] = latin1(env, m->name2, m->name2_len);
  if (m->slab >= 0) {
    napi_get_reference_value(env, mt->slabs[m->slab].ref, &args[14]);
  } else if (m->data != NULL) {
    // The written bytes become the Buffer's own memory (freed with it), where the runtime
    // allows memory from outside its heap; else (Electron's sandbox) they are copied once more.
    if (m->data_len > 0 && napi_create_external_buffer(env, m->data_len, m->data, free_data, NULL, &args[14]) == napi_ok) {
      m->data = NULL;
    } else {
      void *copy;
      napi_create_buffer_copy(env, m->data_len, m->data, &copy, &args[14]);
    }
  } else {
    napi_get_undefined(env, &args[14]);
  }
  if (m->op == OP_SETATTR) {
    napi_value arr;
    napi_create_array_with_length(env, 8, &arr);
    napi_set_element(env, arr, 0, num(env, m->to_set));
    napi_set_element(env, arr, 1, num(env, m->a_mode));
    napi_set_element(env, arr, 2, num(env, m->a_uid));
    napi_set_element(env, arr, 3, num(env, m->a_gid));
    napi_set_element(env, arr, 4, num(env, (double) m->a_size));
    napi_set_element(env, arr, 5, num(env, m->a_atime_ms));
    napi_set_element(env, arr, 6, num(env, m->a_mtime_ms));
    napi_set_element(env, arr, 7, num(env, m->epoch));
    args[15] = arr;
  } else {
    napi_get_undefined(env, &args[15]);
  }
  napi_status st = napi_call_function(env, global, handler, 16, args, &result);
  if (st == napi_pending_exception) {
    // The handler must not throw; if it did, the request is answered EIO and the error goes on.
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    fuse_req_t req = take(mt, id);
    if (req != NULL) fuse_reply_err(req, EIO);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

static void tell_ended(mount_t *mt) {
  if (mt->ended_told) return;
  mt->ended_told = 1;
  msg_t m;
  memset(&m, 0, sizeof m);
  m.op = OP_ENDED;
  call_handler(mt, &m, 0);
}

static void drain(uv_async_t *handle) {
  mount_t *mt = handle->data;
  pthread_mutex_lock(&mt->lock);
  msg_t *list = mt->head;
  mt->head = mt->tail = NULL;
  pthread_mutex_unlock(&mt->lock);
  pthread_rwlock_rdlock(&mt->alive);
  int ended = mt->ended;
  pthread_rwlock_unlock(&mt->alive);
  while (list != NULL) {
    msg_t *m = list;
    list = m->next;
    if (ended) {
      // The session is gone: nobody waits for an answer.
      slab_give_back(mt, m->slab);
      msg_free(m);
      continue;
    }
    mt->crossed[m->op]++;
    uint32_t id = remember(mt, m->req, m->slab);
    call_handler(mt, m, id);
    msg_free(m);
  }
  pthread_mutex_lock(&mt->slab_lock);
  int grow = mt->slabs_wanted && mt->slab_count < SLABS_MAX;
  pthread_mutex_unlock(&mt->slab_lock);
  if (grow && !ended) slabs_grow(mt->env, mt);
  if (ended) tell_ended(mt);
}

// ---- notices to the kernel (the notice thread) -----------------------------------------------

typedef struct notice {
  job_t job;
  // An entry (parent, name) to forget, or with no name an inode: its attributes, and its cached
  // pages from `off` for `len` bytes (off < 0: attributes only; len 0: to the end).
  uint64_t parent;
  int64_t off;
  int64_t len;
  size_t name_len;
  char name[];
} notice_t;

static void send_notice(mount_t *mt, job_t *job) {
  notice_t *n = (notice_t *) job;
  pthread_rwlock_rdlock(&mt->alive);
  if (!mt->ended) {
    // ENOENT: the kernel does not have it cached; nothing to forget.
#ifdef FILESPACE_FUSE3
    if (n->name_len > 0) fuse_lowlevel_notify_inval_entry(mt->se, n->parent, n->name, n->name_len);
    else fuse_lowlevel_notify_inval_inode(mt->se, n->parent, n->off, n->len);
#else
    if (n->name_len > 0) fuse_lowlevel_notify_inval_entry(mt->ch, n->parent, n->name, n->name_len);
    else fuse_lowlevel_notify_inval_inode(mt->ch, n->parent, n->off, n->len);
#endif
    __atomic_add_fetch(&mt->notices_sent, 1, __ATOMIC_RELAXED);
  }
  pthread_rwlock_unlock(&mt->alive);
}

// ---- large answers (the send thread) ----------------------------------------------------------

/**
 * Answers of at least this many bytes are written by the send thread, unless the filesystem
 * says otherwise (`send_by_thread`: a mount on a machine of few cores writes them itself).
 */
#define SEND_BY_THREAD_BYTES (32 * 1024)

typedef struct outgoing {
  job_t job;
  fuse_req_t req;
  size_t len;
  char data[];
} outgoing_t;

static void send_answer(mount_t *mt, job_t *job) {
  outgoing_t *o = (outgoing_t *) job;
  pthread_rwlock_rdlock(&mt->alive);
  if (!mt->ended) fuse_reply_buf(o->req, o->data, o->len);
  pthread_rwlock_unlock(&mt->alive);
  __atomic_fetch_add(&mt->sent_by_thread, 1, __ATOMIC_RELAXED);
}

// ---- lanes ----------------------------------------------------------------------------------

static void *lane_thread(void *data) {
  lane_t *l = data;
  for (;;) {
    pthread_mutex_lock(&l->lock);
    while (l->head == NULL && !l->stop) pthread_cond_wait(&l->cond, &l->lock);
    job_t *list = l->head;
    l->head = l->tail = NULL;
    int stop = l->stop;
    pthread_mutex_unlock(&l->lock);
    while (list != NULL) {
      job_t *job = list;
      list = job->next;
      l->run(l->mt, job);
      free(job);
    }
    if (stop) return NULL;
  }
}

static void lane_init(lane_t *l, mount_t *mt, void (*run)(mount_t *, job_t *)) {
  pthread_mutex_init(&l->lock, NULL);
  pthread_cond_init(&l->cond, NULL);
  l->mt = mt;
  l->run = run;
}

/** Starts the lane's thread (signals blocked by the caller); without it, jobs are not taken. */
static void lane_start(lane_t *l) {
  if (pthread_create(&l->thread, NULL, lane_thread, l) == 0) l->started = 1;
}

static void lane_push(lane_t *l, job_t *job) {
  job->next = NULL;
  pthread_mutex_lock(&l->lock);
  if (l->tail) l->tail->next = job;
  else l->head = job;
  l->tail = job;
  pthread_cond_signal(&l->cond);
  pthread_mutex_unlock(&l->lock);
}

/** Wakes the lane's thread (to see that the session ended: its jobs are then dropped). */
static void lane_wake(lane_t *l) {
  pthread_mutex_lock(&l->lock);
  pthread_cond_signal(&l->cond);
  pthread_mutex_unlock(&l->lock);
}

/** Stops the lane's thread once it did what it holds, and frees what was never done. */
static void lane_stop(lane_t *l) {
  if (l->started) {
    pthread_mutex_lock(&l->lock);
    l->stop = 1;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    l->started = 0;
  }
}

static void lane_destroy(lane_t *l) {
  for (job_t *j = l->head; j != NULL;) {
    job_t *next = j->next;
    free(j);
    j = next;
  }
  l->head = l->tail = NULL;
  pthread_mutex_destroy(&l->lock);
  pthread_cond_destroy(&l->cond);
}

/** Ends the session: closes /dev/fuse, and unmounts if the session ended some other way than an unmount. */
static void session_teardown(mount_t *mt) {
#ifdef FILESPACE_FUSE3
  fuse_session_unmount(mt->se);
  fuse_session_destroy(mt->se);
#else
  fuse_session_remove_chan(mt->ch);
  fuse_session_destroy(mt->se);
  fuse_unmount(mt->mnt, mt->ch);
  mt->ch = NULL;
#endif
  mt->se = NULL;
}

static void *session_thread(void *data) {
  mount_t *mt = data;
#ifdef FILESPACE_FUSE3
  struct fuse_loop_config config = {.clone_fd = 0, .max_idle_threads = 10};
  fuse_session_loop_mt(mt->se, &config);
#else
  fuse_session_loop_mt(mt->se);
#endif
  pthread_rwlock_wrlock(&mt->alive);
  mt->ended = 1;
  session_teardown(mt);
  pthread_rwlock_unlock(&mt->alive);
  lane_wake(&mt->notices);
  lane_wake(&mt->sends);
  uv_async_send(&mt->async);
  return NULL;
}

static mount_t *mount_of(napi_env env, napi_value v) {
  mount_t *mt = NULL;
  if (napi_get_value_external(env, v, (void **) &mt) != napi_ok || mt == NULL) {
    napi_throw_type_error(env, NULL, "fuse lowlevel: not a mount");
    return NULL;
  }
  if (mt->closed) {
    napi_throw_error(env, NULL, "fuse lowlevel: the mount is closed");
    return NULL;
  }
  return mt;
}

static int get_string(napi_env env, napi_value v, char *buf, size_t size) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok || len >= size - 1) return 0;
  return 1;
}

/** mount(mountPoint, options, handler) -> mount; throws with libfuse's reason on failure. */
static napi_value mount_fs(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char mnt[4096], opts[4096];
  if (argc < 3 || !get_string(env, argv[0], mnt, sizeof mnt) || !get_string(env, argv[1], opts, sizeof opts)) {
    napi_throw_type_error(env, NULL, "fuse lowlevel: mount(mountPoint, options, handler)");
    return NULL;
  }
  mount_t *mt = calloc(1, sizeof(mount_t));
  if (mt == NULL) {
    napi_throw_error(env, NULL, "fuse lowlevel: out of memory");
    return NULL;
  }
  mt->pending = calloc(MAX_PENDING, sizeof(fuse_req_t));
  mt->pending_id = calloc(MAX_PENDING, sizeof(uint32_t));
  mt->pending_slab = calloc(MAX_PENDING, sizeof(uint8_t));
  mt->mnt = strdup(mnt);
  pthread_mutex_init(&mt->slab_lock, NULL);
  pthread_mutex_init(&mt->lock, NULL);
  pthread_rwlock_init(&mt->alive, NULL);
  lane_init(&mt->notices, mt, send_notice);
  lane_init(&mt->sends, mt, send_answer);
  mt->send_min = SEND_BY_THREAD_BYTES;
  pthread_mutex_init(&mt->names_lock, NULL);
  pthread_mutex_init(&mt->attrs_lock, NULL);
  pthread_mutex_init(&mt->dirs_lock, NULL);
  mt->env = env;

  char *args_v[] = {"filespace", "-o", opts, NULL};
  struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
  struct fuse_lowlevel_ops ops;
  memset(&ops, 0, sizeof ops);
  ops.init = ll_init;
  ops.lookup = ll_lookup;
  ops.forget = ll_forget;
  ops.forget_multi = ll_forget_multi;
  ops.getattr = ll_getattr;
  ops.setattr = ll_setattr;
  ops.readlink = ll_readlink;
  ops.mknod = ll_mknod;
  ops.mkdir = ll_mkdir;
  ops.unlink = ll_unlink;
  ops.rmdir = ll_rmdir;
  ops.symlink = ll_symlink;
  ops.rename = ll_rename;
  ops.link = ll_link;
  ops.open = ll_open;
  ops.read = ll_read;
  ops.write = ll_write;
  ops.flush = ll_flush;
  ops.release = ll_release;
  ops.fsync = ll_fsync;
  ops.opendir = ll_opendir;
  ops.readdir = ll_readdir;
#ifdef FILESPACE_FUSE3
  ops.readdirplus = ll_readdirplus;
#endif
  ops.releasedir = ll_releasedir;
  ops.fsyncdir = ll_fsyncdir;
  ops.statfs = ll_statfs;
  ops.setxattr = ll_setxattr;
  ops.getxattr = ll_getxattr;
  ops.listxattr = ll_listxattr;
  ops.removexattr = ll_removexattr;
  ops.create = ll_create;

  const char *failed = NULL;
#ifdef FILESPACE_FUSE3
  mt->se = fuse_session_new(&args, &ops, sizeof ops, mt);
  if (mt->se == NULL) {
    failed = "libfuse refused the options";
  } else if (fuse_session_mount(mt->se, mnt) != 0) {
    fuse_session_destroy(mt->se);
    mt->se = NULL;
    failed = "the kernel refused the mount (see the reason above, or check /dev/fuse and fusermount3)";
  } else {
    // A child of this process must not hold the session open (an unmount would wait for it).
    int fd = fuse_session_fd(mt->se);
    fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
  }
#else
  mt->ch = fuse_mount(mnt, &args);
  if (mt->ch == NULL) {
    failed = "the kernel refused the mount (see the reason above, or check /dev/fuse and fusermount)";
  } else {
    // A child of this process must not hold the session open (an unmount would wait for it).
    int fd = fuse_chan_fd(mt->ch);
    fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
    mt->se = fuse_lowlevel_new(&args, &ops, sizeof ops, mt);
    if (mt->se == NULL) {
      fuse_unmount(mnt, mt->ch);
      failed = "libfuse refused the options";
    }
  }
#endif
  fuse_opt_free_args(&args);
  if (failed != NULL) {
    free(mt->pending);
    free(mt->pending_id);
    free(mt->pending_slab);
    free(mt->mnt);
    free(mt);
    napi_throw_error(env, NULL, failed);
    return NULL;
  }
#ifndef FILESPACE_FUSE3
  fuse_session_add_chan(mt->se, mt->ch);
#endif

  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  uv_async_init(loop, &mt->async, drain);
  mt->async.data = mt;
  napi_create_reference(env, argv[2], 1, &mt->handler);
  slabs_grow(env, mt);

  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&mt->thread, NULL, session_thread, mt);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    session_teardown(mt);
    mt->ended = 1;
    napi_throw_error(env, NULL, "fuse lowlevel: could not start the session thread");
    return NULL;
  }
  mt->thread_started = 1;
  pthread_sigmask(SIG_SETMASK, &all, &old);
  lane_start(&mt->notices);
  lane_start(&mt->sends);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  napi_value out;
  CHECK(napi_create_external(env, mt, NULL, NULL, &out));
  return out;
}

static void free_mount(uv_handle_t *handle) {
  mount_t *mt = handle->data;
  free(mt->pending);
  free(mt->pending_id);
  free(mt->pending_slab);
  free(mt->mnt);
  pthread_mutex_destroy(&mt->lock);
  pthread_mutex_destroy(&mt->slab_lock);
  pthread_rwlock_destroy(&mt->alive);
  lane_destroy(&mt->notices);
  lane_destroy(&mt->sends);
  names_clear(mt);
  pthread_mutex_destroy(&mt->names_lock);
  if (mt->dirs != NULL)
    for (size_t i = 0; i < DIR_SLOTS; i++) free(mt->dirs[i].hashes);
  free(mt->dirs);
  pthread_mutex_destroy(&mt->dirs_lock);
  free(mt->attrs);
  pthread_mutex_destroy(&mt->attrs_lock);
  free(mt);
}

// The arguments of an exported function that takes the mount first: `argv`, and `mt` (given
// something else, or a closed mount, mount_of has thrown and the function returns).
#define MOUNT_ARGS(n)                                          \
  size_t argc = n;                                             \
  napi_value argv[n];                                          \
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL)); \
  mount_t *mt = mount_of(env, argv[0]);                        \
  if (mt == NULL) return NULL;

/**
 * close(mount): after the session ended (the handler was told ENDED), joins its thread and
 * frees the mount. Throws if the session is still running.
 */
static napi_value close_fs(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(1)
  pthread_rwlock_rdlock(&mt->alive);
  int ended = mt->ended;
  pthread_rwlock_unlock(&mt->alive);
  if (!ended) {
    napi_throw_error(env, NULL, "fuse lowlevel: the session is still running (unmount first)");
    return NULL;
  }
  if (mt->thread_started) pthread_join(mt->thread, NULL);
  mt->thread_started = 0;
  lane_stop(&mt->notices);
  lane_stop(&mt->sends);
  mt->closed = 1;
  // Requests never answered are gone with the session.
  for (uint32_t i = 0; i < MAX_PENDING; i++) mt->pending[i] = NULL;
  napi_delete_reference(env, mt->handler);
  for (int i = 0; i < mt->slab_count; i++) napi_delete_reference(env, mt->slabs[i].ref);
  mt->slab_count = 0;
  uv_close((uv_handle_t *) &mt->async, free_mount);
  return NULL;
}

/** Takes the request for an answer: NULL (and nothing to do) if the session ended; throws if unknown. */
static fuse_req_t answering(napi_env env, napi_value vmt, napi_value vid, mount_t **out) {
  mount_t *mt = mount_of(env, vmt);
  if (mt == NULL) return NULL;
  uint32_t id;
  if (napi_get_value_uint32(env, vid, &id) != napi_ok) {
    napi_throw_type_error(env, NULL, "fuse lowlevel: a request id is a number");
    return NULL;
  }
  fuse_req_t req = take(mt, id);
  if (req == NULL) {
    napi_throw_error(env, NULL, "fuse lowlevel: that request is not waiting for an answer");
    return NULL;
  }
  *out = mt;
  pthread_rwlock_rdlock(&mt->alive);
  if (mt->ended) {
    pthread_rwlock_unlock(&mt->alive);
    return NULL;
  }
  return req;
}

static void answered(mount_t *mt) { pthread_rwlock_unlock(&mt->alive); }

#define ANSWER_ARGS(n)                                          \
  size_t argc = n;                                              \
  napi_value argv[n];                                           \
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));  \
  if (argc < n) {                                               \
    napi_throw_type_error(env, NULL, "fuse lowlevel: too few arguments"); \
    return NULL;                                                \
  }                                                             \
  mount_t *mt = NULL;                                           \
  fuse_req_t req = answering(env, argv[0], argv[1], &mt);       \
  if (req == NULL) return NULL;

static double get_num(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

static void ms_to_ts(double ms, struct timespec *ts) {
  double sec = ms / 1000.0;
  ts->tv_sec = (time_t) sec;
  if ((double) ts->tv_sec > sec) ts->tv_sec--;
  ts->tv_nsec = (long) ((ms - (double) ts->tv_sec * 1000.0) * 1e6);
  if (ts->tv_nsec < 0) ts->tv_nsec = 0;
  if (ts->tv_nsec > 999999999) ts->tv_nsec = 999999999;
}

/**
 * A stat from a Float64Array: ino, mode, nlink, uid, gid, rdev, size, blocks, atimeMs, mtimeMs,
 * ctimeMs, blksize.
 */
static void stat_at(const double *a, struct stat *st);

static int stat_from(napi_env env, napi_value v, struct stat *st) {
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_float64_array ||
      length < 12) {
    napi_throw_type_error(env, NULL, "fuse lowlevel: a stat is a Float64Array of 12");
    return 0;
  }
  stat_at(data, st);
  return 1;
}

/** A stat from 12 numbers (see stat_from). */
static void stat_at(const double *a, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_ino = (ino_t) a[0];
  st->st_mode = (mode_t) a[1];
  st->st_nlink = (nlink_t) a[2];
  st->st_uid = (uid_t) a[3];
  st->st_gid = (gid_t) a[4];
  st->st_rdev = (dev_t) a[5];
  st->st_size = (off_t) a[6];
  st->st_blocks = (blkcnt_t) a[7];
  ms_to_ts(a[8], &st->st_atim);
  ms_to_ts(a[9], &st->st_mtim);
  ms_to_ts(a[10], &st->st_ctim);
  st->st_blksize = (blksize_t) a[11];
}

static int entry_from(napi_env env, napi_value *argv, struct fuse_entry_param *e) {
  memset(e, 0, sizeof *e);
  if (!stat_from(env, argv[0], &e->attr)) return 0;
  e->ino = e->attr.st_ino;
  e->generation = 0;
  e->entry_timeout = get_num(env, argv[1]);
  e->attr_timeout = get_num(env, argv[2]);
  return 1;
}

/** reply_err(mount, id, errno): errno 0 answers success for requests with no data. */
static napi_value reply_err(napi_env env, napi_callback_info info) {
  ANSWER_ARGS(3)
  int err = (int) get_num(env, argv[2]);
  fuse_reply_err(req, err < 0 ? -err : err);
  answered(mt);
  return NULL;
}

/** reply_entry(mount, id, stat, entryTimeoutSec, attrTimeoutSec); a stat with ino 0 is a negative entry. */
static napi_value reply_entry(napi_env env, napi_callback_info info) {
  ANSWER_ARGS(5)
  struct fuse_entry_param e;
  if (!entry_from(env, argv + 2, &e)) {
    fuse_reply_err(req, EIO);
  } else {
    fuse_reply_entry(req, &e);
  }
  answered(mt);
  return NULL;
}

/** reply_attr(mount, id, stat, attrTimeoutSec) */
static napi_value reply_attr(napi_env env, napi_callback_info info) {
  ANSWER_ARGS(4)
  struct stat st;
  if (!stat_from(env, argv[2], &st)) fuse_reply_err(req, EIO);
  else fuse_reply_attr(req, &st, get_num(env, argv[3]));
  answered(mt);
  return NULL;
}

static void fi_from(napi_env env, napi_value vfh, napi_value vflags, struct fuse_file_info *fi) {
  memset(fi, 0, sizeof *fi);
  fi->fh = (uint64_t) get_num(env, vfh);
  uint32_t flags = (uint32_t) get_num(env, vflags);
  fi->direct_io = (flags & 1) != 0;
  fi->keep_cache = (flags & 2) != 0;
#ifdef FILESPACE_FUSE3
  if ((flags & 4) != 0) fi->keep_cache = fi->cache_readdir = 1;
#endif
}

#ifndef FILESPACE_FUSE3
// The kernel's FOPEN_CACHE_DIR (Linux 4.20): a folder's listing is kept in the kernel's page cache
// and later reads of the folder are answered from it. libfuse2's fuse_file_info has no field for
// it, so an answer that asks for it is written here, in the layout libfuse itself sends
// (struct fuse_open_out of the kernel's protocol).
struct open_answer {
  uint64_t fh;
  uint32_t open_flags;
  uint32_t padding;
};
#define OPEN_KEEP_CACHE (1 << 1)
#define OPEN_CACHE_DIR (1 << 3)
#endif

/**
 * reply_open(mount, id, fh, flags): flags bit 0 direct_io, bit 1 keep_cache, bit 2 (a folder) the
 * kernel keeps the listing: cache_dir with keep_cache, so an opendir does not drop it.
 */
static napi_value reply_open(napi_env env, napi_callback_info info) {
  ANSWER_ARGS(4)
#ifndef FILESPACE_FUSE3
  if (((uint32_t) get_num(env, argv[3]) & 4) != 0) {
    struct open_answer out;
    memset(&out, 0, sizeof out);
    out.fh = (uint64_t) get_num(env, argv[2]);
    out.open_flags = OPEN_KEEP_CACHE | OPEN_CACHE_DIR;
    fuse_reply_buf(req, (const char *) &out, sizeof out);
    answered(mt);
    return NULL;
  }
#endif
  struct fuse_file_info fi;
  fi_from(env, argv[2], argv[3], &fi);
  if (fuse_reply_open(req, &fi) == -ENOENT) {
    // The opener was interrupted: the handle is not used by anyone (release is not sent).
  }
  answered(mt);
  return NULL;
}

/** reply_create(mount, id, stat, entryTimeoutSec, attrTimeoutSec, fh, flags) */
static napi_value reply_create(napi_env env, napi_callback_info info) {
  ANSWER_ARGS(7)
  struct fuse_entry_param e;
  struct fuse_file_info fi;
  fi_from(env, argv[5], argv[6], &fi);
  if (!entry_from(env, argv + 2, &e)) fuse_reply_err(req, EIO);
  else fuse_reply_create(req, &e, &fi);
  answered(mt);
  return NULL;
}

/** reply_buf(mount, id, buffer, length) */
static napi_value reply_buf(napi_env env, napi_callback_info info) {
  ANSWER_ARGS(4)
  void *data = NULL;
  size_t len = 0;
  if (napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) {
    fuse_reply_err(req, EIO);
    answered(mt);
    napi_throw_type_error(env, NULL, "fuse lowlevel: reply_buf takes a Buffer");
    return NULL;
  }
  double n = get_num(env, argv[3]);
  if (n >= 0 && (size_t) n < len) len = (size_t) n;
  outgoing_t *o = len >= mt->send_min && mt->sends.started ? malloc(sizeof(outgoing_t) + len) : NULL;
  if (o == NULL) {
    fuse_reply_buf(req, data, len);
  } else {
    o->req = req;
    o->len = len;
    memcpy(o->data, data, len);
    lane_push(&mt->sends, &o->job);
  }
  answered(mt);
  return NULL;
}

#ifdef FILESPACE_FUSE3
/**
 * reply_direntplus(mount, id, size, names, stats, offsets, entryTimeoutSec, attrTimeoutSec): a
 * readdirplus answer of at most `size` bytes, entry k named `names[k]` (latin1), with the stat
 * `stats[12k .. 12k+12]` and the offset of the entry after it `offsets[k]`, as many as fit.
 * `.` and `..` carry no entry (the kernel looks them up by itself), nor does a stat of mode 0;
 * every other entry counts as a lookup of its inode, as a lookup's answer does.
 */
static napi_value reply_direntplus(napi_env env, napi_callback_info info) {
  ANSWER_ARGS(8)
  uint32_t n = 0;
  size_t stats_len = 0, offs_len = 0;
  void *stats = NULL, *offs = NULL;
  napi_typedarray_type t1, t2;
  size_t size = (size_t) get_num(env, argv[2]);
  if (napi_get_array_length(env, argv[3], &n) != napi_ok ||
      napi_get_typedarray_info(env, argv[4], &t1, &stats_len, &stats, NULL, NULL) != napi_ok ||
      napi_get_typedarray_info(env, argv[5], &t2, &offs_len, &offs, NULL, NULL) != napi_ok || t1 != napi_float64_array ||
      t2 != napi_float64_array || stats_len < 12 * (size_t) n || offs_len < n || size > (16u << 20)) {
    fuse_reply_err(req, EIO);
    answered(mt);
    napi_throw_type_error(env, NULL, "fuse lowlevel: reply_direntplus(mount, id, size, names, stats, offsets, entry, attr)");
    return NULL;
  }
  double entry_sec = get_num(env, argv[6]), attr_sec = get_num(env, argv[7]);
  // Built where the send thread takes it from, so a large answer is not copied again.
  outgoing_t *o = malloc(sizeof(outgoing_t) + size);
  if (o == NULL) {
    fuse_reply_err(req, ENOMEM);
    answered(mt);
    return NULL;
  }
  size_t at = 0;
  for (uint32_t k = 0; k < n; k++) {
    char name[1024];
    size_t len = 0;
    napi_value v;
    if (napi_get_element(env, argv[3], k, &v) != napi_ok ||
        napi_get_value_string_latin1(env, v, name, sizeof name, &len) != napi_ok || len == 0 || len >= sizeof name - 1)
      continue;
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    stat_at((const double *) stats + 12 * k, &e.attr);
    // No entry for the dots, nor where the stat is left empty (mode 0: the filesystem could not
    // read the inode): the name is listed as by readdir, and looked up when used.
    bool dots = (len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.');
    e.ino = dots || e.attr.st_mode == 0 ? 0 : e.attr.st_ino;
    e.entry_timeout = entry_sec;
    e.attr_timeout = attr_sec;
    size_t need = fuse_add_direntry_plus(req, o->data + at, size - at, name, &e, (off_t) ((const double *) offs)[k]);
    if (need > size - at) break;
    at += need;
  }
  if (at >= mt->send_min && mt->sends.started) {
    o->req = req;
    o->len = at;
    lane_push(&mt->sends, &o->job);
  } else {
    fuse_reply_buf(req, o->data, at);
    free(o);
  }
  answered(mt);
  return NULL;
}
#endif

/** reply_readlink(mount, id, target as latin1) */
static napi_value reply_readlink(napi_env env, napi_callback_info info) {
  ANSWER_ARGS(3)
  size_t len = 0;
  napi_get_value_string_latin1(env, argv[2], NULL, 0, &len);
  char *s = malloc(len + 1);
  if (s == NULL) {
    fuse_reply_err(req, ENOMEM);
  } else {
    napi_get_value_string_latin1(env, argv[2], s, len + 1, &len);
    fuse_reply_readlink(req, s);
    free(s);
  }
  answered(mt);
  return NULL;
}

/** reply_write(mount, id, count) */
static napi_value reply_write(napi_env env, napi_callback_info info) {
  ANSWER_ARGS(3)
  fuse_reply_write(req, (size_t) get_num(env, argv[2]));
  answered(mt);
  return NULL;
}

/** reply_xattr(mount, id, size): the size a getxattr or listxattr with size 0 asked for. */
static napi_value reply_xattr(napi_env env, napi_callback_info info) {
  ANSWER_ARGS(3)
  fuse_reply_xattr(req, (size_t) get_num(env, argv[2]));
  answered(mt);
  return NULL;
}

/** reply_statfs(mount, id, [bsize, frsize, blocks, bfree, bavail, files, ffree, favail, namemax]) */
static napi_value reply_statfs(napi_env env, napi_callback_info info) {
  ANSWER_ARGS(3)
  struct statvfs s;
  memset(&s, 0, sizeof s);
  double v[9] = {0};
  for (uint32_t i = 0; i < 9; i++) {
    napi_value e;
    if (napi_get_element(env, argv[2], i, &e) == napi_ok) v[i] = get_num(env, e);
  }
  s.f_bsize = (unsigned long) v[0];
  s.f_frsize = (unsigned long) v[1];
  s.f_blocks = (fsblkcnt_t) v[2];
  s.f_bfree = (fsblkcnt_t) v[3];
  s.f_bavail = (fsblkcnt_t) v[4];
  s.f_files = (fsfilcnt_t) v[5];
  s.f_ffree = (fsfilcnt_t) v[6];
  s.f_favail = (fsfilcnt_t) v[7];
  s.f_namemax = (unsigned long) v[8];
  fuse_reply_statfs(req, &s);
  answered(mt);
  return NULL;
}

/**
 * send_by_thread(mount, bytes): answers of at least `bytes` bytes are written to the kernel by
 * the send thread (the reply's bytes are copied for it); 0 or less: every answer is written by
 * the JS thread as it answers. The thread keeps the kernel's copy into the reader's pages off
 * the JS thread, which pays where cores are to spare; on a machine of two it costs more than it
 * saves (a copy, and a hand-over between threads per answer).
 */
static napi_value send_by_thread(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(2)
  double bytes = get_num(env, argv[1]);
  mt->send_min = bytes > 0 ? (size_t) bytes : SIZE_MAX;
  return NULL;
}

/**
 * counts(mount) -> [crossed per op..., answered here per op..., forgets, outstanding, notices
 * sent, answers sent by the send thread]
 */
static napi_value counts(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(1)
  napi_value arr;
  napi_create_array_with_length(env, 2 * OP_COUNT + 4, &arr);
  for (uint32_t i = 0; i < OP_COUNT; i++) {
    napi_set_element(env, arr, i, num(env, (double) mt->crossed[i]));
    napi_set_element(env, arr, OP_COUNT + i, num(env, (double) __atomic_load_n(&mt->answered[i], __ATOMIC_RELAXED)));
  }
  napi_set_element(env, arr, 2 * OP_COUNT, num(env, (double) __atomic_load_n(&mt->forgets, __ATOMIC_RELAXED)));
  napi_set_element(env, arr, 2 * OP_COUNT + 1, num(env, mt->outstanding));
  napi_set_element(env, arr, 2 * OP_COUNT + 2, num(env, (double) __atomic_load_n(&mt->notices_sent, __ATOMIC_RELAXED)));
  napi_set_element(env, arr, 2 * OP_COUNT + 3, num(env, (double) __atomic_load_n(&mt->sent_by_thread, __ATOMIC_RELAXED)));
  return arr;
}

/**
 * xattr_names(mount, names, all): extended-attribute names (latin1) some inode may now have;
 * with `all`, the set is exactly these from now on, and getxattr of any other name is answered
 * here. Names are only ever added otherwise: the set is a superset.
 */
static napi_value xattr_names(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(3)
  bool all = false;
  napi_get_value_bool(env, argv[2], &all);
  uint32_t n = 0;
  if (napi_get_array_length(env, argv[1], &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "fuse lowlevel: xattr_names takes an array of names");
    return NULL;
  }
  pthread_mutex_lock(&mt->names_lock);
  if (all) names_clear(mt);
  int ok = 1;
  for (uint32_t i = 0; i < n && ok; i++) {
    napi_value v;
    size_t len = 0;
    char buf[512];
    napi_get_element(env, argv[1], i, &v);
    if (napi_get_value_string_latin1(env, v, buf, sizeof buf, &len) != napi_ok || len >= sizeof buf - 1) {
      ok = 0;
      break;
    }
    ok = names_add(mt, buf, len);
  }
  // A name that could not be kept: nothing is answered here any more.
  if (!ok) mt->names_known = 0;
  else if (all) mt->names_known = 1;
  pthread_mutex_unlock(&mt->names_lock);
  return NULL;
}

/** forget_entry(mount, parent, name as latin1): the kernel forgets what it knows of that name. */
static napi_value forget_entry(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(3)
  size_t len = 0;
  if (napi_get_value_string_latin1(env, argv[2], NULL, 0, &len) != napi_ok || len == 0 || len > 1024) {
    napi_throw_type_error(env, NULL, "fuse lowlevel: forget_entry takes a name");
    return NULL;
  }
  notice_t *n = calloc(1, sizeof(notice_t) + len + 1);
  if (n == NULL) return NULL;
  napi_get_value_string_latin1(env, argv[2], n->name, len + 1, &len);
  n->name_len = len;
  n->parent = (uint64_t) get_num(env, argv[1]);
  lane_push(&mt->notices, &n->job);
  return NULL;
}

/**
 * forget_inode(mount, ino, off, len): the kernel forgets the inode's attributes, and its cached
 * pages from `off` for `len` bytes (off < 0: attributes only; len 0: to the end).
 */
static napi_value forget_inode(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(4)
  notice_t *n = calloc(1, sizeof(notice_t));
  if (n == NULL) return NULL;
  n->parent = (uint64_t) get_num(env, argv[1]);
  n->off = (int64_t) get_num(env, argv[2]);
  n->len = (int64_t) get_num(env, argv[3]);
  lane_push(&mt->notices, &n->job);
  return NULL;
}

/**
 * names_complete(mount, dir, negativeTimeoutSec): folder `dir` has no names (this mount just
 * made it); from now on a lookup there of a name not added (names_add) is answered here as
 * missing, kept by the kernel that long. Replaces whatever folder shared its place.
 */
static napi_value names_complete(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(3)
  uint64_t dir = (uint64_t) get_num(env, argv[1]);
  double neg = get_num(env, argv[2]);
  if (dir == 0 || !(neg > 0)) return NULL;
  pthread_mutex_lock(&mt->dirs_lock);
  if (mt->dirs == NULL) mt->dirs = calloc(DIR_SLOTS, sizeof(dir_names_t));
  if (mt->dirs != NULL) {
    dir_names_t *d = &mt->dirs[dir % DIR_SLOTS];
    dir_drop(mt, d);
    d->hashes = calloc(16, sizeof(uint64_t));
    if (d->hashes != NULL) {
      d->cap = 16;
      d->dir = dir;
      mt->neg_timeout = neg;
    }
  }
  pthread_mutex_unlock(&mt->dirs_lock);
  return NULL;
}

/** names_add(mount, dir, name as latin1): folder `dir` has that name now (if its names are known here). */
static napi_value names_add_fn(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(3)
  uint64_t dir = (uint64_t) get_num(env, argv[1]);
  char buf[1100];
  size_t len = 0;
  int ok = napi_get_value_string_latin1(env, argv[2], buf, sizeof buf, &len) == napi_ok && len < sizeof buf - 1;
  pthread_mutex_lock(&mt->dirs_lock);
  if (mt->dirs != NULL && mt->dirs[dir % DIR_SLOTS].dir == dir) {
    dir_names_t *d = &mt->dirs[dir % DIR_SLOTS];
    // A name that cannot be kept: the folder is no longer answered for.
    if (!ok || !dir_add(mt, d, name_hash(buf))) dir_drop(mt, d);
  }
  pthread_mutex_unlock(&mt->dirs_lock);
  return NULL;
}

/** names_forget(mount, dir): lookups in `dir` go to the filesystem again; 0 for every folder. */
static napi_value names_forget(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(2)
  uint64_t dir = (uint64_t) get_num(env, argv[1]);
  pthread_mutex_lock(&mt->dirs_lock);
  if (mt->dirs != NULL) {
    for (size_t i = 0; i < DIR_SLOTS; i++)
      if (mt->dirs[i].dir != 0 && (dir == 0 || mt->dirs[i].dir == dir)) dir_drop(mt, &mt->dirs[i]);
  }
  pthread_mutex_unlock(&mt->dirs_lock);
  return NULL;
}

/**
 * attr_keep(mount, ino, stat, attrTimeoutSec, epoch?): getattr of `ino` is answered here with
 * `stat` until attr_forget names it, or a request that may change it arrives (see
 * mount_t.attrs). The caller keeps only what its getattr would answer now. With `epoch` (a
 * setattr's, as its message carried it), nothing is kept if a request that may change the
 * inode's attributes was queued after that setattr.
 */
static napi_value attr_keep(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(5)
  uint64_t ino = (uint64_t) get_num(env, argv[1]);
  struct stat st;
  if (ino == 0 || !stat_from(env, argv[2], &st)) return NULL;
  double timeout = get_num(env, argv[3]);
  napi_valuetype t;
  int with_epoch = argc >= 5 && napi_typeof(env, argv[4], &t) == napi_ok && t == napi_number;
  uint32_t epoch = with_epoch ? (uint32_t) get_num(env, argv[4]) : 0;
  pthread_mutex_lock(&mt->lock);
  int current = !with_epoch || mt->attr_epochs[ino % ATTR_SLOTS] == epoch;
  pthread_mutex_lock(&mt->attrs_lock);
  if (current && mt->attrs == NULL) mt->attrs = calloc(ATTR_SLOTS, sizeof(attr_slot_t));
  if (current && mt->attrs != NULL) {
    attr_slot_t *slot = &mt->attrs[ino % ATTR_SLOTS];
    slot->ino = ino;
    slot->timeout = timeout;
    slot->st = st;
  }
  pthread_mutex_unlock(&mt->attrs_lock);
  pthread_mutex_unlock(&mt->lock);
  return NULL;
}

/** attr_forget(mount, ino): getattr of `ino` goes to the filesystem again; 0 forgets every inode. */
static napi_value attr_forget(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(2)
  uint64_t ino = (uint64_t) get_num(env, argv[1]);
  pthread_mutex_lock(&mt->attrs_lock);
  if (mt->attrs != NULL) {
    if (ino == 0) memset(mt->attrs, 0, ATTR_SLOTS * sizeof(attr_slot_t));
    else if (mt->attrs[ino % ATTR_SLOTS].ino == ino) mt->attrs[ino % ATTR_SLOTS].ino = 0;
  }
  pthread_mutex_unlock(&mt->attrs_lock);
  return NULL;
}

/** unref(mount): the session's wake-up does not keep the event loop alive (it is ended by unmount). */
static napi_value unref(napi_env env, napi_callback_info info) {
  MOUNT_ARGS(1)
  uv_unref((uv_handle_t *) &mt->async);
  return NULL;
}

#define EXPORT_FN(name, fn)                                          \
  do {                                                               \
    napi_value f;                                                    \
    napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f); \
    napi_set_named_property(env, exports, name, f);                  \
  } while (0)

#define EXPORT_OP(name, value) napi_set_named_property(env, ops, name, num(env, value))

NAPI_MODULE_INIT() {
  EXPORT_FN("mount", mount_fs);
  EXPORT_FN("close", close_fs);
  EXPORT_FN("unref", unref);
  EXPORT_FN("attr_keep", attr_keep);
  EXPORT_FN("attr_forget", attr_forget);
  EXPORT_FN("names_complete", names_complete);
  EXPORT_FN("names_add", names_add_fn);
  EXPORT_FN("names_forget", names_forget);
  EXPORT_FN("counts", counts);
  EXPORT_FN("send_by_thread", send_by_thread);
  EXPORT_FN("xattr_names", xattr_names);
  EXPORT_FN("forget_entry", forget_entry);
  EXPORT_FN("forget_inode", forget_inode);
  EXPORT_FN("reply_err", reply_err);
  EXPORT_FN("reply_entry", reply_entry);
  EXPORT_FN("reply_attr", reply_attr);
  EXPORT_FN("reply_open", reply_open);
  EXPORT_FN("reply_create", reply_create);
  EXPORT_FN("reply_buf", reply_buf);
  EXPORT_FN("reply_readlink", reply_readlink);
  EXPORT_FN("reply_write", reply_write);
  EXPORT_FN("reply_xattr", reply_xattr);
  EXPORT_FN("reply_statfs", reply_statfs);
#ifdef FILESPACE_FUSE3
  EXPORT_FN("reply_direntplus", reply_direntplus);
#endif
  // The libfuse the addon was built against (2 or 3), and the largest write it takes.
  napi_set_named_property(env, exports, "libfuse", num(env, FUSE_MAJOR_VERSION));
  napi_set_named_property(env, exports, "maxWrite", num(env, SLAB_BYTES));
  napi_value ops;
  napi_create_object(env, &ops);
  const char *names[OP_COUNT] = {"ended",   "lookup",   "getattr", "setattr", "readlink",   "mknod",    "mkdir",
                                 "unlink",  "rmdir",    "symlink", "rename",  "link",       "open",     "read",
                                 "write",   "flush",    "release", "fsync",   "opendir",    "readdir",  "releasedir",
                                 "fsyncdir", "statfs",  "setxattr", "getxattr", "listxattr", "removexattr", "create", "readdirplus"};
  for (uint32_t i = 0; i < OP_COUNT; i++) EXPORT_OP(names[i], i);
  napi_set_named_property(env, exports, "ops", ops);
  return exports;
}
