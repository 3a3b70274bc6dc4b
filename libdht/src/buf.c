/* buf.c: the growable byte buffer the encoder and the node's outbox use. */
#include <stdlib.h>
#include <string.h>

#include "dht/err.h"
#include "dht/wire.h"

void dht_buf_init(dht_buf *buf) {
  buf->data = NULL;
  buf->len = 0;
  buf->cap = 0;
}

void dht_buf_free(dht_buf *buf) {
  free(buf->data);
  dht_buf_init(buf);
}

int dht_buf_reserve(dht_buf *buf, size_t extra) {
  size_t need, cap;
  uint8_t *data;

  if (extra > SIZE_MAX - buf->len) {
    return DHT_ERR_NOMEM;
  }
  need = buf->len + extra;
  if (need <= buf->cap) {
    return 0;
  }
  cap = buf->cap ? buf->cap : 256;
  while (cap < need) {
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  }
  data = realloc(buf->data, cap);
  if (data == NULL) {
    return DHT_ERR_NOMEM;
  }
  buf->data = data;
  buf->cap = cap;
  return 0;
}

int dht_buf_append(dht_buf *buf, const void *data, size_t len) {
  int rv;

  if (len == 0) {
    return 0;
  }
  rv = dht_buf_reserve(buf, len);
  if (rv != 0) {
    return rv;
  }
  memcpy(buf->data + buf->len, data, len);
  buf->len += len;
  return 0;
}
