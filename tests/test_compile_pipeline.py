"""The blocked kernels compile without Numba's SSA reconstruction (convnet.core.compile_pipeline):
every module the planner can choose asks for that pipeline, and no kernel template gives one
name both an INDEX (uint64) and anything else, which Numba would unify into float64 without
the pass (a kernel that fails to compile, or one that computes its addresses in floating point).
The kernels' answers are tested against independent references in test_inference.py,
test_blocked_training.py and test_fast_paths.py; this file checks what those cannot see."""

import ast

import pytest

from convnet.core import blocked

MODULES = ([("conv", tile) for tile in dict.fromkeys(
               blocked.TILES + blocked.HALVED_TILES + blocked.WIDE_TILES)]
           + [("conv_span", (*tile, column)) for tile in blocked.SPAN_TILES
              for column in (1, blocked.LANES)]
           + [("conv_rows", tile) for tile in (blocked.ROW_TILE, blocked.AVX2_ROW_TILE)]
           + [("conv_rows_filters", blocked.ROW_TILE)]
           + [("depthwise", blocked.depthwise_tile(size)) for size in ((3, 3), (5, 5))]
           + [("weight_grad", (blocks,)) for blocks in (1, 2, 4)]
           + [("weight_grad", (2, 4)), ("weight_grad", (4, 4))]
           + [("winograd", None), ("merge", None), ("pool", None)])


def is_index(node) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "INDEX")


def stored(target):
    """The names a target binds (not those read inside a subscript being stored to)."""
    return [name.id for name in ast.walk(target)
            if isinstance(name, ast.Name) and isinstance(name.ctx, ast.Store)]


def bindings(function: ast.FunctionDef):
    """(name, how it is bound: "index" for x = INDEX(..) or x += INDEX(..), else "other")."""
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            pairs = [(target, node.value) for target in node.targets]
            if (len(node.targets) == 1 and isinstance(node.targets[0], ast.Tuple)
                    and isinstance(node.value, ast.Tuple)):  # q, p = INDEX(..), INDEX(..)
                pairs = list(zip(node.targets[0].elts, node.value.elts, strict=True))
            for target, value in pairs:
                how = "index" if is_index(value) else "other"
                yield from ((name, how) for name in stored(target))
        elif isinstance(node, ast.AugAssign):
            how = "index" if is_index(node.value) else "other"
            yield from ((name, how) for name in stored(node.target))
        elif isinstance(node, (ast.For, ast.AnnAssign, ast.NamedExpr)):
            yield from ((name, "other") for name in stored(node.target))


@pytest.mark.parametrize(("kind", "tile"), MODULES, ids=lambda value: str(value))
def test_each_module_asks_for_the_pipeline_without_ssa_and_no_name_mixes_types(kind, tile):
    source = blocked.module_source(kind, "float32", tile)
    tree = ast.parse(source)
    decorated = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Call)
                 and ast.unparse(node.func.func) == "numba.njit"]
    assert decorated, "no kernel compiled by numba.njit(signature, ...)"
    for call in decorated:
        options = {keyword.arg: ast.unparse(keyword.value) for keyword in call.func.keywords}
        assert options.get("pipeline_class") == "WithoutSSA", ast.unparse(call)
    mixed = {}
    for function in (node for node in tree.body if isinstance(node, ast.FunctionDef)):
        kinds: dict[str, set] = {}
        for name, how in bindings(function):
            kinds.setdefault(name, set()).add(how)
        clashes = sorted(name for name, found in kinds.items() if len(found) > 1)
        if clashes:
            mixed[function.name] = clashes
    assert not mixed, f"names bound to INDEX and to other values (rename one): {mixed}"


def test_the_check_finds_a_name_bound_both_ways():
    function = ast.parse("def f(x):\n    for t in range(3):\n        pass\n"
                         "    t = INDEX(4)\n    a = INDEX(1)\n    a += INDEX(8)\n"
                         "    x[t + INDEX(1)] = 0\n    b, c = INDEX(1), 2\n"
                         "    c = INDEX(3)\n").body[0]
    found: dict[str, set] = {}
    for name, how in bindings(function):
        found.setdefault(name, set()).add(how)
    assert found == {"t": {"index", "other"}, "a": {"index"}, "b": {"index"},
                     "c": {"index", "other"}}
