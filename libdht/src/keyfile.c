/*
 * keyfile.c: reading and writing cluster key files (dht/seal.h), the one
 * part of the closed ring that touches the file system. A key file is one
 * line of text (dht_ring_key_parse); it must be readable by its owner only,
 * as ssh insists for private keys, because a key another user could read
 * is a key that may have leaked.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "dht/err.h"
#include "dht/seal.h"

int dht_ring_key_load(dht_ring_key *key, const char *path, char *err,
                      size_t err_len) {
  char text[DHT_KEY_FILE_LEN_MAX + 1];
  struct stat st;
  ssize_t n;
  size_t len = 0;
  int fd, rv;

  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, err_len, "cannot open key file %s: %s", path,
             strerror(errno));
    return DHT_ERR_INVAL;
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, err_len, "key file %s is not a regular file", path);
    close(fd);
    return DHT_ERR_INVAL;
  }
  if ((st.st_mode & 077) != 0) {
    snprintf(err, err_len,
             "key file %s may be read or written by others (mode %03o): "
             "chmod 600 it, and make a new key if it may have leaked",
             path, (unsigned)(st.st_mode & 0777));
    close(fd);
    return DHT_ERR_INVAL;
  }
  while (len < sizeof(text)) {
    n = read(fd, text + len, sizeof(text) - len);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      snprintf(err, err_len, "cannot read key file %s: %s", path,
               strerror(errno));
      close(fd);
      sodium_memzero(text, sizeof(text));
      return DHT_ERR_INVAL;
    }
    if (n == 0) {
      break;
    }
    len += (size_t)n;
  }
  close(fd);
  rv = len < sizeof(text) ? dht_ring_key_parse(key, text, len)
                          : DHT_ERR_MALFORMED;
  sodium_memzero(text, sizeof(text));
  if (rv != 0) {
    snprintf(err, err_len,
             "key file %s is not a cluster key (want one line "
             "\"chord-dht-key 1 member|client <64 hex digits>\"; "
             "dht keygen writes one)",
             path);
  }
  return rv;
}

int dht_ring_key_save(const dht_ring_key *key, bool as_client, const char *path,
                      char *err, size_t err_len) {
  char text[DHT_KEY_FILE_LEN_MAX];
  size_t off = 0;
  ssize_t n;
  int fd, len;

  len = dht_ring_key_format(key, as_client, text, sizeof(text));
  if (len < 0) {
    snprintf(err, err_len, "no key to write");
    return DHT_ERR_INVAL;
  }
  /* O_EXCL: never replace a key (it may be the only copy of a ring's). */
  fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(err, err_len, "cannot create key file %s: %s%s", path,
             strerror(errno),
             errno == EEXIST ? " (a key file is never overwritten)" : "");
    sodium_memzero(text, sizeof(text));
    return DHT_ERR_INVAL;
  }
  /* The umask may have been stricter, never looser: make it exactly 0600. */
  (void)fchmod(fd, 0600);
  while (off < (size_t)len) {
    n = write(fd, text + off, (size_t)len - off);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    off += (size_t)n;
  }
  sodium_memzero(text, sizeof(text));
  if (off != (size_t)len || fsync(fd) != 0) {
    snprintf(err, err_len, "cannot write key file %s: %s", path,
             strerror(errno));
    close(fd);
    unlink(path);
    return DHT_ERR_INVAL;
  }
  if (close(fd) != 0) {
    snprintf(err, err_len, "cannot write key file %s: %s", path,
             strerror(errno));
    unlink(path);
    return DHT_ERR_INVAL;
  }
  return 0;
}
