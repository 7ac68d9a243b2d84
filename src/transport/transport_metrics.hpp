// Prometheus series for an endpoint and a connection pool (names in docs/OPERATIONS.md).
//
// The series read the components' counters at render time through weak references: a
// component that is gone renders 0 until its series are removed with the returned remover.
#pragma once

#include <functional>
#include <memory>

#include "macula/observe/metrics_registry.hpp"
#include "transport/connection_pool.hpp"
#include "transport/endpoint.hpp"

namespace macula::transport {

/// Registers macula_transport_* series; returns a function that removes them again.
std::function<void()> export_metrics(observe::MetricsRegistry& registry, const std::shared_ptr<Endpoint>& endpoint,
                                     const observe::Labels& labels = {});
/// Registers macula_pool_* series; returns a function that removes them again.
std::function<void()> export_metrics(observe::MetricsRegistry& registry, const std::shared_ptr<ConnectionPool>& pool,
                                     const observe::Labels& labels = {});

}  // namespace macula::transport
