"""The pipeline's DAG as an inline SVG, each step coloured by its state.

A small layered (Sugiyama-style) layout in pure Python, so a report needs no Graphviz and no
JavaScript: steps are put in layers by longest path from the sources, edges that span several
layers get invisible waypoints (so they bend around steps instead of crossing them), and the
order within each layer is improved by barycentre sweeps, keeping the order with the fewest
crossings. Colours come from JupyterLab's theme variables with fixed fallbacks, so the same
SVG reads right inside JupyterLab's styles and in a bare page.
"""

from __future__ import annotations

import bisect
import html
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

NODE_W, NODE_H = 168, 44
WAYPOINT_W = 12
H_GAP, V_GAP = 24, 40
MARGIN = 12
_MAX_LABEL = 20  # characters that fit in NODE_W at the font size below
_SWEEPS = 8

#: Icon, colour (JupyterLab variable and fallback) and dashing per state; the word is always
#: written too, so colour never carries the meaning alone.
STATE_STYLE: dict[str, tuple[str, str, str]] = {
    "pending": ("○", "var(--jp-ui-font-color3, #757575)", ""),
    "running": ("◔", "var(--jp-brand-color1, #1976d2)", ""),
    "succeeded": ("✓", "var(--jp-success-color1, #388e3c)", ""),
    "failed": ("✗", "var(--jp-error-color1, #d32f2f)", ""),
    "cached": ("◉", "var(--jp-info-color1, #0097a7)", ""),
    "skipped": ("↷", "var(--jp-ui-font-color2, #616161)", "stroke-dasharray: 5 3;"),
    "cancelled": ("■", "var(--jp-warn-color1, #f57c00)", ""),
}


@dataclass(frozen=True)
class Layout:
    """Where everything goes. ``nodes``: name -> (x, y) of the box's top-left corner;
    ``edges``: (source, target) -> the points the edge passes through, top to bottom."""

    nodes: dict[str, tuple[float, float]]
    edges: dict[tuple[str, str], list[tuple[float, float]]]
    width: float
    height: float
    crossings: int


def layout(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> Layout:
    """Lay out the DAG top to bottom. Edges naming unknown nodes and repeated edges are
    ignored; a cycle (which a compiled pipeline never has) is broken where it is found."""
    index = {name: i for i, name in enumerate(dict.fromkeys(nodes))}
    names = list(index)
    pairs = list(
        dict.fromkeys(
            (index[s], index[t]) for s, t in edges if s in index and t in index and s != t
        )
    )
    layer = _longest_path_layers(len(names), pairs)
    pairs = [(s, t) for s, t in pairs if layer[s] < layer[t]]  # drops cycle-closing edges

    # Waypoints: one per layer an edge passes through, numbered after the real nodes.
    kind_real = len(names)
    layer_of = list(layer)
    chains: dict[tuple[int, int], list[int]] = {}
    for s, t in pairs:
        chain = [s]
        for lyr in range(layer[s] + 1, layer[t]):
            layer_of.append(lyr)
            chain.append(len(layer_of) - 1)
        chain.append(t)
        chains[(s, t)] = chain
    up: list[list[int]] = [[] for _ in layer_of]
    down: list[list[int]] = [[] for _ in layer_of]
    for chain in chains.values():
        for a, b in itertools.pairwise(chain):
            down[a].append(b)
            up[b].append(a)

    rows: list[list[int]] = [[] for _ in range(max(layer_of, default=-1) + 1)]
    for v, lyr in enumerate(layer_of):
        rows[lyr].append(v)
    rows, crossings = _order(rows, up, down)

    def width(v: int) -> float:
        return NODE_W if v < kind_real else WAYPOINT_W

    row_w = [sum(width(v) for v in r) + H_GAP * max(0, len(r) - 1) for r in rows]
    total_w = max(row_w, default=0.0)
    centre: dict[int, tuple[float, float]] = {}
    for lyr, r in enumerate(rows):
        x = MARGIN + (total_w - row_w[lyr]) / 2
        y = MARGIN + lyr * (NODE_H + V_GAP)
        for v in r:
            centre[v] = (x + width(v) / 2, y)
            x += width(v) + H_GAP
    boxes = {names[v]: (centre[v][0] - NODE_W / 2, centre[v][1]) for v in range(kind_real)}
    routes: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for (s, t), chain in chains.items():
        points = [(centre[s][0], centre[s][1] + NODE_H)]
        for w in chain[1:-1]:
            points += [(centre[w][0], centre[w][1]), (centre[w][0], centre[w][1] + NODE_H)]
        points.append((centre[t][0], centre[t][1]))
        routes[(names[s], names[t])] = points
    height = MARGIN * 2 + len(rows) * NODE_H + max(0, len(rows) - 1) * V_GAP
    return Layout(boxes, routes, total_w + 2 * MARGIN, height, crossings)


def dag_svg(
    nodes: Sequence[str],
    edges: Iterable[tuple[str, str]],
    states: Mapping[str, str],
    *,
    notes: Mapping[str, str] | None = None,
    link_prefix: str | None = "step-",
) -> str:
    """An ``<svg>`` element: one box per step with its name, state and ``notes[name]`` (a
    duration, say), coloured by ``states[name]``. With ``link_prefix`` each box links to the
    element ``#<link_prefix><name>`` of the same page."""
    lay = layout(nodes, edges)
    notes = notes or {}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="cellpipe-dag" role="img" '
        f'width="{lay.width:g}" height="{lay.height:g}" viewBox="0 0 {lay.width:g} {lay.height:g}" '
        f'aria-label="Pipeline of {len(lay.nodes)} steps">',
        f"<title>Pipeline of {len(lay.nodes)} steps</title>",
        '<defs><marker id="cellpipe-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0 0L10 5L0 10z" fill="var(--jp-ui-font-color2, #616161)"/></marker></defs>',
        f"<style>{_CSS}</style>",
    ]
    for points in lay.edges.values():
        parts.append(f'<path class="edge" d="{_curve(points)}" marker-end="url(#cellpipe-arrow)"/>')
    for name, (x, y) in lay.nodes.items():
        state = states.get(name, "pending")
        icon = STATE_STYLE.get(state, STATE_STYLE["pending"])[0]
        label = name if len(name) <= _MAX_LABEL else name[: _MAX_LABEL - 1] + "…"
        sub = f"{icon} {state}" + (f" · {notes[name]}" if notes.get(name) else "")
        esc = html.escape(name)
        box = (
            f'<g class="node state-{html.escape(state)}" data-cellpipe-step="{esc}" '
            f'data-cellpipe-state="{html.escape(state)}">'
            f"<title>{esc}: {html.escape(sub)}</title>"
            f'<rect x="{x:g}" y="{y:g}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text class="name" x="{x + 10:g}" y="{y + 18:g}">{html.escape(label)}</text>'
            f'<text class="state" x="{x + 10:g}" y="{y + 35:g}">{html.escape(sub)}</text></g>'
        )
        if link_prefix is not None:
            box = f'<a href="#{html.escape(link_prefix + name)}">{box}</a>'
        parts.append(box)
    parts.append("</svg>")
    return "".join(parts)


def _state_css() -> str:
    rules = []
    for state, (_, colour, dash) in STATE_STYLE.items():
        rules.append(
            f".state-{state} rect{{stroke:{colour};fill:#fff;"
            f"fill:color-mix(in srgb,{colour} 14%,transparent);{dash}}}"
            f".state-{state} .state{{fill:{colour}}}"
        )
    return "".join(rules)


_CSS = (
    ".edge{fill:none;stroke:var(--jp-ui-font-color2, #616161);stroke-width:1.3}"
    "rect{stroke-width:2}"
    "text{font-family:var(--jp-ui-font-family, system-ui, sans-serif);font-size:13px}"
    ".name{fill:var(--jp-ui-font-color1, #212121);font-weight:600}"
    ".state{font-size:11.5px}"
    "a:focus rect,a:hover rect{stroke-width:3}" + _state_css()
)


def _curve(points: list[tuple[float, float]]) -> str:
    """Straight through waypoints, with vertical tangents between layers."""
    (x0, y0), rest = points[0], points[1:]
    d = [f"M{x0:g} {y0:g}"]
    for i, (x1, y1) in enumerate(rest):
        if i % 2 == 0:  # between two layers
            m = (y0 + y1) / 2
            d.append(f"C{x0:g} {m:g} {x1:g} {m:g} {x1:g} {y1:g}")
        else:  # across a layer, beside the steps of that layer
            d.append(f"L{x1:g} {y1:g}")
        x0, y0 = x1, y1
    return "".join(d)


def _longest_path_layers(n: int, pairs: list[tuple[int, int]]) -> list[int]:
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for s, t in pairs:
        preds[t].append(s)
        succs[s].append(t)
    remaining = [len(p) for p in preds]
    layer = [0] * n
    ready = [v for v in range(n) if remaining[v] == 0]
    done = 0
    while done < n:
        if not ready:  # a cycle: release the first node still waiting
            ready.append(next(v for v in range(n) if remaining[v] > 0))
            remaining[ready[0]] = 0
        v = ready.pop(0)
        done += 1
        for t in succs[v]:
            layer[t] = max(layer[t], layer[v] + 1)
            remaining[t] -= 1
            if remaining[t] == 0:
                ready.append(t)
    return layer


def _order(
    rows: list[list[int]], up: list[list[int]], down: list[list[int]]
) -> tuple[list[list[int]], int]:
    """Barycentre sweeps, alternately downwards and upwards; the best order seen wins."""
    best, best_crossings = [list(r) for r in rows], _crossings(rows, down)
    current = [list(r) for r in rows]
    for sweep in range(_SWEEPS):
        if best_crossings == 0:
            break
        downwards = sweep % 2 == 0
        span = range(1, len(current)) if downwards else range(len(current) - 2, -1, -1)
        for lyr in span:
            ref = current[lyr - 1] if downwards else current[lyr + 1]
            pos = {v: i for i, v in enumerate(ref)}
            key: dict[int, float] = {}
            for i, v in enumerate(current[lyr]):
                near = up[v] if downwards else down[v]
                key[v] = sum(pos[u] for u in near) / len(near) if near else float(i)
            current[lyr].sort(key=key.__getitem__)
        c = _crossings(current, down)
        if c < best_crossings:
            best, best_crossings = [list(r) for r in current], c
    return best, best_crossings


def _crossings(rows: list[list[int]], down: list[list[int]]) -> int:
    """Edge crossings between adjacent layers: inversions among the edges' lower ends when
    sorted by their upper ends."""
    total = 0
    for upper, lower in itertools.pairwise(rows):
        pos = {v: i for i, v in enumerate(lower)}
        ends = sorted((i, pos[t]) for i, v in enumerate(upper) for t in down[v] if t in pos)
        seen: list[int] = []
        for _, b in ends:
            total += len(seen) - bisect.bisect_right(seen, b)
            bisect.insort(seen, b)
    return total
