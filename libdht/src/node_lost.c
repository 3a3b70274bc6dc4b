/*
 * node_lost.c: recording ranges whose every copy died (node_lost.h).
 *
 * With R copies of each key, R adjacent nodes dying before anti-entropy has
 * copied their keys elsewhere lose those keys: that is the design, and the
 * loss must be told, not passed off as "not found". The node after them
 * sees it: node_table.c keeps the last whole predecessor list it knew (R
 * deep, and in front of it the ones that died since), and when its next
 * predecessor turns out to lie beyond R of them, the keys between that
 * node and the R-th had their holders among them only, unless this node
 * is known to hold them (dht__lost_held). Every one of them is pinged
 * once; if none answers, the range is recorded: logged, counted, listed in
 * STATS (which `dht check` reads), and answered as "possibly lost" to a GET
 * of a key in it that is not found. A partition can hide live holders, hence
 * "possibly"; an operator acknowledges the record with ACK_LOST. Records
 * live in memory: a restart forgets them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_lost.h"

static const dht__pending_ops holder_ping_ops;

void dht__lost_free(dht_node *node) {
  uint32_t i;

  for (i = 0; i < node->loss.n_ranges; i++) {
    free(node->loss.ranges[i].holder_addrs);
  }
  free(node->loss.ranges);
}

static void check_release(dht_node *node) {
  dht__loss_check *c = &node->loss.check;
  uint32_t i;

  for (i = 0; i < c->n_holders; i++) {
    dht__peer_release(node, c->holders[i]);
  }
  c->n_holders = 0;
  c->active = false;
}

/* Keeps the range of the finished check as lost, dropping the oldest record
 * when DHT_LOST_MAX are kept already. */
static void record(dht_node *node) {
  dht__loss_check *c = &node->loss.check;
  dht__lost_range *l;
  char line[512];
  uint32_t i;

  if (node->loss.ranges == NULL) {
    node->loss.ranges = calloc(DHT_LOST_MAX, sizeof(*node->loss.ranges));
    if (node->loss.ranges == NULL) {
      return;
    }
  }
  if (node->loss.n_ranges == DHT_LOST_MAX) {
    free(node->loss.ranges[0].holder_addrs);
    memmove(node->loss.ranges, node->loss.ranges + 1,
            (DHT_LOST_MAX - 1) * sizeof(*node->loss.ranges));
    node->loss.n_ranges--;
  }
  l = &node->loss.ranges[node->loss.n_ranges];
  memset(l, 0, sizeof(*l));
  l->holder_addrs = calloc(c->n_holders, sizeof(*l->holder_addrs));
  if (l->holder_addrs == NULL) {
    return;
  }
  l->from = c->from;
  l->to = c->to;
  l->at_ms = dht__wall_ms(node);
  for (i = 0; i < c->n_holders; i++) {
    const dht__peer *p = &node->peers[c->holders[i]];
    l->holder_ids[i] = p->id;
    memcpy(l->holder_addrs[i], p->addr, sizeof(l->holder_addrs[i]));
  }
  l->n_holders = c->n_holders;
  node->loss.n_ranges++;
  node->counters.ranges_lost++;
  dht__lost_describe(l, line, sizeof(line));
  dht__log(node, DHT_LOG_ERROR, "range possibly lost: %s", line);
}

/* One former holder answered, or could not be reached. */
static void holder_settled(dht_node *node, dht__pending *p, bool alive) {
  dht__loss_check *c = &node->loss.check;

  dht__pending_free(node, p);
  c->any_alive = c->any_alive || alive;
  if (--c->waiting > 0) {
    return;
  }
  if (!c->any_alive) {
    record(node);
  }
  check_release(node);
}

/* Any answer, a refusal included, shows a live process that may still
 * hold the keys (from its disk). */
static void holder_on_reply(dht_node *node, dht__pending *p,
                            const dht_msg *msg) {
  (void)msg;
  holder_settled(node, p, true);
}

static void holder_on_failure(dht_node *node, dht__pending *p) {
  holder_settled(node, p, false);
}

static const dht__pending_ops holder_ping_ops = {"holder_ping", true,
                                                 holder_on_reply,
                                                 holder_on_failure};

/* Pings every holder of the check; returns how many pings went out. */
static uint32_t ping_holders(dht_node *node) {
  dht__loss_check *c = &node->loss.check;
  uint32_t i, sent = 0;
  dht_msg ping;

  for (i = 0; i < c->n_holders; i++) {
    dht__pending *p = dht__pending_new(node, &holder_ping_ops, c->holders[i]);
    if (p == NULL) {
      continue;
    }
    memset(&ping, 0, sizeof(ping));
    ping.type = DHT_MSG_PING;
    if (dht__pending_send(node, p, &ping) != 0) {
      dht__pending_free(node, p);
      continue;
    }
    sent++;
  }
  return sent;
}

/*
 * The owner of (from, to] found this node's records of it the same as its
 * own (a SYNC with no bucket differing): this node holds the range, and
 * the owner's death is no loss however many of its other holders die. Only
 * an owner among the predecessors whose ranges this node replicates is
 * believed: another's view is behind (on a ring starting up, empty stores
 * are all in sync), and its range is not kept here.
 */
void dht__lost_held(dht_node *node, const dht_id *from, const dht_id *to) {
  dht__loss *l = &node->loss;
  uint32_t i, n = node->n_preds;

  if (n > node->set.replicas - 1) {
    n = node->set.replicas - 1;
  }
  for (i = 0; i < n && !dht_id_eq(&node->peers[node->preds[i]].id, to); i++) {
  }
  if (i == n) {
    return;
  }
  for (i = 0; i < l->n_held && !dht_id_eq(&l->held[i].to, to); i++) {
  }
  if (i == l->n_held && l->n_held == DHT__HELD_MAX) {
    i = 0; /* full: the oldest goes */
  }
  if (i < l->n_held) {
    memmove(&l->held[i], &l->held[i + 1],
            (l->n_held - i - 1) * sizeof(l->held[0]));
    l->n_held--;
  }
  l->held[l->n_held].from = *from;
  l->held[l->n_held].to = *to;
  l->n_held++;
}

void dht__lost_held_forget(dht_node *node) { node->loss.n_held = 0; }

void dht__lost_held_trim(dht_node *node) {
  dht__loss *l = &node->loss;
  const dht_id *farthest;
  uint32_t i, kept = 0;

  if (node->n_preds < node->set.replicas) {
    return; /* which ranges this node replicates is not known yet */
  }
  farthest = &node->peers[node->preds[node->set.replicas - 1]].id;
  for (i = 0; i < l->n_held; i++) {
    if (dht_id_in_oc(&l->held[i].to, farthest, &node->id)) {
      l->held[kept++] = l->held[i];
    }
  }
  l->n_held = kept;
}

/* Whether part of (from, *to] is not known to be held here: *to moves back
 * past every held range that ends where it does. */
static bool unheld(const dht_node *node, const dht_id *from, dht_id *to) {
  const dht__loss *l = &node->loss;
  bool moved = true;
  uint32_t i;

  while (moved && !dht_id_eq(from, to)) {
    moved = false;
    for (i = 0; i < l->n_held && !moved; i++) {
      if (!dht_id_eq(&l->held[i].to, to)) {
        continue;
      }
      if (!dht_id_in_oo(&l->held[i].from, from, to)) {
        return false; /* it covers the whole range */
      }
      *to = l->held[i].from;
      moved = true;
    }
  }
  return !dht_id_eq(from, to);
}

/*
 * The predecessor changed. The nodes at the front of the kept list
 * (node_table.c's last_preds: the last whole predecessor list, and in
 * front of it the ones that died since) that lie
 * between the new one and this node are gone. When R or more are, the keys
 * from the new predecessor to the R-th of them had every holder among them:
 * check whether any of them is alive. Counting the R-th rather than the
 * list's farthest, a list refreshed between the deaths, its dead kept in
 * front, still shows the range. The part of it this node is known to hold
 * (dht__lost_held) is left out.
 */
void dht__lost_on_pred_change(dht_node *node) {
  dht__loss_check *c = &node->loss.check;
  uint32_t r = node->set.replicas, i, gone;
  dht_id to;

  if (node->pred == DHT__NO_PEER) {
    return;
  }
  gone = dht__last_preds_gone(node, &node->peers[node->pred].id);
  if (gone == 0) {
    /* A node joined before this one (or one it knew came back): what this
     * node replicates shifts, and its owners confirm it anew. */
    dht__lost_held_forget(node);
  }
  if (gone < r) {
    return; /* one of them, or one closer: the list refills from it */
  }
  to = node->peers[node->last_preds[r - 1]].id;
  if (!c->active && unheld(node, &node->peers[node->pred].id, &to)) {
    c->active = true;
    c->any_alive = false;
    c->from = node->peers[node->pred].id;
    c->to = to;
    for (i = 0; i < gone; i++) {
      dht__peer_hold(node, node->last_preds[i]);
      c->holders[i] = node->last_preds[i];
    }
    c->n_holders = gone;
    c->waiting = ping_holders(node);
    if (c->waiting == 0) {
      check_release(node); /* could not ask: nothing is known */
    }
  }
  dht__last_preds_clear(node);
}

/* Writes why key_id's copies may all be gone into buf and returns true
 * when it lies in a lost range, or in the range of the check under way (the
 * key is not here, and its holders have not answered yet). */
bool dht__lost_explain(const dht_node *node, const dht_id *key_id, char *buf,
                       size_t len) {
  const dht__loss_check *c = &node->loss.check;
  uint32_t i;

  for (i = 0; i < node->loss.n_ranges; i++) {
    const dht__lost_range *l = &node->loss.ranges[i];
    if (dht_id_in_oc(key_id, &l->from, &l->to)) {
      dht__lost_describe(l, buf, len);
      return true;
    }
  }
  if (c->active && dht_id_in_oc(key_id, &c->from, &c->to)) {
    snprintf(buf, len, "every node that held it stopped answering; "
                       "asking them once more");
    return true;
  }
  return false;
}

/* "every holder of (1a2b3c4d, 5e6f7a8b] died before repair: A, B, C". */
void dht__lost_describe(const dht__lost_range *l, char *buf, size_t len) {
  char from[DHT_ID_SHORT_LEN], to[DHT_ID_SHORT_LEN];
  size_t used;
  uint32_t i;

  used = (size_t)snprintf(buf, len,
                          "every holder of (%s, %s] died before repair:",
                          dht_id_short(&l->from, from), dht_id_short(&l->to, to));
  for (i = 0; i < l->n_holders && used < len; i++) {
    used += (size_t)snprintf(buf + used, len - used, "%s %s",
                             i == 0 ? "" : ",", l->holder_addrs[i]);
  }
}

/* ACK_LOST: an operator has seen the lost range (from, to]; forget it. */
void dht__on_ack_lost(dht_node *node, const dht__request *in) {
  const dht_msg *msg = in->msg;
  uint32_t i, kept = 0;

  for (i = 0; i < node->loss.n_ranges; i++) {
    dht__lost_range *l = &node->loss.ranges[i];
    if (dht_id_eq(&l->from, &msg->from) && dht_id_eq(&l->to, &msg->to)) {
      char line[512];
      dht__lost_describe(l, line, sizeof(line));
      dht__log(node, DHT_LOG_INFO, "lost range acknowledged: %s", line);
      free(l->holder_addrs);
      continue;
    }
    node->loss.ranges[kept++] = *l;
  }
  node->loss.n_ranges = kept;
  dht__reply_ok(node, in->conn, msg->rid, 0);
}
