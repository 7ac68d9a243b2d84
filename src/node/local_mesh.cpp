#include "macula/testing/local_mesh.hpp"

#include <algorithm>
#include <future>

#include <boost/asio/post.hpp>

#include "macula/error.hpp"
#include "node/node_core.hpp"

namespace macula::testing {

LocalMesh::LocalMesh(LocalMeshOptions options, std::error_code& ec) { init(std::move(options), ec); }

LocalMesh::LocalMesh(LocalMeshOptions options) {
  std::error_code ec;
  init(std::move(options), ec);
  if (ec) throw std::system_error(ec, "LocalMesh");
}

void LocalMesh::init(LocalMeshOptions options, std::error_code& ec) {
  work_ = std::make_unique<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>(io_.get_executor());
  for (std::size_t i = 0; i < std::max<std::size_t>(1, options.io_threads); ++i)
    threads_.emplace_back([this] { io_.run(); });
  const std::size_t workers = options.worker_threads ? options.worker_threads : std::max<std::size_t>(1, options.node.worker_threads);
  if (!options.node.handler_executor) {
    workers_ = std::make_unique<boost::asio::thread_pool>(workers);
    options.node.handler_executor = [pool = workers_.get()](core::detail::UniqueFunction<void()> f) {
      boost::asio::post(*pool, std::move(f));
    };
    options.node.worker_threads = workers;  // the dispatch parallelism of each node
  }
  for (std::size_t i = 0; i < options.size; ++i) {
    NodeOptions o = options.node;
    o.listen = "127.0.0.1:0";
    o.bootstrap.clear();
    auto n = std::make_unique<Node>(io_, std::move(o));
    if ((ec = n->start())) return stop();
    nodes_.push_back(std::move(n));
  }
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    for (std::size_t j = i + 1; j < nodes_.size(); ++j) {
      if (options.topology == Topology::chain && j != i + 1) continue;
      if ((ec = nodes_[i]->connect(nodes_[j]->local_address()))) return stop();
    }
  }
  settle();
}

void LocalMesh::settle() {
  std::vector<std::future<std::error_code>> waits;
  for (auto& n : nodes_) {
    auto p = std::make_shared<std::promise<std::error_code>>();
    waits.push_back(p->get_future());
    node::NodeAccess::core(*n)->sync([p](std::error_code ec) { p->set_value(ec); });
  }
  for (auto& w : waits) w.wait_for(std::chrono::seconds(5));
}

void LocalMesh::stop() {
  for (auto& n : nodes_) n->stop();
  if (workers_) workers_->join();  // handlers still queued finish before the nodes go
  nodes_.clear();
  workers_.reset();
  work_.reset();
  io_.stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

LocalMesh::~LocalMesh() { stop(); }

}  // namespace macula::testing
