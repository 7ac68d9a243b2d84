#include "node/address.hpp"

#include <algorithm>

#include "macula/error.hpp"

namespace macula::node {

std::error_code parse_address(std::string_view text, boost::asio::ip::udp::endpoint& out) {
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return errc::address_invalid;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return errc::address_invalid;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return errc::address_invalid;
  const unsigned long p = std::stoul(std::string(port));
  if (p > 65535) return errc::address_invalid;
  boost::system::error_code bec;
  auto addr = boost::asio::ip::make_address(std::string(host), bec);
  if (bec) return errc::address_invalid;
  out = boost::asio::ip::udp::endpoint(addr, static_cast<unsigned short>(p));
  return {};
}

std::string format_address(const boost::asio::ip::udp::endpoint& e) {
  const std::string host = e.address().to_string();
  return (e.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(e.port());
}

}  // namespace macula::node
