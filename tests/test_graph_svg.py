"""The Autograd tab's picture: Graphviz SVG of a GradGraph, and the text tree where dot is missing."""

from __future__ import annotations

import os
import re

import pytest
import torch
from testkit import autograd_example

import tensormagic
from tensormagic.model.gradgraph import GradGraph, GradNode
from tensormagic.views.graph import GRAPHVIZ_HINT, MAX_SVG_NODES, dot_path, graph_html, graph_svg, to_dot

HOSTILE = "<img src=x onerror=alert(1)>"


def _need_dot() -> None:
    if dot_path() is None:
        if os.environ.get("CI"):
            pytest.fail("Graphviz `dot` is missing in CI (scripts/test.sh installs it)")
        pytest.skip("Graphviz `dot` is not installed")


@pytest.fixture
def example() -> tensormagic.Recording:
    return autograd_example().rec  # every tensor freed: the graph is plain data


def _svg_texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def test_dot_source_keeps_parallel_edges(example):
    """`y * y` has two edges from its MulBackward0 to y's AddBackward0, and the DOT keeps both."""
    dot = to_dot(example.grad_graph("out"))
    edges = re.findall(r"(n\d+) -> (n\d+);", dot)
    assert len(edges) - len(set(edges)) == 1


def test_svg_has_node_names_and_variable_names(example):
    """The picture labels each node with its autograd name and the variables it produced."""
    _need_dot()
    svg = graph_svg(example.grad_graph("out"))
    assert svg is not None and svg.startswith("<svg")
    texts = _svg_texts(svg)
    for label in ("MeanBackward0", "MulBackward0", "AddBackward0", "AccumulateGrad", "out", "z", "y", "x"):
        assert label in texts


def test_svg_is_top_to_bottom_from_result_to_leaf(example):
    """The result's node is drawn above the leaf's (rankdir TB)."""
    _need_dot()
    svg = graph_svg(example.grad_graph("out"))
    assert svg is not None
    ys = {t: float(y) for y, t in re.findall(r'<text[^>]*y="([-\d.]+)"[^>]*>([^<]*)</text>', svg)}
    assert ys["MeanBackward0"] < ys["AddBackward0"] < ys["AccumulateGrad"]


def test_svg_escapes_hostile_names():
    """A tensor named like an HTML tag is text in the SVG, never an element."""
    _need_dot()
    d = {}
    with tensormagic.track() as rec:
        d[HOSTILE] = torch.ones(3, requires_grad=True)
        s = (d[HOSTILE] * 2).sum()
    svg = graph_svg(rec.grad_graph("s"))
    assert svg is not None
    assert "<img" not in svg
    assert "&lt;img src=x onerror=alert(1)&gt;" in svg
    del s


def test_dot_quoting_survives_quotes_and_backslashes():
    """Quotes and backslashes in a name neither break the DOT source nor turn into escapes."""
    _need_dot()
    name = 'a"b\\N'
    g = GradGraph(root=1, nodes=(GradNode(1, "AccumulateGrad", leaf=name),), edges=(), tensor=name)
    svg = graph_svg(g)
    assert svg is not None
    assert any('a&quot;b\\N' in t or 'a"b\\N' in t for t in _svg_texts(svg))


def test_without_graphviz_shows_text_tree_and_hint(example):
    """Where dot is missing, the tab shows the indented tree and one line on how to get the picture."""
    html = graph_html(example.grad_graph("out"), dot=None)
    assert "<svg" not in html
    assert "MeanBackward0 (out)" in html and "AccumulateGrad(x)" in html
    assert "apt-get install graphviz" in html and GRAPHVIZ_HINT.split(":")[0] in html


def test_huge_graph_falls_back_to_tree_without_hint():
    """A graph too big to lay out is shown as a tree with a note, not handed to dot."""
    n = MAX_SVG_NODES + 5
    nodes = tuple(GradNode(i, "AddBackward0") for i in range(1, n + 1))
    edges = tuple((i, i + 1) for i in range(1, n))
    g = GradGraph(root=1, nodes=nodes, edges=edges, tensor="h")
    assert graph_svg(g) is None
    html = graph_html(g)
    assert "too many for a picture" in html and "<pre>" in html


def test_tensor_without_graph_says_so(example):
    """A leaf has no grad_fn graph: the tab says so in words."""
    html = graph_html(example.grad_graph("x"))
    assert "not part of an autograd graph" in html
