/*
 * mp_check.c: a bounds pre-scan of a msgpack buffer (see mp_check.h for why).
 *
 * The walk is iterative with a fixed stack of per-level "elements still owed"
 * counters, so neither a deep nor a long buffer can exhaust the C stack. It
 * also keeps the sum of what all open containers still owe: every owed
 * element needs at least one byte, so that sum must never exceed the bytes
 * left. Checking each new count or length against the bytes left *after*
 * that sum rejects nested lies early (an array of 1000 arrays each claiming
 * 1000 elements in a 2 KB buffer fails at the second inner header, not after
 * walking a million missing elements), and the invariant makes the
 * subtraction below underflow-free.
 */
#include "mp_check.h"

#include "dht/err.h"

/* What a header byte announces. */
enum mp_kind {
  MP_SCALAR,   /* `fixed` payload bytes follow the header byte */
  MP_RAW,      /* a `len_size`-byte length, then `extra` + length bytes */
  MP_ARRAY,    /* `count` elements, or a `len_size`-byte count */
  MP_MAP,      /* `count` entries (2 elements each), or a `len_size` count */
  MP_RESERVED, /* 0xc1: never used by msgpack */
};

typedef struct mp_head {
  enum mp_kind kind;
  unsigned fixed;    /* MP_SCALAR: payload bytes */
  unsigned len_size; /* MP_RAW/ARRAY/MAP: bytes of the big-endian length */
  unsigned extra;    /* MP_RAW: bytes before the data (ext's type byte) */
  uint32_t count;    /* fixstr length, fixarray/fixmap count when len_size 0 */
} mp_head;

/* Classifies header byte b per the msgpack spec. */
static mp_head classify(uint8_t b) {
  mp_head h = {MP_SCALAR, 0, 0, 0, 0};

  if (b <= 0x7f || b >= 0xe0) { /* positive / negative fixint */
    return h;
  }
  if (b <= 0x8f) {
    h.kind = MP_MAP;
    h.count = b & 0x0fu;
    return h;
  }
  if (b <= 0x9f) {
    h.kind = MP_ARRAY;
    h.count = b & 0x0fu;
    return h;
  }
  if (b <= 0xbf) { /* fixstr: the length is in the header byte */
    h.kind = MP_RAW;
    h.count = b & 0x1fu;
    return h;
  }
  switch (b) {
  case 0xc0: /* nil */
  case 0xc2: /* false */
  case 0xc3: /* true */
    return h;
  case 0xc1:
    h.kind = MP_RESERVED;
    return h;
  case 0xc4: /* bin 8/16/32 */
  case 0xd9: /* str 8 */
    h.kind = MP_RAW;
    h.len_size = 1;
    return h;
  case 0xc5:
  case 0xda:
    h.kind = MP_RAW;
    h.len_size = 2;
    return h;
  case 0xc6:
  case 0xdb:
    h.kind = MP_RAW;
    h.len_size = 4;
    return h;
  case 0xc7: /* ext 8/16/32: length, then a type byte, then the data */
  case 0xc8:
  case 0xc9:
    h.kind = MP_RAW;
    h.len_size = b == 0xc7 ? 1 : b == 0xc8 ? 2 : 4;
    h.extra = 1;
    return h;
  case 0xca: /* float 32 */
  case 0xce: /* uint 32 */
  case 0xd2: /* int 32 */
    h.fixed = 4;
    return h;
  case 0xcb: /* float 64 */
  case 0xcf: /* uint 64 */
  case 0xd3: /* int 64 */
    h.fixed = 8;
    return h;
  case 0xcc: /* uint 8 */
  case 0xd0: /* int 8 */
    h.fixed = 1;
    return h;
  case 0xcd: /* uint 16 */
  case 0xd1: /* int 16 */
    h.fixed = 2;
    return h;
  case 0xd4: /* fixext 1/2/4/8/16: a type byte, then 2^k data bytes */
  case 0xd5:
  case 0xd6:
  case 0xd7:
  case 0xd8:
    h.fixed = 1u + (1u << (b - 0xd4));
    return h;
  case 0xdc:
  case 0xdd:
    h.kind = MP_ARRAY;
    h.len_size = b == 0xdc ? 2 : 4;
    return h;
  default: /* 0xde, 0xdf: map 16/32 */
    h.kind = MP_MAP;
    h.len_size = b == 0xde ? 2 : 4;
    return h;
  }
}

int dht__mp_check(const uint8_t *buf, size_t len, unsigned depth_max) {
  /* owed[i]: elements the container open at depth i+1 has yet to deliver. */
  uint64_t owed[DHT__MP_CHECK_DEPTH_LIMIT];
  uint64_t owed_total = 0; /* sum of owed[0..depth) */
  unsigned depth = 0;      /* containers open */
  size_t pos = 0;

  if (depth_max > DHT__MP_CHECK_DEPTH_LIMIT) {
    return DHT_ERR_INVAL;
  }
  for (;;) {
    mp_head h;
    uint64_t free_len; /* bytes after pos not already owed to containers */
    uint64_t n = 0;
    unsigned i;

    /* The object read now is one the innermost open container owes. */
    if (depth > 0) {
      owed[depth - 1]--;
      owed_total--;
    }
    /* Invariant: owed_total <= len - pos, so this does not underflow. */
    free_len = (uint64_t)(len - pos) - owed_total;
    if (free_len < 1) {
      return DHT_ERR_TRUNCATED;
    }
    h = classify(buf[pos]);
    pos++;
    free_len--;

    if (h.kind == MP_RESERVED) {
      return DHT_ERR_MALFORMED;
    }
    if (h.kind == MP_SCALAR) {
      if (h.fixed > free_len) {
        return DHT_ERR_TRUNCATED;
      }
      pos += h.fixed;
    } else {
      /* Read the big-endian length or count that follows the header byte. */
      n = h.count;
      if (h.len_size > free_len) {
        return DHT_ERR_TRUNCATED;
      }
      for (i = 0; i < h.len_size; i++) {
        n = (n << 8) | buf[pos + i];
      }
      pos += h.len_size;
      free_len -= h.len_size;

      if (h.kind == MP_RAW) {
        if (h.extra + n > free_len) {
          return DHT_ERR_TRUNCATED;
        }
        pos += (size_t)(h.extra + n);
      } else {
        if (h.kind == MP_MAP) {
          n *= 2; /* n <= 2^32-1, so this fits in 64 bits */
        }
        if (depth >= depth_max || n > free_len) {
          return DHT_ERR_TOO_MANY;
        }
        if (n > 0) {
          owed[depth++] = n;
          owed_total += n;
          continue;
        }
      }
    }
    /* One object is complete: close every container it completed. */
    while (depth > 0 && owed[depth - 1] == 0) {
      depth--;
    }
    if (depth == 0) {
      break;
    }
  }
  return pos == len ? 0 : DHT_ERR_TRAILING;
}
