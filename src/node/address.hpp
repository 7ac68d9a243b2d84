// "host:port" text for node addresses, as options, HELLO frames and DHT records carry them.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <system_error>

#include "macula/detail/asio.hpp"

#include <boost/asio/ip/udp.hpp>

namespace macula::node {

/// Parses "host:port" / "[v6]:port" with a numeric host. Errors: address_invalid. For what
/// arrives on the wire (HELLO endpoints, DHT records): nodes announce resolved addresses.
std::error_code parse_address(std::string_view text, boost::asio::ip::udp::endpoint& out);

/// "host:port" where host may also be a name (`localhost:9443`, `node-a.example:9443`),
/// resolved with the system resolver: the first IPv4 address, else the first IPv6 one (a name
/// like localhost usually has both, and nodes listen on IPv4 by default). Blocks while the
/// resolver works: for start() and tools, not for the io threads. Errors: address_invalid
/// (malformed), address_unresolved (the name has no address).
std::error_code resolve_address(std::string_view text, boost::asio::ip::udp::endpoint& out);

/// resolve_address without blocking: a numeric address completes at once (inline), a name
/// on `io`'s threads. `done(ec, endpoint)`.
void async_resolve_address(boost::asio::io_context& io, std::string_view text,
                           std::function<void(std::error_code, boost::asio::ip::udp::endpoint)> done);
std::string format_address(const boost::asio::ip::udp::endpoint& e);

}  // namespace macula::node
