"""Only for the platform tag: with a bundled libmacula.so the wheel is not pure Python
(everything else is in pyproject.toml)."""
from pathlib import Path

from setuptools import setup
from setuptools.dist import Distribution


class _Distribution(Distribution):
    def has_ext_modules(self) -> bool:
        return any((Path(__file__).resolve().parent / "macula").glob("libmacula.so*"))


setup(distclass=_Distribution)
