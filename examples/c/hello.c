/* Two libmacula nodes from plain C: a wildcard subscription, a QoS 1 publish, an RPC.
 * Build: cc -std=c11 hello.c -lmacula (installed) — CMake builds and runs it as a test. */
#define _POSIX_C_SOURCE 200809L
#include <macula/macula.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static atomic_int received;

static void on_message(void *ctx, const macula_message *m) {
  (void)ctx;
  printf("B got %.*s via %.*s: %.*s\n", (int)m->topic_len, m->topic, (int)m->pattern_len, m->pattern,
         (int)m->payload_len, (const char *)m->payload);
  atomic_fetch_add(&received, 1);
}

static void add(void *ctx, const uint8_t *args, size_t len, macula_reply *reply) {
  (void)ctx;
  if (len != 2) {
    macula_reply_fail(reply, "math.add takes two bytes");
    return;
  }
  char sum[8];
  int n = snprintf(sum, sizeof sum, "%d", args[0] + args[1]);
  macula_reply_send(reply, (const uint8_t *)sum, (size_t)n);
}

int main(void) {
  macula_mesh *mesh = NULL;
  if (macula_mesh_new(&mesh, 2, "c.demo") != MACULA_OK) {
    fprintf(stderr, "mesh: %s\n", macula_last_error());
    return 1;
  }
  macula_node *a = macula_mesh_node(mesh, 0), *b = macula_mesh_node(mesh, 1);
  macula_subscription *sub = NULL;
  macula_advertisement *adv = NULL;
  macula_subscribe(&sub, b, "sensors.#", (macula_message_callback){NULL, on_message, NULL});
  macula_advertise(&adv, b, "math.add", (macula_handler){NULL, add, NULL});
  macula_mesh_settle(mesh);

  const char *reading = "21.5";
  int rc = macula_publish(a, "sensors.kitchen.temp", (const uint8_t *)reading, strlen(reading), MACULA_QOS_AT_LEAST_ONCE, NULL);
  printf("A publishes sensors.kitchen.temp: %s\n", macula_strerror(rc));
  for (int i = 0; i < 5000 && atomic_load(&received) == 0; ++i) nanosleep(&(struct timespec){0, 1000000}, NULL);

  uint8_t *out = NULL;
  size_t len = 0;
  const uint8_t args[2] = {40, 2};
  rc = macula_call_blocking(&out, &len, a, "math.add", args, 2, 0);
  printf("A calls math.add(40, 2) -> %s%s\n", rc == MACULA_OK ? "" : macula_strerror(rc), rc == MACULA_OK ? (char *)out : "");
  const int ok = rc == MACULA_OK && len == 2 && memcmp(out, "42", 2) == 0 && atomic_load(&received) == 1;
  macula_free(out);
  macula_subscription_free(sub);
  macula_advertisement_free(adv);
  macula_mesh_free(mesh);
  printf("c example: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
