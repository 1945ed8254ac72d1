"""The one rule for caches derived from the forwarding table: a table change empties them all.

Four caches hang off the table: the Fib's lookup results, the brancher's per-destination
results / next-hop ids / plans (:class:`engine.forwarding.branch.Brancher`), the flow templates
(:class:`engine.forwarding.flowcache.FlowCache`) and the worker's router-interface -> link
entries (``Egress`` in engine/dataplane).  Each says *what* it holds and how to empty itself
(``clear(generation)``); *when* to empty is decided here only, by :class:`DerivedCaches`:

* the owner compares the table's ``generation`` with :attr:`DerivedCaches.generation` (one
  attribute read per packet, which the hot paths inline) and calls :meth:`DerivedCaches.renew`
  when they differ; every cache of the set is emptied together, so none can outlive the
  table generation another one already left;
* the owner also calls :meth:`~DerivedCaches.renew` when something else the caches derive from
  changed (the worker: the link map), or right after it applied a table change itself.

The Fib's own lookup cache needs no entry: it lives inside each immutable generation
(``FibSnapshot.cache``), so it is born empty with its generation.
"""

from __future__ import annotations

from typing import Protocol


class Derived(Protocol):
    """A cache derived from the table: ``clear`` forgets everything it holds."""

    def clear(self, generation: object = None) -> None: ...


_NEVER = object()     # no generation seen yet: the first comparison always renews


class DerivedCaches:
    """A set of caches derived from one table, emptied together when its generation changes."""

    __slots__ = ("caches", "generation")

    def __init__(self, *caches: Derived) -> None:
        self.caches = caches
        self.generation: object = _NEVER

    def renew(self, generation: object) -> None:
        """Empty every cache of the set; they are valid for ``generation`` from now on."""
        for cache in self.caches:
            cache.clear(generation)
        self.generation = generation

    def check(self, generation: object) -> None:
        """:meth:`renew` if ``generation`` is not the one the caches hold (the hot paths inline this)."""
        if generation != self.generation:
            self.renew(generation)
