/*
 * sim_keys.c: reading the nodes' stores from outside (see sim_keys.h). The
 * records are parsed with dht_record_parse(), so the version header the
 * core puts before every value is never mistaken for the value.
 */
#include <string.h>

#include "sim_keys.h"

uint32_t sim_default_replicas(void) {
  dht_settings s;

  dht_settings_default(&s);
  return s.replicas;
}

bool sim_store_read(dht_store *st, const char *key, sim_record *rec) {
  const uint8_t *bytes;
  size_t len;
  dht_id key_id;
  dht_kv kv;

  memset(rec, 0, sizeof(*rec));
  dht_id_hash(&key_id, key, strlen(key));
  if (dht_store_get(st, &key_id, (const uint8_t *)key, strlen(key), &bytes,
                    &len) != 0) {
    return false;
  }
  memset(&kv, 0, sizeof(kv));
  dht_record_parse(bytes, len, &kv);
  rec->found = true;
  rec->tombstone = kv.tombstone;
  rec->version = kv.version;
  rec->value = kv.value.p;
  rec->value_len = kv.value.len;
  return true;
}

/* True when st has a live record of key that ok accepts. */
static bool store_has(dht_store *st, const char *key, sim_value_ok_fn ok,
                      const void *ud) {
  sim_record rec;

  return sim_store_read(st, key, &rec) && !rec.tombstone &&
         ok(ud, rec.value, rec.value_len);
}

bool sim_key_placed(const sim_world *w, const sim_ring *ring, const char *key,
                    sim_value_ok_fn ok, const void *ud, sim_placement *p) {
  uint32_t slots[SIM_HOLDERS_MAX];
  uint32_t replicas = w->replicas;
  dht_id key_id;
  size_t i;

  memset(p, 0, sizeof(*p));
  p->missing_slot = SIM_NO_SLOT;
  if (replicas > SIM_HOLDERS_MAX) {
    replicas = SIM_HOLDERS_MAX;
  }
  dht_id_hash(&key_id, key, strlen(key));
  p->holders = sim_ring_holders(ring, &key_id, replicas, slots);
  for (i = 0; i < p->holders; i++) {
    if (store_has(w->nodes[slots[i]].store, key, ok, ud)) {
      p->held++;
    } else if (p->missing_slot == SIM_NO_SLOT) {
      p->missing_slot = slots[i];
    }
  }
  return p->held == p->holders;
}

void sim_key_copies(const sim_world *w, const char *key, sim_value_ok_fn ok,
                    const void *ud, sim_placement *p) {
  size_t i;

  p->running_copies = 0;
  p->stopped_copies = 0;
  for (i = 0; i < w->n_nodes; i++) {
    if (store_has(w->nodes[i].store, key, ok, ud)) {
      if (sim_world_is_up(w, (uint32_t)i)) {
        p->running_copies++;
      } else {
        p->stopped_copies++;
      }
    }
  }
}

bool sim_value_equals(const void *ud, const uint8_t *value, size_t value_len) {
  const char *want = ud;

  return value_len == strlen(want) && memcmp(value, want, value_len) == 0;
}
