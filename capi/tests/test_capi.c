/* The C ABI from plain C11: every function, and the contract cases (NULL arguments, drop
 * called once, no callback after free, blocking calls refused inside callbacks, a refused
 * start naming the option, the reply handle's lifetime). */
#define _POSIX_C_SOURCE 200809L
#include "macula/macula.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures = 0;
#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, \
              #cond, macula_last_error());                                           \
      ++failures;                                                                    \
    }                                                                                \
  } while (0)

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}
/* Waits up to 5 s for *counter >= n. */
static int wait_for(atomic_int *counter, int n) {
  for (int i = 0; i < 5000 && atomic_load(counter) < n; ++i) sleep_ms(1);
  return atomic_load(counter) >= n;
}

/* ---- callbacks ---- */
typedef struct {
  atomic_int calls;
  atomic_int drops;
  atomic_int last_status;
  atomic_int blocking_refused; /* a blocking call made inside the callback was refused */
  macula_node *node;
  char last[64];
} probe;

static void on_message(void *ctx, const macula_message *m) {
  probe *p = ctx;
  size_t n = m->payload_len < sizeof p->last - 1 ? m->payload_len : sizeof p->last - 1;
  memcpy(p->last, m->payload, n);
  p->last[n] = 0;
  if (p->node) {
    uint8_t *out = NULL;
    size_t len = 0;
    if (macula_call_blocking(&out, &len, p->node, "c.echo", NULL, 0, 100) == MACULA_EWOULDDEADLOCK)
      atomic_fetch_add(&p->blocking_refused, 1);
    macula_free(out);
  }
  atomic_fetch_add(&p->calls, 1);
}
static void on_drop(void *ctx) { atomic_fetch_add(&((probe *)ctx)->drops, 1); }
static void on_result(void *ctx, int status, const uint8_t *data, size_t len) {
  probe *p = ctx;
  size_t n = len < sizeof p->last - 1 ? len : sizeof p->last - 1;
  if (data) memcpy(p->last, data, n);
  p->last[n] = 0;
  atomic_store(&p->last_status, status);
  atomic_fetch_add(&p->calls, 1);
}

/* Handlers: echo answers at once; later keeps the reply to answer from the test thread. */
static void echo(void *ctx, const uint8_t *args, size_t len, macula_reply *reply) {
  atomic_fetch_add(&((probe *)ctx)->calls, 1);
  macula_reply_send(reply, args, len);
}
static void refuse(void *ctx, const uint8_t *args, size_t len, macula_reply *reply) {
  (void)args;
  (void)len;
  atomic_fetch_add(&((probe *)ctx)->calls, 1);
  macula_reply_fail(reply, "refused by C");
}
static void forget(void *ctx, const uint8_t *args, size_t len, macula_reply *reply) {
  (void)args;
  (void)len;
  atomic_fetch_add(&((probe *)ctx)->calls, 1);
  macula_reply_free(reply);
}
/* Answers with more than MACULA_MAX_PAYLOAD_BYTES and records what macula_reply_send said; also
 * tries to free the mesh from inside the callback, which must be refused. */
static _Atomic int big_status = 1;
static macula_mesh *_Atomic mesh_for_free = NULL;
static void too_big(void *ctx, const uint8_t *args, size_t len, macula_reply *reply) {
  (void)args;
  (void)len;
  atomic_fetch_add(&((probe *)ctx)->calls, 1);
  macula_mesh_free(atomic_load(&mesh_for_free));  /* refused: we are on one of its threads */
  size_t n = (size_t)MACULA_MAX_PAYLOAD_BYTES + 1;
  uint8_t *big = calloc(n, 1);
  atomic_store(&big_status, big ? macula_reply_send(reply, big, n) : -100);
  free(big);
}
static macula_reply *_Atomic kept_reply = NULL;
static void later(void *ctx, const uint8_t *args, size_t len, macula_reply *reply) {
  (void)args;
  (void)len;
  atomic_fetch_add(&((probe *)ctx)->calls, 1);
  atomic_store(&kept_reply, reply);
}

static void test_basics(void) {
  CHECK(strcmp(macula_version(), "0.1.0") == 0);
  CHECK(strlen(macula_strerror(MACULA_ENO_PROVIDER)) > 0);
  CHECK(strcmp(macula_strerror(MACULA_OK), "success") == 0);
  CHECK(strlen(macula_strerror(12345)) > 0);
  macula_free(NULL);
  /* NULL arguments get MACULA_EINVAL and a message, never a crash. */
  CHECK(macula_node_new(NULL, NULL) == MACULA_EINVAL);
  CHECK(strlen(macula_last_error()) > 0);
  CHECK(macula_node_start(NULL) == MACULA_EINVAL);
  CHECK(macula_node_stop(NULL) == MACULA_EINVAL);
  CHECK(macula_node_connect(NULL, "x") == MACULA_EINVAL);
  CHECK(macula_publish(NULL, "a", NULL, 0, 0, NULL) == MACULA_EINVAL);
  CHECK(macula_reply_send(NULL, NULL, 0) == MACULA_EINVAL);
  CHECK(macula_reply_fail(NULL, "x") == MACULA_EINVAL);
  CHECK(macula_mesh_new(NULL, 2, NULL) == MACULA_EINVAL);
  CHECK(macula_mesh_settle(NULL) == MACULA_EINVAL);
  CHECK(macula_mesh_node(NULL, 0) == NULL);
  char hex[65];
  CHECK(macula_node_id(NULL, hex) == MACULA_EINVAL);
  macula_node_free(NULL);
  macula_subscription_free(NULL);
  macula_advertisement_free(NULL);
  macula_reply_free(NULL);
  macula_mesh_free(NULL);
  CHECK(macula_subscription_dropped(NULL) == 0);
  /* A subscribe that fails still drops its context, once. */
  probe p = {0};
  macula_message_callback cb = {&p, on_message, on_drop};
  macula_subscription *s = NULL;
  CHECK(macula_subscribe(&s, NULL, "a.b", cb) == MACULA_EINVAL);
  CHECK(s == NULL);
  CHECK(atomic_load(&p.drops) == 1);
}

typedef struct log_probe {
  atomic_int lines;
  atomic_int started; /* a "node" info line saying it started */
} log_probe;
static void on_log(void *ctx, int level, const char *component, const char *message) {
  log_probe *p = (log_probe *)ctx;
  atomic_fetch_add(&p->lines, 1);
  if (level == 1 && strcmp(component, "node") == 0 && strstr(message, "started on") != NULL)
    atomic_fetch_add(&p->started, 1);
}

static void test_standalone_node(void) {
  macula_node_options o;
  macula_node_options_init(&o);
  CHECK(o.struct_size == sizeof o);
  o.realm = "c.realm";
  const char *boot[] = {"not-an-address"};
  o.bootstrap = boot;
  o.bootstrap_count = 1;
  macula_node *bad = NULL;
  CHECK(macula_node_new(&bad, &o) == MACULA_OK);
  CHECK(macula_node_start(bad) == MACULA_EADDRESS_INVALID);
  char hex[65];
  CHECK(macula_node_id(bad, hex) == MACULA_ENOT_STARTED);
  CHECK(macula_publish(bad, "a.b", NULL, 0, 0, NULL) == MACULA_ENOT_STARTED);
  macula_node_free(bad);

  o.bootstrap_count = 0;
  o.dht = 1;
  CHECK(strcmp(o.http_listen, "") == 0); /* the default: no TCP port; HTTP/3 serves the pages */
  log_probe logs = {0};
  o.log = on_log;
  o.log_user_data = &logs;
  o.log_level = 7;
  macula_node *a = NULL, *b = NULL;
  CHECK(macula_node_new(&a, &o) == MACULA_EINVAL); /* log_level out of range */
  o.log_level = 1;
  CHECK(macula_node_new(&a, &o) == MACULA_OK);
  CHECK(macula_node_new(&b, NULL) == MACULA_OK); /* defaults: another realm */
  CHECK(macula_node_start(a) == MACULA_OK);
  CHECK(macula_node_start(b) == MACULA_OK);
  CHECK(atomic_load(&logs.started) == 1);
  CHECK(macula_node_id(a, hex) == MACULA_OK);
  CHECK(strlen(hex) == 64);
  char addr[64], tiny[4];
  CHECK(macula_node_address(b, addr, sizeof addr) == MACULA_OK);
  CHECK(macula_node_address(b, tiny, sizeof tiny) == MACULA_EINVAL);
  CHECK(macula_node_connect(a, addr) == MACULA_EREALM_MISMATCH); /* realm isolation, said as such */
  CHECK(macula_node_connect(a, "nonsense") == MACULA_EADDRESS_INVALID);
  char *metrics = NULL;
  CHECK(macula_node_metrics(&metrics, a) == MACULA_OK);
  CHECK(metrics && strstr(metrics, "macula_messages_published_total") != NULL);
  macula_free(metrics);
  CHECK(macula_node_stop(a) == MACULA_OK);
  CHECK(macula_node_stop(a) == MACULA_OK); /* idempotent */
  macula_node_free(a);
  macula_node_free(b);
}

/* Client tokens: 64 hex characters, the same for the same realm and secret, different for
 * another secret; and a realm with a secret refuses an open client API at start. */
static void test_client_access(void) {
  char t1[65], t2[65], t3[65], tiny[64];
  CHECK(macula_client_token("c.realm", "s3cret", t1, sizeof t1) == MACULA_OK);
  CHECK(strlen(t1) == 64);
  CHECK(strspn(t1, "0123456789abcdef") == 64);
  CHECK(macula_client_token("c.realm", "s3cret", t2, sizeof t2) == MACULA_OK);
  CHECK(strcmp(t1, t2) == 0);
  CHECK(macula_client_token("c.realm", "other", t3, sizeof t3) == MACULA_OK);
  CHECK(strcmp(t1, t3) != 0);
  CHECK(macula_client_token("c.realm", "s3cret", tiny, sizeof tiny) == MACULA_EINVAL);
  CHECK(macula_client_token(NULL, "s3cret", t1, sizeof t1) == MACULA_EINVAL);
  CHECK(macula_client_token("c.realm", NULL, t1, sizeof t1) == MACULA_EINVAL);
  CHECK(macula_client_token("c.realm", "s3cret", NULL, 65) == MACULA_EINVAL);

  macula_node_options o;
  macula_node_options_init(&o);
  CHECK(o.client_access == MACULA_CLIENT_ACCESS_AUTOMATIC && o.client_token == NULL);
  CHECK(o.dht == 1 && o.leaf == 0);  /* the DHT on by default, as in C++ and the CLI */
  CHECK(o.dht_record_ttl_s == 300);
  o.realm = "c.realm";
  o.realm_secret = "s3cret";
  o.http_listen = "";
  o.client_access = 4;
  macula_node *n = NULL;
  CHECK(macula_node_new(&n, &o) == MACULA_EINVAL); /* not a macula_client_access */
  o.client_access = MACULA_CLIENT_ACCESS_OPEN;
  CHECK(macula_node_new(&n, &o) == MACULA_OK);
  CHECK(macula_node_start(n) == MACULA_EOPTIONS_INVALID);
  CHECK(strstr(macula_last_error(), "client_access open") != NULL);
  macula_node_free(n);
  n = NULL;
  o.client_access = MACULA_CLIENT_ACCESS_TOKEN;
  o.client_token = t1;
  CHECK(macula_node_new(&n, &o) == MACULA_OK);
  CHECK(macula_node_start(n) == MACULA_OK);
  macula_node_free(n);
}

/* macula_node_start refuses `o` with `status`, and macula_last_error() names what was wrong. */
static void expect_refused(const macula_node_options *o, int status, const char *named, int line) {
  macula_node *n = NULL;
  CHECK(macula_node_new(&n, o) == MACULA_OK);
  const int got = macula_node_start(n);
  if (got != status || strstr(macula_last_error(), named) == NULL) {
    fprintf(stderr, "%s:%d: macula_node_start gave %d \"%s\"; expected %d naming \"%s\"\n", __FILE__, line, got,
            macula_last_error(), status, named);
    ++failures;
  }
  macula_node_free(n);
}

static void test_refused_start(void) {
  macula_node_options o;
  macula_node_options_init(&o);
  o.dht_record_ttl_s = 5;
  expect_refused(&o, MACULA_EOPTIONS_INVALID, "dht_record_ttl 5 s: must be 30 s to 1 day", __LINE__);
  macula_node_options_init(&o);
  o.listen = "0.0.0.0:0";
  expect_refused(&o, MACULA_EOPTIONS_INVALID, "needs advertise_address", __LINE__);
  o.advertise_address = "0.0.0.0:7000";
  expect_refused(&o, MACULA_EOPTIONS_INVALID, "advertise_address 0.0.0.0:7000", __LINE__);
  macula_node_options_init(&o);
  o.listen = "localhost";
  expect_refused(&o, MACULA_EADDRESS_INVALID, "listen localhost", __LINE__);
  macula_node_options_init(&o);
  o.realm = "bad..realm";
  expect_refused(&o, MACULA_ENAME_EMPTY_SEGMENT, "realm \"bad..realm\"", __LINE__);
  macula_node_options_init(&o);
  o.realm_secret = "";
  expect_refused(&o, MACULA_EOPTIONS_INVALID, "realm_secret is empty", __LINE__);
  macula_node_options_init(&o);
  o.client_access = MACULA_CLIENT_ACCESS_TOKEN;
  expect_refused(&o, MACULA_EOPTIONS_INVALID, "client_access token needs a client_token", __LINE__);
  macula_node_options_init(&o);
  o.key_file = "/nonexistent.key";
  expect_refused(&o, MACULA_EIDENTITY_INVALID, "key_file is set without cert_file", __LINE__);
  o.cert_file = "/nonexistent.crt";
  expect_refused(&o, MACULA_EIDENTITY_INVALID, "key_file /nonexistent.key: cannot be read", __LINE__);
  /* A start that succeeds leaves no stale reason behind. */
  macula_node_options_init(&o);
  macula_node *n = NULL;
  CHECK(macula_node_new(&n, &o) == MACULA_OK);
  CHECK(macula_node_start(n) == MACULA_OK);
  CHECK(strcmp(macula_last_error(), "") == 0);
  macula_node_free(n);
}

/* The reply handle outlives its handler call: it is answered (or released) from another thread,
 * after the advertisement is withdrawn, and even after its node is gone. */
static macula_reply *_Atomic held_reply = NULL;
static void hold(void *ctx, const uint8_t *args, size_t len, macula_reply *reply) {
  (void)args;
  (void)len;
  atomic_fetch_add(&((probe *)ctx)->calls, 1);
  atomic_store(&held_reply, reply);
}
static macula_reply *take_held_reply(void) {
  for (int i = 0; i < 5000 && atomic_load(&held_reply) == NULL; ++i) sleep_ms(1);
  return atomic_exchange(&held_reply, NULL);
}
typedef struct answerer {
  macula_reply *reply;
  const char *answer; /* NULL: macula_reply_free */
  int status;
} answerer;
static void *answer_from_thread(void *arg) {
  answerer *a = arg;
  sleep_ms(20); /* the handler call has long returned */
  if (a->answer)
    a->status = macula_reply_send(a->reply, (const uint8_t *)a->answer, strlen(a->answer));
  else
    macula_reply_free(a->reply);
  return NULL;
}
static int answer_on_a_thread(macula_reply *reply, const char *answer) {
  answerer a = {reply, answer, -100};
  pthread_t t;
  if (pthread_create(&t, NULL, answer_from_thread, &a) != 0) return -101;
  pthread_join(t, NULL);
  return answer ? a.status : MACULA_OK;
}

static void test_reply_lifetime(void) {
  macula_mesh *mesh = NULL;
  CHECK(macula_mesh_new(&mesh, 2, "c.reply") == MACULA_OK);
  macula_node *n0 = macula_mesh_node(mesh, 0), *n1 = macula_mesh_node(mesh, 1);
  probe h = {0};
  macula_advertisement *adv = NULL;
  CHECK(macula_advertise(&adv, n1, "c.hold", (macula_handler){&h, hold, on_drop}) == MACULA_OK);
  CHECK(macula_mesh_settle(mesh) == MACULA_OK);

  /* Answered later from a thread of our own. */
  probe first = {0};
  CHECK(macula_call(n0, "c.hold", NULL, 0, 3000, (macula_result_callback){&first, on_result, on_drop}) == MACULA_OK);
  macula_reply *r = take_held_reply();
  CHECK(r != NULL);
  CHECK(answer_on_a_thread(r, "from a thread") == MACULA_OK);
  CHECK(wait_for(&first.calls, 1));
  CHECK(atomic_load(&first.last_status) == MACULA_OK && strcmp(first.last, "from a thread") == 0);

  /* Released unanswered from a thread: the caller is told at once, not at its timeout. */
  probe released = {0};
  CHECK(macula_call(n0, "c.hold", NULL, 0, 3000, (macula_result_callback){&released, on_result, on_drop}) == MACULA_OK);
  r = take_held_reply();
  CHECK(r != NULL);
  CHECK(answer_on_a_thread(r, NULL) == MACULA_OK);
  CHECK(wait_for(&released.calls, 1));
  CHECK(atomic_load(&released.last_status) == MACULA_EHANDLER && strcmp(released.last, "handler did not answer") == 0);

  /* Still answerable after the advertisement was freed (its drop has run). */
  probe withdrawn = {0};
  CHECK(macula_call(n0, "c.hold", NULL, 0, 3000, (macula_result_callback){&withdrawn, on_result, on_drop}) == MACULA_OK);
  r = take_held_reply();
  CHECK(r != NULL);
  macula_advertisement_free(adv);
  CHECK(atomic_load(&h.drops) == 1);
  CHECK(answer_on_a_thread(r, "after the free") == MACULA_OK);
  CHECK(wait_for(&withdrawn.calls, 1));
  CHECK(atomic_load(&withdrawn.last_status) == MACULA_OK && strcmp(withdrawn.last, "after the free") == 0);

  /* Held across the node's end: its stop waits (bounded) for the answer, then goes on; the
   * late answer is accepted and goes nowhere. */
  CHECK(macula_advertise(&adv, n1, "c.hold", (macula_handler){&h, hold, on_drop}) == MACULA_OK);
  CHECK(macula_mesh_settle(mesh) == MACULA_OK);
  probe orphan = {0};
  CHECK(macula_call(n0, "c.hold", NULL, 0, 10000, (macula_result_callback){&orphan, on_result, on_drop}) == MACULA_OK);
  r = take_held_reply();
  CHECK(r != NULL);
  macula_advertisement_free(adv);
  macula_mesh_free(mesh);
  CHECK(answer_on_a_thread(r, "too late") == MACULA_OK);
  CHECK(wait_for(&orphan.calls, 1) && atomic_load(&orphan.calls) == 1); /* the caller's node ended too */
  CHECK(atomic_load(&orphan.last_status) != MACULA_OK);
  CHECK(wait_for(&orphan.drops, 1));
}

static void test_mesh(void) {
  macula_mesh *mesh = NULL;
  CHECK(macula_mesh_new(&mesh, 0, NULL) == MACULA_EINVAL);
  CHECK(macula_mesh_new(&mesh, 2, "c.mesh") == MACULA_OK);
  macula_node *n0 = macula_mesh_node(mesh, 0), *n1 = macula_mesh_node(mesh, 1);
  CHECK(n0 && n1 && macula_mesh_node(mesh, 2) == NULL);
  macula_node_free(n0); /* owned by the mesh: no effect */

  /* pub/sub, QoS 0 and 1, with a blocking call refused inside the message callback */
  probe sub_probe = {0}, pub_done = {0};
  sub_probe.node = n1;
  macula_subscription *sub = NULL;
  macula_message_callback cb = {&sub_probe, on_message, on_drop};
  CHECK(macula_subscribe(&sub, n1, "sensors.#", cb) == MACULA_OK);
  macula_subscription *bad = NULL;
  probe bad_probe = {0};
  macula_message_callback bad_cb = {&bad_probe, on_message, on_drop};
  CHECK(macula_subscribe(&bad, n1, "a..b", bad_cb) == MACULA_ENAME_EMPTY_SEGMENT);
  CHECK(atomic_load(&bad_probe.drops) == 1);
  CHECK(macula_mesh_settle(mesh) == MACULA_OK);
  const uint8_t hello[] = "hello";
  CHECK(macula_publish(n0, "sensors.kitchen.temp", hello, 5, MACULA_QOS_AT_MOST_ONCE, NULL) == MACULA_OK);
  CHECK(wait_for(&sub_probe.calls, 1));
  CHECK(strcmp(sub_probe.last, "hello") == 0);
  CHECK(atomic_load(&sub_probe.blocking_refused) == 1);
  macula_result_callback done = {&pub_done, on_result, on_drop};
  CHECK(macula_publish(n0, "sensors.hall.temp", hello, 5, MACULA_QOS_AT_LEAST_ONCE, &done) == MACULA_OK);
  CHECK(wait_for(&pub_done.calls, 1));
  CHECK(atomic_load(&pub_done.last_status) == MACULA_OK);
  CHECK(wait_for(&pub_done.drops, 1)); /* dropped once after its one call */
  CHECK(wait_for(&sub_probe.calls, 2));
  probe pub_err = {0};
  macula_result_callback err_done = {&pub_err, on_result, on_drop};
  CHECK(macula_publish(n0, "bad..topic", hello, 5, 0, &err_done) == MACULA_ENAME_EMPTY_SEGMENT);
  CHECK(atomic_load(&pub_err.calls) == 0 && atomic_load(&pub_err.drops) == 1);
  CHECK(macula_publish(n0, "a.b", hello, 5, 7, NULL) == MACULA_EINVAL);
  /* Oversized payloads: their own status, and a message naming the size and the limit. */
  uint8_t *big = calloc(MACULA_MAX_PAYLOAD_BYTES + 1, 1);
  CHECK(big != NULL);
  CHECK(macula_publish(n0, "sensors.kitchen.temp", big, MACULA_MAX_PAYLOAD_BYTES + 1, 0, NULL) == MACULA_EPAYLOAD_TOO_LARGE);
  CHECK(strstr(macula_last_error(), "1047553 bytes") != NULL && strstr(macula_last_error(), "1047552") != NULL);
  CHECK(macula_call_blocking(&(uint8_t *){NULL}, &(size_t){0}, n0, "c.echo", big, MACULA_MAX_PAYLOAD_BYTES + 1, 0) ==
        MACULA_EPAYLOAD_TOO_LARGE);
  free(big);
  CHECK(macula_subscription_dropped(sub) == 0);
  /* After free: drop once, and no more calls. */
  macula_subscription_free(sub);
  CHECK(atomic_load(&sub_probe.drops) == 1);
  int before = atomic_load(&sub_probe.calls);
  CHECK(macula_publish(n0, "sensors.kitchen.temp", hello, 5, 0, NULL) == MACULA_OK);
  sleep_ms(100);
  CHECK(atomic_load(&sub_probe.calls) == before);

  /* RPC: answer now, fail, forget, answer later from this thread, unknown procedure. */
  probe h_echo = {0}, h_refuse = {0}, h_forget = {0}, h_later = {0};
  macula_advertisement *a1 = NULL, *a2 = NULL, *a3 = NULL, *a4 = NULL, *a5 = NULL;
  CHECK(macula_advertise(&a1, n1, "c.echo", (macula_handler){&h_echo, echo, on_drop}) == MACULA_OK);
  CHECK(macula_advertise(&a2, n1, "c.refuse", (macula_handler){&h_refuse, refuse, on_drop}) == MACULA_OK);
  CHECK(macula_advertise(&a3, n1, "c.forget", (macula_handler){&h_forget, forget, on_drop}) == MACULA_OK);
  CHECK(macula_advertise(&a4, n1, "c.later", (macula_handler){&h_later, later, on_drop}) == MACULA_OK);
  probe h_bad = {0};
  CHECK(macula_advertise(&a5, n1, "bad..name", (macula_handler){&h_bad, echo, on_drop}) == MACULA_ENAME_EMPTY_SEGMENT);
  CHECK(atomic_load(&h_bad.drops) == 1);
  CHECK(macula_mesh_settle(mesh) == MACULA_OK);
  uint8_t *out = NULL;
  size_t len = 0;
  CHECK(macula_call_blocking(&out, &len, n0, "c.echo", (const uint8_t *)"ping", 4, 0) == MACULA_OK);
  CHECK(len == 4 && out && memcmp(out, "ping", 4) == 0);
  macula_free(out);
  CHECK(macula_call_blocking(&out, &len, n0, "c.refuse", NULL, 0, 0) == MACULA_EHANDLER);
  CHECK(out && strcmp((const char *)out, "refused by C") == 0);
  macula_free(out);
  CHECK(macula_call_blocking(&out, &len, n0, "c.forget", NULL, 0, 0) == MACULA_EHANDLER);
  macula_free(out);
  CHECK(macula_call_blocking(&out, &len, n0, "c.none", NULL, 0, 0) == MACULA_ENO_PROVIDER);
  CHECK(out == NULL);
  /* A result above the limit: the handler is told, the caller gets the same error; freeing the
   * mesh from the handler was refused (the mesh still answers below). */
  probe h_big = {0};
  macula_advertisement *a6 = NULL;
  atomic_store(&mesh_for_free, mesh);
  CHECK(macula_advertise(&a6, n1, "c.big", (macula_handler){&h_big, too_big, on_drop}) == MACULA_OK);
  CHECK(macula_mesh_settle(mesh) == MACULA_OK);
  CHECK(macula_call_blocking(&out, &len, n0, "c.big", NULL, 0, 0) == MACULA_EPAYLOAD_TOO_LARGE);
  macula_free(out);
  /* The caller may have its answer before the handler's macula_reply_send has returned. */
  for (int i = 0; i < 5000 && atomic_load(&big_status) == 1; ++i) sleep_ms(1);
  CHECK(atomic_load(&big_status) == MACULA_EPAYLOAD_TOO_LARGE);
  macula_advertisement_free(a6);
  probe call_done = {0};
  CHECK(macula_call(n0, "c.later", (const uint8_t *)"x", 1, 2000, (macula_result_callback){&call_done, on_result, on_drop}) ==
        MACULA_OK);
  for (int i = 0; i < 5000 && atomic_load(&kept_reply) == NULL; ++i) sleep_ms(1);
  CHECK(atomic_load(&kept_reply) != NULL);
  CHECK(macula_reply_send(atomic_load(&kept_reply), (const uint8_t *)"answered later", 14) == MACULA_OK);
  CHECK(wait_for(&call_done.calls, 1));
  CHECK(atomic_load(&call_done.last_status) == MACULA_OK);
  CHECK(strcmp(call_done.last, "answered later") == 0);
  CHECK(wait_for(&call_done.drops, 1));
  probe call_err = {0};
  CHECK(macula_call(n0, "bad..name", NULL, 0, 0, (macula_result_callback){&call_err, on_result, on_drop}) ==
        MACULA_ENAME_EMPTY_SEGMENT);
  CHECK(atomic_load(&call_err.calls) == 0 && atomic_load(&call_err.drops) == 1);
  macula_advertisement_free(a1);
  macula_advertisement_free(a2);
  macula_advertisement_free(a3);
  macula_advertisement_free(a4);
  CHECK(atomic_load(&h_echo.drops) == 1 && atomic_load(&h_refuse.drops) == 1 && atomic_load(&h_forget.drops) == 1 &&
        atomic_load(&h_later.drops) == 1);
  CHECK(macula_call_blocking(&out, &len, n0, "c.echo", NULL, 0, 500) == MACULA_ENO_PROVIDER);
  macula_free(out);
  macula_mesh_free(mesh);
}

int main(void) {
  test_basics();
  test_standalone_node();
  test_client_access();
  test_refused_start();
  test_mesh();
  test_reply_lifetime();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("test_capi: all checks passed\n");
  return 0;
}
