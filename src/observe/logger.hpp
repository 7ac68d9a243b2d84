// Logger: the node's side of the host's LogSink. Events below the configured level, or with
// no sink installed, cost one comparison: the message is not even formatted (callers pass a
// lambda that builds it only when enabled()).
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "macula/log.hpp"

namespace macula::observe {

class Logger {
 public:
  Logger() = default;
  Logger(LogSink sink, LogLevel min) : sink_(std::move(sink)), min_(sink_ ? min : LogLevel::off) {}

  bool enabled(LogLevel level) const noexcept { return level >= min_ && min_ != LogLevel::off; }

  void log(LogLevel level, std::string_view component, std::string_view message) const noexcept {
    if (!enabled(level)) return;
    try {
      sink_(level, component, message);
    } catch (...) {
      // A failing sink must not take the node down with it.
    }
  }

  /// `make` returns the message; it runs only when the level is enabled.
  template <typename MakeMessage>
  void log_with(LogLevel level, std::string_view component, MakeMessage&& make) const noexcept {
    if (!enabled(level)) return;
    try {
      const std::string text = make();
      sink_(level, component, text);
    } catch (...) {
    }
  }

 private:
  LogSink sink_;
  LogLevel min_ = LogLevel::off;
};

}  // namespace macula::observe
