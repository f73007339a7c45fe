"""The ONNX conformance node cases of the supported operators: each imported case matches
onnxruntime within 1e-4; a case the importer refuses says why in one line; none crashes."""

import pytest
from onnx_conformance import cases, run

pytest.importorskip("onnxruntime")
# Cases that match today; a drop means a regression (raise it as operators are added).
MIN_MATCHED = 210


def test_conformance_cases_match_or_are_refused_clearly():
    outcomes = [run(case) for case in cases()]
    bad = [o for o in outcomes if o.status in ("crash", "mismatch")]
    assert not bad, "\n".join(f"{o.name}: {o.status}: {o.detail}" for o in bad)
    for outcome in outcomes:
        if outcome.status == "refused":
            assert "\n" not in outcome.detail and outcome.detail, outcome
    matched = sum(o.status == "match" for o in outcomes)
    assert matched >= MIN_MATCHED, f"only {matched} cases matched"
