/*
 * dht/store_lmdb.h: the LMDB backend of dht_store, the daemon's on-disk
 * store.
 *
 * One LMDB environment per data directory holds one node's records, ordered
 * by (key id, key bytes) like every store, so a ring interval is a range
 * scan. The on-disk format and the exact promise of each sync mode are in
 * docs/STORAGE.md.
 *
 * Writes are grouped: the first put or delete opens a write transaction,
 * later ones join it, and dht_store_lmdb_commit() commits them together.
 * The daemon commits once per event-loop iteration, before it sends the
 * replies that acknowledge those writes, so one fsync covers every write that
 * arrived together. Reads see the writes not yet committed.
 *
 * Besides the codes store.h lists, put on this store also returns
 * DHT_ERR_TOO_LARGE (key longer than dht_store_lmdb_key_len_max(), value of
 * 4 GiB or more) and DHT_ERR_FULL (one commit group grew too large for
 * LMDB); get and scan return DHT_ERR_STORE for a record in a format this
 * code does not know.
 * After a fatal disk error (EIO, a corrupt page) every call fails with
 * DHT_ERR_STORE until the store is closed: the node should stop and be
 * rebuilt from its replicas.
 *
 * The functions below take a store made by dht_store_lmdb_open(); passing
 * any other store is a programmer error that asserts.
 */
#ifndef DHT_STORE_LMDB_H
#define DHT_STORE_LMDB_H

#include <stdbool.h>
#include <stddef.h>

#include "dht/store.h"

/* The map (the largest the database may grow before it is remapped) when
 * the options say 0: 1 GiB. */
#define DHT_STORE_LMDB_MAP_SIZE_DEFAULT ((size_t)1 << 30)
/* The smallest map accepted; smaller requests are raised to it. */
#define DHT_STORE_LMDB_MAP_SIZE_MIN ((size_t)64 << 10)
/* Pending writes (keys and values, in bytes) above which a write commits
 * the group early, when the options say 0: 64 MiB. This bounds the memory
 * the group's redo log (see store_lmdb.c) may take. */
#define DHT_STORE_LMDB_GROUP_BYTES_MAX_DEFAULT ((size_t)64 << 20)
/* Writes in one group above which a write commits the group early, when the
 * options say 0. LMDB keeps the pages the largest group dirtied allocated
 * until the store closes (see store_lmdb.c), about one 4 KiB page per write
 * of a random key and a share of the branch pages above: this bounds that
 * memory to a few MiB. */
#define DHT_STORE_LMDB_GROUP_WRITES_MAX_DEFAULT ((size_t)1024)
/* The lock file, inside the data directory, that one process at a time
 * holds (flock) while the store is open. */
#define DHT_STORE_LMDB_LOCK_NAME "dhtd.lock"

/* What a successful commit promises (docs/STORAGE.md says it in full). The
 * zero value is the safe one, so zeroed options are durable. */
typedef enum dht_sync_mode {
  /* Each commit is on stable storage before it returns: an acknowledged
   * write survives a process crash, an OS crash and a power loss. */
  DHT_SYNC_ALWAYS = 0,
  /* Commits reach the OS page cache only; dht_store_lmdb_sync(), called by
   * the host every N ms, flushes them. A process crash loses nothing; an OS
   * crash or power loss loses up to N ms of commits and may corrupt the
   * environment (see docs/STORAGE.md). */
  DHT_SYNC_INTERVAL = 1,
  /* Commits reach the OS page cache only and are flushed when the OS
   * decides (and on a clean close). A process crash loses nothing; an OS
   * crash or power loss may lose any amount and corrupt the environment. */
  DHT_SYNC_NONE = 2,
} dht_sync_mode;

/* Settings for dht_store_lmdb_open(). Zero-initialize, then set what you
 * need: every 0 means the default. */
typedef struct dht_store_lmdb_options {
  size_t map_size;        /* initial map size in bytes; 0: 1 GiB */
  size_t map_size_max;    /* the map doubles up to this when full; 0: no limit */
  size_t group_bytes_max; /* pending key+value bytes forcing an early commit;
                             0: 64 MiB */
  size_t group_writes_max; /* pending writes forcing an early commit; 0: 1024 */
  dht_sync_mode sync;     /* durability of a commit; 0 is DHT_SYNC_ALWAYS */
  char *err;              /* if not NULL, open writes why it failed here
                             (NUL-terminated, truncated to err_len) */
  size_t err_len;         /* bytes available at err */
} dht_store_lmdb_options;

/* Opens (creating it and its missing parents, mode 0700, if needed) the data
 * directory dir, takes its lock file and opens the LMDB environment in it.
 * opt may be NULL for all defaults; it is copied. On failure *out is NULL
 * and opt->err says why, without repeating dir, e.g. "in use by another
 * process (pid 1234 holds dhtd.lock); two daemons cannot share a data
 * directory". Returns 0, DHT_ERR_INVAL (bad options), DHT_ERR_NOMEM,
 * DHT_ERR_STORE (directory, lock or LMDB failure). */
int dht_store_lmdb_open(dht_store **out, const char *dir,
                        const dht_store_lmdb_options *opt);

/* Commits the pending group of writes (a no-op returning 0 when there is
 * none), fsynced before returning when the mode is DHT_SYNC_ALWAYS. A 0
 * means every write that returned 0 since the previous commit call is
 * committed; an error means none of them can be trusted (some may have been
 * applied): reply with an error to every one. Grows the map when it is full.
 * Returns 0, DHT_ERR_DISK_FULL (map_size_max reached, or the file system
 * is full), DHT_ERR_NOMEM, DHT_ERR_STORE. */
int dht_store_lmdb_commit(dht_store *st);

/* True when writes are waiting for dht_store_lmdb_commit(), or when that
 * commit must report that pending writes were lost. A host may skip the
 * commit call while this is false; it is a cheap no-op then anyway. */
bool dht_store_lmdb_dirty(dht_store *st);

/* Flushes committed data to stable storage (fdatasync); pending writes are
 * not committed by it. A no-op in DHT_SYNC_ALWAYS, where commits are already
 * flushed. Returns 0 or DHT_ERR_STORE. */
int dht_store_lmdb_sync(dht_store *st);

/* The longest key (in bytes, not counting the 20-byte id) that put accepts:
 * LMDB's maximum key size less DHT_ID_LEN, 491 with a stock LMDB. Longer
 * keys get DHT_ERR_TOO_LARGE from put and DHT_ERR_NOT_FOUND from get and
 * del. */
size_t dht_store_lmdb_key_len_max(dht_store *st);

/* Why the last call on st that failed did so ("" if none has), valid until
 * the next call on st. For logs; also the store's errmsg op. */
const char *dht_store_lmdb_errmsg(dht_store *st);
/* True once the store met an error after which it cannot be trusted (EIO,
 * corruption): every later call fails, and it must be reopened. */
bool dht_store_lmdb_failed(dht_store *st);

/* How much room the environment takes, from LMDB's own bookkeeping (its
 * meta page: no scan, no transaction), as of the last commit. */
typedef struct dht_store_lmdb_size {
  uint64_t data_bytes; /* pages of the records' tree (branch, leaf and
                          overflow pages) */
  uint64_t file_bytes; /* pages the data file uses, free ones included */
  uint64_t map_bytes;  /* the map: how large the file may grow before the
                          map must */
} dht_store_lmdb_size;
/* Fills *out. Returns 0 or DHT_ERR_STORE. */
int dht_store_lmdb_get_size(dht_store *st, dht_store_lmdb_size *out);

/* "always", "interval" or "none" ("?" for anything else). */
const char *dht_sync_mode_name(dht_sync_mode mode);
/* Parses a name from dht_sync_mode_name(). Returns 0 or DHT_ERR_INVAL. */
int dht_sync_mode_parse(dht_sync_mode *out, const char *name);

#endif /* DHT_STORE_LMDB_H */
