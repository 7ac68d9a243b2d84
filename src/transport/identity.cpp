#include "transport/identity.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "macula/error.hpp"

namespace macula::transport {
namespace {

template <class T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const noexcept { F(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

NodeId id_of_pubkey(EVP_PKEY* key, std::error_code& ec) {
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(key, &der);
  if (len <= 0) {
    ec = errc::identity_invalid;
    return {};
  }
  NodeId::Bytes digest;
  SHA256(der, static_cast<std::size_t>(len), digest.data());
  OPENSSL_free(der);
  ec.clear();
  return NodeId(digest);
}

std::string bio_string(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(n));
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return static_cast<bool>(f) || f.eof();
}

}  // namespace

Identity Identity::generate(std::error_code& ec) {
  Identity id;
  ec = errc::identity_invalid;
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) return id;
  const NodeId node_id = id_of_pubkey(key.get(), ec);
  if (ec) return id;
  ec = errc::identity_invalid;

  X509Ptr cert(X509_new());
  if (!cert || !X509_set_version(cert.get(), 2)) return id;
  unsigned char serial_bytes[16];
  if (RAND_bytes(serial_bytes, sizeof serial_bytes) != 1) return id;
  serial_bytes[0] &= 0x7F;  // positive
  BIGNUM* serial = BN_bin2bn(serial_bytes, sizeof serial_bytes, nullptr);
  const bool serial_ok = serial && BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert.get()));
  BN_free(serial);
  if (!serial_ok) return id;
  // Valid from an hour ago (clock skew) for ten years: the certificate proves a key, not a
  // CA's trust, so its lifetime is the key's.
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 3600);
  X509_NAME* name = X509_get_subject_name(cert.get());
  const std::string cn = node_id.to_hex();
  if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()),
                                  -1, -1, 0) ||
      !X509_set_issuer_name(cert.get(), name) || !X509_set_pubkey(cert.get(), key.get()) ||
      X509_sign(cert.get(), key.get(), EVP_sha256()) == 0)
    return id;

  BioPtr kb(BIO_new(BIO_s_mem())), cb(BIO_new(BIO_s_mem()));
  if (!kb || !cb || !PEM_write_bio_PrivateKey(kb.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) ||
      !PEM_write_bio_X509(cb.get(), cert.get()))
    return id;
  id.node_id_ = node_id;
  id.key_pem_ = bio_string(kb.get());
  id.cert_pem_ = bio_string(cb.get());
  ec.clear();
  return id;
}

Identity Identity::generate() {
  std::error_code ec;
  Identity id = generate(ec);
  if (ec) throw std::system_error(ec, "generating the node identity");
  return id;
}

Identity Identity::from_pem(std::string key_pem, std::string cert_pem, std::error_code& ec) {
  Identity id;
  ec = errc::identity_invalid;
  BioPtr kb(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  BioPtr cb(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  if (!kb || !cb) return id;
  PkeyPtr key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  X509Ptr cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  if (!key || !cert || X509_check_private_key(cert.get(), key.get()) != 1) return id;
  id.node_id_ = id_of_pubkey(key.get(), ec);
  if (ec) return id;
  id.key_pem_ = std::move(key_pem);
  id.cert_pem_ = std::move(cert_pem);
  return id;
}

Identity Identity::from_pem_files(const std::string& key_path, const std::string& cert_path, std::error_code& ec) {
  std::string key, cert;
  if (!read_file(key_path, key) || !read_file(cert_path, cert)) {
    ec = errc::identity_invalid;
    return {};
  }
  return from_pem(std::move(key), std::move(cert), ec);
}

NodeId node_id_of_certificate(std::span<const std::uint8_t> der, std::error_code& ec) {
  const unsigned char* p = der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) {
    ec = errc::identity_invalid;
    return {};
  }
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  if (!key) {
    ec = errc::identity_invalid;
    return {};
  }
  return id_of_pubkey(key, ec);
}

}  // namespace macula::transport
