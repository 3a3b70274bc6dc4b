/*
 * dht/id.h: 160-bit identifiers and arithmetic on the identifier ring.
 *
 * An id is a 160-bit unsigned number stored big-endian, so comparing ids is
 * memcmp. The ring is the integers modulo 2^160. A node's id is
 * BLAKE2b-160(advertised "host:port"); a key's id is BLAKE2b-160(key bytes).
 *
 * Interval helpers take the ring's wrap-around into account. For two equal
 * ends the convention is Chord's: (a, a] and (a, a) are the whole ring
 * (less a itself for the open one), because a node that is alone owns every key.
 */
#ifndef DHT_ID_H
#define DHT_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DHT_ID_BITS 160
#define DHT_ID_LEN 20
/* Full hex form: 40 digits and a NUL. */
#define DHT_ID_HEX_LEN (2 * DHT_ID_LEN + 1)
/* Short form used in logs: the first 8 hex digits and a NUL. */
#define DHT_ID_SHORT_LEN 9

typedef struct dht_id {
  uint8_t b[DHT_ID_LEN]; /* big-endian: b[0] is the most significant byte */
} dht_id;

/* Hashes data into an id (BLAKE2b with a 20-byte output). */
void dht_id_hash(dht_id *out, const void *data, size_t len);

/* Returns <0, 0 or >0 as a is below, equal to or above b. */
int dht_id_cmp(const dht_id *a, const dht_id *b);
bool dht_id_eq(const dht_id *a, const dht_id *b);
bool dht_id_is_zero(const dht_id *a);

/* x in (a, b), going clockwise from a. a == b means everything but a. */
bool dht_id_in_oo(const dht_id *x, const dht_id *a, const dht_id *b);
/* x in (a, b]. a == b means the whole ring. */
bool dht_id_in_oc(const dht_id *x, const dht_id *a, const dht_id *b);

/* out = a + 2^i mod 2^160, for 0 <= i < 160. out may alias a. */
void dht_id_add_pow2(dht_id *out, const dht_id *a, unsigned i);
/* out = b - a mod 2^160: how far clockwise b lies from a. */
void dht_id_distance(dht_id *out, const dht_id *a, const dht_id *b);
/* The distance from a to b as a fraction of the ring, in [0, 1). */
double dht_id_distance_frac(const dht_id *a, const dht_id *b);

/* Writes 40 lower-case hex digits and a NUL into out. Returns out. */
char *dht_id_hex(const dht_id *id, char out[DHT_ID_HEX_LEN]);
/* Writes the first 8 hex digits and a NUL into out. Returns out. */
char *dht_id_short(const dht_id *id, char out[DHT_ID_SHORT_LEN]);
/* Parses exactly 40 hex digits (either case). Returns 0 or DHT_ERR_INVAL. */
int dht_id_from_hex(dht_id *out, const char *hex, size_t len);

/* Sets id to the integer v (v in the lowest 64 bits). Handy in tests. */
void dht_id_from_u64(dht_id *out, uint64_t v);
/* The top 64 bits of id, for histograms and sorting keys. */
uint64_t dht_id_top64(const dht_id *id);

#endif /* DHT_ID_H */
