// macula_udp_impair: a userspace UDP impairment proxy for the multi-host test harness
// (tests/cluster). The harness needs delay, jitter, loss and duplication between nodes, and
// this kernel has no netem qdisc, so the impairment sits in a process between a node and the
// address it would otherwise send to:
//
//   macula_udp_impair --listen HOST:PORT --upstream HOST:PORT [--delay-ms D] [--jitter-ms J]
//                     [--loss PCT] [--duplicate PCT] [--seed N] [--max-queue PACKETS]
//                     [--max-queue-bytes BYTES] [--max-mappings N] [--idle-timeout-ms MS]
//                     [--stats-interval-ms MS]
//
// HOST is an IPv4 address, [IPv6] in brackets, or a name; --listen port 0 picks a free port.
//
// Behaviour
// - A NAT-like mapping, as a real middlebox: each client source address gets its own socket
//   connected to the upstream, so the upstream sees one peer per client and its replies go
//   back to that client only. A mapping idle (no datagram either way) for --idle-timeout-ms
//   (120 s, the minimum RFC 4787 asks of a NAT) is removed.
// - Both directions are impaired independently, each with its own std::mt19937_64 seeded from
//   --seed (fixed default), so a one-way run drops the same datagrams every time whatever the
//   other direction does. A datagram is lost with probability --loss %; otherwise a second
//   copy is made with probability --duplicate %. Each copy waits D ms +/- uniform J ms
//   (clamped at 0) in a priority queue keyed by release time, so the RTT through the proxy is
//   2 x D. Without jitter the order is kept (equal release times leave in arrival order);
//   with jitter datagrams may reorder, as on a real multi-path route: that is intended.
// - Counters go to stdout as one JSON line on SIGTERM/SIGINT (then exit 0) and every
//   --stats-interval-ms if given. For each direction ("to_upstream", "to_client") and for
//   the totals:
//     received + duplicated = forwarded + dropped_loss + dropped_queue_full
//                             + dropped_no_mapping + dropped_send_error + queued
//   where queued datagrams are still waiting (discarded at exit, as a router being switched
//   off would).
// - On start, exactly one line: `udp_impair listening on HOST:PORT upstream HOST:PORT` with
//   the bound port. Bad flags: a message naming the flag on stderr, exit 2.
//
// Bounds (memory stays bounded whatever the peers send)
// - At most --max-queue datagrams (65536) and --max-queue-bytes (64 MiB) wait; a datagram that
//   does not fit is tail-dropped (dropped_queue_full), as a full router queue does.
// - At most --max-mappings (256) clients; datagrams from further clients are dropped
//   (dropped_no_mapping), as are queued datagrams whose mapping has since been removed.
// - A send that fails (socket buffer full, ICMP unreachable) drops the datagram
//   (dropped_send_error): a middlebox does not buffer beyond its queue.
// - D + J is at most 60 s, under the default idle timeout, so a datagram is never held past
//   the life of its mapping (with a shorter --idle-timeout-ms it may be: dropped_no_mapping).
// - Buffers: 64 x 64 KiB to receive into, at most 1024 spare 4 KiB payload buffers reused.
//
// One thread: epoll, recvmmsg/sendmmsg in batches of 64 (QUIC through it moves 512 KiB
// messages; batching keeps it above 100k datagrams/s on loopback given a core; the cost is
// almost all in the kernel), CLOCK_MONOTONIC, and the epoll timeout is the time to the next
// release, rounded up to a millisecond (a release may be up to ~1 ms late, never early).
// Only the UDP payload is forwarded (no ECN marks, no DSCP): QUIC then runs without ECN, as
// behind a middlebox that bleaches it.
#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

namespace {

constexpr const char* kUsage =
    "usage: macula_udp_impair --listen HOST:PORT --upstream HOST:PORT [--delay-ms D] [--jitter-ms J]\n"
    "                         [--loss PCT] [--duplicate PCT] [--seed N] [--max-queue PACKETS]\n"
    "                         [--max-queue-bytes BYTES] [--max-mappings N] [--idle-timeout-ms MS]\n"
    "                         [--stats-interval-ms MS]\n";

constexpr std::int64_t kMsNs = 1'000'000;
constexpr std::int64_t kMaxDelayMs = 60'000;
constexpr int kBatch = 64;
// A readable socket is drained at most this many batches per wake-up, so one busy direction
// cannot hold back the releases of the other for long.
constexpr int kRoundsPerWake = 8;
// Larger than any UDP payload (65,527 bytes over IPv6), so nothing is ever truncated.
constexpr std::size_t kBufSize = 65536;
// Room for bursts from QUIC (a 512 KiB message is ~400 datagrams sent back to back); the
// kernel caps it at net.core.rmem_max unless we may force it.
constexpr int kSocketBuffer = 4 << 20;

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct Config {
  sockaddr_storage listen{};
  socklen_t listen_len = 0;
  sockaddr_storage upstream{};
  socklen_t upstream_len = 0;
  std::int64_t delay_ms = 0, jitter_ms = 0;
  double loss_pct = 0, duplicate_pct = 0;
  std::uint64_t seed = 0x6d6163756c61;  // "macula": fixed, so runs without --seed reproduce
  std::int64_t max_queue = 65536;
  std::int64_t max_queue_bytes = 64 << 20;
  std::int64_t max_mappings = 256;
  std::int64_t idle_timeout_ms = 120'000;
  std::int64_t stats_interval_ms = 0;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "macula_udp_impair: %s\n%s", message.c_str(), kUsage);
  std::exit(2);
}

std::int64_t parse_int(std::string_view flag, std::string_view text, std::int64_t lo, std::int64_t hi) {
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || v < lo || v > hi)
    usage_error(std::string(flag) + ": expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                "], got '" + std::string(text) + "'");
  return v;
}

std::uint64_t parse_u64(std::string_view flag, std::string_view text) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size())
    usage_error(std::string(flag) + ": expected an unsigned integer, got '" + std::string(text) + "'");
  return v;
}

double parse_pct(std::string_view flag, std::string_view text) {
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(v) || v < 0 || v > 100)
    usage_error(std::string(flag) + ": expected a percentage in [0, 100], got '" + std::string(text) + "'");
  return v;
}

// HOST:PORT or [IPV6]:PORT; a bare IPv6 address without brackets is refused (its last
// group would read as the port).
void parse_addr(std::string_view flag, std::string_view text, bool port_zero_ok, sockaddr_storage& out,
                socklen_t& out_len) {
  const auto bad = [&](const std::string& why) {
    usage_error(std::string(flag) + ": " + why + ", got '" + std::string(text) + "'");
  };
  std::string host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      bad("expected [IPV6]:PORT");
    host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) bad("expected HOST:PORT or [IPV6]:PORT");
    host = std::string(text.substr(0, colon));
    if (host.find(':') != std::string::npos) bad("an IPv6 address needs brackets, [IPV6]:PORT");
    port = text.substr(colon + 1);
  }
  if (host.empty()) bad("missing host");
  std::int64_t p = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || p < (port_zero_ok ? 0 : 1) || p > 65535)
    bad(port_zero_ok ? "expected a port in [0, 65535]" : "expected a port in [1, 65535]");

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res); rc != 0 || res == nullptr)
    bad(std::string("cannot resolve host (") + gai_strerror(rc) + ")");
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  out_len = static_cast<socklen_t>(res->ai_addrlen);
  freeaddrinfo(res);
  const auto nport = htons(static_cast<std::uint16_t>(p));
  if (out.ss_family == AF_INET)
    reinterpret_cast<sockaddr_in*>(&out)->sin_port = nport;
  else
    reinterpret_cast<sockaddr_in6*>(&out)->sin6_port = nport;
}

Config parse_args(int argc, char** argv) {
  Config c;
  bool have_listen = false, have_upstream = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    std::string_view value;
    bool inline_value = false;
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      inline_value = true;
    }
    static constexpr std::array<std::string_view, 12> kFlags = {
        "--listen",    "--upstream",      "--delay-ms",     "--jitter-ms",       "--loss",
        "--duplicate", "--seed",          "--max-queue",    "--max-queue-bytes", "--max-mappings",
        "--idle-timeout-ms", "--stats-interval-ms"};
    if (std::find(kFlags.begin(), kFlags.end(), arg) == kFlags.end())
      usage_error("unknown flag '" + std::string(arg) + "'");
    if (!inline_value) {
      if (i + 1 >= argc) usage_error(std::string(arg) + ": missing value");
      value = argv[++i];
    }
    if (arg == "--listen") {
      parse_addr(arg, value, true, c.listen, c.listen_len);
      have_listen = true;
    } else if (arg == "--upstream") {
      parse_addr(arg, value, false, c.upstream, c.upstream_len);
      have_upstream = true;
    } else if (arg == "--delay-ms") {
      c.delay_ms = parse_int(arg, value, 0, kMaxDelayMs);
    } else if (arg == "--jitter-ms") {
      c.jitter_ms = parse_int(arg, value, 0, kMaxDelayMs);
    } else if (arg == "--loss") {
      c.loss_pct = parse_pct(arg, value);
    } else if (arg == "--duplicate") {
      c.duplicate_pct = parse_pct(arg, value);
    } else if (arg == "--seed") {
      c.seed = parse_u64(arg, value);
    } else if (arg == "--max-queue") {
      c.max_queue = parse_int(arg, value, 1, 1 << 24);
    } else if (arg == "--max-queue-bytes") {
      c.max_queue_bytes = parse_int(arg, value, static_cast<std::int64_t>(kBufSize), std::int64_t{1} << 34);
    } else if (arg == "--max-mappings") {
      c.max_mappings = parse_int(arg, value, 1, 65536);
    } else if (arg == "--idle-timeout-ms") {
      c.idle_timeout_ms = parse_int(arg, value, 1, std::int64_t{24} * 3600 * 1000);
    } else if (arg == "--stats-interval-ms") {
      c.stats_interval_ms = parse_int(arg, value, 1, std::int64_t{24} * 3600 * 1000);
    }
  }
  if (!have_listen) usage_error("--listen: required");
  if (!have_upstream) usage_error("--upstream: required");
  if (c.delay_ms + c.jitter_ms > kMaxDelayMs)
    usage_error("--delay-ms + --jitter-ms: at most " + std::to_string(kMaxDelayMs) + " ms");
  return c;
}

std::string format_addr(const sockaddr_storage& a, socklen_t len) {
  char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?";
  getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, host, sizeof host, port, sizeof port,
              NI_NUMERICHOST | NI_NUMERICSERV);
  return a.ss_family == AF_INET6 ? "[" + std::string(host) + "]:" + port : std::string(host) + ":" + port;
}

void set_buffers(int fd) {
  const int size = kSocketBuffer;
  // FORCE works when we may (root, CAP_NET_ADMIN) and then ignores rmem_max; else take what
  // the sysctl allows.
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

// A client address as a hashable value (port, address and, for IPv6, scope).
struct AddrKey {
  std::uint64_t hi = 0, lo = 0, meta = 0;
  bool operator==(const AddrKey&) const = default;
};

struct AddrKeyHash {
  std::size_t operator()(const AddrKey& k) const noexcept {
    std::uint64_t h = k.hi * 0x9E3779B97F4A7C15ull;
    h = (h ^ k.lo) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ k.meta) * 0x94D049BB133111EBull;
    return static_cast<std::size_t>(h ^ (h >> 31));
  }
};

AddrKey key_of(const sockaddr_storage& a) {
  AddrKey k;
  if (a.ss_family == AF_INET) {
    sockaddr_in s{};
    std::memcpy(&s, &a, sizeof s);
    k.lo = s.sin_addr.s_addr;
    k.meta = AF_INET | (std::uint64_t{s.sin_port} << 16);
  } else if (a.ss_family == AF_INET6) {
    sockaddr_in6 s{};
    std::memcpy(&s, &a, sizeof s);
    std::memcpy(&k.hi, s.sin6_addr.s6_addr, 8);
    std::memcpy(&k.lo, s.sin6_addr.s6_addr + 8, 8);
    k.meta = AF_INET6 | (std::uint64_t{s.sin6_port} << 16) | (std::uint64_t{s.sin6_scope_id} << 32);
  }
  return k;
}

enum Dir : std::uint8_t { kToUpstream = 0, kToClient = 1 };

struct DirStats {
  std::uint64_t received = 0, forwarded = 0, dropped_loss = 0, duplicated = 0, dropped_queue_full = 0,
                dropped_no_mapping = 0, dropped_send_error = 0, queued = 0;
  DirStats& operator+=(const DirStats& o) {
    received += o.received, forwarded += o.forwarded, dropped_loss += o.dropped_loss, duplicated += o.duplicated;
    dropped_queue_full += o.dropped_queue_full, dropped_no_mapping += o.dropped_no_mapping;
    dropped_send_error += o.dropped_send_error, queued += o.queued;
    return *this;
  }
  std::string json() const {
    char buf[400];
    std::snprintf(buf, sizeof buf,
                  "\"received\":%llu,\"forwarded\":%llu,\"dropped_loss\":%llu,\"duplicated\":%llu,"
                  "\"dropped_queue_full\":%llu,\"dropped_no_mapping\":%llu,\"dropped_send_error\":%llu,\"queued\":%llu",
                  static_cast<unsigned long long>(received), static_cast<unsigned long long>(forwarded),
                  static_cast<unsigned long long>(dropped_loss), static_cast<unsigned long long>(duplicated),
                  static_cast<unsigned long long>(dropped_queue_full), static_cast<unsigned long long>(dropped_no_mapping),
                  static_cast<unsigned long long>(dropped_send_error), static_cast<unsigned long long>(queued));
    return buf;
  }
};

struct Mapping {
  int fd = -1;  // connected to the upstream; -1 when the slot is free
  // Bumped when the slot is reused, so a queued datagram of a removed client is not sent to
  // the next one.
  std::uint32_t gen = 0;
  sockaddr_storage client{};
  socklen_t client_len = 0;
  AddrKey key;
  std::int64_t last_active_ns = 0;
};

struct Packet {
  std::int64_t release_ns = 0;
  std::uint64_t seq = 0;  // arrival order, so equal release times keep it
  std::uint32_t slot = 0, gen = 0;
  Dir dir = kToUpstream;
  std::vector<std::uint8_t> data;
};

// std::*_heap keeps the largest first; "larger" here means released earlier.
struct ReleasedLater {
  bool operator()(const Packet& a, const Packet& b) const {
    return a.release_ns != b.release_ns ? a.release_ns > b.release_ns : a.seq > b.seq;
  }
};

constexpr std::uint64_t kListenTag = ~std::uint64_t{0};
constexpr std::uint64_t kSignalTag = ~std::uint64_t{0} - 1;

class Proxy {
 public:
  explicit Proxy(const Config& c)
      : cfg_(c), maps_(static_cast<std::size_t>(c.max_mappings)), rng_{std::mt19937_64(c.seed), std::mt19937_64(~c.seed)},
        bufs_(static_cast<std::size_t>(kBatch) * kBufSize) {
    for (auto i = static_cast<std::uint32_t>(maps_.size()); i-- > 0;) free_slots_.push_back(i);
    ready_.reserve(kBatch);
  }

  // Returns false (after saying why on stderr) if the sockets cannot be set up.
  bool start() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    // Signals arrive through the epoll set, so one landing just before epoll_wait is not
    // lost until the next timeout.
    sigprocmask(SIG_BLOCK, &set, nullptr);
    sig_fd_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    listen_fd_ = socket(cfg_.listen.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (sig_fd_ < 0 || ep_ < 0 || listen_fd_ < 0) return fail("socket setup");
    set_buffers(listen_fd_);
    if (bind(listen_fd_, reinterpret_cast<const sockaddr*>(&cfg_.listen), cfg_.listen_len) != 0)
      return fail(("bind " + format_addr(cfg_.listen, cfg_.listen_len)).c_str());
    bound_len_ = sizeof bound_;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound_), &bound_len_);
    if (!watch(listen_fd_, kListenTag) || !watch(sig_fd_, kSignalTag)) return fail("epoll_ctl");
    return true;
  }

  std::string bound_text() const { return format_addr(bound_, bound_len_); }

  void run() {
    const std::int64_t start = now_ns();
    const std::int64_t reap_every = std::min<std::int64_t>(1000, std::max<std::int64_t>(1, cfg_.idle_timeout_ms / 4)) * kMsNs;
    std::int64_t next_reap = start + reap_every;
    std::int64_t next_stats = cfg_.stats_interval_ms > 0 ? start + cfg_.stats_interval_ms * kMsNs : INT64_MAX;
    std::array<epoll_event, 64> events{};
    bool stop = false;
    while (!stop) {
      const int n = epoll_wait(ep_, events.data(), static_cast<int>(events.size()), timeout_ms(now_ns(), std::min(next_reap, next_stats)));
      if (n < 0 && errno != EINTR) {
        std::perror("macula_udp_impair: epoll_wait");
        break;
      }
      for (int i = 0; i < n; ++i) {
        const std::uint64_t tag = events[static_cast<std::size_t>(i)].data.u64;
        if (tag == kSignalTag) {
          signalfd_siginfo info{};
          while (read(sig_fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) stop = true;
        } else if (tag == kListenTag) {
          drain(listen_fd_, std::nullopt);
        } else if (maps_[tag].fd >= 0) {
          drain(maps_[tag].fd, static_cast<std::uint32_t>(tag));
        }
      }
      const std::int64_t now = now_ns();
      release_due(now);
      flush();
      if (now >= next_reap) {
        reap(now);
        next_reap = now + reap_every;
      }
      if (now >= next_stats) {
        print_stats(false);
        next_stats = now + cfg_.stats_interval_ms * kMsNs;
      }
    }
    print_stats(true);
  }

 private:
  bool fail(const char* what) {
    std::fprintf(stderr, "macula_udp_impair: %s: %s\n", what, std::strerror(errno));
    return false;
  }

  bool watch(int fd, std::uint64_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    return epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) == 0;
  }

  int timeout_ms(std::int64_t now, std::int64_t next_timer) const {
    std::int64_t next = next_timer;
    if (!queue_.empty()) next = std::min(next, queue_.front().release_ns);
    if (next <= now) return 0;
    // Rounded up: waking early only costs a loop, waking late would delay every release.
    return static_cast<int>(std::min<std::int64_t>((next - now + kMsNs - 1) / kMsNs, 60'000));
  }

  // `from_slot` empty: the listen socket (datagrams from clients); else that mapping's
  // upstream socket.
  void drain(int fd, std::optional<std::uint32_t> from_slot) {
    std::array<mmsghdr, kBatch> hdrs{};
    std::array<iovec, kBatch> iov{};
    for (int round = 0; round < kRoundsPerWake; ++round) {
      for (std::size_t i = 0; i < kBatch; ++i) {
        iov[i] = {bufs_.data() + i * kBufSize, kBufSize};
        hdrs[i].msg_hdr = {};
        hdrs[i].msg_hdr.msg_iov = &iov[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        if (!from_slot) {
          hdrs[i].msg_hdr.msg_name = &names_[i];
          hdrs[i].msg_hdr.msg_namelen = sizeof names_[i];
        }
      }
      const int n = recvmmsg(fd, hdrs.data(), kBatch, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        // ECONNREFUSED reports an ICMP error for an earlier send on a connected socket; it
        // is consumed by this call and the queue behind it is still readable.
        if (errno == EINTR || errno == ECONNREFUSED) continue;
        return;
      }
      const std::int64_t now = now_ns();
      for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
        const std::uint8_t* data = bufs_.data() + i * kBufSize;
        const std::size_t len = hdrs[i].msg_len;
        if (from_slot) {
          maps_[*from_slot].last_active_ns = now;
          impair(kToClient, *from_slot, data, len, now);
        } else if (const auto slot = mapping_for(names_[i], hdrs[i].msg_hdr.msg_namelen, now)) {
          maps_[*slot].last_active_ns = now;
          impair(kToUpstream, *slot, data, len, now);
        } else {
          ++stats_[kToUpstream].received;
          ++stats_[kToUpstream].dropped_no_mapping;
        }
      }
      if (n < kBatch) return;
    }
  }

  std::optional<std::uint32_t> mapping_for(const sockaddr_storage& from, socklen_t len, std::int64_t now) {
    const AddrKey key = key_of(from);
    if (const auto it = index_.find(key); it != index_.end()) return it->second;
    if (free_slots_.empty()) return std::nullopt;
    const int fd = socket(cfg_.upstream.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      warn_once("upstream socket");
      return std::nullopt;
    }
    set_buffers(fd);
    const std::uint32_t slot = free_slots_.back();
    if (connect(fd, reinterpret_cast<const sockaddr*>(&cfg_.upstream), cfg_.upstream_len) != 0 || !watch(fd, slot)) {
      warn_once("connect to upstream");
      close(fd);
      return std::nullopt;
    }
    free_slots_.pop_back();
    Mapping& m = maps_[slot];
    m.fd = fd;
    ++m.gen;
    m.client = from;
    m.client_len = len;
    m.key = key;
    m.last_active_ns = now;
    index_.emplace(key, slot);
    ++mappings_created_;
    return slot;
  }

  void reap(std::int64_t now) {
    for (std::uint32_t slot = 0; slot < maps_.size(); ++slot) {
      Mapping& m = maps_[slot];
      if (m.fd < 0 || now - m.last_active_ns < cfg_.idle_timeout_ms * kMsNs) continue;
      close(m.fd);  // also leaves the epoll set
      m.fd = -1;
      index_.erase(m.key);
      free_slots_.push_back(slot);
      ++mappings_reaped_;
    }
  }

  // A uniform double in [0, 1) from the top 53 bits: unlike std::uniform_real_distribution,
  // the same on every standard library, so a seed means the same run everywhere.
  static double unit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

  void impair(Dir dir, std::uint32_t slot, const std::uint8_t* data, std::size_t len, std::int64_t now) {
    DirStats& s = stats_[dir];
    std::mt19937_64& rng = rng_[dir];
    ++s.received;
    const bool lost = unit(rng) * 100 < cfg_.loss_pct;
    const bool dup = unit(rng) * 100 < cfg_.duplicate_pct;
    if (lost) {
      ++s.dropped_loss;
      return;
    }
    if (dup) ++s.duplicated;
    for (int copy = 0; copy < (dup ? 2 : 1); ++copy) {
      std::int64_t delay = cfg_.delay_ms * kMsNs;
      if (cfg_.jitter_ms > 0)
        delay += std::llround((unit(rng) * 2 - 1) * static_cast<double>(cfg_.jitter_ms * kMsNs));
      delay = std::max<std::int64_t>(delay, 0);
      if (delay == 0) {
        push_ready(make_packet(0, slot, dir, data, len));
        continue;
      }
      if (queue_.size() >= static_cast<std::size_t>(cfg_.max_queue) ||
          queue_bytes_ + len > static_cast<std::size_t>(cfg_.max_queue_bytes)) {
        ++s.dropped_queue_full;
        continue;
      }
      queue_.push_back(make_packet(now + delay, slot, dir, data, len));
      std::push_heap(queue_.begin(), queue_.end(), ReleasedLater{});
      queue_bytes_ += len;
      ++s.queued;
    }
  }

  Packet make_packet(std::int64_t release, std::uint32_t slot, Dir dir, const std::uint8_t* data, std::size_t len) {
    Packet p;
    p.release_ns = release;
    p.seq = next_seq_++;
    p.slot = slot;
    p.gen = maps_[slot].gen;
    p.dir = dir;
    // Reused buffers: at 100k datagrams/s a malloc/free pair per datagram shows.
    if (!spare_.empty()) {
      p.data = std::move(spare_.back());
      spare_.pop_back();
    } else {
      p.data.reserve(std::max<std::size_t>(len, 2048));
    }
    p.data.assign(data, data + len);
    return p;
  }

  void push_ready(Packet&& p) {
    ready_.push_back(std::move(p));
    if (ready_.size() == kBatch) flush();
  }

  void release_due(std::int64_t now) {
    while (!queue_.empty() && queue_.front().release_ns <= now) {
      std::pop_heap(queue_.begin(), queue_.end(), ReleasedLater{});
      Packet p = std::move(queue_.back());
      queue_.pop_back();
      queue_bytes_ -= p.data.size();
      --stats_[p.dir].queued;
      push_ready(std::move(p));
    }
  }

  // Sends the ready datagrams, one sendmmsg per run of datagrams to the same socket.
  void flush() {
    const std::size_t n = ready_.size();
    std::array<mmsghdr, kBatch> hdrs{};
    std::array<iovec, kBatch> iov{};
    std::array<int, kBatch> fds{};
    for (std::size_t i = 0; i < n; ++i) {
      Packet& p = ready_[i];
      Mapping& m = maps_[p.slot];
      if (m.fd < 0 || m.gen != p.gen) {
        ++stats_[p.dir].dropped_no_mapping;
        fds[i] = -1;
        continue;
      }
      iov[i] = {p.data.data(), p.data.size()};
      hdrs[i].msg_hdr.msg_iov = &iov[i];
      hdrs[i].msg_hdr.msg_iovlen = 1;
      if (p.dir == kToClient) {
        fds[i] = listen_fd_;
        hdrs[i].msg_hdr.msg_name = &m.client;
        hdrs[i].msg_hdr.msg_namelen = m.client_len;
      } else {
        fds[i] = m.fd;
      }
    }
    for (std::size_t i = 0; i < n;) {
      if (fds[i] < 0) {
        ++i;
        continue;
      }
      std::size_t end = i;
      while (end < n && fds[end] == fds[i]) ++end;
      while (i < end) {
        const int sent = sendmmsg(fds[i], &hdrs[i], static_cast<unsigned>(end - i), MSG_DONTWAIT);
        if (sent <= 0) {
          if (sent < 0 && errno == EINTR) continue;
          ++stats_[ready_[i].dir].dropped_send_error;
          ++i;
          continue;
        }
        stats_[ready_[i].dir].forwarded += static_cast<std::uint64_t>(sent);
        i += static_cast<std::size_t>(sent);
      }
    }
    for (Packet& p : ready_)
      if (spare_.size() < kSpareMax && p.data.capacity() <= kSpareCapacity) spare_.push_back(std::move(p.data));
    ready_.clear();
  }

  void print_stats(bool final) {
    DirStats total;
    total += stats_[kToUpstream];
    total += stats_[kToClient];
    std::printf("{%s,\"mappings\":%zu,\"mappings_created\":%llu,\"mappings_reaped\":%llu,\"to_upstream\":{%s},"
                "\"to_client\":{%s},\"final\":%s}\n",
                total.json().c_str(), index_.size(), static_cast<unsigned long long>(mappings_created_),
                static_cast<unsigned long long>(mappings_reaped_), stats_[kToUpstream].json().c_str(),
                stats_[kToClient].json().c_str(), final ? "true" : "false");
    std::fflush(stdout);
  }

  void warn_once(const char* what) {
    if (warned_) return;
    warned_ = true;
    std::fprintf(stderr, "macula_udp_impair: %s: %s (datagrams from new clients dropped; said once)\n", what,
                 std::strerror(errno));
  }

  static constexpr std::size_t kSpareMax = 1024;
  static constexpr std::size_t kSpareCapacity = 4096;

  Config cfg_;
  std::vector<Mapping> maps_;  // fixed size: queued datagrams point into it by slot
  std::vector<std::uint32_t> free_slots_;
  std::unordered_map<AddrKey, std::uint32_t, AddrKeyHash> index_;
  std::array<std::mt19937_64, 2> rng_;
  std::array<DirStats, 2> stats_{};
  std::vector<Packet> queue_;  // a heap by ReleasedLater
  std::size_t queue_bytes_ = 0;
  std::vector<Packet> ready_;
  std::vector<std::vector<std::uint8_t>> spare_;
  std::vector<std::uint8_t> bufs_;
  std::array<sockaddr_storage, kBatch> names_{};
  std::uint64_t next_seq_ = 0, mappings_created_ = 0, mappings_reaped_ = 0;
  sockaddr_storage bound_{};
  socklen_t bound_len_ = 0;
  int ep_ = -1, sig_fd_ = -1, listen_fd_ = -1;
  bool warned_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  const Config cfg = parse_args(argc, argv);
  // A harness that stops reading our stdout must not turn the final stats line into a kill.
  signal(SIGPIPE, SIG_IGN);
  Proxy proxy(cfg);
  if (!proxy.start()) return 1;
  std::printf("udp_impair listening on %s upstream %s\n", proxy.bound_text().c_str(),
              format_addr(cfg.upstream, cfg.upstream_len).c_str());
  std::fflush(stdout);
  proxy.run();
  return 0;
}
