"""Whole pipelines: every semantics-preserving pass on ResNet-152 verifies, and the -O and
full pipelines keep small models' outputs in float64."""

from __future__ import annotations

import pytest
from pass_testing import as_float64, assert_equivalent, build, randomize_bn

import cnnir
from cnnir import ops
from cnnir.api import run_passes
from cnnir.passes.manager import DEFAULT_INFERENCE_PIPELINE, semantics_preserving


def test_every_semantics_preserving_pass_on_resnet152_verifies():
    g = build("resnet.py", "resnet152", (1, 3, 224, 224))
    result = run_passes(g, semantics_preserving())
    out = cnnir.verify(result.graph)
    kinds = {n.op for n in out.nodes}
    assert ops.batch_norm not in kinds and ops.relu not in kinds and ops.add not in kinds
    assert sum(n.op is ops.conv2d_fused for n in out.nodes) == 1 + 3 * 50
    before, after = cnnir.analyze(g).totals, cnnir.analyze(out).totals
    assert after.macs == before.macs + (7 * 7 - 1) * 2048 * 1000  # the head as a 1x1 conv
    bn_channels = sum(n.output.type.shape[1] for n in g.nodes if n.op is ops.batch_norm)
    assert bn_channels == (151_579 - 155) // 2  # ResNet-152's buffers: 2 stats + 1 counter
    assert after.params == before.params - 2 * bn_channels + bn_channels  # γ, β -> conv bias


MODELS = [("resnet.py", "resnet18", (1, 3, 32, 32)),
          ("mobilenet.py", "mobilenet_v3_small", (1, 3, 32, 32)),
          ("shufflenet.py", "shufflenet_v2_x1_0", (1, 3, 32, 32)),
          ("inception.py", "googlenet", (1, 3, 32, 32))]


@pytest.mark.parametrize(("path", "builder", "shape"), MODELS, ids=[m[1] for m in MODELS])
@pytest.mark.parametrize("pipeline", ["O", "all"])
def test_pipelines_keep_outputs(path, builder, shape, pipeline):
    g = randomize_bn(as_float64(build(path, builder, shape)))
    names = DEFAULT_INFERENCE_PIPELINE if pipeline == "O" else semantics_preserving()
    result = run_passes(g, names, fixpoint=True)
    assert result.modified
    assert_equivalent(g, result.graph)
