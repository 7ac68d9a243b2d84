"""Installs the package the way a user would and imports it WITHOUT $MACULA_LIB, proving that it
finds libmacula relative to itself; then does one mesh call. Run by CTest (not by pytest):

  check_install.py cmake --build-dir B --libdir L --python-dir D --configured-prefix P [--cmake cmake]
      cmake --install B --prefix T; the package at T/D/macula, the library at T/L. Also checks,
      without writing there, that P/D (after a default cmake --install) and the directory chosen
      for /usr/local are on Debian's python3's sys.path
  check_install.py pip --package P
      pip install --no-index --no-build-isolation --target T/site <copy of P> (offline), where P
      is the build tree's package directory with libmacula.so bundled
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECK = r"""
import sys
from pathlib import Path
import macula
root = Path(sys.argv[1]).resolve()
lib = Path(macula.library_path).resolve()
assert root in lib.parents, f"loaded {lib}, not from {root}"
assert root in Path(macula.__file__).resolve().parents, macula.__file__
with macula.Mesh(nodes=2) as mesh:
    a, b = mesh.nodes
    with b.advertise("install.check", lambda args: args[::-1]):
        mesh.settle()
        assert a.call("install.check", b"olleh") == b"hello"
print("ok:", macula.__file__, "loads", lib)
"""


def run(cmd: list, **kw: object) -> None:
    print("+", " ".join("<check>" if "\n" in str(c) else str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


SITE_DIR = Path(__file__).resolve().parents[1] / "site_dir.py"
# Debian's interpreter: the one whose sys.path a /usr or /usr/local install has to meet.
DEBIAN_PYTHON = "/usr/bin/python3"


def debian_sys_path() -> "list[str] | None":
    """sys.path of Debian's python3 as a user starts it (no PYTHONPATH), or None elsewhere."""
    if not Path(DEBIAN_PYTHON).exists():
        return None
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE")}
    out = subprocess.run([DEBIAN_PYTHON, "-c", "import sys, sysconfig; print('deb_system' in "
                          "sysconfig.get_scheme_names()); print(*sys.path, sep='\\n')"],
                         env=env, check=True, capture_output=True, text=True).stdout.splitlines()
    return out[1:] if out and out[0] == "True" else None


def check_on_sys_path(python_dir: str, configured_prefix: str) -> int:
    path = debian_sys_path()
    if path is None:
        print(f"skipped: {DEBIAN_PYTHON} is not Debian's python3; not checking its sys.path")
        return 0
    site = subprocess.run([DEBIAN_PYTHON, str(SITE_DIR), "/usr/local"], check=True, capture_output=True,
                          text=True).stdout.strip()
    failures = 0
    for prefix, rel, what in [("/usr/local", site, "site_dir.py's choice"),
                              (configured_prefix, python_dir, "MACULA_PYTHON_INSTALL_DIR")]:
        if prefix not in ("/usr", "/usr/local"):
            print(f"skipped: prefix {prefix} is on no python3's sys.path by default")
            continue
        where = os.path.normpath(os.path.join(prefix, rel))
        if where in path:
            print(f"ok: {where} ({what} for prefix {prefix}) is on {DEBIAN_PYTHON}'s sys.path")
        else:
            print(f"FAIL: {where} ({what} for prefix {prefix}) is not on {DEBIAN_PYTHON}'s sys.path {path}",
                  file=sys.stderr)
            failures += 1
    return failures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["cmake", "pip"])
    ap.add_argument("--build-dir")
    ap.add_argument("--libdir", default="lib")
    ap.add_argument("--python-dir", help="MACULA_PYTHON_INSTALL_DIR: the package's directory under the prefix")
    ap.add_argument("--configured-prefix", default="/usr/local", help="CMAKE_INSTALL_PREFIX")
    ap.add_argument("--cmake", default="cmake")
    ap.add_argument("--package")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix=f"macula-python-{a.mode}-"))
    try:
        if a.mode == "cmake":
            if not a.python_dir or os.path.isabs(a.python_dir):
                print(f"FAIL: --python-dir {a.python_dir!r}: MACULA_PYTHON_INSTALL_DIR must be relative to the prefix",
                      file=sys.stderr)
                return 1
            if check_on_sys_path(a.python_dir, a.configured_prefix):
                return 1
            run([a.cmake, "--install", a.build_dir, "--prefix", str(tmp)], stdout=subprocess.DEVNULL)
            site = tmp / a.python_dir
            if not (site / "macula" / "__init__.py").exists():
                print(f"FAIL: no package at {site}", file=sys.stderr)
                return 1
            if list((site / "macula").glob("libmacula.so*")):
                print("FAIL: cmake --install bundled the library into the package", file=sys.stderr)
                return 1
        else:
            src = tmp / "src"
            shutil.copytree(a.package, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            site = tmp / "site"
            env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1")
            env.pop("PIP_INDEX_URL", None)
            run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation", "--no-deps",
                 "--target", str(site), str(src)], env=env, cwd=str(tmp))
        env = {k: v for k, v in os.environ.items() if k not in ("MACULA_LIB", "LD_LIBRARY_PATH", "PYTHONHOME")}
        env["PYTHONPATH"] = str(site)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        run([sys.executable, "-s", "-c", CHECK, str(tmp)], env=env, cwd=str(tmp))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
