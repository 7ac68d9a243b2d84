"""Installs the package the way a user would and imports it WITHOUT $MACULA_LIB, proving that it
finds libmacula relative to itself; then does one mesh call. Run by CTest (not by pytest):

  check_install.py cmake --build-dir B --libdir L [--cmake cmake]
      cmake --install B --prefix T; the package at T/L/python3/dist-packages, the library at T/L
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["cmake", "pip"])
    ap.add_argument("--build-dir")
    ap.add_argument("--libdir", default="lib")
    ap.add_argument("--cmake", default="cmake")
    ap.add_argument("--package")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix=f"macula-python-{a.mode}-"))
    try:
        if a.mode == "cmake":
            run([a.cmake, "--install", a.build_dir, "--prefix", str(tmp)], stdout=subprocess.DEVNULL)
            site = tmp / a.libdir / "python3" / "dist-packages"
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
