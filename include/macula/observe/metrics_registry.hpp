// MetricsRegistry: names metrics and renders them as Prometheus text exposition 0.0.4.
//
// A family is a metric name with HELP text and a TYPE; its series differ by label values.
// Registration returns a reference that stays valid for the registry's lifetime, so hot paths
// keep the reference and never look names up again. Callback gauges read a value at render
// time (queue depths, table sizes) so that nothing needs to be pushed.
//
// Bounded: at most `max_series` series in total; registering past it throws
// std::system_error(errc::metrics_series_limit). Invalid names throw
// std::system_error(errc::metrics_name_invalid). Registration and render() take a mutex;
// updating a returned metric does not.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "macula/core/metrics.hpp"

namespace macula::observe {

using Labels = std::vector<std::pair<std::string, std::string>>;

/// A label value escaped for the text format (backslash, double quote, newline), for series
/// a caller renders itself.
std::string escape_label_value(std::string_view value);

class MetricsRegistry {
 public:
  explicit MetricsRegistry(std::size_t max_series = 10'000) : max_series_(max_series) {}
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  /// Returns the series (name, labels), creating it on first use. Registering the same name
  /// with another type or help text throws errc::metrics_type_conflict.
  core::Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  core::Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
  core::Histogram& histogram(std::string_view name, std::string_view help, const Labels& labels = {},
                             std::vector<double> bounds = core::Histogram::latency_buckets());
  /// A gauge whose value `read` computes at render time; `read` runs on the rendering thread
  /// under the registry's mutex, and must outlive the registry or be removed first.
  void gauge_callback(std::string_view name, std::string_view help, const Labels& labels,
                      std::function<double()> read);
  /// A counter whose value `read` returns at render time (a component's own monotonic
  /// count); same rules as gauge_callback.
  void counter_callback(std::string_view name, std::string_view help, const Labels& labels,
                        std::function<double()> read);
  /// Removes a callback series (for components that die before the registry).
  void remove_gauge_callback(std::string_view name, const Labels& labels);

  /// Prometheus text format 0.0.4: families sorted by name, series in registration order.
  std::string render() const;

  std::size_t series_count() const;

 private:
  enum class Type { counter, gauge, histogram };
  struct Series {
    Labels labels;
    std::unique_ptr<core::Counter> counter;
    std::unique_ptr<core::Gauge> gauge;
    std::unique_ptr<core::Histogram> histogram;
    std::function<double()> callback;
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<std::unique_ptr<Series>> series;
  };

  Series& series(std::string_view name, std::string_view help, Type type, const Labels& labels);

  mutable std::mutex mutex_;
  std::map<std::string, Family, std::less<>> families_;
  std::size_t series_count_ = 0;
  std::size_t max_series_;
};

}  // namespace macula::observe
