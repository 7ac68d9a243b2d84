#!/usr/bin/env python3
"""Every code block in README.md is kept under examples/readme/ as a program CTest runs: each
block's lines must appear, in order and unchanged, in one of these files. What lies between
them there only makes them a program (a main(), waits, checks). The README's two commands and
the "Building by hand" block are what .ci/run itself runs, so they are exempt here.
Usage: check_readme.py README.md EXAMPLES_DIR"""
import pathlib
import re
import sys

EXEMPT = ("bash cmake/demo.sh", "bash cmake/install-deps.sh")


def in_order(block, text):
    lines = text.split("\n")
    i = 0
    for want in block:
        while i < len(lines) and lines[i].rstrip() != want:
            i += 1
        if i == len(lines):
            return False
        i += 1
    return True


def main():
    readme, folder = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    files = {p: p.read_text() for p in sorted(folder.iterdir()) if p.suffix in (".cpp", ".c", ".py", ".sh")}
    blocks = re.findall(r"^```(\w+)\n(.*?)^```", readme.read_text(), re.S | re.M)
    missing = 0
    for lang, body in blocks:
        lines = [l.rstrip() for l in body.rstrip("\n").split("\n")]
        if lines[0].startswith(EXEMPT):
            print(f"exempt ({lang}): {lines[0]}")
            continue
        home = [p.name for p, text in files.items() if in_order(lines, text)]
        if home:
            print(f"ok ({lang}) in {home[0]}: {lines[0]}")
        else:
            missing += 1
            print(f"NOT KEPT ({lang}): a README block whose lines no file in {folder} has in order: {lines[0]}")
    print(f"{len(blocks)} blocks, {missing} not kept under {folder}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
