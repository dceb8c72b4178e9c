"""A small typed registry shared by every plug-in point.

Built-in plug-ins register explicitly; third-party packages add theirs through a Python entry
point group (e.g. ``privfed.attacks``), loaded on first lookup, never at import time.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Generic, TypeVar

from privfed.errors import RegistryError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered plug-in: its name, the object and a one-line description."""

    name: str
    obj: T
    description: str


class Registry(Generic[T]):
    """Name -> plug-in mapping with entry-point discovery.

    Args:
        kind: what the registry holds, used in error messages ("attack", "task", ...).
        entry_point_group: entry-point group scanned on first lookup, or None.
        describe: the description of a plug-in registered without one (default: the first
            line of its docstring); used for plug-ins that arrive through entry points.
        hint: added to the unknown-name error when nothing at all is registered.
    """

    def __init__(
        self,
        kind: str,
        *,
        entry_point_group: str | None = None,
        describe: Callable[[T], str] | None = None,
        hint: str = "",
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._describe = describe
        self._hint = hint
        self._entries: dict[str, Entry[T]] = {}
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str, obj: T, *, description: str = "", force: bool = False) -> T:
        """Register ``obj`` under ``name``; refuse a second registration unless ``force``."""
        if not name or name != name.strip():
            raise RegistryError(f"{self.kind} name {name!r} must be a non-empty word")
        if name in self._entries and not force and self._entries[name].obj is not obj:
            raise RegistryError(
                f"{self.kind} {name!r} is already registered; pick another name or pass force=True"
            )
        if not description and self._describe is not None:
            description = self._describe(obj)
        if not description:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[name] = Entry(name, obj, description)
        return obj

    def decorator(self, name: str, *, description: str = "") -> Callable[[T], T]:
        """Return a decorator that registers its argument under ``name``."""

        def wrap(obj: T) -> T:
            return self.register(name, obj, description=description)

        return wrap

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests that register temporary plug-ins)."""
        self._entries.pop(name, None)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        assert self.entry_point_group is not None
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name in self._entries:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken third-party plug-in must not hide the others
                raise RegistryError(
                    f"{self.kind} plug-in {ep.name!r} from entry point {ep.value!r} failed to "
                    f"load: {exc}; fix or uninstall the package that provides it"
                ) from exc
            self.register(ep.name, obj)

    def get(self, name: str) -> T:
        """Return the plug-in called ``name`` or raise a RegistryError listing the known ones."""
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        """Return the full registry entry for ``name``."""
        if name not in self._entries:
            self._load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if not known and self._hint:
                hint = f" ({self._hint})"
            raise RegistryError(
                f"unknown {self.kind} {name!r}{hint} Registered: {', '.join(known) or 'none'}"
            ) from None

    def names(self) -> list[str]:
        """Sorted names of every registered plug-in (entry points included)."""
        self._load_entry_points()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        """Every entry, sorted by name."""
        for name in self.names():
            yield self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._entries
