// An io_context running on its own thread for the lifetime of the object (tests and
// benchmarks). start() can be deferred, so a test can queue work against an endpoint whose
// loop is not running yet and decide exactly when it starts answering.
#pragma once

#include <utility>

#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace macula::test {

class IoThread {
 public:
  explicit IoThread(bool start_now = true) {
    if (start_now) start();
  }
  ~IoThread() {
    guard_.reset();
    io.stop();
    if (thread_.joinable()) thread_.join();
  }
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  void start() {
    if (!thread_.joinable()) thread_ = std::thread([this] { io.run(); });
  }

  boost::asio::io_context io;

 private:
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{io.get_executor()};
  std::thread thread_;
};

}  // namespace macula::test
