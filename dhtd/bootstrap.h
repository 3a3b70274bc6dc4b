/*
 * bootstrap.h: where dhtd finds the ring it joins, which the sans-IO core
 * cannot look for itself (it resolves no names and reads no files).
 *
 * The join candidates are the --join entries, each host name resolved once,
 * at start, to every address it has, in the resolver's order, and after them
 * the peers the node remembers in its data directory: DIR/peers, one
 * address per line, which dhtd rewrites while the node is in a ring. The
 * core (dht_node_join_list) tries them in that order. So a node restarted on
 * its data directory re-joins the ring it was in, through whichever of its
 * last neighbours is up, even when its --join node is gone.
 */
#ifndef DHTD_BOOTSTRAP_H
#define DHTD_BOOTSTRAP_H

#include <stdbool.h>
#include <stddef.h>

#include "dht/node.h"

/* Addresses DIR/peers keeps: successors, predecessors, then fingers. */
#define DHTD_PEERS_MAX 32

/* Join candidates in the order they are tried, each once. */
typedef struct dhtd_join_list {
  char addrs[DHT_JOIN_LIST_MAX][DHT_ADDR_LEN_MAX + 1]; /* "host:port" */
  const char *ptrs[DHT_JOIN_LIST_MAX]; /* ptrs[i] is addrs[i], as
                                          dht_node_join_list takes them */
  size_t n;         /* entries in use */
  size_t n_dropped; /* candidates left out: the list was full */
} dhtd_join_list;

/* Checks that every comma-separated entry of a --join list is HOST:PORT.
 * Returns 0, or -1 with the first bad entry's reason in err. */
int dhtd_join_check(const char *list, char *err, size_t err_len);

/* Appends to l every address each entry of list (a checked --join list)
 * resolves to, as "a.b.c.d:port" or "[v6]:port"; an entry that does not
 * resolve is skipped with one log line. Returns how many entries resolved;
 * when none did, err holds the first one's failure. */
size_t dhtd_join_resolve(dhtd_join_list *l, const char *list, char *err,
                         size_t err_len);

/* Appends to l the addresses remembered in data_dir/peers (none when there
 * is no such file), but self, the node's own address. Lines that are not
 * HOST:PORT, or are longer than an address may be, are skipped, counted and
 * logged in one line; a file that cannot be read is logged and taken as
 * empty. Returns how many addresses were added. */
size_t dhtd_peers_load(dhtd_join_list *l, const char *data_dir,
                       const char *self);

/* DIR/peers as dhtd keeps it. */
typedef struct dhtd_peers_file {
  const char *data_dir; /* borrowed: the node's --data-dir */
  char last[DHTD_PEERS_MAX * (DHT_ADDR_LEN_MAX + 1) + 1]; /* the addresses
                                    last written, one per line */
  bool failing;         /* the last write failed (logged once until one
                           succeeds) */
} dhtd_peers_file;

void dhtd_peers_init(dhtd_peers_file *f, const char *data_dir);

/* Writes the peers of node, a JOINED one, to DIR/peers when they differ from
 * what was last written: its successors, predecessors and fingers, each
 * once, DHTD_PEERS_MAX at most, through a temporary file renamed over the
 * old one. A node that knows no peer (alone, or not in a ring) leaves the
 * file as it is: it is where a cut-off node finds its ring again after a
 * restart. A failed write is logged, never fatal. */
void dhtd_peers_save(dhtd_peers_file *f, const dht_node *node);

#endif /* DHTD_BOOTSTRAP_H */
