// A nats-server on 127.0.0.1 for the benchmarks that compare libmacula with NATS (the peer a
// user would otherwise pick), started once per process and stopped at exit.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <nats/nats.h>

namespace macula::bench {

class NatsPeer {
 public:
  static NatsPeer& instance() {
    static NatsPeer peer;
    return peer;
  }
  bool ok() const noexcept { return ok_; }
  const std::string& url() const noexcept { return url_; }

  /// `send_asap`: flush every publish at once (what request/reply latency needs; nats.c's
  /// default buffers up to a flusher tick of ~1 ms). `global_delivery`: share delivery
  /// threads between subscriptions (nats.c's default is one thread per subscription).
  natsConnection* connect(bool send_asap = false, bool global_delivery = false) const {
    natsConnection* nc = nullptr;
    natsOptions* o = nullptr;
    natsOptions_Create(&o);
    natsOptions_SetURL(o, url_.c_str());
    natsOptions_SetMaxPendingMsgs(o, 1 << 20);
    natsOptions_SetIOBufSize(o, 1 << 20);
    natsOptions_SetSendAsap(o, send_asap);
    natsOptions_UseGlobalMessageDelivery(o, global_delivery);
    if (natsConnection_Connect(&nc, o) != NATS_OK) nc = nullptr;
    natsOptions_Destroy(o);
    return nc;
  }

  ~NatsPeer() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }

 private:
  NatsPeer() {
    const int port = free_port();
    url_ = "nats://127.0.0.1:" + std::to_string(port);
    pid_ = fork();
    if (pid_ == 0) {
      const std::string p = std::to_string(port);
      execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", p.c_str(), "-l", "/dev/null",
             static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 200 && !ok_; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
      if (natsConnection* nc = connect()) {
        natsConnection_Destroy(nc);
        ok_ = true;
      }
    }
    if (!ok_) std::fprintf(stderr, "nats-server did not start (apt-get install nats-server)\n");
  }
  static int free_port() {
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
    close(s);
    return ntohs(a.sin_port);
  }

  pid_t pid_ = -1;
  bool ok_ = false;
  std::string url_;
};

}  // namespace macula::bench
