/*
 * id.c: 160-bit identifiers and ring arithmetic.
 *
 * Ids are big-endian byte arrays, so order is memcmp order. All arithmetic is
 * modulo 2^160 and done bytewise with explicit carries: no wider integer type
 * holds 160 bits, and clarity beats speed here (ids are compared, not summed,
 * on the hot path). Comparisons are on the hot path (a route decision makes
 * hundreds), so they read an id as two big-endian 64-bit words and a 32-bit
 * one: the same order as memcmp, without a library call per comparison.
 */
#include <string.h>

#include <sodium.h>

#include "dht/err.h"
#include "dht/id.h"

void dht_id_hash(dht_id *out, const void *data, size_t len) {
  /* crypto_generichash is BLAKE2b; with a 20-byte output it never fails. */
  crypto_generichash(out->b, DHT_ID_LEN, data, len, NULL, 0);
}

/* The big-endian word of id at byte off: memcpy keeps it free of alignment
 * and aliasing assumptions, and compiles to one load and a byte swap. */
static inline uint64_t word64(const dht_id *id, size_t off) {
  uint64_t v;

  memcpy(&v, id->b + off, sizeof(v));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

static inline uint32_t word32(const dht_id *id, size_t off) {
  uint32_t v;

  memcpy(&v, id->b + off, sizeof(v));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  v = __builtin_bswap32(v);
#endif
  return v;
}

_Static_assert(DHT_ID_LEN == 8 + 8 + 4, "id_cmp reads 8 + 8 + 4 bytes");

/* Returns -1, 0 or 1, in memcmp order. */
static inline int id_cmp(const dht_id *a, const dht_id *b) {
  uint64_t x = word64(a, 0), y = word64(b, 0);
  uint32_t u, v;

  if (x != y) {
    return x < y ? -1 : 1;
  }
  x = word64(a, 8);
  y = word64(b, 8);
  if (x != y) {
    return x < y ? -1 : 1;
  }
  u = word32(a, 16);
  v = word32(b, 16);
  return (u > v) - (u < v);
}

static inline bool id_eq(const dht_id *a, const dht_id *b) {
  uint64_t a0, a1, b0, b1;
  uint32_t a2, b2;

  memcpy(&a0, a->b, 8);
  memcpy(&b0, b->b, 8);
  memcpy(&a1, a->b + 8, 8);
  memcpy(&b1, b->b + 8, 8);
  memcpy(&a2, a->b + 16, 4);
  memcpy(&b2, b->b + 16, 4);
  return ((a0 ^ b0) | (a1 ^ b1) | (uint64_t)(a2 ^ b2)) == 0;
}

int dht_id_cmp(const dht_id *a, const dht_id *b) { return id_cmp(a, b); }

bool dht_id_eq(const dht_id *a, const dht_id *b) { return id_eq(a, b); }

bool dht_id_is_zero(const dht_id *a) {
  static const dht_id zero;
  return id_eq(a, &zero);
}

bool dht_id_in_oo(const dht_id *x, const dht_id *a, const dht_id *b) {
  int ab = id_cmp(a, b);

  if (ab < 0) {
    return id_cmp(a, x) < 0 && id_cmp(x, b) < 0;
  }
  /* The interval wraps past zero (or a == b: everything but a). */
  return id_cmp(a, x) < 0 || id_cmp(x, b) < 0 ||
         (ab == 0 && !id_eq(x, a));
}

bool dht_id_in_oc(const dht_id *x, const dht_id *a, const dht_id *b) {
  int ab = id_cmp(a, b);

  if (ab < 0) {
    return id_cmp(a, x) < 0 && id_cmp(x, b) <= 0;
  }
  if (ab == 0) {
    return true;
  }
  return id_cmp(a, x) < 0 || id_cmp(x, b) <= 0;
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

static inline void put64(dht_id *id, size_t off, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  memcpy(id->b + off, &v, sizeof(v));
}

static inline void put32(dht_id *id, size_t off, uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  v = __builtin_bswap32(v);
#endif
  memcpy(id->b + off, &v, sizeof(v));
}

void dht_id_distance(dht_id *out, const dht_id *a, const dht_id *b) {
  /* b - a word by word from the least significant end, borrowing as a
   * schoolbook subtraction does; out may alias a or b. */
  uint32_t a2 = word32(a, 16), b2 = word32(b, 16);
  uint64_t a1 = word64(a, 8), b1 = word64(b, 8);
  uint64_t a0 = word64(a, 0), b0 = word64(b, 0);
  uint64_t borrow = b2 < a2, d1;

  put32(out, 16, b2 - a2);
  d1 = b1 - a1 - borrow;
  borrow = b1 < a1 || (b1 == a1 && borrow);
  put64(out, 8, d1);
  put64(out, 0, b0 - a0 - borrow);
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

uint64_t dht_id_top64(const dht_id *id) { return word64(id, 0); }
