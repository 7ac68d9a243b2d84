// The one way libmacula includes Boost.Asio. Boost 1.74's Asio uses std::exchange without
// including <utility>, which breaks under C++20 on GCC 12; including it first fixes that.
#pragma once

#include <utility>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
