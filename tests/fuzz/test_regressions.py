"""Every mismatch the differential fuzzer (``test_differential.py``, ``benchmarks/fuzz.py``)
found, shrunk, as a fixed case: each runs on the reference, Numba, onnxruntime and the
re-imported export (``graphs.check``)."""

from __future__ import annotations

import pytest
from graphs import Layer, Spec, check

CASES = {
    # ONNX's ceil mode (shape inference, unlike ORT) keeps a last window that starts in the
    # right padding; torch drops it (§1.7). The export declared torch's shape and failed its
    # own validation. H gains a cell in ceil mode, W does not (its last window is dropped):
    # one ceil_mode attribute cannot say both.
    "max-pool-ceil-mixed-axes": Spec((1, 1, 5, 11), [
        Layer("max_pool2d", (0,), dict(kernel_size=(3, 4), stride=None, padding=(0, 1),
                                       ceil_mode=True, dilation=(1, 1)))]),
    "avg-pool-ceil-mixed-axes": Spec((2, 3, 5, 11), [
        Layer("avg_pool2d", (0,), dict(kernel_size=(3, 4), stride=None, padding=(0, 1),
                                       ceil_mode=True, count_include_pad=True))]),
    "avg-pool-ceil-mixed-axes-exclude-pad": Spec((2, 3, 5, 11), [
        Layer("avg_pool2d", (0,), dict(kernel_size=(3, 4), stride=None, padding=(0, 1),
                                       ceil_mode=True, count_include_pad=False))]),
    # The first fix exported mixed axes as ceil_mode=1 and a Slice cropping the dropped
    # cell: ORT's memory planner trusts ONNX's (larger) inferred pool shape and fails on a
    # later Pad or Concat that reuses the buffer. Now: floor mode, the gaining axis padded.
    "max-pool-ceil-mixed-axes-then-pad": Spec((1, 1, 2, 1), [
        Layer("conv2d", (0,), dict(out_channels=1, kernel_size=(1, 1), stride=(1, 1),
                                   padding=1, dilation=(1, 1), groups=1, bias=True)),
        Layer("max_pool2d", (1,), dict(kernel_size=(3, 2), stride=None, padding=(0, 1),
                                       ceil_mode=True, dilation=(1, 1))),
        Layer("pad", (2,), dict(pads=(0, 1), value=0.0))], symbolic_batch=True),
    "max-pool-ceil-mixed-axes-then-cat": Spec((1, 1, 4, 1), [
        Layer("max_pool2d", (0,), dict(kernel_size=(3, 4), stride=None, padding=(0, 2),
                                       ceil_mode=True, dilation=(1, 1))),
        Layer("cat", (1, 1), dict(dim=3))], symbolic_batch=True),
    "avg-pool-ceil-mixed-axes-then-cat": Spec((1, 2, 4, 1), [
        Layer("avg_pool2d", (0,), dict(kernel_size=(3, 4), stride=None, padding=(0, 2),
                                       ceil_mode=True, count_include_pad=True)),
        Layer("cat", (1, 1), dict(dim=3))], symbolic_batch=True),
    # ... which exports as AveragePool(count_include_pad=0) with asymmetric pads: the
    # importer wanted the whole input static for those, not just H and W (symbolic batch)
    "avg-pool-ceil-exclude-pad-symbolic-batch-reimports": Spec((1, 1, 2, 3), [
        Layer("avg_pool2d", (0,), dict(kernel_size=(1, 2), stride=(2, 2), padding=(0, 0),
                                       ceil_mode=True, count_include_pad=False))],
        symbolic_batch=True),
    # ... and with dilation the extra end padding reached the kernel size, which ORT refuses
    # ("Pad should be smaller than kernel"): exported as a -inf Pad before the pool
    "max-pool-ceil-mixed-axes-dilated": Spec((1, 1, 2, 1), [
        Layer("max_pool2d", (0,), dict(kernel_size=(2, 4), stride=None, padding=(1, 2),
                                       ceil_mode=True, dilation=(2, 1)))], symbolic_batch=True),
    # a ceil-mode window count from a negative span (dilated kernel longer than the padded
    # input): ATen's floor division gives one cell; the generator's formula had said none
    "max-pool-ceil-dilated-kernel-longer-than-input": Spec((2, 3, 2, 1), [
        Layer("max_pool2d", (0,), dict(kernel_size=(2, 4), stride=None, padding=(1, 2),
                                       ceil_mode=True, dilation=(2, 2)))]),
    "avg-pool-ceil-mixed-axes-divisor-override": Spec((2, 3, 5, 11), [
        Layer("avg_pool2d", (0,), dict(kernel_size=(3, 4), stride=None, padding=(0, 1),
                                       ceil_mode=True, count_include_pad=True,
                                       divisor_override=5))]),
    # ceil mode that adds no cell on either axis (the last window dropped on both)
    "max-pool-ceil-dropped-window-dilated": Spec((1, 1, 2, 3), [
        Layer("max_pool2d", (0,), dict(kernel_size=(2, 1), stride=(2, 3), padding=(1, 0),
                                       ceil_mode=True, dilation=(1, 2)))]),
    "avg-pool-ceil-dropped-window-1-row": Spec((3, 6, 1, 12), [
        Layer("avg_pool2d", (0,), dict(kernel_size=(2, 3), stride=None, padding=(1, 0),
                                       ceil_mode=True, count_include_pad=True))],
        symbolic_batch=True),
    # A max pool window that lies entirely in the padding gives -inf (as in PyTorch). The
    # Numba interpolate blended nearest neighbours with weight 0 too: 0·(-inf) = NaN.
    "nearest-interpolate-keeps-infinity": Spec((1, 2, 1, 1), [
        Layer("max_pool2d", (0,), dict(kernel_size=(2, 1), stride=None, padding=(1, 0),
                                       ceil_mode=True, dilation=(2, 1))),
        Layer("interpolate", (1,), dict(mode="nearest", size=(2, 3)))], symbolic_batch=True),
    "nearest-exact-interpolate-keeps-infinity": Spec((2, 1, 3, 1), [
        Layer("max_pool2d", (0,), dict(kernel_size=(1, 2), stride=(1, 1), padding=(0, 1),
                                       ceil_mode=False, dilation=(1, 2))),
        Layer("interpolate", (1,), dict(mode="nearest-exact", scale_factor=1.5))]),
    # ORT's Resize by sizes computes the scale out/in in float32 and lands just below an
    # exact rounding boundary: 14 -> 2 columns took pixel 6 for torch's 7, 60 -> 1 with
    # nearest-exact pixel 29 for 30. Exported as two Gathers with torch's indices there.
    "nearest-resize-by-size-on-a-rounding-boundary": Spec((1, 2, 3, 14), [
        Layer("interpolate", (0,), dict(mode="nearest", size=(2, 2)))], symbolic_batch=True),
    "nearest-exact-resize-by-size-on-a-rounding-boundary": Spec((1, 1, 3, 7), [
        Layer("reshape", (0,), dict(shape=(1, 1, 1, 21))),
        Layer("interpolate", (1,), dict(mode="nearest", scale_factor=3.0,
                                        recompute_scale_factor=True)),
        Layer("conv2d", (2,), dict(out_channels=1, kernel_size=(4, 4), stride=(1, 1),
                                   padding=(0, 0, 1, 0), dilation=(1, 1), groups=1,
                                   bias=True)),
        Layer("interpolate", (3,), dict(mode="nearest-exact", size=(1, 1)))]),
    # Not a cnnir bug: onnxruntime 1.32's graph optimizer (its transpose optimizer, it seems)
    # breaks a Resize with ``axes`` fed by a Transpose ("indices element out of data bounds",
    # "Number of elements of input 'sizes' (0)"); unoptimized, ORT agrees. check() records
    # it as ``ort_optimizer_error`` and compares the unoptimized run.
    "ort-optimizer-transpose-then-resize-scales": Spec((1, 2, 1, 2), [
        Layer("transpose", (0,), dict(perm=(0, 2, 3, 1))),
        Layer("interpolate", (1,), dict(mode="nearest", scale_factor=0.5))]),
    "ort-optimizer-transpose-then-resize-sizes": Spec((1, 1, 1, 2), [
        Layer("transpose", (0,), dict(perm=(0, 2, 3, 1))),
        Layer("interpolate", (1,), dict(mode="nearest", size=(1, 1)))]),
    # Not a bug: x·BN(x) with a running variance of 1.5e-3 (gain 33, folded shift −68)
    # misses the float32 tolerance by rounding alone (1.5× it; the float32 reference 0.4×,
    # Numba in float64 3.5e-15). check() now allows 8× the float32 reference's own error.
    "ill-conditioned-batch-norm-product": Spec((2, 1, 4, 7), [
        Layer("batch_norm", (0,), dict(affine=True)), Layer("mul", (0, 1)),
        Layer("activation", (2,), dict(kind="relu", param=None)),
        Layer("activation", (3,), dict(kind="tanh", param=None))], seed=3,
        symbolic_batch=True),
}


@pytest.mark.parametrize("spec", CASES.values(), ids=CASES.keys())
def test_regression(spec: Spec) -> None:
    check(spec)
