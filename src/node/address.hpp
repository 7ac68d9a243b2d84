// "host:port" text for node addresses, as options, HELLO frames and DHT records carry them.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

#include "macula/detail/asio.hpp"

#include <boost/asio/ip/udp.hpp>

namespace macula::node {

/// Parses "host:port" / "[v6]:port" with a numeric host. Errors: address_invalid.
std::error_code parse_address(std::string_view text, boost::asio::ip::udp::endpoint& out);
std::string format_address(const boost::asio::ip::udp::endpoint& e);

}  // namespace macula::node
