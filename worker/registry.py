"""A named registry of variants, read by every consumer.

The inpainting variants, the upscalers and the pipeline's stages are each one
:class:`Registry`: entries declared in one list where the family modules are
imported, plus resolvers for entries found at run time (a model a user added
to the store). ``--inpaint NAME``, ``--upscale NAME``, ``auto`` and
``retouch models list`` all read the same registry.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterable, TypeVar

from worker.errors import RetouchError

T = TypeVar("T")


class UnknownVariantError(RetouchError):
    """No entry of that name is registered or can be resolved."""


class Registry(Generic[T]):
    """Entries of one kind by name. ``resolvers`` are called in order with
    (name, context) for names that are not registered; each returns an entry
    or None."""

    def __init__(self, kind: str, entries: Iterable[tuple[str, T]] = ()):
        self.kind = kind
        self._entries: dict[str, T] = dict(entries)
        self._resolvers: list[Callable[..., T | None]] = []

    def add(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def add_resolver(self, resolver: Callable[..., T | None]) -> None:
        self._resolvers.append(resolver)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str, *context) -> T:
        """The entry called ``name``; raises UnknownVariantError listing the known names."""
        if name in self._entries:
            return self._entries[name]
        for resolve in self._resolvers:
            found = resolve(name, *context)
            if found is not None:
                return found
        raise UnknownVariantError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
