/*
 * explain.c: dht explain KEY, where a key's copies are and, for each one
 * that is missing or behind, why, as far as the nodes can tell.
 *
 * It looks the key up, asks the owner for its STATS (its successors, how
 * many copies the ring keeps, its last anti-entropy exchange with each
 * replica, the peers it found dead and the ranges it recorded lost), then
 * asks each holder, the owner and its next R - 1 successors, for its own
 * STATS (readiness) and for its record of the key (SCAN from just before
 * the key's id). The newest version among the answers is the one every
 * holder should have; the reasons for the others come from the owner's
 * view, which is the one that repairs them.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dht/err.h"

/* Records a SCAN page is asked for: keys sharing the key's id come first. */
#define SCAN_LIMIT 16
#define WHY_LEN 512

const char cli_explain_usage[] =
    "usage: dht explain KEY\n"
    "\n"
    "Explains where KEY is kept: its id, its owner (a lookup from the node)\n"
    "and its holders (the owner and the owner's next R - 1 successors, R\n"
    "being the number of copies the ring keeps), and for each holder the\n"
    "version it holds (or that it holds none, or a delete), whether it is in\n"
    "sync for the key's range (the owner: its whole range exchanged with\n"
    "every replica since its predecessor changed; a replica: the owner's\n"
    "last anti-entropy exchange with it, when and what it found), and, when a\n"
    "copy is missing or older than the newest, why: the holder does not\n"
    "answer, repair is under way or failed and is retried, the range was\n"
    "recorded lost (every holder died before repair), or the copy came\n"
    "after the last exchange. The peers the owner found dead are listed.\n"
    "\n"
    "Exit 0 when every holder has the newest version, 1 when no holder has\n"
    "the key, 2 when a copy is missing or behind, or on any error. It\n"
    "lists records (SCAN), so in a closed ring it needs the member key.\n";

/* What the owner and each holder said. */
typedef struct holder {
  dht_client_peer peer;
  bool answered;               /* STATS and SCAN both answered */
  char error[300];             /* ... else why not */
  bool ready;                  /* its "ready" counter */
  bool range_fresh;            /* its "range_fresh" counter */
  bool has_record;             /* it holds a record of the key */
  dht_client_scan_item record; /* ... this one (key not kept) */
  const dht_client_exchange *exchange; /* the owner's last with it */
  enum { H_NEWEST, H_OLDER, H_MISSING, H_UNREACHABLE } state;
  char why[WHY_LEN];           /* for a copy not at the newest version */
} holder;

typedef struct explain {
  cli_ctx *ctx;
  const char *key;
  size_t key_len;
  dht_id id;
  dht_client_stats_result *owner; /* the owner's STATS */
  uint64_t replicas;              /* R, from the owner */
  holder holders[DHT_SUCC_LIST_MAX];
  size_t n_holders;
  const dht_client_scan_item *newest; /* the newest record, or NULL */
  size_t n_behind;                    /* holders not at it */
} explain;

/* The id just before id on the ring (SCAN starts after its from). */
static dht_id id_before(const dht_id *id) {
  dht_id out = *id;
  int i;

  for (i = DHT_ID_LEN - 1; i >= 0; i--) {
    if (out.b[i]-- != 0) {
      break;
    }
  }
  return out;
}

/* Asks one holder for its STATS and its record of the key. */
static void ask_holder(explain *e, holder *h, dht_client_stats_result *st) {
  dht_client_scan_result page;
  dht_id from = id_before(&e->id);
  dht_client *c = NULL;
  uint64_t v;
  size_t i;
  int rv;

  memset(&page, 0, sizeof(page));
  rv = dht_client_new(&c, h->peer.addr, &e->ctx->settings);
  if (rv == 0) {
    rv = dht_client_stats(c, st, e->ctx->timeout_ms);
  }
  if (rv == 0) {
    rv = dht_client_scan(c, &from, SCAN_LIMIT, &page, e->ctx->timeout_ms);
  }
  if (rv != 0) {
    snprintf(h->error, sizeof(h->error), "%s",
             c != NULL ? dht_client_last_error(c) : dht_strerror(rv));
    dht_client_del(c);
    return;
  }
  dht_client_del(c);
  h->answered = true;
  h->ready = dht_client_stats_counter(st, "ready", &v) == 0 && v != 0;
  h->range_fresh =
      dht_client_stats_counter(st, "range_fresh", &v) == 0 && v != 0;
  for (i = 0; i < page.n_items && dht_id_eq(&page.items[i].key_id, &e->id);
       i++) {
    const dht_client_scan_item *it = &page.items[i];
    if (it->key_len == e->key_len && memcmp(it->key, e->key, e->key_len) == 0) {
      h->has_record = true;
      h->record = *it;
      h->record.key = NULL;
      break;
    }
  }
  dht_client_scan_result_free(&page);
}

/* Whether id lies in (from, to] (from == to: the whole ring). */
static bool in_range(const dht_id *id, const dht_id *from, const dht_id *to) {
  return dht_id_eq(from, to) || dht_id_in_oc(id, from, to);
}

/* The owner's last exchange with replica, or NULL. */
static const dht_client_exchange *exchange_with(const explain *e,
                                                const dht_client_peer *p) {
  size_t i;

  for (i = 0; i < e->owner->n_exchanges; i++) {
    if (dht_id_eq(&e->owner->exchanges[i].replica.id, &p->id)) {
      return &e->owner->exchanges[i];
    }
  }
  return NULL;
}

/* The owner's lost range that holds the key, or NULL. */
static const dht_client_lost_range *lost_range(const explain *e) {
  size_t i;

  for (i = 0; i < e->owner->n_lost; i++) {
    if (in_range(&e->id, &e->owner->lost[i].from, &e->owner->lost[i].to)) {
      return &e->owner->lost[i];
    }
  }
  return NULL;
}

static int version_cmp(const dht_client_scan_item *a,
                       const dht_client_scan_item *b) {
  int c = dht_version_cmp(&a->version, &b->version);

  return c != 0 ? c : (int)a->tombstone - (int)b->tombstone;
}

/* Why holder h (index i: 0 is the owner) is not at the newest version. */
static void explain_holder(explain *e, size_t i, holder *h) {
  const dht_client_lost_range *lost = lost_range(e);
  const dht_client_exchange *x = h->exchange;
  char line[WHY_LEN / 2], t[32];

  if (h->state == H_NEWEST) {
    return;
  }
  if (h->state == H_UNREACHABLE) {
    snprintf(h->why, sizeof(h->why),
                             "it does not answer (%s); the owner still lists "
                             "it as a successor, and will declare it dead "
                             "and copy to the next one when its requests "
                             "time out",
                             h->error);
  } else if (lost != NULL) {
    cli_lost_text(lost, line, sizeof(line));
    snprintf(h->why, sizeof(h->why),
                             "the owner recorded the key's range lost: %s",
                             line);
  } else if (i == 0) {
    snprintf(h->why, sizeof(h->why), "%s",
        h->range_fresh
            ? "the owner has not yet received it from the replica that has "
              "it: its next exchange brings it"
            : "the owner has not yet exchanged its range with every replica "
              "since its predecessor changed: it reads through its replicas "
              "meanwhile (the newest copy wins), and its exchanges bring it");
  } else if (x == NULL) {
    snprintf(h->why, sizeof(h->why),
                             "no anti-entropy exchange with it yet: it became "
                             "a replica recently, and the owner's next "
                             "round repairs it");
  } else if (!in_range(&e->id, &x->from, &x->to)) {
    snprintf(h->why, sizeof(h->why),
                             "the last exchange with it (%s ago) compared "
                             "another range: the owner's range changed "
                             "since, and its next round repairs it",
                             cli_ms_text(x->ago_ms, t, sizeof(t)));
  } else if (x->outcome == DHT_EXCHANGE_RUNNING) {
    cli_exchange_text(x, line, sizeof(line));
    snprintf(h->why, sizeof(h->why),
                             "repair is under way: the exchange is %s", line);
  } else if (x->outcome == DHT_EXCHANGE_FAILED) {
    cli_exchange_text(x, line, sizeof(line));
    snprintf(h->why, sizeof(h->why),
                             "the last exchange with it %s", line);
  } else {
    snprintf(h->why, sizeof(h->why),
                             "the last exchange with it, %s ago, found "
                             "nothing more to push: the newest copy came "
                             "later, and the next exchange repairs it",
                             cli_ms_text(x->ago_ms, t, sizeof(t)));
  }
}

/* Judges every holder against the newest record. */
static void judge(explain *e) {
  size_t i;

  for (i = 0; i < e->n_holders; i++) {
    holder *h = &e->holders[i];
    if (h->has_record &&
        (e->newest == NULL || version_cmp(&h->record, e->newest) > 0)) {
      e->newest = &h->record;
    }
  }
  for (i = 0; i < e->n_holders; i++) {
    holder *h = &e->holders[i];
    h->exchange = i > 0 ? exchange_with(e, &h->peer) : NULL;
    if (!h->answered) {
      h->state = H_UNREACHABLE;
    } else if (e->newest == NULL ||
               (h->has_record && version_cmp(&h->record, e->newest) == 0)) {
      h->state = H_NEWEST;
    } else {
      h->state = h->has_record ? H_OLDER : H_MISSING;
    }
    e->n_behind += h->state != H_NEWEST;
    explain_holder(e, i, h);
  }
}

static const char *state_name(const holder *h) {
  static const char *const names[] = {"newest", "older", "missing",
                                      "unreachable"};
  return names[h->state];
}

/* "in sync: ..." of holder i, for people. */
static void sync_text(const explain *e, size_t i, const holder *h, char *buf,
                      size_t len) {
  char x[WHY_LEN / 2];

  if (!h->answered) {
    snprintf(buf, len, "-");
  } else if (i == 0) {
    snprintf(buf, len, "%s, %s",
             h->range_fresh ? "range in sync with every replica"
                            : "range NOT yet in sync with every replica",
             h->ready ? "ready" : "not ready");
  } else if (h->exchange == NULL) {
    snprintf(buf, len, "no exchange with the owner yet");
  } else {
    cli_exchange_text(h->exchange, x, sizeof(x));
    snprintf(buf, len, "last exchange %s%s", x,
             in_range(&e->id, &h->exchange->from, &h->exchange->to)
                 ? ""
                 : " (of another range)");
  }
}

static void print_text(const explain *e) {
  char s[DHT_ID_SHORT_LEN], hex[DHT_ID_HEX_LEN], v[96], sync[WHY_LEN];
  char key[96];
  size_t i;

  printf("%-8s %s\n", "key", cli_escape(key, sizeof(key), e->key, e->key_len));
  printf("%-8s %s\n", "id", dht_id_hex(&e->id, hex));
  printf("%-8s %s  %s\n", "owner", dht_id_short(&e->owner->node.id, s),
         e->owner->node.addr);
  printf("holders  %zu (R = %llu: the owner and its next successors)\n",
         e->n_holders, (unsigned long long)e->replicas);
  for (i = 0; i < e->n_holders; i++) {
    const holder *h = &e->holders[i];
    if (!h->answered) {
      snprintf(v, sizeof(v), "no answer");
    } else if (h->has_record) {
      cli_version_text(&h->record, v, sizeof(v));
    } else {
      snprintf(v, sizeof(v), "no record");
    }
    sync_text(e, i, h, sync, sizeof(sync));
    printf("  %-7s  %s  %-21s  %-11s  %s\n", i == 0 ? "owner" : "replica",
           dht_id_short(&h->peer.id, s), h->peer.addr, state_name(h), v);
    printf("           in sync: %s\n", sync);
    if (h->why[0] != '\0') {
      printf("           why: %s\n", h->why);
    }
  }
  for (i = 0; i < e->owner->n_dead; i++) {
    printf("%s %s  %s  declared dead %s ago\n",
           i == 0 ? "dead    " : "        ",
           dht_id_short(&e->owner->dead[i].peer.id, s),
           e->owner->dead[i].peer.addr,
           cli_ms_text(e->owner->dead[i].ago_ms, v, sizeof(v)));
  }
  if (e->newest == NULL) {
    printf("verdict  no holder has the key\n");
  } else if (e->n_behind == 0) {
    printf("verdict  %s%zu holder%s the newest version%s\n",
           e->n_holders == 1 ? "its " : "all ", e->n_holders,
           e->n_holders == 1 ? " has" : "s have",
           e->newest->tombstone ? " (a delete)" : "");
  } else {
    printf("verdict  %zu of %zu holders have the newest version%s\n",
           e->n_holders - e->n_behind, e->n_holders,
           e->newest->tombstone ? " (a delete)" : "");
  }
}

static void print_json(const explain *e) {
  char hex[DHT_ID_HEX_LEN];
  size_t i;

  printf("{\"ok\":true,\"command\":\"explain\",");
  cli_json_bytes(stdout, "key", e->key, e->key_len);
  printf(",\"id\":\"%s\",\"owner\":", dht_id_hex(&e->id, hex));
  cli_json_peer(stdout, &e->owner->node);
  printf(",\"replicas\":%llu,\"holders\":[", (unsigned long long)e->replicas);
  for (i = 0; i < e->n_holders; i++) {
    const holder *h = &e->holders[i];
    printf("%s{\"peer\":", i > 0 ? "," : "");
    cli_json_peer(stdout, &h->peer);
    printf(",\"role\":\"%s\",\"state\":\"%s\"", i == 0 ? "owner" : "replica",
           state_name(h));
    if (!h->answered) {
      fputs(",\"error\":", stdout);
      cli_json_str(stdout, h->error);
    } else {
      printf(",\"ready\":%s,\"range_fresh\":%s", h->ready ? "true" : "false",
             h->range_fresh ? "true" : "false");
    }
    if (h->has_record) {
      printf(",\"record\":{\"hlc\":%llu,\"writer\":\"%s\",\"tombstone\":%s}",
             (unsigned long long)h->record.version.hlc,
             dht_id_hex(&h->record.version.writer, hex),
             h->record.tombstone ? "true" : "false");
    } else {
      fputs(",\"record\":null", stdout);
    }
    fputs(",\"exchange\":", stdout);
    if (h->exchange != NULL) {
      cli_json_exchange(stdout, h->exchange);
    } else {
      fputs("null", stdout);
    }
    fputs(",\"why\":", stdout);
    if (h->why[0] != '\0') {
      cli_json_str(stdout, h->why);
    } else {
      fputs("null", stdout);
    }
    fputc('}', stdout);
  }
  fputs("],", stdout);
  cli_json_dead(stdout, e->owner->dead, e->owner->n_dead);
  fputs(",\"lost\":[", stdout);
  for (i = 0; i < e->owner->n_lost; i++) {
    if (i > 0) {
      fputc(',', stdout);
    }
    cli_json_lost(stdout, &e->owner->lost[i]);
  }
  printf("],\"holding_newest\":%zu,\"found\":%s}\n",
         e->n_holders - e->n_behind, e->newest != NULL ? "true" : "false");
}

/* Finds the owner and asks it for its STATS into e->owner. Returns 0 or an
 * exit code (printed). */
static int find_owner(explain *e) {
  dht_client_lookup_result owner;
  dht_client *c;
  int rv;

  if ((rv = cli_open_client(e->ctx, true, &c)) != 0) {
    return rv;
  }
  rv = dht_client_lookup(c, &e->id, false, &owner, e->ctx->timeout_ms);
  if (rv != 0) {
    rv = cli_fail_call(e->ctx, c, rv, NULL, 0);
    dht_client_del(c);
    return rv;
  }
  dht_client_del(c);
  if ((rv = dht_client_new(&c, owner.owner.addr, &e->ctx->settings)) != 0) {
    return cli_fail(e->ctx, CLI_EXIT_ERROR, rv, "the owner %s: %s",
                    owner.owner.addr, dht_strerror(rv));
  }
  rv = dht_client_stats(c, e->owner, e->ctx->timeout_ms);
  if (rv != 0) {
    rv = cli_fail(e->ctx, CLI_EXIT_ERROR, rv,
                  "the owner %s does not answer STATS: %s", owner.owner.addr,
                  dht_client_last_error(c));
  }
  dht_client_del(c);
  return rv;
}

int cli_explain(cli_ctx *ctx, int argc, char **argv) {
  dht_client_stats_result *st = NULL;
  cli_positional pos;
  explain e;
  size_t i;
  int rv;

  rv = cli_scan_args(ctx, argc, argv, cli_explain_usage, 1, &pos, NULL, NULL);
  if (rv == 0 && pos.n < 1) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                  "explain: missing KEY (see dht explain --help)");
  }
  if (rv == 0 && (strlen(pos.v[0]) == 0 || strlen(pos.v[0]) > CLI_KEY_LEN_MAX)) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                  "key must be 1..%u bytes, got %zu", CLI_KEY_LEN_MAX,
                  strlen(pos.v[0]));
  }
  if (rv == 0) {
    rv = cli_need_member_key(ctx);
  }
  if (rv != 0) {
    return rv < 0 ? CLI_EXIT_OK : rv;
  }
  memset(&e, 0, sizeof(e));
  e.ctx = ctx;
  e.key = pos.v[0];
  e.key_len = strlen(e.key);
  dht_id_hash(&e.id, e.key, e.key_len);
  e.owner = malloc(sizeof(*e.owner));
  st = malloc(sizeof(*st));
  if (e.owner == NULL || st == NULL) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
    goto out;
  }
  if ((rv = find_owner(&e)) != 0) {
    goto out;
  }
  if (dht_client_stats_counter(e.owner, "replicas", &e.replicas) != 0 ||
      e.replicas == 0) {
    e.replicas = 1;
  }
  e.holders[0].peer = e.owner->node;
  e.n_holders = 1;
  for (i = 0; i < e.owner->n_succs && e.n_holders < e.replicas &&
              e.n_holders < DHT_SUCC_LIST_MAX;
       i++) {
    e.holders[e.n_holders++].peer = e.owner->succs[i];
  }
  for (i = 0; i < e.n_holders; i++) {
    ask_holder(&e, &e.holders[i], st);
  }
  judge(&e);
  if (ctx->json) {
    print_json(&e);
  } else {
    print_text(&e);
  }
  /* With no record anywhere, the holders that answered agree: only the
   * silent ones count as behind. */
  rv = cli_finish(ctx, e.n_behind > 0    ? CLI_EXIT_ERROR
                       : e.newest == NULL ? CLI_EXIT_NOT_FOUND
                                          : CLI_EXIT_OK);
  if (rv == CLI_EXIT_ERROR && e.n_behind > 0) {
    fprintf(stderr, "dht: %zu of %zu copies of the key missing or behind%s\n",
            e.n_behind, e.n_holders,
            ctx->json ? " (see \"holders\")" : " (listed above)");
  }
out:
  free(st);
  free(e.owner);
  return rv;
}
