#include "macula/node_key.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "transport/identity.hpp"

namespace macula {

namespace {

// O_EXCL: the check for an existing file and its creation are one step, so two keygens
// racing for one path cannot both think they wrote it.
std::error_code write_new_file(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return {errno, std::system_category()};
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::error_code ec(n < 0 ? errno : EIO, std::system_category());
      ::close(fd);
      ::unlink(path.c_str());
      return ec;
    }
    done += static_cast<std::size_t>(n);
  }
  const int synced = ::fsync(fd) == 0 ? 0 : errno;
  const int closed = ::close(fd) == 0 ? 0 : errno;
  if (synced || closed) {
    ::unlink(path.c_str());
    return {synced ? synced : closed, std::system_category()};
  }
  return {};
}

}  // namespace

NodeId write_node_key(const std::string& key_path, const std::string& cert_path, std::error_code& ec) {
  const auto identity = transport::Identity::generate(ec);
  if (ec) return {};
  if ((ec = write_new_file(key_path, identity.key_pem(), 0600))) return {};
  if ((ec = write_new_file(cert_path, identity.cert_pem(), 0644))) {
    ::unlink(key_path.c_str());
    return {};
  }
  return identity.node_id();
}

NodeId read_node_key(const std::string& key_path, const std::string& cert_path, std::error_code& ec) {
  const auto identity = transport::Identity::from_pem_files(key_path, cert_path, ec);
  return ec ? NodeId{} : identity.node_id();
}

}  // namespace macula
