"""A graph's picture as SVG, drawn offline: ``botloom graph --format svg``.

LangGraph draws PNGs through a web service (mermaid.ink) or pygraphviz; this
draws the nodes and edges of ``compiled.get_graph()`` itself, with a small layered
(Sugiyama-style) layout, top to bottom like Mermaid's ``graph TD``:

1. cycles are broken by turning the edges that close them (found depth first from
   the start) around, for layering only; an edge from a node to itself is a loop;
2. each node goes on the layer after its furthest predecessor (longest path);
3. an edge spanning several layers gets a bend point on each layer it crosses;
4. a few sweeps order each layer by the barycenter of its neighbours, which
   removes most crossings in graphs of this size;
5. nodes sit under their neighbours as far as their order and widths allow.

Conditional edges are dashed, as in Mermaid; edge data is written as a label.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

FONT_SIZE = 14
CHAR_WIDTH = 8.0
"""Width of one character at ``FONT_SIZE`` in the sans-serif font, generously (labels are short)."""
NODE_HEIGHT = 36.0
LAYER_GAP = 56.0
NODE_GAP = 36.0
BEND_WIDTH = 12.0
"""Room a bend point of a long edge takes in its layer."""
MARGIN = 24.0
LOOP_REACH = 36.0
SWEEPS = 8
TERMINALS = ("__start__", "__end__")


@dataclass
class _Slot:
    """A node or a bend point in the layout."""

    key: Hashable
    width: float
    layer: int = 0
    x: float = 0.0
    up: list[Hashable] = field(default_factory=list)
    down: list[Hashable] = field(default_factory=list)


@dataclass(frozen=True)
class _Edge:
    source: str
    target: str
    label: str
    conditional: bool


HIGHLIGHT = "#e8590c"
"""Colour of the nodes and edges of a highlighted path (a turn's)."""


def _parts(graph: Any) -> tuple[dict[str, str], list[_Edge]]:
    names = {str(node_id): str(getattr(node, "name", node_id)) for node_id, node in graph.nodes.items()}
    edges = [
        _Edge(str(e.source), str(e.target), "" if e.data is None else str(e.data), bool(e.conditional))
        for e in graph.edges
    ]
    return names, edges


def path_edges(path: Sequence[str], names: dict[str, str], edges: Sequence[_Edge]) -> set[tuple[str, str]]:
    """The edges a run took: from ``__start__`` through ``path`` in order (end it with ``__end__`` if the run did)."""
    if not path:
        return set()
    taken = set(itertools.pairwise(["__start__", *path]))
    existing = {(e.source, e.target) for e in edges}
    return {edge for edge in taken if edge in existing and edge[0] in names and edge[1] in names}


def draw_svg(graph: Any, path: Sequence[str] = ()) -> str:
    """An SVG document of a LangGraph drawable graph (``compiled.get_graph()``): its nodes, edges and labels.

    ``path`` (the nodes a turn ran, in order) is drawn highlighted: its nodes and the edges between them
    get the class ``on-path`` and the colour :data:`HIGHLIGHT`.
    """
    names, edges = _parts(graph)
    return _Layout(names, edges, path).svg()


def graph_json(graph: Any, path: Sequence[str] = ()) -> dict[str, Any]:
    """The graph's nodes and edges as JSON types, each marked whether ``path`` took it."""
    names, edges = _parts(graph)
    taken = path_edges(path, names, edges)
    on = set(path) | ({"__start__"} if path else set()) | {t for _, t in taken}
    return {
        "nodes": [{"id": node, "name": name, "on_path": node in on} for node, name in names.items()],
        "edges": [
            {
                "source": e.source,
                "target": e.target,
                "label": e.label,
                "conditional": e.conditional,
                "on_path": (e.source, e.target) in taken,
            }
            for e in edges
        ],
        "path": list(path),
    }


class _Layout:
    def __init__(self, names: dict[str, str], edges: Sequence[_Edge], path: Sequence[str] = ()) -> None:
        self.names = names
        self.edges = [e for e in edges if e.source in names and e.target in names]
        self.taken = path_edges(path, names, self.edges)
        self.on_path = (set(path) | {s for s, _ in self.taken} | {t for _, t in self.taken}) & set(names)
        self.loops = [e for e in self.edges if e.source == e.target]
        self.reversed = _back_edges(list(names), [(e.source, e.target) for e in self.edges if e not in self.loops])
        self.slots: dict[Hashable, _Slot] = {
            node: _Slot(node, max(2 * NODE_HEIGHT, len(label) * CHAR_WIDTH + 2 * FONT_SIZE))
            for node, label in names.items()
        }
        self.chains: dict[_Edge, list[Hashable]] = {}
        self._layer()
        self.layers = self._order()
        self._place()

    def _directed(self, edge: _Edge) -> tuple[str, str]:
        """The edge as layering sees it: pointing down."""
        if (edge.source, edge.target) in self.reversed:
            return edge.target, edge.source
        return edge.source, edge.target

    def _layer(self) -> None:
        down = [self._directed(e) for e in self.edges if e not in self.loops]
        incoming: dict[str, int] = dict.fromkeys(self.names, 0)
        for _, target in down:
            incoming[target] += 1
        ready = [n for n in self.names if incoming[n] == 0]
        while ready:
            node = ready.pop(0)
            for source, target in down:
                if source == node:
                    self.slots[target].layer = max(self.slots[target].layer, self.slots[node].layer + 1)
                    incoming[target] -= 1
                    if incoming[target] == 0:
                        ready.append(target)
        for index, edge in enumerate(e for e in self.edges if e not in self.loops):
            upper, lower = self._directed(edge)
            chain: list[Hashable] = [upper]
            for layer in range(self.slots[upper].layer + 1, self.slots[lower].layer):
                bend = (index, layer)
                self.slots[bend] = _Slot(bend, BEND_WIDTH, layer)
                chain.append(bend)
            chain.append(lower)
            for a, b in itertools.pairwise(chain):
                self.slots[a].down.append(b)
                self.slots[b].up.append(a)
            self.chains[edge] = chain

    def _order(self) -> list[list[Hashable]]:
        depth = max((s.layer for s in self.slots.values()), default=0)
        layers: list[list[Hashable]] = [[] for _ in range(depth + 1)]
        for key, slot in self.slots.items():
            layers[slot.layer].append(key)
        for sweep in range(SWEEPS):
            downwards = sweep % 2 == 0
            indexes = range(1, len(layers)) if downwards else range(len(layers) - 2, -1, -1)
            for i in indexes:
                fixed = {key: pos for pos, key in enumerate(layers[i - 1 if downwards else i + 1])}
                ranked = [(self._barycenter(k, fixed, downwards, p), p, k) for p, k in enumerate(layers[i])]
                layers[i] = [k for _, _, k in sorted(ranked, key=lambda r: (r[0], r[1]))]
        return layers

    def _barycenter(self, key: Hashable, fixed: dict[Hashable, int], downwards: bool, pos: int) -> float:
        """Mean position of the slot's neighbours on the fixed layer (its own position without any)."""
        slot = self.slots[key]
        near = [fixed[n] for n in (slot.up if downwards else slot.down) if n in fixed]
        return sum(near) / len(near) if near else float(pos)

    def _place(self) -> None:
        for layer in self.layers:  # packed left to right first
            x = 0.0
            for key in layer:
                slot = self.slots[key]
                slot.x = x + slot.width / 2
                x += slot.width + NODE_GAP
        for sweep in range(SWEEPS):  # then each node pulled under (or over) its neighbours
            downwards = sweep % 2 == 0
            for layer in self.layers if downwards else reversed(self.layers):
                wanted = []
                for key in layer:
                    slot = self.slots[key]
                    near = [self.slots[n].x for n in (slot.up if downwards else slot.down)]
                    wanted.append(sum(near) / len(near) if near else slot.x)
                self._spread(layer, wanted)
        left = min(s.x - s.width / 2 for s in self.slots.values())
        for slot in self.slots.values():
            slot.x += MARGIN - left

    def _spread(self, layer: list[Hashable], wanted: list[float]) -> None:
        """Put the layer's slots as near ``wanted`` as their order and widths allow, centred on the wishes."""
        slots = [self.slots[k] for k in layer]
        placed: list[float] = []
        for slot, wish in zip(slots, wanted, strict=True):
            if placed:
                previous = slots[len(placed) - 1]
                placed.append(max(wish, placed[-1] + previous.width / 2 + NODE_GAP + slot.width / 2))
            else:
                placed.append(wish)
        shift = (sum(wanted) - sum(placed)) / len(placed) if placed else 0.0
        for slot, x in zip(slots, placed, strict=True):
            slot.x = x + shift

    def _y(self, key: Hashable) -> float:
        return MARGIN + self.slots[key].layer * (NODE_HEIGHT + LAYER_GAP) + NODE_HEIGHT / 2

    def svg(self) -> str:
        """The SVG document."""
        right = max((s.x + s.width / 2 for s in self.slots.values()), default=0.0)
        right += LOOP_REACH if self.loops else 0.0
        width = right + MARGIN
        height = MARGIN * 2 + len(self.layers) * NODE_HEIGHT + (len(self.layers) - 1) * LAYER_GAP
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="{FONT_SIZE}">',
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
            'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker>'
            '<marker id="arrow-on" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
            f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{HIGHLIGHT}"/></marker></defs>',
            '<rect width="100%" height="100%" fill="#fff"/>',
        ]
        parts.extend(self._edge(edge) for edge in self.edges)
        parts.extend(self._node(node, label) for node, label in self.names.items())
        parts.append("</svg>")
        return "\n".join(parts) + "\n"

    def _node(self, node: str, label: str) -> str:
        slot = self.slots[node]
        x, y = slot.x - slot.width / 2, self._y(node) - NODE_HEIGHT / 2
        radius = NODE_HEIGHT / 2 if node in TERMINALS else 6
        fill = "#bfb6fc" if node == "__end__" else "#fff" if node == "__start__" else "#f2f0ff"
        on = node in self.on_path
        stroke = f'stroke="{HIGHLIGHT}" stroke-width="3"' if on else 'stroke="#9370db"'
        fill = "#ffe8d9" if on and node not in TERMINALS else fill
        return (
            f'<g class="node{" on-path" if on else ""}" id={quoteattr("node-" + node)} '
            f"data-node={quoteattr(node)}><title>{escape(node)}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot.width:.1f}" height="{NODE_HEIGHT:.1f}" rx="{radius:.1f}" '
            f'fill="{fill}" {stroke}/>'
            f'<text x="{slot.x:.1f}" y="{self._y(node):.1f}" text-anchor="middle" dominant-baseline="central">'
            f"{escape(label)}</text></g>"
        )

    def _edge(self, edge: _Edge) -> str:
        dash = ' stroke-dasharray="6 4"' if edge.conditional else ""
        on = (edge.source, edge.target) in self.taken
        colour, width, marker = (HIGHLIGHT, "3", "arrow-on") if on else ("#333", "1.4", "arrow")
        title = f"<title>{escape(edge.source)} → {escape(edge.target)}</title>"
        if edge in self.loops:
            slot = self.slots[edge.source]
            x, y = slot.x + slot.width / 2, self._y(edge.source)
            reach = x + LOOP_REACH
            path = f"M{x:.1f},{y - 8:.1f} C{reach:.1f},{y - 30:.1f} {reach:.1f},{y + 30:.1f} {x:.1f},{y + 8:.1f}"
            label_at = (x + LOOP_REACH, y)
        else:
            chain = self.chains[edge]
            points = [(self.slots[k].x, self._y(k)) for k in chain]
            points[0] = (points[0][0], points[0][1] + NODE_HEIGHT / 2)
            points[-1] = (points[-1][0], points[-1][1] - NODE_HEIGHT / 2)
            if chain[0] != edge.source:  # drawn against the layering: from the lower node up
                points.reverse()
            path = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in points)
            middle = len(points) // 2
            (x1, y1), (x2, y2) = points[middle - 1], points[middle]
            label_at = ((x1 + x2) / 2, (y1 + y2) / 2)
        label = (
            f'<text x="{label_at[0] + 4:.1f}" y="{label_at[1]:.1f}" font-size="{FONT_SIZE - 2}" '
            f'dominant-baseline="central" fill="#333">{escape(edge.label)}</text>'
            if edge.label
            else ""
        )
        return (
            f'<g class="edge{" on-path" if on else ""}" data-source={quoteattr(edge.source)} '
            f"data-target={quoteattr(edge.target)}>{title}"
            f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="{width}"{dash} '
            f'marker-end="url(#{marker})"/>{label}</g>'
        )


def _back_edges(nodes: list[str], edges: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Edges that close a cycle, found depth first from the nodes without predecessors (then any left)."""
    targets = {t for _, t in edges}
    roots = [n for n in nodes if n not in targets] + nodes
    state: dict[str, int] = {}  # 1: on the path, 2: done
    back: set[tuple[str, str]] = set()
    for root in roots:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, index = stack.pop()
            successors = [t for s, t in edges if s == node]
            if index < len(successors):
                stack.append((node, index + 1))
                target = successors[index]
                if state.get(target) == 1:
                    back.add((node, target))
                elif target not in state:
                    state[target] = 1
                    stack.append((target, 0))
            else:
                state[node] = 2
    return back
