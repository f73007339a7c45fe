"""Write docs/onnx-conformance.md: every ONNX conformance node case of the operators convnet
imports, with its outcome (matched onnxruntime, refused by the importer and why, or not tried
and why). Run from the repository root: python scripts/onnx_conformance.py"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from onnx_conformance import cases, run  # noqa: E402


def main() -> None:
    import onnx

    outcomes = [run(case) for case in cases()]
    counts = Counter(o.status for o in outcomes)
    lines = [
        "# ONNX conformance node cases",
        "",
        f"The node cases of onnx {onnx.__version__}'s backend test generators "
        f"(`onnx.backend.test.case.node`) for the operators convnet imports, each imported and "
        f"run against onnxruntime (1e-4 relative and absolute). Written by "
        f"`python scripts/onnx_conformance.py`; `tests/test_onnx_conformance.py` runs the same.",
        "",
        f"{counts['match']} matched, {counts['refused']} refused by the importer with a "
        f"reason, {counts['skipped']} not tried"
        + (f", {counts['mismatch']} mismatched, {counts['crash']} crashed"
           if counts['mismatch'] or counts['crash'] else "") + ".",
        "",
    ]
    for status, title in (("match", "Matched"), ("refused", "Refused (the importer's reason)"),
                          ("skipped", "Not tried"), ("mismatch", "Mismatched"),
                          ("crash", "Crashed")):
        chosen = [o for o in outcomes if o.status == status]
        if not chosen:
            continue
        lines += [f"## {title}", "", "| case | detail |", "|---|---|"]
        lines += [f"| {o.name} | {o.detail.replace('|', '/')} |" for o in chosen]
        lines.append("")
    path = ROOT / "docs" / "onnx-conformance.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path}: {dict(counts)}")


if __name__ == "__main__":
    main()
