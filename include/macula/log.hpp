// Logging: the library writes nothing on its own. A host that wants log lines installs a
// LogSink in NodeOptions (or macula_node_options.log in the C ABI) and gets each event as
// (level, component, message), to forward to whatever logging it already has.
#pragma once

#include <functional>
#include <string_view>

namespace macula {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

/// "debug", "info", "warn", "error", "off".
const char* to_string(LogLevel level) noexcept;

/// Receives one log event. `component` is a short fixed name ("link", "node", "http",
/// "health", "rpc", "dht"); `message` is one line without a trailing newline. Both views
/// are valid only during the call.
///
/// Thread: called from the node's io thread(s) and from the thread that calls start()/stop(),
/// possibly concurrently: the sink must be thread-safe, quick and must not call back into
/// the node (it may be called with the node's internal state in the middle of a change).
/// Exceptions it throws are swallowed.
using LogSink = std::function<void(LogLevel level, std::string_view component, std::string_view message)>;

}  // namespace macula
