/* The README's C block as a complete program: its lines, in order, with what makes them a
 * program around them (check_readme.py keeps them equal). CTest runs it. */
#define _POSIX_C_SOURCE 200809L
#include <macula/macula.h>

#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static atomic_int received;

/* Called on one of the node's threads. */
static void on_message(void *ctx, const macula_message *m) {
  (void)ctx;
  printf("%.*s: %.*s\n", (int)m->topic_len, m->topic, (int)m->payload_len, (const char *)m->payload);
  atomic_fetch_add(&received, 1);
}

int main(void) {
  void *ctx = NULL;
macula_mesh *mesh;  macula_mesh_new(&mesh, 2, "demo.realm");
macula_node *a = macula_mesh_node(mesh, 0), *b = macula_mesh_node(mesh, 1);
macula_subscription *sub;  macula_subscribe(&sub, b, "sensors.#", (macula_message_callback){ctx, on_message, NULL});
macula_mesh_settle(mesh);
macula_publish(a, "sensors.kitchen.temp", (const uint8_t *)"21.5", 4, MACULA_QOS_AT_LEAST_ONCE, NULL);
  for (int i = 0; i < 500 && atomic_load(&received) == 0; ++i) nanosleep(&(struct timespec){0, 10000000}, NULL);
macula_subscription_free(sub);  macula_mesh_free(mesh);   /* no callback runs after a free returns */
  return atomic_load(&received) == 1 ? 0 : 1;
}
