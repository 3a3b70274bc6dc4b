/*
 * sim_keys.h: what the nodes' stores hold for a key, judged from outside.
 *
 * A node stores a record (a version header, then the value) per key; with
 * replication, key k belongs on its R holders: successor(k) and the next
 * R - 1 live nodes (R = sim_world.replicas, fewer in a smaller ring). The
 * checks ask two questions: do the true holders have an acceptable record
 * of k (the value acknowledged, or a newer one), and which disks, running
 * or stopped, still have one at all. What is "acceptable" is the caller's
 * (a put-once key wants its value; an overwritten key wants a version at
 * least as new as the last one acknowledged), given as a predicate.
 */
#ifndef SIM_KEYS_H
#define SIM_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim_ring.h"
#include "sim_world.h"

/* Holders are at most this many (DHT_SUCC_LIST_MAX + 1 replicas). */
#define SIM_HOLDERS_MAX (DHT_SUCC_LIST_MAX + 1)

/* The core's default settings.replicas. */
uint32_t sim_default_replicas(void);

/* One store's record of one key. */
typedef struct sim_record {
  bool found;            /* the store has a record of the key */
  bool tombstone;        /* ...and it marks a delete */
  dht_version version;   /* its version */
  const uint8_t *value;  /* its value: valid until the store's next call */
  size_t value_len;      /* bytes in value */
} sim_record;

/* Reads key's record from st. Returns rec->found. */
bool sim_store_read(dht_store *st, const char *key, sim_record *rec);

/* Whether a live record's value is acceptable for the key being checked. */
typedef bool (*sim_value_ok_fn)(const void *ud, const uint8_t *value,
                                size_t value_len);

/* How one key stands on the ring. */
typedef struct sim_placement {
  size_t holders;          /* true holders (min(R, ring size)) */
  size_t held;             /* ...that have an acceptable live record */
  uint32_t missing_slot;   /* the first true holder without one, or
                              SIM_NO_SLOT */
  size_t running_copies;   /* running nodes with an acceptable record (only
                              counted when asked: sim_key_copies) */
  size_t stopped_copies;   /* stopped nodes' disks with one (likewise) */
} sim_placement;

/* Checks key's true holders on ring (built joined_only) into p; the copy
 * counts are left at zero. Returns true when every holder has it. */
bool sim_key_placed(const sim_world *w, const sim_ring *ring, const char *key,
                    sim_value_ok_fn ok, const void *ud, sim_placement *p);

/* Counts, over every slot, the running nodes and the stopped disks that
 * have an acceptable record of key, into p's copy counts. */
void sim_key_copies(const sim_world *w, const char *key, sim_value_ok_fn ok,
                    const void *ud, sim_placement *p);

/* An acceptable-value predicate for put-once keys: ud is the value, a
 * NUL-terminated string, and the record must equal it. */
bool sim_value_equals(const void *ud, const uint8_t *value, size_t value_len);

#endif /* SIM_KEYS_H */
