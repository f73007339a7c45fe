"""The README's table of published models: for each, the load time (cn.onnx.load: the first call
in a fresh process that has imported convnet, then the best of 3 more),
the largest difference from onnxruntime over its run shapes, and the largest output value it
is measured against. Run from the repository root: python scripts/published_models.py"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from exchange_helpers import ort_session  # noqa: E402
from published import MODELS, path_of, sample  # noqa: E402

import convnet as cn  # noqa: E402


def main() -> None:
    print("| model | package | licence | load | max abs. error | max error / largest output | "
          "run at |")
    print("|---|---|---|---|---|---|---|")
    for name, entry in MODELS.items():
        path = path_of(entry.package, entry.member)
        first = _first_load(path, entry.input_shape)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model = cn.onnx.load(path, input_shape=entry.input_shape)
            times.append(time.perf_counter() - start)
        session = ort_session(path)
        worst_abs = worst_rel = 0.0
        for shape in entry.run_shapes:
            x = sample(entry, shape)
            expected = session.run(None, {session.get_inputs()[0].name: x})
            ours = model.forward(x)
            for a, b in zip(ours if isinstance(ours, tuple) else [ours], expected, strict=True):
                gap = np.abs(a.astype(np.float64) - b)
                worst_abs = max(worst_abs, float(gap.max()))
                worst_rel = max(worst_rel, float(gap.max() / np.abs(b).max()))
        package = (f"{entry.package.name}=={entry.package.version}" if entry.package
                   else "onnxruntime (installed)")
        licence = entry.package.licence if entry.package else "MIT"
        shapes = ", ".join("x".join(map(str, s)) for s in entry.run_shapes)
        print(f"| {name}: {entry.what} | {package} | {licence} | "
              f"{first:.2f} / {min(times):.2f} s | {worst_abs:.1e} | {worst_rel:.1e} | {shapes} |")


def _first_load(path, input_shape) -> float:
    """Seconds of the first cn.onnx.load in a new process (importing convnet not counted)."""
    code = ("import sys, time; import convnet as cn; t = time.perf_counter(); "
            f"cn.onnx.load(sys.argv[1], input_shape={input_shape!r}); "
            "print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, check=True)
    return float(done.stdout.split()[-1])


if __name__ == "__main__":
    main()
