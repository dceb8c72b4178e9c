"""A small typed registry shared by every plug-in point.

Built-in plug-ins register explicitly, either with the object itself (:meth:`Registry.register`)
or, when their module is expensive to import, with a ``"module:attribute"`` target and a
description (:meth:`Registry.register_lazy`), imported on first lookup. Third-party packages add
theirs through a Python entry-point group (e.g. ``privfed.attacks``): an entry point is loaded
when its name is looked up or when every plug-in is listed, never at import time.

A third-party plug-in that fails to import, raises while it is described, or is not the kind of
object the registry holds is *broken*: it is recorded with its error (:meth:`Registry.problems`)
and skipped, so every other plug-in keeps working; looking the broken one up raises a
:class:`~privfed.errors.RegistryError` that names it, its package, the error and what to do.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from privfed.errors import RegistryError, a_or_an

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered plug-in: its name, the object and a one-line description."""

    name: str
    obj: T
    description: str


@dataclass(frozen=True)
class Listed:
    """One plug-in as ``privfed list`` shows it, described without importing built-ins.

    Attributes:
        name: the registered name.
        description: its one-line description.
        origin: ``"built-in"`` or the distribution that provides it (``name version``).
    """

    name: str
    description: str
    origin: str


def _dist_label(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "an unknown package"
    return f"{dist.metadata['Name']} {dist.version}"


class Registry(Generic[T]):
    """Name -> plug-in mapping with lazy built-ins and robust entry-point discovery.

    Args:
        kind: what the registry holds, used in error messages ("attack", "model", ...).
        entry_point_group: entry-point group of third-party plug-ins, or None.
        describe: the description of a plug-in registered without one (default: the first
            line of its docstring); used for plug-ins that arrive through entry points.
        check: returns what is wrong with an object offered as a plug-in ("" if nothing);
            an entry point whose object fails it is reported as broken and skipped.
        hint: added to the unknown-name error when nothing at all is registered.
    """

    def __init__(
        self,
        kind: str,
        *,
        entry_point_group: str | None = None,
        describe: Callable[[T], str] | None = None,
        check: Callable[[Any], str] | None = None,
        hint: str = "",
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._describe = describe
        self._check = check
        self._hint = hint
        self._entries: dict[str, Entry[T]] = {}
        self._lazy: dict[str, tuple[str, str]] = {}
        self._broken: dict[str, str] = {}
        self._eps: dict[str, EntryPoint] | None = None

    # ------------------------------------------------------------------ registration
    def register(self, name: str, obj: T, *, description: str = "", force: bool = False) -> T:
        """Register ``obj`` under ``name``; refuse a second registration unless ``force``.

        Raises:
            RegistryError: the name is empty or taken, or ``obj`` is not a valid plug-in.
        """
        self._check_name(name, force=force, obj=obj)
        problem = self._check(obj) if self._check is not None else ""
        if problem:
            raise RegistryError(f"cannot register {self.kind} {name!r}: {problem}")
        self._entries[name] = Entry(name, obj, description or self._description_of(obj))
        self._lazy.pop(name, None)
        self._broken.pop(name, None)
        return obj

    def register_lazy(self, name: str, target: str, *, description: str) -> None:
        """Register the object at ``target`` (``"package.module:attribute"``) under ``name``.

        The module is imported on the first lookup of ``name``; listing the registry shows
        ``description`` without importing it (for built-ins whose modules import torch).
        """
        self._check_name(name, force=False, obj=None)
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise RegistryError(
                f"{self.kind} {name!r}: lazy target {target!r} must read 'package.module:attr'"
            )
        if not description:
            raise RegistryError(f"{self.kind} {name!r}: a lazy registration needs a description")
        self._lazy[name] = (target, description)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests that register temporary plug-ins)."""
        self._entries.pop(name, None)
        self._lazy.pop(name, None)

    def _check_name(self, name: str, *, force: bool, obj: object) -> None:
        if not name or name != name.strip():
            raise RegistryError(f"{self.kind} name {name!r} must be a non-empty word")
        taken = (name in self._entries and self._entries[name].obj is not obj) or (
            name in self._lazy
        )
        if taken and not force:
            raise RegistryError(
                f"{self.kind} {name!r} is already registered; pick another name or pass force=True"
            )

    def _description_of(self, obj: T) -> str:
        if self._describe is not None:
            text = self._describe(obj)
            if text:
                return text
        doc = (getattr(obj, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""

    # ------------------------------------------------------------------ loading
    def _entry_points(self) -> dict[str, EntryPoint]:
        """Entry points of the group by name (metadata only: nothing is imported)."""
        if self._eps is None:
            self._eps = {}
            if self.entry_point_group is not None:
                from importlib import metadata

                for ep in metadata.entry_points(group=self.entry_point_group):
                    self._eps.setdefault(ep.name, ep)
        return self._eps

    def _load_lazy(self, name: str) -> Entry[T]:
        target, description = self._lazy[name]
        module, _, attr = target.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise RegistryError(
                f"built-in {self.kind} {name!r} ({target}) failed to import: {exc}; the "
                "installation is incomplete: reinstall privfed"
            ) from exc
        self._lazy.pop(name)
        self._entries[name] = Entry(name, obj, description)
        return self._entries[name]

    def _load_entry_point(self, name: str) -> Entry[T] | None:
        """Load entry point ``name``; record it as broken (and return None) if it fails."""
        ep = self._entry_points()[name]
        where = f"entry point {ep.name} = {ep.value} of {_dist_label(ep)}"
        advice = f"fix that package or uninstall it; the other {self.kind} plug-ins are unaffected"
        try:
            obj = ep.load()
        except (Exception, SystemExit) as exc:
            self._broken[name] = (
                f"{self.kind} plug-in {name!r} ({where}) failed to import: "
                f"{type(exc).__name__}: {exc}; {advice}"
            )
            return None
        try:
            problem = self._check(obj) if self._check is not None else ""
            description = "" if problem else self._description_of(obj)
        except (Exception, SystemExit) as exc:
            problem = f"describing it raised {type(exc).__name__}: {exc}"
        if problem:
            self._broken[name] = (
                f"{self.kind} plug-in {name!r} ({where}) is broken: {problem}; {advice}"
            )
            return None
        self._entries[name] = Entry(name, obj, description)
        return self._entries[name]

    def _load_all_entry_points(self) -> None:
        for name in self._entry_points():
            if name not in self._entries and name not in self._lazy and name not in self._broken:
                self._load_entry_point(name)

    # ------------------------------------------------------------------ lookup
    def get(self, name: str) -> T:
        """Return the plug-in called ``name`` or raise a RegistryError saying why not."""
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        """Return the full registry entry for ``name``.

        Raises:
            RegistryError: ``name`` is unknown (the message lists the registered names and the
                closest one), or its plug-in is broken (the message names the error and what
                to do).
        """
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            return self._load_lazy(name)
        if name not in self._broken and name in self._entry_points():
            loaded = self._load_entry_point(name)
            if loaded is not None:
                return loaded
        if name in self._broken:
            raise RegistryError(self._broken[name])
        known = self._known_names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        if not known and self._hint:
            hint = f" ({self._hint})."
        raise RegistryError(
            f"unknown {self.kind} {name!r}{hint} Registered: {', '.join(known) or 'none'} "
            "(privfed list describes them)"
        )

    def _known_names(self) -> list[str]:
        names = set(self._entries) | set(self._lazy) | set(self._entry_points())
        return sorted(names - set(self._broken))

    def names(self) -> list[str]:
        """Sorted names of every working plug-in (entry points are loaded, built-ins are not)."""
        self._load_all_entry_points()
        return self._known_names()

    def entries(self) -> Iterator[Entry[T]]:
        """Every working entry, sorted by name (this imports every plug-in)."""
        for name in self.names():
            yield self.entry(name)

    def listing(self) -> list[Listed]:
        """Every working plug-in with its description, sorted by name.

        Lazily registered built-ins are described without being imported; entry points are
        loaded (a broken one is left out and reported by :meth:`problems`).
        """
        self._load_all_entry_points()
        eps = self._entry_points()
        out: list[Listed] = []
        for name in self._known_names():
            if name in self._lazy:
                out.append(Listed(name, self._lazy[name][1], "built-in"))
                continue
            entry = self._entries[name]
            ep = eps.get(name)
            origin = _dist_label(ep) if ep is not None else "built-in"
            out.append(Listed(name, entry.description, origin))
        return out

    def problems(self) -> dict[str, str]:
        """Broken plug-ins found so far: name -> what is wrong and what to do."""
        return dict(sorted(self._broken.items()))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.entry(name)
        except RegistryError:
            return False
        return True


def callable_check(what: str) -> Callable[[Any], str]:
    """A ``check`` for registries of functions: the object must be callable."""

    def check(obj: Any) -> str:
        return (
            "" if callable(obj) else f"{what} must be callable, got {a_or_an(type(obj).__name__)}"
        )

    return check


def subclass_check(base: type) -> Callable[[Any], str]:
    """A ``check`` for registries of classes: the object must be a subclass of ``base``."""

    def check(obj: Any) -> str:
        if isinstance(obj, type) and issubclass(obj, base):
            return ""
        got = obj.__name__ if isinstance(obj, type) else a_or_an(type(obj).__name__)
        return f"{got} is not a subclass of {base.__module__}.{base.__qualname__}"

    return check
