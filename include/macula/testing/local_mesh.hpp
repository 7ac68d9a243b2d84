// LocalMesh: N connected nodes on loopback in one process, for users' test suites.
//
// Starts `size` nodes on 127.0.0.1 with ephemeral ports and identities, all in one realm, on
// one io_context the mesh owns and runs on `io_threads` threads, with one handler pool, and links them (every pair,
// or a chain), waiting until every link is up. Destruction stops every node gracefully and
// joins the threads. The nodes are ordinary Nodes: use them with Publisher, Subscriber,
// RpcClient and advertise() exactly as in production.
#pragma once

#include <cstddef>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include "macula/node.hpp"
#include "macula/node_options.hpp"

namespace macula::testing {

enum class Topology {
  full,   ///< every pair of nodes linked (N·(N−1)/2 links)
  chain,  ///< node i linked to node i+1 only
};

struct LocalMeshOptions {
  std::size_t size = 3;
  Topology topology = Topology::full;
  std::size_t io_threads = 1;
  /// Handler threads shared by all nodes (0: node.worker_threads). One pool for the whole mesh
  /// keeps an N-node test from starting N pools (handlers run on an executor the user picks).
  std::size_t worker_threads = 0;
  /// Template for every node: listen is forced to 127.0.0.1:0; no status port unless
  /// http_listen is set (e.g. "127.0.0.1:0" gives each node its own).
  NodeOptions node{};  // an initializer, so that {.size = 2} is complete under -Wextra
};

class LocalMesh {
 public:
  /// Starts and links the nodes. Errors: any node's start() or link error; on error the
  /// nodes started so far are stopped again.
  explicit LocalMesh(LocalMeshOptions options, std::error_code& ec);
  explicit LocalMesh(LocalMeshOptions options);  ///< throws std::system_error
  ~LocalMesh();
  LocalMesh(const LocalMesh&) = delete;
  LocalMesh& operator=(const LocalMesh&) = delete;

  std::size_t size() const noexcept { return nodes_.size(); }
  Node& node(std::size_t i) { return *nodes_.at(i); }
  Node& operator[](std::size_t i) { return *nodes_.at(i); }
  boost::asio::io_context& io() noexcept { return io_; }

  /// Waits until every node sees at least `links_per_node` links and interest changes made
  /// before the call have reached every peer (a round trip over every link). For tests that
  /// subscribe on one node and publish on another right away.
  void settle();

  /// Stops every node (graceful) and the io threads. Idempotent; the destructor calls it.
  void stop();

 private:
  void init(LocalMeshOptions options, std::error_code& ec);

  boost::asio::io_context io_;
  std::unique_ptr<boost::asio::thread_pool> workers_;
  std::unique_ptr<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

}  // namespace macula::testing
