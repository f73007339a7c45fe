"""A network as a picture: boxes for layers, arrows for tensors labelled with their shapes,
laid out in layers from the input down (Sugiyama's method), with repeated blocks collapsible.

    stages = probe.stage_graph(model)
    blocks = find_blocks(stages)                 # Inception modules, residual blocks, ...
    picture = layout(stages, shapes, inputs, collapsed={"block2"})

`find_blocks` needs no names: a block is the stretch of the graph between two tensors that
every path goes through (where the network narrows to one tensor), when something branches or
merges inside it. `layout` ranks each node by its longest path from an input, routes edges
that skip ranks through invisible bends, orders each rank by the barycentre of its neighbours
to keep crossings few, and places each node near the middle of the nodes feeding it. Plain
Python: the page only draws the coordinates it is given.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

NODE_HEIGHT = 38
RANK_GAP = 44  # vertical space between ranks, where the edges and their shape labels go
NODE_GAP = 22
CHAR_WIDTH = 6.6
MIN_WIDTH = 84
SWEEPS = 6


@dataclass
class Block:
    id: str
    members: list[str]  # stage names, in order
    output: str  # the stage whose output leaves the block
    label: str
    title: str  # its short name: the members' common prefix (mixed3a), else the id


def _common_prefix(names: list[str]) -> str:
    """mixed3a for mixed3a_1x1, mixed3a_pool, ...: the shared start, cut at a separator."""
    prefix = os.path.commonprefix(names)
    cut = max(prefix.rfind(sep) for sep in "_-.")
    return prefix[:cut] if cut >= 2 else ""


def find_blocks(stages) -> list[Block]:
    """Stretches between two narrow points of the graph that branch or merge inside."""
    order = {stage.name: i for i, stage in enumerate(stages)}
    last_read: dict[str, int] = {}
    for stage in stages:
        for name in stage.inputs:
            last_read[name] = max(last_read.get(name, -1), order[stage.name])
    cuts = []
    for i, stage in enumerate(stages):
        live = {name for name, last in last_read.items() if last > i and
                (name not in order or order[name] <= i)}
        if live == {stage.name} or (not live and i == len(stages) - 1):
            cuts.append(i)
    blocks, start = [], 0
    for cut in cuts:
        members = stages[start:cut + 1]
        start = cut + 1
        if len(members) < 2:
            continue
        names = {stage.name for stage in members}
        branching = any(len(stage.inputs) > 1 for stage in members) or any(
            sum(1 for other in members if stage.name in other.inputs) > 1 for stage in members)
        outside_inputs = {name for stage in members for name in stage.inputs} - names
        if not branching and len(outside_inputs) <= 1:
            continue
        counts = Counter(type(stage.layer).__name__ for stage in members)
        kinds = ", ".join(f"{n} {kind}" if n > 1 else kind for kind, n in counts.most_common())
        number = len(blocks) + 1
        title = _common_prefix([stage.name for stage in members]) or f"block{number}"
        blocks.append(Block(f"block{number}", [stage.name for stage in members],
                            members[-1].name,
                            f"{title}: {len(members)} layers ({kinds})", title))
    return blocks


@dataclass
class _Node:
    id: str
    label: str  # the longer of the box's two lines: its width
    kind: str  # "input", "stage", "block", "bend"
    rank: int = 0
    order: float = 0.0
    width: float = 0.0
    x: float = 0.0
    preds: list = field(default_factory=list)
    succs: list = field(default_factory=list)


def _shape_text(shape) -> str:
    return "x".join(str(v) for v in shape)


def layout(stages, shapes: dict, inputs: list[tuple[str, tuple]], collapsed=(),
           blocks: list[Block] | None = None) -> dict:
    """Node boxes and edge polylines for the graph with the `collapsed` blocks drawn as one
    box each. shapes: per-sample output shape of every stage by name; inputs: (name, shape)
    of the model's inputs."""
    blocks = find_blocks(stages) if blocks is None else blocks
    collapsed = set(collapsed)
    owner = {}
    for block in blocks:
        if block.id in collapsed:
            for member in block.members:
                owner[member] = block.id
    nodes: dict[str, _Node] = {}
    described: dict[str, dict] = {}
    for name, shape in inputs:
        nodes[name] = _Node(name, max(name, f"input {_shape_text(shape)}", key=len), "input")
        described[name] = {"id": name, "kind": "input", "label": name, "type": "Input",
                           "shape": list(shape)}
    for stage in stages:
        node_id = owner.get(stage.name, stage.name)
        if node_id not in nodes:
            if node_id != stage.name:
                block = next(b for b in blocks if b.id == node_id)
                text = max(f"> {block.title}", f"{len(block.members)} layers -> "
                           f"{_shape_text(shapes[block.output])}", key=len)
                nodes[node_id] = _Node(node_id, text, "block")
                described[node_id] = {"id": node_id, "kind": "block", "label": block.label,
                                      "title": block.title, "type": "Block",
                                      "members": block.members,
                                      "shape": list(shapes[block.output])}
            else:
                nodes[node_id] = _Node(node_id, max(stage.name, type(stage.layer).__name__,
                                                    key=len), "stage")
                block = next((b for b in blocks if stage.name in b.members), None)
                described[node_id] = {"id": node_id, "kind": "stage", "label": stage.name,
                                      "type": type(stage.layer).__name__,
                                      "layer": stage.layer.name,
                                      "shape": list(shapes[stage.name]),
                                      "block": block.id if block else None}
    edges = []
    seen = set()
    for stage in stages:
        target = owner.get(stage.name, stage.name)
        for source_name in stage.inputs:
            source = owner.get(source_name, source_name)
            if source == target or (source, target) in seen:
                continue
            seen.add((source, target))
            shape = shapes.get(source_name) or dict(inputs).get(source_name)
            edges.append({"source": source, "target": target, "tensor": source_name,
                          "label": _shape_text(shape) if shape else ""})
            nodes[source].succs.append(target)
            nodes[target].preds.append(source)
    # Ranks: the longest path from an input (nodes are already in a topological order).
    for node in nodes.values():
        node.rank = max((nodes[p].rank + 1 for p in node.preds), default=0)
    # Edges over several ranks bend through invisible nodes, one per rank skipped.
    routed = []
    for edge in edges:
        chain = [edge["source"]]
        low, high = nodes[edge["source"]].rank, nodes[edge["target"]].rank
        for rank in range(low + 1, high):
            bend = _Node(f"{edge['source']}>{edge['target']}@{rank}", "", "bend", rank)
            nodes[bend.id] = bend
            chain.append(bend.id)
        chain.append(edge["target"])
        for a, b in zip(chain, chain[1:], strict=False):
            if b not in nodes[a].succs:
                nodes[a].succs.append(b)
            if a not in nodes[b].preds:
                nodes[b].preds.append(a)
        routed.append((edge, chain))
    for a, b in [(e["source"], e["target"]) for e in edges]:
        if nodes[b].rank - nodes[a].rank > 1:  # the direct link is replaced by the bends
            nodes[a].succs.remove(b)
            nodes[b].preds.remove(a)
    ranks: dict[int, list[_Node]] = {}
    for node in nodes.values():
        ranks.setdefault(node.rank, []).append(node)
    for rank in ranks.values():
        for position, node in enumerate(rank):
            node.order = position
    _order(ranks, nodes)
    for node in nodes.values():
        node.width = 0.0 if node.kind == "bend" else max(
            MIN_WIDTH, CHAR_WIDTH * len(node.label) + 18)
    _place(ranks, nodes)
    left = min(node.x - node.width / 2 for node in nodes.values())
    margin = 16
    for node in nodes.values():
        node.x += margin - left
    width = max(node.x + node.width / 2 for node in nodes.values()) + margin
    height = (max(ranks) + 1) * (NODE_HEIGHT + RANK_GAP) - RANK_GAP + 2 * margin

    def top(node):
        return margin + node.rank * (NODE_HEIGHT + RANK_GAP)

    boxes = []
    for node in nodes.values():
        if node.kind == "bend":
            continue
        box = dict(described[node.id])
        box.update(x=round(node.x - node.width / 2, 1), y=top(node), w=round(node.width, 1),
                   h=NODE_HEIGHT, rank=node.rank)
        boxes.append(box)
    lines = []
    for edge, chain in routed:
        points = []
        for index, node_id in enumerate(chain):
            node = nodes[node_id]
            if index == 0:
                points.append([round(node.x, 1), top(node) + NODE_HEIGHT])
            elif index == len(chain) - 1:
                points.append([round(node.x, 1), top(node)])
            else:
                points += [[round(node.x, 1), top(node)],
                           [round(node.x, 1), top(node) + NODE_HEIGHT]]
        lines.append({**edge, "points": points})
    return {"nodes": boxes, "edges": lines, "width": round(width, 1), "height": height,
            "blocks": [{"id": b.id, "label": b.label, "title": b.title, "members": b.members,
                        "collapsed": b.id in collapsed} for b in blocks]}


def _order(ranks: dict[int, list], nodes: dict) -> None:
    """Barycentre sweeps, down then up: each node moves to the mean position of its neighbours
    in the rank before (or after); ties keep their order."""
    depth = max(ranks) + 1
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        for rank in (range(1, depth) if down else range(depth - 2, -1, -1)):
            row = ranks[rank]
            for node in row:
                near = node.preds if down else node.succs
                if near:
                    node.order = sum(nodes[n].order for n in near) / len(near)
            row.sort(key=lambda n: n.order)
            for position, node in enumerate(row):
                node.order = position


def _place(ranks: dict[int, list], nodes: dict) -> None:
    """x of each node: near the mean of the nodes feeding it, never overlapping its rank."""
    for rank in sorted(ranks):
        row = ranks[rank]
        wanted = []
        for node in row:
            if node.preds:
                wanted.append(sum(nodes[p].x for p in node.preds) / len(node.preds))
            else:
                wanted.append(None)
        x = None
        for node, want in zip(row, wanted, strict=True):
            gap = NODE_GAP if node.kind != "bend" else NODE_GAP / 2
            lowest = None if x is None else x + gap + node.width / 2
            goal = want if want is not None else (lowest if lowest is not None else 0.0)
            node.x = goal if lowest is None else max(goal, lowest)
            x = node.x + node.width / 2
        # Shift the rank as a whole so that it sits, on average, where its feeders want it.
        offsets = [want - node.x for node, want in zip(row, wanted, strict=True)
                   if want is not None]
        if offsets:
            shift = sum(offsets) / len(offsets)
            for node in row:
                node.x += shift
