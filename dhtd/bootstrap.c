/*
 * bootstrap.c: the join candidates of a dhtd (bootstrap.h): --join entries
 * resolved with getaddrinfo, and DIR/peers read at start and rewritten
 * while the node is in a ring.
 *
 * DIR/peers is a text file an operator may read (and remove, to start a new
 * ring from the node's keys): a comment line, then one address per line.
 * Reading it never stops dhtd from starting: at most PEERS_READ_MAX bytes
 * are read, and a line that is not an address is skipped and counted.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bootstrap.h"
#include "dht/client.h"
#include "log.h"

/* Bytes of DIR/peers read at most: DHTD_PEERS_MAX lines of the longest
 * address fit eight times over. */
#define PEERS_READ_MAX (64 * 1024)
/* A path in the data directory. */
#define PEERS_PATH_MAX 4096

/* ---- the list ------------------------------------------------------------------ */

/* Appends addr unless it is there already; a full list drops it (said
 * once). Returns whether it was added. */
static bool list_add(dhtd_join_list *l, const char *addr) {
  size_t i;

  for (i = 0; i < l->n; i++) {
    if (strcmp(l->addrs[i], addr) == 0) {
      return false;
    }
  }
  if (l->n == DHT_JOIN_LIST_MAX) {
    if (l->n_dropped++ == 0) {
      dhtd_log(DHT_LOG_WARN,
               "more than %d join candidates: %s and the ones after it are "
               "left out",
               DHT_JOIN_LIST_MAX, addr);
    }
    return false;
  }
  snprintf(l->addrs[l->n], sizeof(l->addrs[l->n]), "%s", addr);
  l->ptrs[l->n] = l->addrs[l->n];
  l->n++;
  return true;
}

/* ---- --join ---------------------------------------------------------------------- */

/* Copies the entry of a comma-separated list that starts at p into out and
 * returns where the next one starts (NULL after the last). An entry too
 * long for out is cut, and *too_long set. */
static const char *next_entry(const char *p, char *out, size_t out_len,
                              bool *too_long) {
  const char *comma = strchr(p, ',');
  size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);

  *too_long = len >= out_len;
  if (*too_long) {
    len = out_len - 1;
  }
  memcpy(out, p, len);
  out[len] = '\0';
  return comma != NULL ? comma + 1 : NULL;
}

int dhtd_join_check(const char *list, char *err, size_t err_len) {
  char entry[DHT_ADDR_LEN_MAX + 1], host[DHT_ADDR_LEN_MAX + 1];
  const char *p = list;
  uint16_t port;
  bool too_long;

  do {
    p = next_entry(p, entry, sizeof(entry), &too_long);
    if (too_long || dht_addr_parse(entry, host, sizeof(host), &port) != 0) {
      snprintf(err, err_len, "bad --join address '%s%s' (want HOST:PORT)",
               entry, too_long ? "..." : "");
      return -1;
    }
  } while (p != NULL);
  return 0;
}

/* Appends every address of ai as "ip:port" or "[ip]:port". */
static void add_resolved(dhtd_join_list *l, const struct addrinfo *ai,
                         uint16_t port) {
  char ip[INET6_ADDRSTRLEN], addr[DHT_ADDR_LEN_MAX + 1];

  for (; ai != NULL; ai = ai->ai_next) {
    const void *raw =
        ai->ai_family == AF_INET
            ? (const void *)&((const struct sockaddr_in *)ai->ai_addr)->sin_addr
            : (const void *)&((const struct sockaddr_in6 *)ai->ai_addr)
                  ->sin6_addr;
    if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
        inet_ntop(ai->ai_family, raw, ip, sizeof(ip)) == NULL) {
      continue;
    }
    snprintf(addr, sizeof(addr), ai->ai_family == AF_INET ? "%s:%u" : "[%s]:%u",
             ip, port);
    list_add(l, addr);
  }
}

size_t dhtd_join_resolve(dhtd_join_list *l, const char *list, char *err,
                         size_t err_len) {
  char entry[DHT_ADDR_LEN_MAX + 1], host[DHT_ADDR_LEN_MAX + 1], port_str[8];
  const char *p = list;
  size_t resolved = 0;
  bool too_long;

  err[0] = '\0';
  do {
    struct addrinfo hints, *res = NULL;
    uint16_t port;
    int rv;

    p = next_entry(p, entry, sizeof(entry), &too_long);
    if (dht_addr_parse(entry, host, sizeof(host), &port) != 0) {
      continue; /* dhtd_join_check refused it already */
    }
    /* Every address, also of a family this host may not route
     * (no AI_ADDRCONFIG): one that cannot be reached fails at once, and
     * the next is tried. */
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(port_str, sizeof(port_str), "%u", port);
    rv = getaddrinfo(host, port_str, &hints, &res);
    if (rv != 0) {
      dhtd_log(DHT_LOG_WARN, "--join %s: cannot resolve it (%s): skipped",
               entry, gai_strerror(rv));
      if (err[0] == '\0') {
        snprintf(err, err_len, "%s: %s", entry, gai_strerror(rv));
      }
      continue;
    }
    add_resolved(l, res, port);
    freeaddrinfo(res);
    resolved++;
  } while (p != NULL);
  return resolved;
}

/* ---- DIR/peers ------------------------------------------------------------------- */

/* DIR/name into buf; false (logged) when it does not fit. */
static bool peers_path(const char *data_dir, const char *name, char *buf,
                       size_t len) {
  if ((size_t)snprintf(buf, len, "%s/%s", data_dir, name) >= len) {
    dhtd_log(DHT_LOG_WARN, "data dir path too long for its peers file");
    return false;
  }
  return true;
}

/* Whether the len bytes at line are one address. */
static bool is_addr_line(const char *line, size_t len) {
  char addr[DHT_ADDR_LEN_MAX + 1], host[DHT_ADDR_LEN_MAX + 1];
  uint16_t port;

  if (len == 0 || len > DHT_ADDR_LEN_MAX || memchr(line, '\0', len) != NULL) {
    return false;
  }
  memcpy(addr, line, len);
  addr[len] = '\0';
  return dht_addr_parse(addr, host, sizeof(host), &port) == 0;
}

size_t dhtd_peers_load(dhtd_join_list *l, const char *data_dir,
                       const char *self) {
  char path[PEERS_PATH_MAX];
  size_t len, added = 0, bad = 0, off = 0;
  char *buf;
  FILE *f;

  if (!peers_path(data_dir, "peers", path, sizeof(path))) {
    return 0;
  }
  f = fopen(path, "rb");
  if (f == NULL) {
    if (errno != ENOENT) {
      dhtd_log(DHT_LOG_WARN, "cannot read %s: %s", path, strerror(errno));
    }
    return 0;
  }
  buf = malloc(PEERS_READ_MAX + 1);
  len = buf != NULL ? fread(buf, 1, PEERS_READ_MAX + 1, f) : 0;
  fclose(f);
  if (len > PEERS_READ_MAX) {
    dhtd_log(DHT_LOG_WARN, "%s: only its first %d bytes are read", path,
             PEERS_READ_MAX);
    len = PEERS_READ_MAX;
  }
  while (off < len) {
    const char *line = buf + off, *nl = memchr(line, '\n', len - off);
    size_t line_len = nl != NULL ? (size_t)(nl - line) : len - off;
    off += line_len + 1;
    if (line_len == 0 || line[0] == '#') {
      continue;
    }
    if (!is_addr_line(line, line_len)) {
      bad++;
      continue;
    }
    buf[off - 1] = '\0'; /* ends the line in place (buf has room) */
    if (strcmp(line, self) != 0) {
      added += list_add(l, line);
    }
  }
  if (bad > 0) {
    dhtd_log(DHT_LOG_WARN,
             "%s: %zu lines skipped (not HOST:PORT, or longer than %d bytes)",
             path, bad, DHT_ADDR_LEN_MAX);
  }
  free(buf);
  return added;
}

void dhtd_peers_init(dhtd_peers_file *f, const char *data_dir) {
  memset(f, 0, sizeof(*f));
  f->data_dir = data_dir;
}

/* Appends addr to list (n entries so far) unless it is there already or
 * DHTD_PEERS_MAX are. */
static void peer_add(const char *list[DHTD_PEERS_MAX], size_t *n,
                     const char *addr) {
  size_t i;

  for (i = 0; i < *n; i++) {
    if (strcmp(list[i], addr) == 0) {
      return;
    }
  }
  if (*n < DHTD_PEERS_MAX) {
    list[(*n)++] = addr;
  }
}

/* Writes text to path through tmp_path. Returns 0 or an errno value. */
static int write_atomically(const char *path, const char *tmp_path,
                            const char *head, const char *text) {
  /* 0600 like the store's files (docs/STORAGE.md): the file names the
   * ring's members, and O_CREAT's mode is only a ceiling under the umask. */
  int fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC, 0600), err = 0;
  size_t hlen = strlen(head), tlen = strlen(text);

  if (fd < 0) {
    return errno;
  }
  if (write(fd, head, hlen) != (ssize_t)hlen ||
      write(fd, text, tlen) != (ssize_t)tlen || fsync(fd) != 0) {
    err = errno != 0 ? errno : EIO;
  }
  if (close(fd) != 0 && err == 0) {
    err = errno;
  }
  if (err == 0 && rename(tmp_path, path) != 0) {
    err = errno;
  }
  if (err != 0) {
    unlink(tmp_path);
  }
  return err;
}

void dhtd_peers_save(dhtd_peers_file *f, const dht_node *node) {
  char text[sizeof(f->last)], head[DHT_ADDR_LEN_MAX + 160];
  char path[PEERS_PATH_MAX], tmp_path[PEERS_PATH_MAX];
  const char *addrs[DHT_SUCC_LIST_MAX], *list[DHTD_PEERS_MAX], *addr;
  size_t n = 0, used = 0, k, i;
  int err;

  if (dht_node_get_state(node) != DHT_NODE_JOINED) {
    return;
  }
  k = dht_node_succs(node, NULL, addrs, DHT_SUCC_LIST_MAX);
  for (i = 0; i < k && i < DHT_SUCC_LIST_MAX; i++) {
    peer_add(list, &n, addrs[i]);
  }
  k = dht_node_preds(node, NULL, addrs, DHT_SUCC_LIST_MAX);
  for (i = 0; i < k && i < DHT_SUCC_LIST_MAX; i++) {
    peer_add(list, &n, addrs[i]);
  }
  /* The far fingers first: they spread the list round the ring. */
  for (i = DHT_ID_BITS; i-- > 0;) {
    if (dht_node_finger(node, (unsigned)i, NULL, &addr)) {
      peer_add(list, &n, addr);
    }
  }
  text[0] = '\0';
  for (i = 0; i < n; i++) {
    used += (size_t)snprintf(text + used, sizeof(text) - used, "%s\n", list[i]);
  }
  if (n == 0 || strcmp(text, f->last) == 0 ||
      !peers_path(f->data_dir, "peers", path, sizeof(path)) ||
      !peers_path(f->data_dir, "peers.tmp", tmp_path, sizeof(tmp_path))) {
    return;
  }
  snprintf(head, sizeof(head),
           "# Peers of the dhtd at %s, which it re-joins through when it "
           "starts. Remove this file to start a new ring instead.\n",
           dht_node_addr(node));
  err = write_atomically(path, tmp_path, head, text);
  if (err != 0) {
    if (!f->failing) {
      dhtd_log(DHT_LOG_WARN, "cannot write %s: %s (will try again)", path,
               strerror(err));
    }
    f->failing = true;
    return;
  }
  f->failing = false;
  memcpy(f->last, text, used + 1);
}
