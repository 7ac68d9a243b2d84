// macula token, macula keygen: credentials, made without any node.
#include <cstdio>

#include "commands.hpp"
#include "macula/client_access.hpp"
#include "macula/node_key.hpp"

namespace macula_cli {

void add_token_command(CLI::App& app, KeyCommand& k) {
  k.c.app = app.add_subcommand("token", "Print the client token of a realm with a shared secret");
  k.c.app->add_option("--realm", k.realm, "the realm");
  k.secret_opt = k.c.from_env(k.c.app->add_option("--realm-secret", k.realm_secret, "the realm's shared secret"),
                              "MACULA_REALM_SECRET");
}

void add_keygen_command(CLI::App& app, KeyCommand& k) {
  k.c.app = app.add_subcommand("keygen", "Make a node key and certificate (node --key/--cert) and print the node id");
  k.c.app->add_option("--key", k.key, "where to write the key (mode 0600; never overwritten)");
  k.c.app->add_option("--cert", k.cert, "where to write the certificate (never overwritten)");
}

int run_token(const KeyCommand& k) {
  if (k.realm.empty()) {
    std::fprintf(stderr, "macula token: --realm is required\n");
    return kUsage;
  }
  if (!not_empty_if_given("token", k.secret_opt, k.realm_secret)) return kUsage;
  if (k.realm_secret.empty()) {
    std::fprintf(stderr, "macula token: no realm secret: pass --realm-secret or set MACULA_REALM_SECRET\n");
    return kUsage;
  }
  std::printf("%s\n", macula::derive_client_token(k.realm, k.realm_secret).c_str());
  return kOk;
}

int run_keygen(const KeyCommand& k) {
  if (k.key.empty() || k.cert.empty()) {
    std::fprintf(stderr, "macula keygen: --key FILE and --cert FILE are required\n");
    return kUsage;
  }
  if (k.key == k.cert) {
    std::fprintf(stderr, "macula keygen: --key and --cert must be two files\n");
    return kUsage;
  }
  std::error_code ec;
  const auto id = macula::write_node_key(k.key, k.cert, ec);
  if (ec) {
    std::fprintf(stderr, "macula keygen: %s\n",
                 (ec == std::errc::file_exists ? "refusing to overwrite: " + ec.message() + " (--key " + k.key +
                                                     ", --cert " + k.cert + ")"
                                               : ec.message())
                     .c_str());
    return ec == std::errc::file_exists ? kUsage : kFail;
  }
  std::printf("%s\n", id.to_hex().c_str());
  return kOk;
}

}  // namespace macula_cli
