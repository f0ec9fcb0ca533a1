"""The grad_fn graph as a picture: Graphviz SVG where ``dot`` is installed, else a text tree.

Labels come from user code (variable names), so the DOT source quotes them and the SVG that
``dot`` writes escapes them; the text fallback is escaped here.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from html import escape
from typing import Mapping

from ..model.gradgraph import GradGraph, GradNode
from .common import tree_lines

#: Past this many nodes a picture is unreadable and slow to lay out: the text tree is shown.
MAX_SVG_NODES = 400
MAX_TREE_LINES = 400
DOT_TIMEOUT_S = 10.0
GRAPHVIZ_HINT = (
    "For a picture of this graph, install Graphviz: `apt-get install graphviz` "
    "(or `brew install graphviz`, `conda install graphviz`) and `pip install graphviz`."
)


@functools.lru_cache(maxsize=1)
def dot_path() -> str | None:
    """The ``dot`` program, or None where Graphviz is not installed."""
    return shutil.which("dot")


def _quote(text: str) -> str:
    # DOT quoted string: a user's backslash would start an escape (\N is the node id) and a
    # quote would end the string; our own line breaks become DOT's centred-line escape
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{body}"'


def node_label(n: GradNode) -> str:
    """Autograd node name on the first line, the tensors it produced (or the leaf) below."""
    if n.leaf is not None:
        return f"{n.name}\n{n.leaf}"
    if n.tensors:
        return f"{n.name}\n{', '.join(n.tensors)}"
    return n.name


def to_dot(g: GradGraph, keys: Mapping[int, str] | None = None) -> str:
    """DOT source, top to bottom from the result to its leaves; parallel edges kept.

    Nodes carry SVG classes (``tm-leaf``, ``tm-root``) so the panel's style colours them from the
    theme; ``keys`` maps a node to the tensor id a click on it opens."""
    lines = [
        "digraph grad {",
        '  graph [rankdir=TB, bgcolor="transparent", nodesep=0.3, ranksep=0.35];',
        ('  node [shape=box, style="rounded,filled", fillcolor="#eef2f7", color="#6e7781", '
         'fontname="Helvetica", fontsize=11, margin="0.12,0.05"];'),
        '  edge [color="#6e7781", arrowsize=0.7];',
    ]
    for n in g.nodes:
        attrs = [f"label={_quote(node_label(n))}"]
        if n.leaf is not None:
            attrs.append('fillcolor="#dafbe1", color="#1a7f37", class="tm-leaf"')
        elif n.id == g.root:
            attrs.append('fillcolor="#fbefff", color="#8250df", penwidth=1.5, class="tm-root"')
        key = (keys or {}).get(n.id)
        if key is not None and _KEY.fullmatch(key):
            attrs.append(f'id="tmkey_{key}"')
        lines.append(f"  n{n.id} [{', '.join(attrs)}];")
    for src, dst in g.edges:
        lines.append(f"  n{src} -> n{dst};")
    lines.append("}")
    return "\n".join(lines)


_KEY = re.compile(r"[A-Za-z0-9_]+")
_KEY_ID = re.compile(r'id="tmkey_([A-Za-z0-9_]+)"')
_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


FIND = "find"  # default for ``dot``: look the program up on PATH


def graph_svg(g: GradGraph, *, dot: str | None = FIND, keys: Mapping[int, str] | None = None) -> str | None:
    """The graph as an inline SVG element, or None without Graphviz or for a huge graph.

    ``dot`` is the program to run (None: behave as where Graphviz is not installed); a node with
    a ``keys`` entry gets ``data-tm="t:KEY"`` (the panel's click channel)."""
    exe = dot_path() if dot == FIND else dot
    if exe is None or g.root is None or len(g.nodes) > MAX_SVG_NODES:
        return None
    svg = _render(to_dot(g, keys), exe)
    return None if svg is None else _KEY_ID.sub(r'data-tm="t:\1"', svg)


@functools.lru_cache(maxsize=64)
def _render(source: str, exe: str) -> str | None:
    try:
        out = subprocess.run([exe, "-Tsvg"], input=source.encode(), capture_output=True,
                             timeout=DOT_TIMEOUT_S, check=True).stdout.decode("utf-8", "replace")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    # inline in HTML: drop the XML prolog, DOCTYPE and comments (they carry the node ids only)
    return _COMMENT.sub("", _PROLOG.sub("", out, count=1)).strip()


def tree_html(g: GradGraph, *, hint: bool = True) -> str:
    lines = tree_lines(g)
    more = ""
    if len(lines) > MAX_TREE_LINES:
        more = f"\n… {len(lines) - MAX_TREE_LINES:,} more lines"
        lines = lines[:MAX_TREE_LINES]
    text = escape("\n".join(lines) + more)
    tip = f"<div class='tm-muted'>{escape(GRAPHVIZ_HINT)}</div>" if hint else ""
    return f"<pre>{text}</pre>{tip}"


def graph_html(g: GradGraph, *, dot: str | None = FIND, keys: Mapping[int, str] | None = None) -> str:
    """What the Autograd tab shows: the chain in words, then the picture or the text tree."""
    chain = f"<div><b>{escape(g.tensor or '?')}</b>: {escape(g.chain())}</div>"
    if g.root is None:
        return chain
    svg = graph_svg(g, dot=dot, keys=keys)
    if svg is not None:
        return f"{chain}<div class='tm-graph'>{svg}</div>"
    if len(g.nodes) > MAX_SVG_NODES:
        note = f"<div class='tm-muted'>{len(g.nodes):,} nodes: too many for a picture, shown as a tree</div>"
        return chain + note + tree_html(g, hint=False)
    return chain + tree_html(g, hint=True)


__all__ = ["GRAPHVIZ_HINT", "dot_path", "graph_html", "graph_svg", "node_label", "to_dot", "tree_html"]
