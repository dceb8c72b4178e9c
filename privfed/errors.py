"""Error hierarchy of privfed.

Every error privfed raises on purpose is a :class:`PrivfedError`. Messages name the field,
message or file at fault and say what to do about it.
"""

from __future__ import annotations


class PrivfedError(Exception):
    """Base class of every error privfed raises on purpose."""


class ConfigError(PrivfedError):
    """One or more configuration fields are invalid.

    Attributes:
        problems: one line per invalid field, each starting with the field's dotted path.
    """

    def __init__(self, problems: list[str] | str, *, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration{where}:\n{lines}")


class DataError(PrivfedError):
    """A data file or directory is missing, malformed or untrusted."""


class RegistryError(PrivfedError):
    """A plug-in name is unknown or registered twice."""


class PrivacyBudgetError(PrivfedError):
    """A privacy computation was asked for something impossible (e.g. an unreachable epsilon)."""


class CheckpointError(PrivfedError):
    """A run directory or checkpoint cannot be resumed."""


class StorageError(PrivfedError):
    """A file could not be written or read because of the disk or the file system.

    Raised for full disks, read-only or permission-denied directories and similar
    :class:`OSError` conditions; the message names the path and what to do.

    Attributes:
        path: the file or directory at fault.
        errno: the operating system's error number (None if unknown).
    """

    def __init__(self, message: str, *, path: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article, for messages: ``an int``, ``a float``."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
