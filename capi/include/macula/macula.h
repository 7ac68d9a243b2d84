/* libmacula C ABI: a thin C11 interface over the C++ Node API, for bindings and C programs.
 *
 * Conventions (learned from nats.c and zenoh-c):
 * - Opaque handles, created by macula_<type>_new (or a verb that returns one through its first
 *   parameter) and released by macula_<type>_free. Output parameters come first.
 * - Every fallible function returns an int status: MACULA_OK (0) or a macula_status value.
 *   macula_strerror(status) describes a status; macula_last_error() returns a message about
 *   the last failure on the calling thread (valid until that thread's next libmacula call).
 *   NULL where a handle or a required pointer is expected gives MACULA_EINVAL, never a crash.
 * - Options structs carry their own size (`struct_size`): call macula_<x>_options_init()
 *   first; new fields are only ever added at the end, so old binaries keep working.
 * - Callbacks are {context, call, drop}: the library calls `call` zero or more times as
 *   documented, then `drop(context)` exactly once when it will not call `call` again (drop may
 *   be NULL). Data passed to `call` is valid only during that call: copy what you keep.
 * - Ownership: the library owns every pointer it passes to a callback (messages, payloads,
 *   results, RPC arguments, log strings) until that call returns; the one exception is an
 *   RPC handler's macula_reply, which the handler owns (see macula_reply). What a function
 *   returns through an output parameter (macula_call_blocking, macula_node_metrics) is the
 *   caller's, released with macula_free. Buffers and strings the caller passes in are copied
 *   before the function returns (context and log_user_data pointers are kept as given).
 * - After macula_<handle>_free returns, none of that handle's callbacks run any more (one that
 *   was running has finished, unless free is called from inside it).
 * - Threads: message and RPC handler callbacks run on the node's worker threads; completion
 *   callbacks (publish, call) run on the node's I/O thread and must not block. Functions
 *   documented as blocking must not be called from any libmacula callback: they return
 *   MACULA_EWOULDDEADLOCK there instead of hanging.
 * - Use after free is undefined behaviour, as with free(3).
 */
#ifndef MACULA_MACULA_H
#define MACULA_MACULA_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define MACULA_API
#elif defined(__GNUC__)
#define MACULA_API __attribute__((visibility("default")))
#else
#define MACULA_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes: 0 is success; positive values are the library's error conditions (the same
 * numbers as macula::errc in C++); negative values are C-ABI-only conditions. */
typedef enum macula_status {
  MACULA_OK = 0,
  MACULA_ENAME_EMPTY = 1,
  MACULA_ENAME_TOO_LONG = 2,
  MACULA_ENAME_EMPTY_SEGMENT = 3,
  MACULA_ENAME_INVALID_CHARACTER = 4,
  MACULA_ENAME_WILDCARD_NOT_ALLOWED = 5,
  MACULA_EQUEUE_FULL = 8,
  MACULA_ENO_PROVIDER = 13,
  MACULA_EIDENTITY_INVALID = 22,
  MACULA_ETRANSPORT = 24,
  MACULA_EHANDSHAKE_TIMEOUT = 25,
  MACULA_ECONNECTION_CLOSED = 26,
  MACULA_ECONNECTION_REFUSED = 27,
  MACULA_EADDRESS_INVALID = 29,
  MACULA_ETIMED_OUT = 30,
  MACULA_ETOO_MANY_PENDING = 32,
  MACULA_ECANCELLED = 34,
  MACULA_ETOO_MANY_SUBSCRIPTIONS = 35,
  MACULA_EHANDLER = 36,
  MACULA_ENOT_STARTED = 38,
  MACULA_EOVERLOADED = 39,
  MACULA_EWOULDDEADLOCK = 40,
  MACULA_EWOULD_BLOCK = 42,       /* a blocking publish found no room in time */
  MACULA_EPAYLOAD_TOO_LARGE = 43, /* a payload or RPC argument above MACULA_MAX_PAYLOAD_BYTES */
  MACULA_EREALM_PROOF = 44,       /* a peer node did not prove the realm secret */
  MACULA_EUNAUTHORIZED = 45,      /* a client request without the node's client token */
  MACULA_EOPTIONS_INVALID = 46,   /* node options contradict each other (see macula_last_error) */
  MACULA_ENO_SUBSCRIBERS = 47,    /* a QoS 1 publish found no subscriber anywhere: nobody received it */
  MACULA_EADDRESS_UNRESOLVED = 48, /* a host name in an address could not be resolved */
  MACULA_EREALM_MISMATCH = 49,   /* the node dialed is in another realm (it refused the link) */
  MACULA_EINVAL = -1,    /* a NULL or out-of-range argument */
  MACULA_ENOMEM = -2,    /* allocation failed */
  MACULA_EINTERNAL = -3, /* an unexpected error inside the library (see macula_last_error) */
  MACULA_EOTHER = -4     /* another system error (see macula_last_error) */
} macula_status;

/* The largest payload, RPC argument or RPC result in bytes (macula::kMaxPayloadBytes). */
#define MACULA_MAX_PAYLOAD_BYTES (1048576u - 1024u)

typedef enum macula_qos { MACULA_QOS_AT_MOST_ONCE = 0, MACULA_QOS_AT_LEAST_ONCE = 1 } macula_qos;

/* What clients (HTTP/3 connections without a node certificate: curl, the CLI's pub and call,
 * other languages) may do on a node: publish, call and read /metrics. /health, /ready and
 * /live stay open in every mode. */
typedef enum macula_client_access {
  MACULA_CLIENT_ACCESS_AUTOMATIC = 0, /* TOKEN when the realm has a secret or client_token is
                                         set, else OPEN */
  MACULA_CLIENT_ACCESS_OPEN = 1,      /* anyone who reaches the port; refused at start
                                         (MACULA_EOPTIONS_INVALID) in a realm with a secret */
  MACULA_CLIENT_ACCESS_TOKEN = 2,     /* requests carry "authorization: Bearer <token>", else 401 */
  MACULA_CLIENT_ACCESS_CLOSED = 3     /* publish, call and /metrics over HTTP/3 answer 403 */
} macula_client_access;

/* The bearer token clients of realm `realm` with shared secret `secret` present (what a node
 * in TOKEN mode without its own client_token expects): 64 lower-case hex characters plus NUL
 * into out[0..size). MACULA_EINVAL when an argument is NULL or size < 65. Holding the token
 * does not reveal the secret: hand it to clients that must not join as nodes. Thread-safe;
 * any thread, also from libmacula callbacks. */
MACULA_API int macula_client_token(const char *realm, const char *secret, char *out, size_t size);

/* "MAJOR.MINOR.PATCH" of the library (static storage). */
MACULA_API const char *macula_version(void);
/* A description of `status` (static storage; never NULL). */
MACULA_API const char *macula_strerror(int status);
/* The message of the last failure on this thread, or "" (thread-local storage). */
MACULA_API const char *macula_last_error(void);

/* ---- buffers returned by the library ---------------------------------------------------- */
/* Releases a buffer or string the library returned (macula_call_blocking, macula_node_metrics).
 * NULL is allowed. */
MACULA_API void macula_free(void *ptr);

/* ---- node ----------------------------------------------------------------------------------- */
typedef struct macula_node macula_node;

/* Receives one log event: level 0 debug, 1 info, 2 warn, 3 error; `component` ("link", "node",
 * "http", "health", ...) and `message` are NUL-terminated and valid during the call only.
 * Called from the node's threads, possibly concurrently: thread-safe, quick, and no calls
 * back into the library. */
typedef void (*macula_log_fn)(void *user_data, int level, const char *component, const char *message);

typedef struct macula_node_options {
  size_t struct_size;            /* set by macula_node_options_init */
  const char *realm;             /* default "macula.default" */
  const char *realm_secret;      /* NULL: none */
  const char *listen;            /* "host:port"; default "127.0.0.1:0" */
  const char *key_file;          /* PEM; NULL with cert_file NULL: ephemeral identity */
  const char *cert_file;
  const char *const *bootstrap;  /* "host:port" peers linked at start and re-linked */
  size_t bootstrap_count;
  size_t worker_threads;         /* handler threads; default 2 */
  size_t io_threads;             /* network threads; default 1 */
  uint32_t rpc_timeout_ms;       /* default 5000 */
  int dht;                       /* nonzero (default): discover providers and subscribers
                                    through the DHT, so every node of the realm is reachable */
  const char *http_listen;       /* plain-HTTP /metrics /health /ready /live on this TCP
                                    "host:port"; default "" : off (HTTP/3 serves them always) */
  macula_log_fn log;             /* NULL (default): the node logs nothing */
  void *log_user_data;           /* passed to `log`; must outlive the node */
  int log_level;                 /* least level passed to `log` (0 debug .. 3 error, 4 off);
                                    default 1 (info) */
  int client_access;             /* a macula_client_access; default AUTOMATIC */
  const char *client_token;      /* the TOKEN mode's token; NULL (default): derived from realm
                                    and realm_secret as macula_client_token does */
  int leaf;                      /* nonzero: accept no inbound links; reached through the
                                    nodes this one dials (its gateways). Default 0 */
  /* Fields below were added after 0.1's first release; the pointer first, so that none falls
   * in the tail padding of an older, smaller struct (an older caller's struct_size). */
  const char *advertise_address; /* "host:port" other nodes should dial (a name is resolved once,
                                    at start); NULL (default): the listen address as bound.
                                    Required with a 0.0.0.0 / [::] listen address (else
                                    MACULA_EOPTIONS_INVALID at start) */
  uint32_t dht_record_ttl_s;     /* how long the DHT keeps this node's records once they are no
                                    longer refreshed (it died); 30 to 86400 (else macula_node_start
                                    fails with MACULA_EOPTIONS_INVALID); 0: default 300 */
} macula_node_options;

/* Fills the first `size` bytes of `options` (sizeof *options as the caller compiled it) with
 * the defaults and sets struct_size to `size`: a library newer than the caller's header never
 * writes past the caller's struct. Use the macro below. */
MACULA_API void macula_node_options_init_sized(macula_node_options *options, size_t size);
/* Fills `options` with the defaults (the caller's sizeof). The exported function of the same
 * name, for binaries built before the macro, assumes this header's struct size. */
#define macula_node_options_init(options) macula_node_options_init_sized((options), sizeof *(options))

/* Creates a node (not started). `options` may be NULL (defaults); strings are copied. */
MACULA_API int macula_node_new(macula_node **out, const macula_node_options *options);
/* Binds, starts serving and starts linking to the bootstrap peers. When it refuses (an invalid
 * or contradictory option, an unreadable key, an address that does not parse or bind),
 * macula_last_error() names the option and the reason, e.g. "macula_node_start:
 * dht_record_ttl 5 s: must be 30 s to 1 day: ..."; the node's log gets the same line. */
MACULA_API int macula_node_start(macula_node *node);
/* Graceful stop (waits up to 2 s for work in flight). Blocking. Idempotent. */
MACULA_API int macula_node_stop(macula_node *node);
/* Stops the node if needed and releases it. NULL is allowed. Nodes of a mesh belong to the
 * mesh: freeing one does nothing. Not from one of the node's own callbacks (it would stop the
 * threads running them): there it does nothing but set macula_last_error; free it later. */
MACULA_API void macula_node_free(macula_node *node);
/* The node id as 64 lower-case hex characters plus NUL (after start). */
MACULA_API int macula_node_id(const macula_node *node, char out_hex[65]);
/* "host:port" the node listens on, NUL-terminated, into out[0..size). MACULA_EINVAL when it
 * does not fit. */
MACULA_API int macula_node_address(const macula_node *node, char *out, size_t size);
/* Links to the node at `address` and keeps re-linking. Blocking. */
MACULA_API int macula_node_connect(macula_node *node, const char *address);
/* Prometheus text 0.0.4 of the node's metrics; release *out with macula_free. */
MACULA_API int macula_node_metrics(char **out, const macula_node *node);

/* ---- pub/sub -------------------------------------------------------------------------------- */
/* One delivered message. The struct and everything it points to (topic, pattern, payload)
 * belong to the library and are valid only until the `call` that received it returns: copy
 * the bytes you keep; do not free or write through them. Strings are not NUL-terminated;
 * payload may be NULL when payload_len is 0. */
typedef struct macula_message {
  const char *topic;
  size_t topic_len;
  const char *pattern;  /* the subscription's pattern */
  size_t pattern_len;
  const uint8_t *payload;
  size_t payload_len;
  uint8_t publisher[32]; /* the publishing node's id */
  uint64_t sequence;
  int qos;
} macula_message;

typedef struct macula_message_callback {
  void *context;
  void (*call)(void *context, const macula_message *message); /* worker thread */
  void (*drop)(void *context);
} macula_message_callback;

/* Completion of an asynchronous operation: status, and for calls the result bytes (for
 * MACULA_EHANDLER, the handler's message, not NUL-terminated). `data` belongs to the library
 * and is valid only during the call; len is 0 (data maybe NULL) when there is none, always
 * for publish.
 * Runs on the I/O thread: must not block. */
typedef struct macula_result_callback {
  void *context;
  void (*call)(void *context, int status, const uint8_t *data, size_t len);
  void (*drop)(void *context);
} macula_result_callback;

/* Publishes `len` bytes to `topic`. `done` may be NULL (fire and forget); otherwise it is
 * called once with the outcome (QoS 1: once every interested peer acknowledged). When this
 * function returns an error, `done.call` is not called (its drop is). */
MACULA_API int macula_publish(macula_node *node, const char *topic, const uint8_t *data, size_t len, int qos,
                              const macula_result_callback *done);

typedef struct macula_subscription macula_subscription;
/* Subscribes `callback` to `pattern` ('*', '#', '**'). On error `callback.drop` is called. */
MACULA_API int macula_subscribe(macula_subscription **out, macula_node *node, const char *pattern,
                                macula_message_callback callback);
/* Unsubscribes; waits for a running callback of this subscription to finish (unless called
 * from inside it); then calls drop. NULL is allowed. */
MACULA_API void macula_subscription_free(macula_subscription *subscription);
/* Messages this subscription lost to its queue bound. */
MACULA_API uint64_t macula_subscription_dropped(const macula_subscription *subscription);

/* ---- RPC ------------------------------------------------------------------------------------ */
/* The right to answer one call, handed to the handler, which owns it from then on. Exactly one
 * call of macula_reply_send, macula_reply_fail or macula_reply_free consumes it (frees it,
 * whatever the status): any use after that is a use after free. Until then:
 * - any thread may consume it, at any time: during the handler's `call` or after it returned,
 *   after macula_advertisement_free (the answer still reaches the caller), and after the node
 *   was stopped or freed (then it is accepted, MACULA_OK, and goes nowhere: no caller waits);
 * - consuming it never blocks (the answer is handed to the node's I/O thread; the caller may
 *   have it before the function returns), so it may be done from any libmacula callback;
 * - the call counts as running on the serving node: macula_node_stop / _free wait for it up to
 *   2 s, then stop anyway.
 * Never consumed, it leaks, and the caller gets no answer through it: the caller's attempt
 * times out and it fails over to another provider or fails with MACULA_ETIMED_OUT (or
 * MACULA_ECANCELLED when the caller's own node stops first). */
typedef struct macula_reply macula_reply;
/* Answers with `len` bytes at `data` (copied before it returns). MACULA_EPAYLOAD_TOO_LARGE:
 * `len` is above MACULA_MAX_PAYLOAD_BYTES; the caller gets the same error. The reply is
 * consumed either way, except by MACULA_EINVAL (a NULL reply, or NULL data with len > 0). */
MACULA_API int macula_reply_send(macula_reply *reply, const uint8_t *data, size_t len);
/* Answers with an application error: the caller gets MACULA_EHANDLER and `message` (copied;
 * NULL: ""). Consumes the reply. */
MACULA_API int macula_reply_fail(macula_reply *reply, const char *message);
/* Releases a reply without answering: the caller gets MACULA_EHANDLER "handler did not answer"
 * at once. NULL is allowed. */
MACULA_API void macula_reply_free(macula_reply *reply);

typedef struct macula_handler {
  void *context;
  /* Worker thread. `args` (NULL when len is 0) belongs to the library and is valid only until
   * `call` returns: copy it to answer later. `reply` belongs to the handler (see macula_reply):
   * answer now, or keep it and answer later from any thread. */
  void (*call)(void *context, const uint8_t *args, size_t len, macula_reply *reply);
  void (*drop)(void *context);
} macula_handler;

typedef struct macula_advertisement macula_advertisement;
/* Serves `procedure` from `node` until the advertisement is freed. On error `handler.drop` is
 * called. */
MACULA_API int macula_advertise(macula_advertisement **out, macula_node *node, const char *procedure,
                                macula_handler handler);
/* Withdraws; waits for running handler calls (unless called from one); then calls drop. */
MACULA_API void macula_advertisement_free(macula_advertisement *advertisement);

/* Calls `procedure` with failover across providers; `done` is called once. timeout_ms 0: the
 * node's rpc_timeout. When this function returns an error, `done.call` is not called. */
MACULA_API int macula_call(macula_node *node, const char *procedure, const uint8_t *args, size_t len,
                           uint32_t timeout_ms, macula_result_callback done);
/* Blocking call. On MACULA_OK (and on MACULA_EHANDLER, with the handler's message) *out holds
 * *out_len bytes, followed by a NUL not counted in *out_len; they are the caller's, to release
 * with macula_free. On any other status *out is NULL. Not from libmacula callbacks. */
MACULA_API int macula_call_blocking(uint8_t **out, size_t *out_len, macula_node *node, const char *procedure,
                                    const uint8_t *args, size_t len, uint32_t timeout_ms);

/* ---- in-process mesh for tests ----------------------------------------------------------------- */
typedef struct macula_mesh macula_mesh;
/* Starts `nodes` linked nodes on loopback in realm `realm` (NULL: default) and waits until
 * their links are up. */
MACULA_API int macula_mesh_new(macula_mesh **out, size_t nodes, const char *realm);
/* The i-th node (owned by the mesh; do not free it), or NULL when out of range. */
MACULA_API macula_node *macula_mesh_node(macula_mesh *mesh, size_t index);
/* Waits until subscriptions and advertisements made before the call are known to every node. */
MACULA_API int macula_mesh_settle(macula_mesh *mesh);
/* Stops every node and releases the mesh. NULL is allowed. Not from a callback of one of its
 * nodes: there it does nothing but set macula_last_error. */
MACULA_API void macula_mesh_free(macula_mesh *mesh);

#ifdef __cplusplus
}
#endif

#endif /* MACULA_MACULA_H */
