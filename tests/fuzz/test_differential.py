"""Differential fuzzing: random valid inference graphs (``graphs.py``) on the float64
reference executor, the Numba CPU backend (float32, each convolution and pooling algorithm in
turn) and onnxruntime (through the ONNX export), all held to the docs/semantics.md §8 float32
tolerance. A failure is shrunk by hypothesis and printed as a ``Spec`` to paste into
``test_regressions.py``; ``benchmarks/fuzz.py`` runs the same check for longer."""

from __future__ import annotations

from graphs import check, specs
from hypothesis import HealthCheck, given, settings


@settings(derandomize=True, max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=specs())
def test_backends_agree_with_the_reference(spec) -> None:
    check(spec)
