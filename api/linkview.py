"""The engine links behind :class:`api.state.LinkPort`.

vlan/ owns the real work (plan, reconcile, neighbour learning) and produces a
:class:`engine.model.LinkMap`; the daemon hands each new map to :meth:`LinkView.set`.
"""

from __future__ import annotations

from engine.model import EngineLink, LinkMap


class LinkView:
    """Holds the current LinkMap (swapped whole)."""

    def __init__(self, mode: str, linkmap: LinkMap | None = None) -> None:
        self._mode = mode
        self._map = linkmap or LinkMap([])

    def mode(self) -> str:
        return self._mode

    def links(self) -> list[EngineLink]:
        return self._map.links()

    def linkmap(self) -> LinkMap:
        return self._map

    def set(self, linkmap: LinkMap) -> None:
        self._map = linkmap
