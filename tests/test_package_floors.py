"""The package's folders are its floors: each imports only the floors below it (README, "The
package"). Read from the source with ast, so an import hidden inside a function counts too."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "convnet"
# Floor of each top-level part; a module may import its own floor and the ones below.
FLOORS = {"core": 0, "version": 0, "nn": 1, "optim": 2, "data": 2, "io": 3, "training": 4,
          "viz": 5, "web": 6, "cli": 7}


def part_of(module: str) -> str | None:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[0] == "convnet" else None


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "convnet":  # from convnet import data -> convnet.data
                for alias in node.names:
                    yield node.lineno, f"convnet.{alias.name}"
            else:
                yield node.lineno, node.module


def test_every_import_goes_down_or_sideways():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent)
        own = relative.parts[1].removesuffix(".py") if len(relative.parts) > 1 else None
        if own not in FLOORS:
            continue  # the package's face (__init__, __main__, _moved) stands above all
        for line, module in imported_modules(path):
            target = part_of(module)
            if target is None or target not in FLOORS:
                if target is not None:
                    wrong.append(f"{relative}:{line} imports {module}, the package's face")
                continue
            if FLOORS[target] > FLOORS[own]:
                wrong.append(f"{relative}:{line} ({own}) imports {module} ({target}), a floor up")
    assert not wrong, "\n".join(wrong)


def test_the_floors_cover_every_part_of_the_package():
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    faces = {"__init__", "__main__", "_moved"}
    assert parts - faces == set(FLOORS)


def test_earlier_module_paths_load_the_same_modules():
    import importlib

    from convnet import _moved

    for old, new in _moved.MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
    from convnet.train import Trainer  # the README of earlier releases wrote this

    from convnet.training import Trainer as moved

    assert Trainer is moved
    import convnet as cn

    assert callable(cn.onnx.export) and callable(cn.onnx.load)  # not shadowed by the modules
