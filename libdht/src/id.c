/*
 * id.c: 160-bit identifiers and ring arithmetic.
 *
 * Ids are big-endian byte arrays, so order is memcmp order. All arithmetic is
 * modulo 2^160 and done bytewise with explicit carries: no wider integer type
 * holds 160 bits, and clarity beats speed here (ids are compared, not summed,
 * on the hot path).
 */
#include <string.h>

#include <sodium.h>

#include "dht/err.h"
#include "dht/id.h"

void dht_id_hash(dht_id *out, const void *data, size_t len) {
  /* crypto_generichash is BLAKE2b; with a 20-byte output it never fails. */
  crypto_generichash(out->b, DHT_ID_LEN, data, len, NULL, 0);
}

int dht_id_cmp(const dht_id *a, const dht_id *b) {
  return memcmp(a->b, b->b, DHT_ID_LEN);
}

bool dht_id_eq(const dht_id *a, const dht_id *b) {
  return memcmp(a->b, b->b, DHT_ID_LEN) == 0;
}

bool dht_id_is_zero(const dht_id *a) {
  static const dht_id zero;
  return dht_id_eq(a, &zero);
}

bool dht_id_in_oo(const dht_id *x, const dht_id *a, const dht_id *b) {
  int ab = dht_id_cmp(a, b);

  if (ab < 0) {
    return dht_id_cmp(a, x) < 0 && dht_id_cmp(x, b) < 0;
  }
  /* The interval wraps past zero (or a == b: everything but a). */
  return dht_id_cmp(a, x) < 0 || dht_id_cmp(x, b) < 0 ||
         (ab == 0 && !dht_id_eq(x, a));
}

bool dht_id_in_oc(const dht_id *x, const dht_id *a, const dht_id *b) {
  int ab = dht_id_cmp(a, b);

  if (ab < 0) {
    return dht_id_cmp(a, x) < 0 && dht_id_cmp(x, b) <= 0;
  }
  if (ab == 0) {
    return true;
  }
  return dht_id_cmp(a, x) < 0 || dht_id_cmp(x, b) <= 0;
}

void dht_id_add_pow2(dht_id *out, const dht_id *a, unsigned i) {
  /* Bit i counts from the least significant end, which is the last byte. */
  int byte = DHT_ID_LEN - 1 - (int)(i / 8);
  unsigned carry = 1u << (i % 8);

  if (out != a) {
    *out = *a;
  }
  for (; byte >= 0 && carry != 0; byte--) {
    unsigned sum = out->b[byte] + carry;
    out->b[byte] = (uint8_t)sum;
    carry = sum >> 8;
  }
}

void dht_id_distance(dht_id *out, const dht_id *a, const dht_id *b) {
  int borrow = 0;
  int i;

  for (i = DHT_ID_LEN - 1; i >= 0; i--) {
    int d = (int)b->b[i] - (int)a->b[i] - borrow;
    borrow = d < 0;
    out->b[i] = (uint8_t)(d + (borrow ? 256 : 0));
  }
}

double dht_id_distance_frac(const dht_id *a, const dht_id *b) {
  dht_id d;

  dht_id_distance(&d, a, b);
  /* Keep the top 53 bits, exactly what a double's mantissa holds, so both the
   * conversion and the division by 2^53 are exact. Truncating rather than
   * rounding keeps the result below 1: summing all 64 top bits rounded a
   * distance just short of the whole ring (1 - 2^-64 and above) up to 1.0. */
  return (double)(dht_id_top64(&d) >> 11) / 9007199254740992.0; /* 2^53 */
}

char *dht_id_hex(const dht_id *id, char out[DHT_ID_HEX_LEN]) {
  static const char digits[] = "0123456789abcdef";
  size_t i;

  for (i = 0; i < DHT_ID_LEN; i++) {
    out[2 * i] = digits[id->b[i] >> 4];
    out[2 * i + 1] = digits[id->b[i] & 0xf];
  }
  out[2 * DHT_ID_LEN] = '\0';
  return out;
}

char *dht_id_short(const dht_id *id, char out[DHT_ID_SHORT_LEN]) {
  char hex[DHT_ID_HEX_LEN];

  dht_id_hex(id, hex);
  memcpy(out, hex, DHT_ID_SHORT_LEN - 1);
  out[DHT_ID_SHORT_LEN - 1] = '\0';
  return out;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

int dht_id_from_hex(dht_id *out, const char *hex, size_t len) {
  dht_id id;
  size_t i;

  if (len != 2 * DHT_ID_LEN) {
    return DHT_ERR_INVAL;
  }
  for (i = 0; i < DHT_ID_LEN; i++) {
    int hi = hex_digit(hex[2 * i]);
    int lo = hex_digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return DHT_ERR_INVAL;
    }
    id.b[i] = (uint8_t)(hi << 4 | lo);
  }
  *out = id;
  return 0;
}

void dht_id_from_u64(dht_id *out, uint64_t v) {
  int i;

  memset(out->b, 0, DHT_ID_LEN);
  for (i = DHT_ID_LEN - 1; i >= DHT_ID_LEN - 8; i--) {
    out->b[i] = (uint8_t)v;
    v >>= 8;
  }
}

uint64_t dht_id_top64(const dht_id *id) {
  uint64_t v = 0;
  int i;

  for (i = 0; i < 8; i++) {
    v = v << 8 | id->b[i];
  }
  return v;
}
