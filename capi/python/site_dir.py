"""Prints where ``cmake --install`` puts the package for install prefix argv[1], relative to that
prefix: a directory this python3 has on sys.path for that prefix. Run by CMake at configure time
(MACULA_PYTHON_INSTALL_DIR's default) and by tests/check_install.py; prints nothing when it
has no answer.

Debian's python3 looks in /usr/lib/python3/dist-packages (its own packages: the deb_system
scheme) and /usr/local/lib/python3.X/dist-packages (the posix_local scheme, whose paths start at
/usr), not in <prefix>/lib/python3.X/site-packages. Any other prefix is on nobody's sys.path,
so it gets the standard layout (posix_prefix) and the user sets PYTHONPATH.
"""
from __future__ import annotations

import os
import sys
import sysconfig


def site_dir(prefix: str) -> str:
    prefix = os.path.normpath(prefix)
    schemes = sysconfig.get_scheme_names()

    def purelib(scheme: str, base: str) -> str:
        v = {"base": base, "platbase": base, "installed_base": base, "installed_platbase": base}
        return os.path.relpath(sysconfig.get_path("purelib", scheme, vars=v), prefix)

    if prefix == "/usr" and "deb_system" in schemes:
        return purelib("deb_system", "/usr")
    if prefix == "/usr/local" and "posix_local" in schemes:
        return purelib("posix_local", "/usr")
    return purelib("posix_prefix", prefix)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isabs(sys.argv[1]):
        sys.exit("usage: site_dir.py /absolute/prefix")
    print(site_dir(sys.argv[1]))
