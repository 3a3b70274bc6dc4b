/*
 * store_lmdb.c: the LMDB backend of dht_store (dht_store_lmdb_open), where
 * the daemon keeps a node's keys across restarts.
 *
 * Layout (docs/STORAGE.md is the reference): one environment per data
 * directory, one unnamed database in it. An LMDB key is the 20-byte key id
 * followed by the key bytes, so LMDB's default order (memcmp, shorter first)
 * is exactly the store's (key id, key bytes) order and a ring interval is one
 * or two cursor ranges. An LMDB value is a format byte (REC_FORMAT_PLAIN)
 * followed by the value bytes; the byte lets a later format add a version
 * stamp without a migration.
 *
 * Group commit. A put or delete joins the open write transaction (opening
 * it if needed); dht_store_lmdb_commit() commits the group, so one fsync
 * pays for every write of an event-loop iteration. Reads use that write
 * transaction while it is open, so they see the pending writes, and
 * otherwise one read-only transaction that is reset before each write
 * transaction begins and renewed lazily by the next read.
 *
 * The redo log. When a write finds the map full, LMDB has already poisoned
 * the transaction, and aborting it would throw away the whole pending group,
 * whose writes have all returned 0 to the caller. So every write of the
 * group is also appended to an in-memory log; on MDB_MAP_FULL the store
 * aborts, doubles the map, replays the log into a new transaction and retries
 * the write. The same replay keeps the group when a single write fails for
 * another reason. The log is bounded by group_bytes_max: beyond it a write
 * commits the group early, which only makes earlier writes durable sooner.
 *
 * Dirty pages. Without MDB_WRITEMAP, LMDB copies each page a transaction
 * changes into a malloc()ed buffer, and after the commit keeps every such
 * buffer on a free list for later transactions, never giving one back
 * until the environment closes: the largest group ever written stays in
 * the process's memory. A group of random keys dirties about one leaf page
 * per write, so groups are also bounded by group_writes_max writes,
 * committed early like a group too large in bytes.
 *
 * Pointers handed out. get returns a pointer into LMDB's map. It stays valid
 * until the next call on the store because nothing that could move or reuse
 * the page happens in between: the read transaction is only reset when a
 * write begins, a write transaction's pages only change on the next write or
 * commit, and the map is only remapped (grown) inside a write or commit. A
 * live read transaction always holds the newest commit, as the lock file
 * guarantees that no other process writes.
 *
 * Not thread-safe: one thread at a time, like every dht_store.
 */
#define _DEFAULT_SOURCE /* flock(); with glibc also POSIX.1-2008 */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#include <lmdb.h>

#include "dht/err.h"
#include "dht/store_lmdb.h"

/* The first byte of every LMDB value says how the rest is laid out. PLAIN:
 * the bytes the node stored follow, nothing else (the node's records carry
 * their versions inside, which this store does not read). A new layout
 * takes another byte; readers reject formats they do not know. */
#define REC_FORMAT_PLAIN 0x01
/* LMDB stores a value's size in 32 bits; one byte goes to the format. */
#define VALUE_LEN_MAX ((size_t)0xfffffffeu)
/* Room for any message this file writes (paths are not included). */
#define ERRMSG_LEN 256
/* A file system with less room than this left counts as full. */
#define FS_FULL_SLACK ((uint64_t)1 << 20)
/* The redo log's buffer is freed after a commit when it grew beyond this,
 * so one large group does not pin memory for the store's life. */
#define LOG_KEEP_MAX ((size_t)1 << 20)

/* The two kinds of write the redo log records. */
enum { OP_PUT = 1, OP_DEL = 2 };

/* Each redo log entry starts with this header (copied in and out with
 * memcpy, so the buffer needs no alignment), then key_size bytes of LMDB key,
 * then value_len bytes of value (none for a delete). */
typedef struct redo_hdr {
  size_t key_size;  /* bytes of LMDB key: id and key bytes */
  size_t value_len; /* bytes of value, without the format byte */
  int op;           /* OP_PUT or OP_DEL */
} redo_hdr;

/* The writes of the pending group, in order, to rebuild it after its
 * transaction had to be aborted. */
typedef struct redo_log {
  uint8_t *buf; /* entries back to back */
  size_t len;   /* bytes of buf in use */
  size_t cap;   /* bytes allocated at buf */
  size_t n_ops; /* entries in buf: the writes of the group */
} redo_log;

typedef struct lmdb_store {
  dht_store base;         /* must stay first: dht_store pointers are cast back */
  MDB_env *env;           /* the environment in the data directory */
  MDB_dbi dbi;            /* its one (unnamed) database */
  MDB_txn *wtxn;          /* the pending group's write transaction, or NULL */
  MDB_txn *rtxn;          /* the reusable read-only transaction */
  bool rtxn_live;         /* rtxn holds a snapshot (renewed, not reset) */
  size_t count;           /* records in the current view: wtxn's if open,
                             else the last commit's */
  uint8_t *key_buf;       /* scratch for one LMDB key, key_size_max bytes */
  size_t key_size_max;    /* LMDB's key size limit (id and key bytes) */
  redo_log log;           /* the pending group's writes */
  size_t map_size_max;    /* the map does not grow past this; 0: no limit */
  size_t group_bytes_max; /* redo log bytes that force an early commit */
  size_t group_writes_max; /* writes in a group that force one too */
  dht_sync_mode sync;     /* what a commit promises */
  int lock_fd;            /* the data dir's lock file, flock()ed, or -1 */
  bool lost;              /* pending writes that returned 0 were discarded
                             since the last commit call: it must fail */
  bool broken;            /* a fatal disk error happened: every call fails */
  bool scanning;          /* inside a scan callback, to catch writes */
  char errmsg[ERRMSG_LEN]; /* why the last failing call failed */
} lmdb_store;

static const dht_store_ops lmdb_ops;

static lmdb_store *lmdb_of(dht_store *st) {
  assert(st != NULL && st->ops == &lmdb_ops && "not an LMDB store");
  return (lmdb_store *)st;
}

__attribute__((format(printf, 2, 3))) static void
set_err(lmdb_store *s, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
  va_end(ap);
}

/* Maps an LMDB or errno code to a DHT_ERR_* code. */
static int map_rc(int rc) {
  switch (rc) {
  case 0:
    return 0;
  case MDB_NOTFOUND:
    return DHT_ERR_NOT_FOUND;
  case MDB_MAP_FULL: /* at map_size_max, or the file cannot grow */
  case ENOSPC:
  case EDQUOT:
    return DHT_ERR_DISK_FULL;
  case MDB_TXN_FULL:
    return DHT_ERR_FULL;
  case MDB_BAD_VALSIZE:
    return DHT_ERR_TOO_LARGE;
  case ENOMEM:
    return DHT_ERR_NOMEM;
  default:
    return DHT_ERR_STORE;
  }
}

/* Errors after which the environment cannot be trusted: the store fails
 * every later call (fail-stop) and the node should be rebuilt from its
 * replicas. EIO is there because after a failed fsync the page cache may no
 * longer match the disk. */
static bool rc_is_fatal(int rc) {
  return rc == MDB_PANIC || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ||
         rc == EIO;
}

/* Records why an LMDB call failed. Returns the DHT_ERR_* code for rc. */
static int fail(lmdb_store *s, int rc, const char *what) {
  set_err(s, "%s: %s", what, mdb_strerror(rc));
  if (rc_is_fatal(rc)) {
    s->broken = true;
  }
  return map_rc(rc);
}

/* The answer of every call once the store is broken. */
static int broken_err(lmdb_store *s) {
  if (s->errmsg[0] == '\0') {
    set_err(s, "the store failed earlier and must be reopened");
  }
  return DHT_ERR_STORE;
}

/* ---- the redo log -------------------------------------------------------- */

/* Makes room for entry more bytes. Returns 0 or DHT_ERR_NOMEM. */
static int log_reserve(redo_log *log, size_t entry) {
  size_t need;
  size_t cap;
  uint8_t *buf;

  if (entry > SIZE_MAX - log->len) {
    return DHT_ERR_NOMEM;
  }
  need = log->len + entry;
  if (need <= log->cap) {
    return 0;
  }
  cap = log->cap < 4096 ? 4096 : log->cap;
  while (cap < need) {
    cap = cap > SIZE_MAX / 2 ? need : 2 * cap;
  }
  buf = realloc(log->buf, cap);
  if (buf == NULL) {
    return DHT_ERR_NOMEM;
  }
  log->buf = buf;
  log->cap = cap;
  return 0;
}

/* Appends one write; log_reserve() made the room. */
static void log_append(redo_log *log, int op, const MDB_val *key,
                       const uint8_t *value, size_t value_len) {
  redo_hdr h;

  h.key_size = key->mv_size;
  h.value_len = value_len;
  h.op = op;
  assert(log->len + sizeof(h) + h.key_size + value_len <= log->cap);
  memcpy(log->buf + log->len, &h, sizeof(h));
  log->len += sizeof(h);
  memcpy(log->buf + log->len, key->mv_data, h.key_size);
  log->len += h.key_size;
  if (value_len > 0) {
    memcpy(log->buf + log->len, value, value_len);
    log->len += value_len;
  }
  log->n_ops++;
}

/* Empties the log, giving a large buffer back. */
static void log_clear(redo_log *log) {
  log->len = 0;
  log->n_ops = 0;
  if (log->cap > LOG_KEEP_MAX) {
    free(log->buf);
    log->buf = NULL;
    log->cap = 0;
  }
}

/* ---- transactions -------------------------------------------------------- */

/* Makes sure the group's write transaction is open. Returns 0 or the
 * DHT_ERR_* code of the failure. */
static int begin_write(lmdb_store *s) {
  int rc;

  if (s->wtxn != NULL) {
    return 0;
  }
  /* Drop the read snapshot first: it would pin the pages this transaction
   * frees, and the map may be remapped while no transaction is active. */
  if (s->rtxn_live) {
    mdb_txn_reset(s->rtxn);
    s->rtxn_live = false;
  }
  rc = mdb_txn_begin(s->env, NULL, 0, &s->wtxn);
  if (rc == MDB_MAP_RESIZED) {
    /* Another process grew the map (only possible if it bypassed the lock
     * file, e.g. an LMDB tool): adopt its size. */
    rc = mdb_env_set_mapsize(s->env, 0);
    if (rc == 0) {
      rc = mdb_txn_begin(s->env, NULL, 0, &s->wtxn);
    }
  }
  if (rc != 0) {
    s->wtxn = NULL;
    return fail(s, rc, "cannot begin a write transaction");
  }
  return 0;
}

/* The transaction reads use: the group's while it is open, so reads see
 * pending writes, else the read-only one, renewed if needed. Returns 0 or
 * the DHT_ERR_* code of the failure. */
static int read_txn(lmdb_store *s, MDB_txn **out) {
  int rc;

  *out = NULL; /* set on every path: gcc -O3 cannot tell that fail() is
                  never 0, and warned of callers using it unset */
  if (s->wtxn != NULL) {
    *out = s->wtxn;
    return 0;
  }
  if (!s->rtxn_live) {
    rc = mdb_txn_renew(s->rtxn);
    if (rc == MDB_MAP_RESIZED) {
      rc = mdb_env_set_mapsize(s->env, 0);
      if (rc == 0) {
        rc = mdb_txn_renew(s->rtxn);
      }
    }
    if (rc != 0) {
      return fail(s, rc, "cannot begin a read transaction");
    }
    s->rtxn_live = true;
  }
  *out = s->rtxn;
  return 0;
}

/* Sets count from txn's view; mdb_stat only copies the transaction's own
 * database record, so this is O(1). */
static void count_from(lmdb_store *s, MDB_txn *txn) {
  MDB_stat st;

  if (mdb_stat(txn, s->dbi, &st) == 0) {
    s->count = st.ms_entries;
  }
}

/* Sets count from the last commit, after a group was dropped. */
static void recount(lmdb_store *s) {
  MDB_txn *txn;

  assert(s->wtxn == NULL);
  if (read_txn(s, &txn) == 0) {
    count_from(s, txn);
  }
}

/* Applies one write to the open write transaction. Returns LMDB's code. */
static int apply(lmdb_store *s, int op, MDB_val *key, const uint8_t *value,
                 size_t value_len) {
  MDB_val data;
  uint8_t *p;
  int rc;

  if (op == OP_DEL) {
    return mdb_del(s->wtxn, s->dbi, key, NULL);
  }
  /* MDB_RESERVE lets the format byte and the value be written straight
   * into the page, without assembling them in a buffer first. */
  data.mv_size = value_len + 1;
  data.mv_data = NULL;
  rc = mdb_put(s->wtxn, s->dbi, key, &data, MDB_RESERVE);
  if (rc != 0) {
    return rc;
  }
  p = data.mv_data;
  p[0] = REC_FORMAT_PLAIN;
  if (value_len > 0) {
    memcpy(p + 1, value, value_len);
  }
  return 0;
}

/* Replays the redo log into the (new, empty) write transaction. Returns
 * LMDB's code. */
static int replay(lmdb_store *s) {
  size_t off = 0;

  while (off < s->log.len) {
    redo_hdr h;
    MDB_val key;
    int rc;

    memcpy(&h, s->log.buf + off, sizeof(h));
    off += sizeof(h);
    key.mv_size = h.key_size;
    key.mv_data = s->log.buf + off;
    off += h.key_size;
    rc = apply(s, h.op, &key, s->log.buf + off, h.value_len);
    off += h.value_len;
    /* A delete that succeeded once finds its key again; tolerate it
     * anyway, it changes nothing. */
    if (rc != 0 && rc != MDB_NOTFOUND) {
      return rc;
    }
  }
  return 0;
}

/* Throws the pending group away. Writes that returned 0 are lost, so the
 * next commit call must fail (lost). */
static void discard_group(lmdb_store *s) {
  if (s->wtxn != NULL) {
    mdb_txn_abort(s->wtxn);
    s->wtxn = NULL;
  }
  if (s->log.n_ops > 0) {
    s->lost = true;
  }
  log_clear(&s->log);
  recount(s);
}

/* Doubles the map, up to map_size_max. No transaction may be active.
 * Returns 0, DHT_ERR_DISK_FULL (at the limit), DHT_ERR_STORE. */
static int grow_map(lmdb_store *s) {
  MDB_envinfo info;
  size_t next;
  int rc;

  assert(s->wtxn == NULL && !s->rtxn_live);
  rc = mdb_env_info(s->env, &info);
  if (rc != 0) {
    return fail(s, rc, "cannot read the map size");
  }
  if ((s->map_size_max != 0 && info.me_mapsize >= s->map_size_max) ||
      info.me_mapsize > SIZE_MAX / 2) {
    set_err(s, "the database is full: its map reached the limit of %zu bytes",
            info.me_mapsize);
    return DHT_ERR_DISK_FULL;
  }
  next = 2 * info.me_mapsize;
  if (s->map_size_max != 0 && next > s->map_size_max) {
    next = s->map_size_max;
  }
  rc = mdb_env_set_mapsize(s->env, next);
  if (rc != 0) {
    return fail(s, rc, "cannot grow the map");
  }
  return 0;
}

/* The group's transaction failed (it is aborted here, if still open) and
 * is rebuilt from the redo log in a new one, after growing the map when grow
 * is set, and again whenever the replay itself fills the map. Returns 0 when
 * the group is whole again in a bigger map (grow) or the same one; or
 * DHT_ERR_DISK_FULL when grow was asked but the map is at its limit, the group
 * being whole in the current map; or another DHT_ERR_* code when the group
 * could not be rebuilt and was discarded (lost is then set). */
static int regroup(lmdb_store *s, bool grow) {
  int result = 0;
  int rc;

  if (s->wtxn != NULL) {
    mdb_txn_abort(s->wtxn);
    s->wtxn = NULL;
  }
  for (;;) {
    if (grow) {
      rc = grow_map(s);
      if (rc == DHT_ERR_DISK_FULL) {
        result = DHT_ERR_DISK_FULL;
      } else if (rc != 0) {
        discard_group(s);
        return rc;
      }
    }
    rc = begin_write(s);
    if (rc != 0) {
      discard_group(s);
      return rc;
    }
    rc = replay(s);
    if (rc == 0) {
      count_from(s, s->wtxn);
      return result;
    }
    mdb_txn_abort(s->wtxn);
    s->wtxn = NULL;
    /* The group fitted in this map before, so only a grown map can make the
     * replay run out of room; be safe and grow again. */
    if (rc != MDB_MAP_FULL || result != 0) {
      rc = fail(s, rc, "cannot replay the pending writes");
      discard_group(s);
      return rc;
    }
    grow = true;
  }
}

/* True when the file system of the data directory (where the lock file
 * is) has less than FS_FULL_SLACK bytes left for us. */
static bool fs_full(const lmdb_store *s) {
  struct statvfs st;

  return s->lock_fd >= 0 && fstatvfs(s->lock_fd, &st) == 0 &&
         (uint64_t)st.f_bavail * st.f_frsize < FS_FULL_SLACK;
}

/* Commits the pending group, growing the map if the commit needs room.
 * Returns 0 or a DHT_ERR_* code, in which case the group is discarded. */
static int commit_group(lmdb_store *s) {
  int rc;

  if (s->wtxn == NULL) {
    return 0;
  }
  if (s->log.n_ops == 0) {
    /* Only deletes of missing keys: nothing to make durable. */
    mdb_txn_abort(s->wtxn);
    s->wtxn = NULL;
    return 0;
  }
  for (;;) {
    /* mdb_txn_commit frees the transaction even when it fails. */
    rc = mdb_txn_commit(s->wtxn);
    s->wtxn = NULL;
    if (rc == 0) {
      log_clear(&s->log);
      return 0;
    }
    if (rc != MDB_MAP_FULL) {
      break;
    }
    /* Saving the free list can need pages too. */
    rc = regroup(s, true);
    if (rc == DHT_ERR_DISK_FULL) {
      discard_group(s);
      return rc;
    }
    if (rc != 0) {
      return rc;
    }
  }
  if ((rc == EIO || rc == ENOSPC) && fs_full(s)) {
    /* LMDB reports a short write (ENOSPC) as EIO. The commit wrote no meta
     * page, and pages are never written over live ones, so the environment
     * is as the last commit left it: not broken, only full. */
    set_err(s, "commit failed: the file system holding the data directory "
               "is full");
    discard_group(s);
    return DHT_ERR_DISK_FULL;
  }
  rc = fail(s, rc, "commit failed");
  discard_group(s);
  return rc;
}

/* ---- the dht_store operations -------------------------------------------- */

/* Puts the LMDB key of (key_id, key) in key_buf and describes it in *out. */
static void make_key(lmdb_store *s, MDB_val *out, const dht_id *key_id,
                     const uint8_t *key, size_t key_len) {
  assert(DHT_ID_LEN + key_len <= s->key_size_max);
  memcpy(s->key_buf, key_id->b, DHT_ID_LEN);
  memcpy(s->key_buf + DHT_ID_LEN, key, key_len);
  out->mv_size = DHT_ID_LEN + key_len;
  out->mv_data = s->key_buf;
}

/* Checks a stored value's format byte and finds its bytes. Returns 0 or
 * DHT_ERR_STORE (a format this code does not know). */
static int decode_value(lmdb_store *s, const MDB_val *data,
                        const uint8_t **value, size_t *value_len) {
  const uint8_t *p = data->mv_data;

  if (data->mv_size < 1 || p[0] != REC_FORMAT_PLAIN) {
    set_err(s,
            "a record has value format %d, unknown to this version "
            "(written by a newer dhtd?)",
            data->mv_size < 1 ? -1 : (int)p[0]);
    return DHT_ERR_STORE;
  }
  *value = p + 1;
  *value_len = data->mv_size - 1;
  return 0;
}

static int lmdb_get(dht_store *st, const dht_id *key_id, const uint8_t *key,
                    size_t key_len, const uint8_t **value, size_t *value_len) {
  lmdb_store *s = lmdb_of(st);
  MDB_txn *txn;
  MDB_val k;
  MDB_val data;
  int rc;

  assert(key != NULL && key_len >= 1);
  assert(value != NULL && value_len != NULL);
  if (s->broken) {
    return broken_err(s);
  }
  if (key_len > s->key_size_max - DHT_ID_LEN) {
    return DHT_ERR_NOT_FOUND; /* put never accepted it */
  }
  rc = read_txn(s, &txn);
  if (rc != 0) {
    return rc;
  }
  make_key(s, &k, key_id, key, key_len);
  rc = mdb_get(txn, s->dbi, &k, &data);
  if (rc == MDB_NOTFOUND) {
    return DHT_ERR_NOT_FOUND;
  }
  if (rc != 0) {
    return fail(s, rc, "get failed");
  }
  return decode_value(s, &data, value, value_len);
}

/* Applies one put or delete to the pending group. Returns 0,
 * DHT_ERR_NOT_FOUND (delete), DHT_ERR_NOMEM, DHT_ERR_DISK_FULL, DHT_ERR_FULL,
 * DHT_ERR_STORE. */
static int write_op(lmdb_store *s, int op, const dht_id *key_id,
                    const uint8_t *key, size_t key_len, const uint8_t *value,
                    size_t value_len) {
  const char *what = op == OP_PUT ? "put failed" : "delete failed";
  MDB_val k;
  size_t entry;
  int rc;

  assert(!s->scanning && "the store must not be modified during a scan");
  if (s->broken) {
    return broken_err(s);
  }
  if (s->lost) {
    set_err(s, "earlier writes of this group were lost; commit to clear it");
    return DHT_ERR_STORE;
  }
  /* Bounded by the callers' checks: key_size_max and VALUE_LEN_MAX. */
  entry = sizeof(redo_hdr) + DHT_ID_LEN + key_len + value_len;
  if (s->log.n_ops > 0 && (s->log.n_ops >= s->group_writes_max ||
                           entry > s->group_bytes_max ||
                           s->log.len > s->group_bytes_max - entry)) {
    rc = commit_group(s);
    if (rc != 0) {
      s->lost = true; /* the group's earlier writes returned 0 */
      return rc;
    }
  }
  /* Room in the log first, so that a write applied to LMDB is never
   * missing from the log. */
  if (log_reserve(&s->log, entry) != 0) {
    set_err(s, "out of memory for the redo log");
    return DHT_ERR_NOMEM;
  }
  rc = begin_write(s);
  if (rc != 0) {
    return rc;
  }
  make_key(s, &k, key_id, key, key_len);
  for (;;) {
    int mrc = apply(s, op, &k, value, value_len);
    if (mrc == 0) {
      break;
    }
    if (mrc == MDB_NOTFOUND) {
      return DHT_ERR_NOT_FOUND; /* the transaction is still good */
    }
    if (mrc == MDB_MAP_FULL) {
      rc = regroup(s, true);
      if (rc != 0) {
        return rc;
      }
      continue; /* a bigger map: try again */
    }
    rc = fail(s, mrc, what);
    /* LMDB poisons the transaction on most errors: rebuild the group
     * without this write, unless the disk itself is gone. */
    if (s->broken) {
      discard_group(s);
    } else {
      (void)regroup(s, false);
    }
    return rc;
  }
  log_append(&s->log, op, &k, value, value_len);
  count_from(s, s->wtxn);
  return 0;
}

static int lmdb_put(dht_store *st, const dht_id *key_id, const uint8_t *key,
                    size_t key_len, const uint8_t *value, size_t value_len) {
  lmdb_store *s = lmdb_of(st);

  assert(key != NULL && key_len >= 1);
  assert(value != NULL || value_len == 0);
  if (key_len > s->key_size_max - DHT_ID_LEN) {
    set_err(s, "key of %zu bytes exceeds the limit of %zu", key_len,
            s->key_size_max - DHT_ID_LEN);
    return DHT_ERR_TOO_LARGE;
  }
  /* The second test only matters where size_t has 32 bits: the redo log
   * entry must not overflow. */
  if (value_len > VALUE_LEN_MAX || value_len > SIZE_MAX / 2) {
    set_err(s, "value of %zu bytes exceeds the limit of %zu", value_len,
            VALUE_LEN_MAX);
    return DHT_ERR_TOO_LARGE;
  }
  return write_op(s, OP_PUT, key_id, key, key_len, value, value_len);
}

static int lmdb_del(dht_store *st, const dht_id *key_id, const uint8_t *key,
                    size_t key_len) {
  lmdb_store *s = lmdb_of(st);

  assert(key != NULL && key_len >= 1);
  if (key_len > s->key_size_max - DHT_ID_LEN) {
    return DHT_ERR_NOT_FOUND; /* put never accepted it */
  }
  return write_op(s, OP_DEL, key_id, key, key_len, NULL, 0);
}

/* Sets *out to id + 1; false when id is the largest id (nothing follows it
 * before the ring wraps). */
static bool id_next(dht_id *out, const dht_id *id) {
  int i;

  *out = *id;
  for (i = DHT_ID_LEN - 1; i >= 0; i--) {
    if (++out->b[i] != 0) {
      return true;
    }
  }
  return false;
}

/* Visits the records whose id is in [lo, hi] (lo NULL: from the first
 * record; hi NULL: to the last), setting *stopped when cb asks to stop.
 * Returns 0 or DHT_ERR_STORE. */
static int scan_run(lmdb_store *s, MDB_cursor *cur, const dht_id *lo,
                    const dht_id *hi, dht_store_scan_cb cb, void *ud,
                    bool *stopped) {
  dht_id start;
  MDB_val k;
  MDB_val data;
  int rc;

  if (lo != NULL) {
    /* The bare id sorts before every record with that id, since those keys
     * are longer and share it as a prefix. */
    start = *lo;
    k.mv_size = DHT_ID_LEN;
    k.mv_data = start.b;
    rc = mdb_cursor_get(cur, &k, &data, MDB_SET_RANGE);
  } else {
    rc = mdb_cursor_get(cur, &k, &data, MDB_FIRST);
  }
  while (rc == 0) {
    dht_id id;
    const uint8_t *value;
    size_t value_len;

    if (k.mv_size <= DHT_ID_LEN) {
      set_err(s, "a record has a %zu-byte LMDB key, too short for an id",
              k.mv_size);
      return DHT_ERR_STORE;
    }
    memcpy(id.b, k.mv_data, DHT_ID_LEN);
    if (hi != NULL && dht_id_cmp(&id, hi) > 0) {
      return 0;
    }
    rc = decode_value(s, &data, &value, &value_len);
    if (rc != 0) {
      return rc;
    }
    if (cb(ud, &id, (const uint8_t *)k.mv_data + DHT_ID_LEN,
           k.mv_size - DHT_ID_LEN, value, value_len) != 0) {
      *stopped = true;
      return 0;
    }
    rc = mdb_cursor_get(cur, &k, &data, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) {
    return 0;
  }
  return fail(s, rc, "scan failed");
}

static int lmdb_scan(dht_store *st, const dht_id *from, const dht_id *to,
                     dht_store_scan_cb cb, void *ud) {
  lmdb_store *s = lmdb_of(st);
  MDB_txn *txn;
  MDB_cursor *cur;
  bool stopped = false;
  dht_id lo;
  int rc;

  assert(cb != NULL);
  assert(!s->scanning && "scans do not nest");
  if (s->broken) {
    return broken_err(s);
  }
  rc = read_txn(s, &txn);
  if (rc != 0) {
    return rc;
  }
  rc = mdb_cursor_open(txn, s->dbi, &cur);
  if (rc != 0) {
    return fail(s, rc, "cannot open a cursor");
  }
  s->scanning = true;
  if (dht_id_cmp(from, to) < 0) {
    /* (from, to] without wrapping: [from + 1, to]; from + 1 exists. */
    (void)id_next(&lo, from);
    rc = scan_run(s, cur, &lo, to, cb, ud, &stopped);
  } else {
    /* Wrapping, or from == to (the whole ring): [from + 1, max], then
     * [0, to], so the records at from itself come last. */
    rc = 0;
    if (id_next(&lo, from)) {
      rc = scan_run(s, cur, &lo, NULL, cb, ud, &stopped);
    }
    if (rc == 0 && !stopped) {
      rc = scan_run(s, cur, NULL, to, cb, ud, &stopped);
    }
  }
  s->scanning = false;
  mdb_cursor_close(cur);
  return rc;
}

static size_t lmdb_count(dht_store *st) {
  return lmdb_of(st)->count;
}

static void lmdb_del_store(dht_store *st) {
  lmdb_store *s = lmdb_of(st);

  assert(!s->scanning && "the store must not be closed during a scan");
  if (!s->broken) {
    /* Errors cannot be reported from here: a host that must know calls
     * dht_store_lmdb_commit() (and _sync()) itself before closing. */
    (void)commit_group(s);
    if (s->sync != DHT_SYNC_ALWAYS) {
      (void)mdb_env_sync(s->env, 1);
    }
  }
  if (s->wtxn != NULL) {
    mdb_txn_abort(s->wtxn);
  }
  if (s->rtxn != NULL) {
    mdb_txn_abort(s->rtxn);
  }
  if (s->env != NULL) {
    mdb_env_close(s->env);
  }
  if (s->lock_fd >= 0) {
    /* The pid in the lock file is only a hint for the error message; an
     * empty file says nobody holds it. Closing releases the flock. */
    if (ftruncate(s->lock_fd, 0) != 0) {
      /* harmless: the next holder rewrites it */
    }
    close(s->lock_fd);
  }
  free(s->log.buf);
  free(s->key_buf);
  free(s);
}

static const dht_store_ops lmdb_ops = {
    .get = lmdb_get,
    .put = lmdb_put,
    .del = lmdb_del,
    .scan = lmdb_scan,
    .count = lmdb_count,
    .del_store = lmdb_del_store,
    .errmsg = dht_store_lmdb_errmsg,
};

/* ---- the LMDB-specific API ----------------------------------------------- */

int dht_store_lmdb_commit(dht_store *st) {
  lmdb_store *s = lmdb_of(st);
  int rc;

  assert(!s->scanning && "the store must not be modified during a scan");
  if (s->broken) {
    s->lost = false;
    return broken_err(s);
  }
  rc = commit_group(s);
  if (rc == 0 && s->lost) {
    /* errmsg still says how the earlier writes were lost */
    rc = DHT_ERR_STORE;
  }
  s->lost = false;
  return rc;
}

bool dht_store_lmdb_dirty(dht_store *st) {
  lmdb_store *s = lmdb_of(st);

  /* A loss counts: a host that commits only when dirty must still hear of
   * it from the commit. */
  return s->log.n_ops > 0 || s->lost;
}

int dht_store_lmdb_sync(dht_store *st) {
  lmdb_store *s = lmdb_of(st);
  int rc;

  if (s->broken) {
    return broken_err(s);
  }
  if (s->sync == DHT_SYNC_ALWAYS) {
    return 0;
  }
  rc = mdb_env_sync(s->env, 1);
  if (rc != 0) {
    return fail(s, rc, "sync failed");
  }
  return 0;
}

size_t dht_store_lmdb_key_len_max(dht_store *st) {
  return lmdb_of(st)->key_size_max - DHT_ID_LEN;
}

int dht_store_lmdb_get_size(dht_store *st, dht_store_lmdb_size *out) {
  lmdb_store *s = lmdb_of(st);
  MDB_envinfo info;
  MDB_stat stat;

  if (mdb_env_stat(s->env, &stat) != 0 || mdb_env_info(s->env, &info) != 0) {
    return DHT_ERR_STORE;
  }
  out->data_bytes = (uint64_t)stat.ms_psize *
                    (stat.ms_branch_pages + stat.ms_leaf_pages +
                     stat.ms_overflow_pages);
  out->file_bytes = (uint64_t)stat.ms_psize * (info.me_last_pgno + 1);
  out->map_bytes = info.me_mapsize;
  return 0;
}

const char *dht_store_lmdb_errmsg(dht_store *st) {
  return lmdb_of(st)->errmsg;
}

bool dht_store_lmdb_failed(dht_store *st) { return lmdb_of(st)->broken; }

const char *dht_sync_mode_name(dht_sync_mode mode) {
  switch (mode) {
  case DHT_SYNC_ALWAYS:
    return "always";
  case DHT_SYNC_INTERVAL:
    return "interval";
  case DHT_SYNC_NONE:
    return "none";
  }
  return "?";
}

int dht_sync_mode_parse(dht_sync_mode *out, const char *name) {
  static const dht_sync_mode modes[] = {DHT_SYNC_ALWAYS, DHT_SYNC_INTERVAL,
                                        DHT_SYNC_NONE};
  size_t i;

  for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
    if (strcmp(name, dht_sync_mode_name(modes[i])) == 0) {
      *out = modes[i];
      return 0;
    }
  }
  return DHT_ERR_INVAL;
}

/* ---- opening ------------------------------------------------------------- */

/* Creates dir and its missing parents with mode 0700 (mkdir -p). Returns 0
 * or DHT_ERR_NOMEM, DHT_ERR_STORE with errmsg set. */
static int make_dirs(lmdb_store *s, const char *dir) {
  struct stat sb;
  char *path = strdup(dir);
  char *p;

  if (path == NULL) {
    set_err(s, "out of memory");
    return DHT_ERR_NOMEM;
  }
  /* Every prefix ending before a '/', then the whole path. */
  for (p = path + 1;; p++) {
    char c = *p;
    if (c != '/' && c != '\0') {
      continue;
    }
    *p = '\0';
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
      int err = errno;
      if (c == '\0') {
        /* the data dir itself: the caller prints its name */
        set_err(s, "cannot create the directory: %s", strerror(err));
      } else {
        set_err(s, "cannot create directory %s: %s", path, strerror(err));
      }
      free(path);
      return DHT_ERR_STORE;
    }
    *p = c;
    if (c == '\0') {
      break;
    }
  }
  free(path);
  if (stat(dir, &sb) != 0) {
    set_err(s, "%s", strerror(errno));
    return DHT_ERR_STORE;
  }
  if (!S_ISDIR(sb.st_mode)) {
    set_err(s, "%s", strerror(ENOTDIR));
    return DHT_ERR_STORE;
  }
  return 0;
}

/* Opens dir's lock file and holds an exclusive flock on it, so that a second
 * process (or a second open in this one) fails instead of sharing the
 * environment. Writes this process's pid into it for the other's error
 * message. Returns 0 or DHT_ERR_NOMEM, DHT_ERR_STORE with errmsg set. */
static int take_lock(lmdb_store *s, const char *dir) {
  size_t len = strlen(dir) + sizeof("/" DHT_STORE_LMDB_LOCK_NAME);
  char *path = malloc(len);
  char pid[32];
  int fd;
  int n;

  if (path == NULL) {
    set_err(s, "out of memory");
    return DHT_ERR_NOMEM;
  }
  snprintf(path, len, "%s/%s", dir, DHT_STORE_LMDB_LOCK_NAME);
  fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  free(path);
  if (fd < 0) {
    set_err(s, "cannot open the lock file %s: %s", DHT_STORE_LMDB_LOCK_NAME,
            strerror(errno));
    return DHT_ERR_STORE;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    if (err == EWOULDBLOCK) {
      ssize_t got = pread(fd, pid, sizeof(pid) - 1, 0);
      size_t i = 0;
      while (got > 0 && i < (size_t)got && pid[i] >= '0' && pid[i] <= '9') {
        i++;
      }
      pid[i] = '\0';
      set_err(s,
              "in use by another process (pid %s holds %s); two daemons "
              "cannot share a data directory",
              i > 0 ? pid : "unknown", DHT_STORE_LMDB_LOCK_NAME);
    } else {
      set_err(s, "cannot lock %s: %s", DHT_STORE_LMDB_LOCK_NAME,
              strerror(err));
    }
    close(fd);
    return DHT_ERR_STORE;
  }
  n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
    /* only a hint for someone else's error message: ignore */
  }
  s->lock_fd = fd;
  return 0;
}

/* Opens the environment and the database and reads the count. Returns 0 or
 * the DHT_ERR_* code with errmsg set. */
static int open_env(lmdb_store *s, const char *dir, size_t map_size) {
  unsigned flags = MDB_NOTLS;
  MDB_stat st;
  int key_size;
  int rc;

  /* NOTLS ties the read slot to our read transaction, not to the thread, so
   * it may stay reset while a write transaction runs in the same thread. */
  if (s->sync != DHT_SYNC_ALWAYS) {
    flags |= MDB_NOSYNC;
  }
  rc = mdb_env_create(&s->env);
  if (rc != 0) {
    s->env = NULL;
    return fail(s, rc, "cannot create the LMDB environment");
  }
  rc = mdb_env_set_mapsize(s->env, map_size);
  if (rc == 0) {
    rc = mdb_env_open(s->env, dir, flags, 0600);
  }
  if (rc != 0) {
    return fail(s, rc, "cannot open the LMDB environment");
  }
  key_size = mdb_env_get_maxkeysize(s->env);
  if (key_size <= DHT_ID_LEN) {
    set_err(s, "LMDB's key size limit (%d) is too small", key_size);
    return DHT_ERR_STORE;
  }
  s->key_size_max = (size_t)key_size;
  s->key_buf = malloc(s->key_size_max);
  if (s->key_buf == NULL) {
    set_err(s, "out of memory");
    return DHT_ERR_NOMEM;
  }
  rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
  if (rc != 0) {
    s->rtxn = NULL;
    return fail(s, rc, "cannot begin a read transaction");
  }
  s->rtxn_live = true;
  rc = mdb_dbi_open(s->rtxn, NULL, 0, &s->dbi);
  if (rc == 0) {
    rc = mdb_stat(s->rtxn, s->dbi, &st);
  }
  if (rc != 0) {
    return fail(s, rc, "cannot open the database");
  }
  s->count = st.ms_entries;
  return 0;
}

/* Rounds n up to a multiple of the OS page size, which LMDB wants for the
 * map; 0 on overflow. */
static size_t round_to_page(size_t n) {
  long page = sysconf(_SC_PAGESIZE);
  size_t p = page > 0 ? (size_t)page : 4096;

  if (n > SIZE_MAX - (p - 1)) {
    return 0;
  }
  return (n + p - 1) / p * p;
}

int dht_store_lmdb_open(dht_store **out, const char *dir,
                        const dht_store_lmdb_options *opt) {
  dht_store_lmdb_options o;
  lmdb_store *s;
  size_t map_size;
  size_t map_size_max;
  int rc;

  assert(out != NULL && dir != NULL);
  *out = NULL;
  memset(&o, 0, sizeof(o));
  if (opt != NULL) {
    o = *opt;
  }
  if (o.err != NULL && o.err_len > 0) {
    o.err[0] = '\0';
  }
  s = calloc(1, sizeof(*s));
  if (s == NULL) {
    if (o.err != NULL && o.err_len > 0) {
      snprintf(o.err, o.err_len, "out of memory");
    }
    return DHT_ERR_NOMEM;
  }
  s->base.ops = &lmdb_ops;
  s->lock_fd = -1;
  s->sync = o.sync;
  s->group_bytes_max = o.group_bytes_max != 0
                           ? o.group_bytes_max
                           : DHT_STORE_LMDB_GROUP_BYTES_MAX_DEFAULT;
  s->group_writes_max = o.group_writes_max != 0
                            ? o.group_writes_max
                            : DHT_STORE_LMDB_GROUP_WRITES_MAX_DEFAULT;
  map_size = o.map_size != 0 ? o.map_size : DHT_STORE_LMDB_MAP_SIZE_DEFAULT;
  if (map_size < DHT_STORE_LMDB_MAP_SIZE_MIN) {
    map_size = DHT_STORE_LMDB_MAP_SIZE_MIN;
  }
  map_size = round_to_page(map_size);
  map_size_max = o.map_size_max != 0 ? round_to_page(o.map_size_max) : 0;

  rc = 0;
  if (dir[0] == '\0') {
    set_err(s, "the data directory name is empty");
    rc = DHT_ERR_INVAL;
  } else if (o.sync != DHT_SYNC_ALWAYS && o.sync != DHT_SYNC_INTERVAL &&
             o.sync != DHT_SYNC_NONE) {
    set_err(s, "unknown sync mode %d", (int)o.sync);
    rc = DHT_ERR_INVAL;
  } else if (map_size == 0 ||
             (o.map_size_max != 0 &&
              (map_size_max == 0 || map_size_max < map_size))) {
    set_err(s, "bad map sizes: initial %zu, limit %zu bytes", o.map_size,
            o.map_size_max);
    rc = DHT_ERR_INVAL;
  }
  s->map_size_max = map_size_max;
  if (rc == 0) {
    rc = make_dirs(s, dir);
  }
  if (rc == 0) {
    rc = take_lock(s, dir);
  }
  if (rc == 0) {
    rc = open_env(s, dir, map_size);
  }
  if (rc != 0) {
    if (o.err != NULL && o.err_len > 0) {
      snprintf(o.err, o.err_len, "%s", s->errmsg);
    }
    s->broken = true; /* close without committing or syncing anything */
    lmdb_del_store(&s->base);
    return rc;
  }
  *out = &s->base;
  return 0;
}
