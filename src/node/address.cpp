#include "node/address.hpp"

#include <algorithm>
#include <memory>

#include <boost/asio/io_context.hpp>

#include "macula/error.hpp"

namespace macula::node {

namespace {

// Splits "host:port" / "[v6]:port"; the port must be a number up to 65535.
std::error_code split(std::string_view text, std::string_view& host, unsigned short& port_out) {
  std::string_view port;
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
  if (p > 65535 || host.empty()) return errc::address_invalid;
  port_out = static_cast<unsigned short>(p);
  return {};
}

// A DNS name as RFC 1123 allows it (letters, digits, '-', '.'): anything else is malformed,
// not something to hand to the resolver.
bool host_name(std::string_view host) {
  return host.size() <= 253 && std::all_of(host.begin(), host.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
         });
}

using Results = boost::asio::ip::udp::resolver::results_type;

std::error_code pick(const boost::system::error_code& bec, const Results& results, unsigned short port,
                     boost::asio::ip::udp::endpoint& out) {
  if (bec || results.empty()) return errc::address_unresolved;
  const auto v4 = std::find_if(results.begin(), results.end(), [](const auto& r) { return r.endpoint().address().is_v4(); });
  out = boost::asio::ip::udp::endpoint((v4 != results.end() ? *v4 : *results.begin()).endpoint().address(), port);
  return {};
}

}  // namespace

std::error_code parse_address(std::string_view text, boost::asio::ip::udp::endpoint& out) {
  std::string_view host;
  unsigned short port = 0;
  if (auto ec = split(text, host, port)) return ec;
  boost::system::error_code bec;
  auto addr = boost::asio::ip::make_address(std::string(host), bec);
  if (bec) return errc::address_invalid;
  out = boost::asio::ip::udp::endpoint(addr, port);
  return {};
}

std::error_code resolve_address(std::string_view text, boost::asio::ip::udp::endpoint& out) {
  if (!parse_address(text, out)) return {};
  std::string_view host;
  unsigned short port = 0;
  if (split(text, host, port) || !host_name(host)) return errc::address_invalid;
  boost::asio::io_context io;
  boost::asio::ip::udp::resolver resolver(io);
  boost::system::error_code bec;
  const auto results = resolver.resolve(std::string(host), std::to_string(port), bec);
  return pick(bec, results, port, out);
}

void async_resolve_address(boost::asio::io_context& io, std::string_view text,
                           std::function<void(std::error_code, boost::asio::ip::udp::endpoint)> done) {
  boost::asio::ip::udp::endpoint e;
  if (!parse_address(text, e)) return done({}, e);
  std::string_view host;
  unsigned short port = 0;
  if (split(text, host, port) || !host_name(host)) return done(errc::address_invalid, {});
  auto resolver = std::make_shared<boost::asio::ip::udp::resolver>(io);
  resolver->async_resolve(std::string(host), std::to_string(port),
                          [resolver, port, done = std::move(done)](const boost::system::error_code& bec, Results results) {
                            boost::asio::ip::udp::endpoint out;
                            const auto ec = pick(bec, results, port, out);
                            done(ec, out);
                          });
}

std::string format_address(const boost::asio::ip::udp::endpoint& e) {
  const std::string host = e.address().to_string();
  return (e.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(e.port());
}

}  // namespace macula::node
