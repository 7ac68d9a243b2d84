// Settings from outside the command line: environment variables and the --config TOML file.
#pragma once

#include <string>
#include <vector>

#include "command.hpp"

namespace macula_cli {

/// Gives every option of `global` and `selected` that the command line left unset its value
/// from the environment (a non-empty variable) or else from the config file at `config_path`
/// (none when empty): top-level keys for the global options, the table named after the
/// command for its own ("[node] listen = ..."). Keys are option names without the dashes.
/// The whole file is checked against every command in `all`, so a misspelt key or table is
/// an error even when it belongs to another command. Throws CLI::ParseError (a conversion or
/// validation failure, an unknown key, an unreadable or malformed file) naming the variable,
/// or the file, line and key.
void apply_settings(Command& global, Command* selected, const std::vector<Command*>& all,
                    const std::string& config_path);

}  // namespace macula_cli
