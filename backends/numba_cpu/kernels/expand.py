"""An inverted-residual block's expansion and depthwise convolution in one pass (MobileNetV2:
1x1 expand → 3×3 depthwise), band by band of the depthwise output's rows.

Unfused, the expansion writes its whole tensor (six times the block's input) and the
depthwise reads it back: at batch 8 on 112×112 planes that is 38 MB each way, from memory.
Here each band of output rows has the expanded rows it reads computed into its thread's
buffer (``gemm_block``, the 1x1's epilogue fused), sized to stay in L2, and the depthwise
stencil reads them there (``stencil.depthwise3x3_plane_rows``). The rows on a band's edges
(one at stride 2, two at stride 1) are computed by both bands that read them.
"""

from __future__ import annotations

import numba

from cnnir.backends.numba_cpu.kernels.gemm import L1_CHUNK_BYTES, NO_OFFSET, gemm_block
from cnnir.backends.numba_cpu.kernels.jit import kernel, run_jobs, tile_kernel
from cnnir.backends.numba_cpu.kernels.stencil import depthwise3x3_plane_rows


@kernel
def expand_depthwise(packed, x, w, out, bands, stride, ep_expand, ep_depthwise, buffers):
    """``out = depthwise(expand(x))`` with ``packed`` the expansion's weights
    (``simd.pack_rows``) and ``w`` the depthwise's [C, 1, 3, 3], per band (n, y0, y1) of
    output rows in the thread's row of ``buffers`` (channels × a band's input rows)."""
    run_jobs(expand_depthwise_band, bands.shape[0],
             (packed, x, w, out, bands, stride, ep_expand, ep_depthwise, buffers))


@tile_kernel
def expand_depthwise_band(t, args):
    """``expand_depthwise``'s band t (n, y0, y1): the expanded rows it reads into the buffer
    of the thread running it (channel c's at c·plane), then each channel's output rows from
    them."""
    packed, x, w, out, bands, stride, ep_expand, ep_depthwise, buffers = args
    buffer = buffers[numba.get_thread_id()]
    n, y0, y1 = bands[t, 0], bands[t, 1], bands[t, 2]
    channels_in, height, width = x.shape[1], x.shape[2], x.shape[3]
    channels, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    r0, r1 = max(0, y0 * stride - 1), min(height, (y1 - 1) * stride + 2)
    plane = buffer.shape[0] // channels
    rows_at = (n * channels_in * height + r0) * width
    gemm_block((packed, NO_OFFSET), (x.reshape(-1), rows_at, height * width),
               (buffer, NO_OFFSET, plane), channels, (r1 - r0) * width, channels_in, NO_OFFSET,
               ep_expand, L1_CHUNK_BYTES)
    outf = out.reshape(-1)
    for c in range(channels):
        depthwise3x3_plane_rows(buffer, (c * plane, r0, height, width), w, c, outf,
                                ((n * channels + c) * oh * ow, ow), y0, y1, stride,
                                ep_depthwise)
