"""README.md's Python block runs unchanged, 20 times in a row, each with exit status 0."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_block() -> str:
    if not README.exists():
        pytest.skip("README.md not found next to this source tree")
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)
    assert len(blocks) == 1, "README.md should have exactly one ```python block"
    return blocks[0]


def test_readme_python_block_runs_20_times() -> None:
    code = readme_block()
    assert "import macula" in code
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    delivered = 0
    for i in range(20):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, f"run {i + 1}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        assert "b'HELLO'" in r.stdout, r.stdout
        # The message is printed on b's worker thread, concurrently with the main thread's
        # print (a QoS 1 acknowledgement does not wait for the callback): lines may interleave.
        delivered += "sensors.kitchen.temp" in r.stdout and "b'21.5'" in r.stdout
    assert delivered > 0
