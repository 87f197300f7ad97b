"""Reshapes, flattens and identities of computed values are views of their memory, with no step
(``CpuBuilder.view_outputs``): the viewed memory must live as long as the view is read, even when
the view is read long after its source's last direct reader, and a view the graph returns is
copied out like any output (a second call must not change the first call's result)."""

from __future__ import annotations

import numpy as np
from op_helpers import assert_close, randomized

import cnnir
from cnnir import nn


class LateView(nn.Module):
    """A flattened activation read only at the end, after layers that would reuse its memory
    if the plan let it die at the flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        h = nn.functional.relu(self.conv(x))
        early = cnnir.flatten(h, 1)
        late = cnnir.flatten(self.body(h), 1)
        return self.fc(late) + self.fc(early), early.reshape(-1, 6, 24)


def test_views_take_no_step_and_keep_their_memory_alive() -> None:
    model = randomized(LateView())
    shape = (2, 3, 6, 6)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    compiled = cnnir.compile(model, shape)
    program = compiled.program((shape,))
    views = [node for node, _ in program.schedule if node.op.name in ("flatten", "reshape")]
    assert views == []
    got = compiled(x)
    ref = cnnir.compile(model, shape, backend="reference")(x.astype(np.float64))
    for a, b in zip(got, ref):
        assert_close(a, b, 9 * 4 * 3)


def test_a_returned_view_is_copied_out() -> None:
    model = randomized(LateView())
    shape = (2, 3, 6, 6)
    compiled = cnnir.compile(model, shape)
    rng = np.random.default_rng(3)
    first = compiled(rng.standard_normal(shape).astype(np.float32))[1]
    kept = first.copy()
    compiled(rng.standard_normal(shape).astype(np.float32))
    np.testing.assert_array_equal(first, kept)
