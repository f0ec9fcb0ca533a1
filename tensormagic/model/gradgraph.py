"""The grad_fn graph below a tensor, as plain data a recording and a log file carry
(``engine/autograd.py`` captures it when a block ends; ``views/graph.py`` draws it), and the
block's ``GraphTable`` of every node its tensors reach."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from .dictform import _known, _to_dict


@dataclass(frozen=True, slots=True)
class GradNode:
    """One autograd node: its normalised name and the names of the tensors it produced."""

    id: int
    name: str
    tensors: tuple[str, ...] = ()
    leaf: str | None = None

    @property
    def label(self) -> str:
        if self.leaf is not None:
            return f"{self.name}({self.leaf})"
        if self.tensors:
            return f"{self.name} ({', '.join(self.tensors)})"
        return self.name

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GradNode:
        d = _known(cls, d)
        d["tensors"] = tuple(d.get("tensors", ()))
        return cls(**d)


@dataclass(frozen=True, slots=True)
class GradGraph:
    """The grad_fn graph below one tensor, as plain data (edges from a node to its inputs)."""

    root: int | None
    nodes: tuple[GradNode, ...] = ()
    edges: tuple[tuple[int, int], ...] = ()
    tensor: str | None = None

    def node(self, nid: int) -> GradNode:
        for n in self.nodes:
            if n.id == nid:
                return n
        raise KeyError(nid)

    def find(self, nid: int) -> GradNode | None:
        """The node ``nid``, or None when the graph does not hold it (cut at ``MAX_NODES``)."""
        for n in self.nodes:
            if n.id == nid:
                return n
        return None

    def children(self, nid: int) -> list[int]:
        """Inputs of a node, parallel edges kept, in autograd's order."""
        return [dst for src, dst in self.edges if src == nid]

    def chain(self) -> str:
        """``MeanBackward0 → MulBackward0 ⇉ AddBackward0 → AccumulateGrad(x)`` along first inputs."""
        if self.root is None:
            return "(no grad_fn: not part of an autograd graph)"
        parts: list[str] = []
        seen: set[int] = set()
        nid: int | None = self.root
        arrow = ""
        while nid is not None and nid not in seen:
            seen.add(nid)
            n = self.find(nid)
            if n is None:  # past a truncated graph's last node (or a log's damaged graph)
                parts.append(f"{arrow}…")
                break
            parts.append(f"{arrow}{n.name}({n.leaf})" if n.leaf else f"{arrow}{n.name}")
            kids = self.children(nid)
            if not kids:
                break
            arrow = " ⇉ " if len(kids) > 1 and len(set(kids)) == 1 else " → "
            nid = kids[0]
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "tensor": self.tensor,
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [list(e) for e in self.edges],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GradGraph:
        return cls(
            root=d.get("root"),
            tensor=d.get("tensor"),
            nodes=tuple(GradNode.from_dict(n) for n in d.get("nodes", ())),
            edges=tuple((int(a), int(b)) for a, b in d.get("edges", ())),
        )


@dataclass
class GraphTable:
    """Every node reachable from the block's live tensors, shared by all their graphs."""

    nodes: dict[int, GradNode] = field(default_factory=dict)
    edges: dict[int, tuple[int, ...]] = field(default_factory=dict)
    roots: dict[str, int] = field(default_factory=dict)  # tensor id -> root node id
    truncated: bool = False

    def graph(self, tensor_id: str, label: str | None = None) -> GradGraph:
        root = self.roots.get(tensor_id)
        if root is None:
            return GradGraph(root=None, tensor=label)
        order: list[int] = []
        seen = {root}
        queue = deque([root])
        edges: list[tuple[int, int]] = []
        while queue:
            nid = queue.popleft()
            order.append(nid)
            for child in self.edges.get(nid, ()):
                edges.append((nid, child))
                if child not in seen:
                    seen.add(child)
                    queue.append(child)
        return GradGraph(root=root, nodes=tuple(self.nodes[n] for n in order if n in self.nodes),
                         edges=tuple(edges), tensor=label)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [n.to_dict() for n in self.nodes.values()],
            "edges": {str(k): list(v) for k, v in self.edges.items()},
            "roots": dict(self.roots),
            "truncated": self.truncated,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphTable:
        nodes = {n["id"]: GradNode.from_dict(n) for n in d.get("nodes", ())}
        edges = {int(k): tuple(v) for k, v in d.get("edges", {}).items()}
        return cls(nodes=nodes, edges=edges, roots=dict(d.get("roots", {})),
                   truncated=bool(d.get("truncated", False)))  # fmt: skip
