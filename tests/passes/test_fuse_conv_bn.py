"""fuse-conv-bn: float64 equivalence on every example model and on each layer kind, guards,
shared weights, and a check that the tests would catch the classic dropped-eps bug."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import (
    as_float64,
    assert_equivalent,
    bn_params,
    build,
    constant,
    conv_bn_graph,
    example,
    randomize_bn,
)

import cnnir
from cnnir import ops
from cnnir.ir import Graph, TensorType
from cnnir.ops.conv import Conv2dAttrs, ConvTranspose2dAttrs
from cnnir.ops.norm import BatchNormAttrs
from cnnir.passes import fuse_conv_bn as module
from cnnir.passes.manager import run_pipeline

FOLDABLE = {ops.conv2d, ops.conv_transpose2d, ops.deform_conv2d, ops.linear}

# (file, builder, input shape): small inputs keep the float64 reference runs fast.
WITH_BN = [
    ("attention.py", "se_resnet18", (1, 3, 32, 32)),
    ("attention.py", "cbam_resnet18", (1, 3, 32, 32)),
    ("cifar.py", "small_cifar", (1, 3, 32, 32)),
    ("deformable.py", "deformable_net", (1, 3, 32, 32)),
    ("densenet.py", "densenet121", (1, 3, 32, 32)),
    ("inception.py", "googlenet", (1, 3, 32, 32)),
    ("mnasnet.py", "mnasnet1_0", (1, 3, 32, 32)),
    ("mobilenet.py", "mobilenet_v1", (1, 3, 32, 32)),
    ("mobilenet.py", "mobilenet_v2", (1, 3, 32, 32)),
    ("mobilenet.py", "mobilenet_v3_large", (1, 3, 32, 32)),
    ("mobilenet.py", "mobilenet_v3_small", (1, 3, 32, 32)),
    ("resnet.py", "resnet18", (1, 3, 64, 64)),
    ("resnet.py", "resnet34", (1, 3, 32, 32)),
    ("resnet.py", "resnet50", (1, 3, 32, 32)),
    ("resnet.py", "resnext50_32x4d", (1, 3, 32, 32)),
    ("shufflenet.py", "shufflenet_v2_x1_0", (1, 3, 32, 32)),
    ("unet.py", "unet", (1, 3, 32, 32)),
]
SLOW_WITH_BN = [
    ("inception.py", "inception_v3", (1, 3, 75, 75)),
    ("resnet.py", "resnet101", (1, 3, 32, 32)),
    ("resnet.py", "resnet152", (1, 3, 32, 32)),
    ("resnet.py", "wide_resnet50_2", (1, 3, 32, 32)),
]
WITHOUT_BN = [
    ("alexnet.py", "alexnet"), ("attention.py", "cbam_block"), ("siamese.py", "siamese"),
    ("siamese.py", "triplet"), ("siamese.py", "embedding_net"),
    ("squeezenet.py", "squeezenet1_0"), ("squeezenet.py", "squeezenet1_1"),
    ("vgg.py", "vgg11"), ("vgg.py", "vgg16"),
]


def bn_after_layer(graph: Graph) -> list[str]:
    return [n.name for n in graph.nodes if n.op is ops.batch_norm
            and n.inputs[0].producer is not None and n.inputs[0].producer.op in FOLDABLE]


def check_folds_everything(graph: Graph) -> None:
    g = randomize_bn(as_float64(graph))
    assert bn_after_layer(g), "the model should have BatchNorm after a layer"
    result = run_pipeline(g, ["fuse-conv-bn"])
    assert bn_after_layer(result.graph) == []
    assert len(result.report["passes"][0]["folded"]) == len(bn_after_layer(g))
    assert_equivalent(g, result.graph)


@pytest.mark.parametrize(("path", "builder", "shape"), WITH_BN, ids=[m[1] for m in WITH_BN])
def test_example_models_fold_every_bn_exactly(path, builder, shape):
    check_folds_everything(build(path, builder, shape))


@pytest.mark.slow
@pytest.mark.parametrize(("path", "builder", "shape"), SLOW_WITH_BN,
                         ids=[m[1] for m in SLOW_WITH_BN])
def test_large_example_models_fold_every_bn_exactly(path, builder, shape):
    check_folds_everything(build(path, builder, shape))


def test_vgg16_bn_features_fold_exactly():
    """VGG16-BN's 13 BNs are all in ``features``; its 120M-parameter classifier has none, so
    the float64 runs use the feature extractor alone."""
    model = example("vgg.py")["vgg16_bn"]().eval()
    check_folds_everything(cnnir.trace(model.features, (1, 3, 32, 32), name="vgg16_bn"))


@pytest.mark.parametrize(("path", "builder"), WITHOUT_BN, ids=[m[1] for m in WITHOUT_BN])
def test_models_without_bn_are_left_unchanged(path, builder):
    fn = example(path)[builder]
    shape = getattr(fn, "input_shape", example(path)["input_shape"])
    g = build(path, builder, shape)
    result = run_pipeline(g, ["fuse-conv-bn"])
    assert not result.modified and str(result.graph) == str(g)


def test_resnet18_parameter_count_after_folding():
    """ResNet-18 (§6.1): its 20 BNs hold 9,600 parameters; folding them gives the 20
    bias-free convs a bias (4,800 values) and leaves the 20 batch counters."""
    g = build("resnet.py", "resnet18", (1, 3, 224, 224))
    totals = cnnir.analyze(run_pipeline(g, ["fuse-conv-bn"]).graph).totals
    assert totals.params == 11_689_512 - 9_600 + 4_800
    assert totals.buffers == 20


def layer_bn_graph(op, attrs, x_shape, w_shape, *, bias=True, affine=True, seed=0) -> Graph:
    """x -> layer -> batch_norm -> tanh, everything float64."""
    rng = np.random.default_rng(seed)
    g = Graph("layer_bn")
    x = g.add_input("x", TensorType(x_shape, "float64"))
    w = constant(g, "layer.weight", rng.normal(0, 0.4, w_shape))
    out_ch = w_shape[1] * attrs.groups if op is ops.conv_transpose2d else w_shape[0]
    b = constant(g, "layer.bias", rng.normal(0, 0.1, out_ch)) if bias else None
    layer = g.add_node(op, [x, w, b], attrs, name="layer")
    bn = g.add_node(ops.batch_norm, [layer.output, *bn_params(g, "bn", out_ch, rng, affine)],
                    name="bn")
    g.set_outputs([g.add_node(ops.tanh, [bn.output], name="act").output])
    return g


LAYERS = {
    "conv": (ops.conv2d, Conv2dAttrs(padding=1), (2, 4, 7, 7), (6, 4, 3, 3)),
    "grouped-strided": (ops.conv2d, Conv2dAttrs(stride=2, groups=2), (2, 4, 7, 7),
                        (6, 2, 3, 3)),
    "depthwise-dilated": (ops.conv2d, Conv2dAttrs(padding=2, dilation=2, groups=4),
                          (1, 4, 7, 7), (8, 1, 3, 3)),
    "transposed-grouped": (ops.conv_transpose2d,
                           ConvTranspose2dAttrs(stride=2, padding=(1, 1, 1, 1),
                                                output_padding=1, groups=2),
                           (1, 4, 5, 5), (4, 3, 3, 3)),
    "linear-bn1d": (ops.linear, None, (5, 7), (6, 7)),
}


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_each_layer_kind_folds_exactly(kind, bias, affine):
    op, attrs, x_shape, w_shape = LAYERS[kind]
    g = layer_bn_graph(op, attrs or op.attrs(), x_shape, w_shape, bias=bias, affine=affine)
    result = run_pipeline(g, ["fuse-conv-bn"])
    assert [n.op for n in result.graph.nodes] == [op, ops.tanh]
    assert_equivalent(g, result.graph)
    assert not {"bn.running_mean", "bn.running_var", "bn.weight"} & set(result.graph.constants)


def test_bn_1d_on_a_sequence_does_not_fold_into_linear():
    """BatchNorm1d on [N, C, L] normalizes dim 1, but linear's features are the last dim."""
    rng = np.random.default_rng(0)
    g = Graph("seq")
    x = g.add_input("x", TensorType((2, 4, 5), "float64"))
    lin = g.add_node(ops.linear, [x, constant(g, "w", rng.normal(size=(4, 5))), None], name="l")
    bn = g.add_node(ops.batch_norm, [lin.output, *bn_params(g, "bn", 4, rng)], name="bn")
    g.set_outputs([bn.output])
    assert not run_pipeline(g, ["fuse-conv-bn"]).modified


def _guarded(change) -> Graph:
    g = conv_bn_graph()
    change(g, g.nodes[0], g.nodes[1])
    return g


def _training(g, conv, bn):
    bn.attrs = BatchNormAttrs(training=True)


def _second_user(g, conv, bn):
    g.set_outputs([*g.outputs, g.add_node(ops.sigmoid, [conv.output], name="peek").output])


def _conv_is_output(g, conv, bn):
    g.set_outputs([*g.outputs, conv.output])


def _no_running_stats(g, conv, bn):
    bn.inputs[1].users.remove(bn)
    bn.inputs[2].users.remove(bn)
    bn.inputs[1:3] = [None, None]


def _weight_is_an_input(g, conv, bn):
    w = g.add_input("w", conv.inputs[1].type)
    conv.inputs[1].users.remove(conv)
    conv.inputs[1] = w
    w.users.append(conv)


@pytest.mark.parametrize("change", [_training, _second_user, _conv_is_output, _no_running_stats,
                                    _weight_is_an_input])
def test_guards_leave_the_pair_alone(change):
    g = _guarded(change)
    cnnir.verify(g)
    result = run_pipeline(g, ["fuse-conv-bn"])
    assert not result.modified and str(result.graph) == str(g)


def test_a_shared_weight_stays_while_another_layer_uses_it():
    g = conv_bn_graph()
    conv = g.nodes[0]
    other = g.add_node(ops.conv2d, [g.inputs[0], conv.inputs[1], None], conv.attrs, name="twin")
    g.set_outputs([*g.outputs, other.output])
    result = run_pipeline(g, ["fuse-conv-bn"])
    out = result.graph
    assert "conv.weight" in out.constants and out.constants["conv.weight"].users[0].name == "twin"
    folded = next(n for n in out.nodes if n.name == "conv")
    assert folded.inputs[1].name != "conv.weight"
    assert_equivalent(g, out)


def test_folded_weights_are_made_only_when_read():
    g = build("resnet.py", "resnet18", (1, 3, 32, 32))
    folded = run_pipeline(g, ["fuse-conv-bn"]).graph
    assert all(v.const._array is None for v in g.constants.values())
    weight = folded.constants["conv1.weight"]
    assert weight.const._array is None and weight.const.array.dtype == np.float32


def test_the_checks_catch_a_fold_that_drops_eps(monkeypatch):
    """§8's classic bug: with running variances down to 1e-6, leaving eps out of
    ``a = γ/√(rv + eps)`` is far outside rtol 1e-10."""
    def without_eps(stats, eps):
        return original(stats, 0.0)

    original = module.bn_scale_shift
    g = conv_bn_graph()
    monkeypatch.setattr(module, "bn_scale_shift", without_eps)
    with pytest.raises(AssertionError):
        assert_equivalent(g, run_pipeline(g, ["fuse-conv-bn"]).graph)
