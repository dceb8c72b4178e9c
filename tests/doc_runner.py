"""Run every snippet of a documentation page, in order, in one directory.

A page's fenced blocks are of four kinds, and a page may hold no other:

* ``<!-- file: PATH -->`` followed by a block: written to ``PATH`` (relative to the directory);
* ```` ```sh ````: run with ``bash -euo pipefail`` in the directory;
* ```` ```python ````: run with this interpreter (``python -c``) in the directory;
* ```` ```text ````: output the previous ``sh`` or ``python`` block must print, line by line in
  order (``...`` inside a line matches anything).

So a page cannot show a command or a file that does not work.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_BLOCK = re.compile(
    r"(?:<!-- file: (?P<file>\S+) -->\n)?^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.S | re.M
)


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    kind: str
    body: str
    line: int
    path: str = ""


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page`` with its kind (``file``, ``sh``, ``python``, ``text``)."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if m.group("file"):
            out.append(Block("file", m.group("body"), line, m.group("file")))
            continue
        lang = m.group("lang")
        if lang not in ("sh", "python", "text"):
            raise AssertionError(
                f"{page.name}:{line}: a ```{lang} block that is not a <!-- file: --> block; "
                "every snippet must run: make it a file, sh, python or text (output) block"
            )
        out.append(Block(lang, m.group("body"), line))
    return out


def _expect_output(page: Path, block: Block, output: str) -> None:
    lines = output.splitlines()
    pos = 0
    for want in (w for w in block.body.splitlines() if w.strip()):
        pattern = re.compile(".*".join(re.escape(part) for part in want.strip().split("...")))
        while pos < len(lines) and not pattern.fullmatch(lines[pos].strip()):
            pos += 1
        if pos == len(lines):
            raise AssertionError(
                f"{page.name}:{block.line}: the output shown has {want!r}, which the command "
                f"before it did not print (in this order). It printed:\n{output}"
            )
        pos += 1


def run_page(page: Path, workdir: Path, env: dict[str, str]) -> dict[int, str]:
    """Write, run and check every block of ``page`` in ``workdir``; return stdout by line."""
    outputs: dict[int, str] = {}
    last = ""
    env = {**env, "PATH": os.pathsep.join((str(Path(sys.executable).parent), env["PATH"]))}
    for block in blocks(page):
        if block.kind == "file":
            target = workdir / block.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.body, encoding="utf-8")
            continue
        if block.kind == "text":
            _expect_output(page, block, last)
            continue
        cmd = (
            ["bash", "-euo", "pipefail", "-c", block.body]
            if block.kind == "sh"
            else [sys.executable, "-c", block.body]
        )
        proc = subprocess.run(
            cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200, check=False
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"{page.name}:{block.line}: the {block.kind} block failed (exit "
                f"{proc.returncode}):\n{block.body}\n--- stdout\n{proc.stdout}\n--- stderr\n"
                f"{proc.stderr}"
            )
        outputs[block.line] = last = proc.stdout
    return outputs


def offline_pip_env(site: Path, root: Path) -> dict[str, str]:
    """An environment whose ``pip install`` goes to ``site``, offline, without dependencies.

    A page's own ``pip install ./pkg`` line then installs into a temporary directory that the
    ``privfed`` command sees (first on ``PYTHONPATH``), next to the checkout ``root``.
    """
    return {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "PIP_TARGET": str(site),
        "PIP_NO_INDEX": "1",
        "PIP_NO_DEPS": "1",
        "PIP_NO_BUILD_ISOLATION": "0",  # pip's spelling of --no-build-isolation
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(site), str(root), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
