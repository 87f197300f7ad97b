"""Convolution data movement (NCHW): im2col of a band of output rows (the B operand of the
dense GEMMs), col2im for transposed convolutions and the bilinear-sampling im2col of
deformable ones. Depthwise convolutions are stencils (``stencil``). The backward kernels:
a depthwise convolution's weight gradient, a transposed convolution with one output channel
per group (a depthwise convolution's input gradient), and torchvision's deformable col2im
(input) and col2im_coord (offset, mask).

A convolution's geometry travels as one tuple, ``window = (kh, kw, sh, sw, pad_top,
pad_left, dh, dw)`` (``lower_conv.window_of``). Inner loops index flat arrays with unsigned
integers: a numpy slice per output row costs tens of cycles in Numba, more than a short row
itself, and signed indices keep a wraparound check in the loop that blocks vectorization.
"""

from __future__ import annotations

import math

import numpy as np

from cnnir.backends.numba_cpu.kernels.jit import helper, kernel, prange, tile_kernel


@helper
def valid_range(out_len, stride, offset, in_len):
    """Output indices ``o`` with ``0 <= o·stride + offset < in_len``, as [lo, hi)."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    hi = 0
    if in_len - 1 - offset >= 0:
        hi = (in_len - 1 - offset) // stride + 1
    return min(lo, out_len), max(min(hi, out_len), min(lo, out_len))


@helper
def zero_flat(a, d, count):
    at = np.uint64(d)
    for i in range(count):
        a[at + np.uint64(i)] = 0.0


@tile_kernel
def im2col_rows(x, cols, n, c0, cg, window, y0, y1, ow):
    """Columns of output rows [y0, y1) of image n:
    ``cols[(c, i, j), (y − y0)·ow + x] = xpad[n, c0 + c, y·sh + i·dh, x·sw + j·dw]``."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    taps = kh * kw
    xf = x.reshape(-1)
    stride = cols.shape[1]
    cf = cols.reshape(-1)
    for r in range(cg * taps):
        c = r // taps
        i = (r % taps) // kw
        j = r % kw
        base = j * dw - pad_left
        lo, hi = valid_range(ow, sw, base, width)
        plane = ((n * channels + c0 + c) * height) * width
        for y in range(y0, y1):
            d = np.uint64(r * stride + (y - y0) * ow)
            iy = y * sh - pad_top + i * dh
            if iy < 0 or iy >= height:
                zero_flat(cf, d, ow)
                continue
            zero_flat(cf, d, lo)
            zero_flat(cf, d + np.uint64(hi), ow - hi)
            src = np.uint64(plane + iy * width + base + lo * sw)
            dst = d + np.uint64(lo)
            if sw == 1:
                for xx in range(hi - lo):
                    u = np.uint64(xx)
                    cf[dst + u] = xf[src + u]
            elif sw == 2:  # a literal stride: LLVM vectorizes it with shuffles
                for xx in range(hi - lo):
                    u = np.uint64(xx)
                    cf[dst + u] = xf[src + u * np.uint64(2)]
            else:
                step = np.uint64(sw)
                for xx in range(hi - lo):
                    u = np.uint64(xx)
                    cf[dst + u] = xf[src + u * step]


@kernel
def col2im(cols, out, n, co0, cog, window, height, width):
    """Scatter-add ``cols[(co, i, j), (h, w)]`` into ``out[n, co0 + co]`` at
    ``(h·sh + i·dh − pad_top, w·sw + j·dw − pad_left)`` (transposed convolution; ``out``
    pre-filled)."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
    oh, ow = out.shape[2], out.shape[3]
    taps = kh * kw
    for co in prange(cog):
        plane = out[n, co0 + co]
        for i in range(kh):
            for j in range(kw):
                src = cols[co * taps + i * kw + j]
                base_x = j * dw - pad_left
                for h in range(height):
                    y = h * sh + i * dh - pad_top
                    if y < 0 or y >= oh:
                        continue
                    dst = plane[y]
                    for w_ in range(width):
                        xo = w_ * sw + base_x
                        if 0 <= xo < ow:
                            dst[xo] += src[h * width + w_]


@kernel
def col2im_planes(cols, out, n0, count, bias, window, height, width):
    """``out[n0 + n, co] = bias[co] + Σ_{i, j}`` of ``cols[n, co·kh·kw + i·kw + j, (h, w)]``
    scattered to ``(h·sh + i·dh − pad_top, w·sw + j·dw − pad_left)`` for the ``count``
    images of a chunk (a transposed convolution's columns, ``cols`` [count, O·kh·kw, H·W]);
    parallel over the chunk's (image, channel) planes, each written by one thread."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
    out_ch, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    taps = kh * kw
    pixels = height * width
    cf = cols.reshape(-1)
    of = out.reshape(-1)
    step = np.uint64(sw)
    for t in prange(count * out_ch):
        n = t // out_ch
        co = t % out_ch
        plane = ((n0 + n) * out_ch + co) * oh * ow
        value = bias[co]
        for q in range(oh * ow):
            of[plane + q] = value
        for i in range(kh):
            hlo, hhi = valid_range(height, sh, i * dh - pad_top, oh)
            for j in range(kw):
                base = j * dw - pad_left
                lo, hi = valid_range(width, sw, base, ow)
                src_row = ((n * out_ch + co) * taps + i * kw + j) * pixels
                for h in range(hlo, hhi):
                    dst = np.uint64(plane + (h * sh + i * dh - pad_top) * ow + base + lo * sw)
                    src = np.uint64(src_row + h * width + lo)
                    for xx in range(hi - lo):
                        u = np.uint64(xx)
                        of[dst + u * step] += cf[src + u]


@helper
def bilinear_zero_padded(plane, y, x):
    """Bilinear sample of an image that is zero outside its bounds (torchvision's rule)."""
    height, width = plane.shape
    if y <= -1.0 or y >= height or x <= -1.0 or x >= width:
        return 0.0
    y0 = math.floor(y)
    x0 = math.floor(x)
    ly = y - y0
    lx = x - x0
    y0i = int(y0)
    x0i = int(x0)
    v = 0.0
    if y0i >= 0 and x0i >= 0:
        v += (1 - ly) * (1 - lx) * plane[y0i, x0i]
    if y0i >= 0 and x0i + 1 < width:
        v += (1 - ly) * lx * plane[y0i, x0i + 1]
    if y0i + 1 < height and x0i >= 0:
        v += ly * (1 - lx) * plane[y0i + 1, x0i]
    if y0i + 1 < height and x0i + 1 < width:
        v += ly * lx * plane[y0i + 1, x0i + 1]
    return v


@kernel
def deform_im2col(x, offset, mask, has_mask, cols, n, window, offset_groups):
    """``cols[(c, i, j), (y, x)] = mask · bilinear(x[n, c], y·sh − pad_top + i·dh + Δy, ...)``."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
    channels = x.shape[1]
    oh, ow = offset.shape[2], offset.shape[3]
    taps = kh * kw
    per_group = channels // offset_groups
    for r in prange(channels * taps):
        c = r // taps
        k = r % taps
        i = k // kw
        j = k % kw
        g = c // per_group
        plane = x[n, c]
        for y in range(oh):
            for xo in range(ow):
                py = y * sh - pad_top + i * dh + offset[n, 2 * (g * taps + k), y, xo]
                px = xo * sw - pad_left + j * dw + offset[n, 2 * (g * taps + k) + 1, y, xo]
                v = bilinear_zero_padded(plane, py, px)
                if has_mask:
                    v *= mask[n, g * taps + k, y, xo]
                cols[r, y * ow + xo] = v


@kernel
def transpose_one_per_group(x, w, out, window):
    """A transposed convolution with one output channel per group (W ``[C_in, 1, kh, kw]``;
    a depthwise convolution's input gradient): ``out[n, g]`` (pre-filled) gets every input
    pixel of the group's channels times its taps at ``(h·sh + i·dh − pad_top,
    w·sw + j·dw − pad_left)``; parallel over (image, group), each writing its own plane."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
    n_img, c_in, height, width = x.shape
    groups, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    cg = c_in // groups
    for t in prange(n_img * groups):
        n = t // groups
        g = t % groups
        plane = out[n, g]
        for q in range(cg):
            ci = g * cg + q
            src = x[n, ci]
            for i in range(kh):
                for j in range(kw):
                    wv = w[ci, 0, i, j]
                    base_x = j * dw - pad_left
                    lo, hi = valid_range(width, sw, base_x, ow)
                    for h in range(height):
                        y = h * sh + i * dh - pad_top
                        if y < 0 or y >= oh:
                            continue
                        dst = plane[y]
                        row = src[h]
                        for c in range(lo, hi):
                            dst[c * sw + base_x] += wv * row[c]


# -- backward ------------------------------------------------------------------------------


@kernel
def depthwise_weight_grad(x, gy, out, mult, window, zero):
    """``gW[o, 0, i, j] = Σ_{n, y, x} gy[n, o, y, x]·xpad[n, o // mult, y·sh + i·dh,
    x·sw + j·dw]`` (a depthwise convolution's weight gradient), parallel over output
    channels: per tap, the dot products of each gradient row with its input row (only the
    rows and columns inside the image), summed in the compute dtype (``zero``: vectorized),
    the row sums in float64."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
    n_img, channels, height, width = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    out_ch, oh, ow = gy.shape[1], gy.shape[2], gy.shape[3]
    xf = x.reshape(-1)
    gf = gy.reshape(-1)
    for o in prange(out_ch):
        c = o // mult
        for i in range(kh):
            ylo, yhi = valid_range(oh, sh, i * dh - pad_top, height)
            for j in range(kw):
                base = j * dw - pad_left
                lo, hi = valid_range(ow, sw, base, width)
                total = 0.0
                for n in range(n_img):
                    g_plane = (n * out_ch + o) * oh * ow
                    x_plane = (n * channels + c) * height * width
                    for y in range(ylo, yhi):
                        g0 = np.uint64(g_plane + y * ow + lo)
                        x0 = np.uint64(x_plane + (y * sh - pad_top + i * dh) * width + base
                                       + lo * sw)
                        acc = zero
                        if sw == 1:
                            for xx in range(hi - lo):
                                u = np.uint64(xx)
                                acc += gf[g0 + u] * xf[x0 + u]
                        else:
                            step = np.uint64(sw)
                            for xx in range(hi - lo):
                                u = np.uint64(xx)
                                acc += gf[g0 + u] * xf[x0 + u * step]
                        total += acc
                out[o, 0, i, j] = total


@kernel
def deform_col2im_input(gcol, offset, mask, has_mask, gx, n, window, offset_groups):
    """The input gradient of deform_conv2d for image n (torchvision's col2im): each
    ``mask·gcol[(c, i, j), (y, x)]`` scattered onto the corners inside the image of its sample
    point with the bilinear weights; parallel over channels, each writing its own plane."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
    channels, height, width = gx.shape[1], gx.shape[2], gx.shape[3]
    oh, ow = offset.shape[2], offset.shape[3]
    taps = kh * kw
    per_group = channels // offset_groups
    for c in prange(channels):
        plane = gx[n, c]
        plane[:, :] = 0.0
        g = c // per_group
        for k in range(taps):
            i = k // kw
            j = k % kw
            t = g * taps + k
            src = gcol[c * taps + k]
            for y in range(oh):
                for xo in range(ow):
                    v = src[y * ow + xo]
                    if has_mask:
                        v *= mask[n, t, y, xo]
                    py = y * sh - pad_top + i * dh + offset[n, 2 * t, y, xo]
                    px = xo * sw - pad_left + j * dw + offset[n, 2 * t + 1, y, xo]
                    if py <= -1.0 or py >= height or px <= -1.0 or px >= width:
                        continue
                    y0 = math.floor(py)
                    x0 = math.floor(px)
                    ly = py - y0
                    lx = px - x0
                    y0i = int(y0)
                    x0i = int(x0)
                    if y0i >= 0 and x0i >= 0:
                        plane[y0i, x0i] += (1 - ly) * (1 - lx) * v
                    if y0i >= 0 and x0i + 1 < width:
                        plane[y0i, x0i + 1] += (1 - ly) * lx * v
                    if y0i + 1 < height and x0i >= 0:
                        plane[y0i + 1, x0i] += ly * (1 - lx) * v
                    if y0i + 1 < height and x0i + 1 < width:
                        plane[y0i + 1, x0i + 1] += ly * lx * v


@helper
def pixel_or_zero(plane, y, x):
    if 0 <= y < plane.shape[0] and 0 <= x < plane.shape[1]:
        return plane[y, x]
    return 0.0


@kernel(allocates=True)
def deform_col2im_coord(gcol, x, offset, mask, has_mask, goff, gmask, n, window,
                        offset_groups):
    """The offset and mask gradients of deform_conv2d for image n (torchvision's
    col2im_coord): per tap and output pixel, sums over the channels of its offset group of
    ``gcol·∂sample/∂(Δy, Δx)`` (times the mask; the corner differences use 0 outside the
    image and no test that the sample is inside, so y = −1 exactly gives a gradient) and of
    ``gcol·sample`` for the mask. Parallel over (offset group, tap, output row); a row's
    sample points are found once, then each channel's gcol row is read in order."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    oh, ow = offset.shape[2], offset.shape[3]
    taps = kh * kw
    per_group = channels // offset_groups
    for r in prange(offset_groups * taps * oh):
        t = r // oh
        y = r % oh
        g = t // taps
        k = t % taps
        i = k // kw
        j = k % kw
        y0s = np.empty(ow, np.int64)
        x0s = np.empty(ow, np.int64)
        lys = np.empty(ow)
        lxs = np.empty(ow)
        inside = np.empty(ow, np.bool_)
        for xo in range(ow):
            py = y * sh - pad_top + i * dh + offset[n, 2 * t, y, xo]
            px = xo * sw - pad_left + j * dw + offset[n, 2 * t + 1, y, xo]
            inside[xo] = not (py <= -1.0 or py >= height or px <= -1.0 or px >= width)
            y0 = math.floor(py)
            x0 = math.floor(px)
            lys[xo] = py - y0
            lxs[xo] = px - x0
            y0s[xo] = int(y0)
            x0s[xo] = int(x0)
        grad_y = np.zeros(ow)
        grad_x = np.zeros(ow)
        grad_m = np.zeros(ow)
        for q in range(per_group):
            c = g * per_group + q
            plane = x[n, c]
            src = gcol[c * taps + k]
            for xo in range(ow):
                gc = src[y * ow + xo]
                y0i, x0i, ly, lx = y0s[xo], x0s[xo], lys[xo], lxs[xo]
                v00 = pixel_or_zero(plane, y0i, x0i)
                v01 = pixel_or_zero(plane, y0i, x0i + 1)
                v10 = pixel_or_zero(plane, y0i + 1, x0i)
                v11 = pixel_or_zero(plane, y0i + 1, x0i + 1)
                grad_y[xo] += gc * (lx * (v11 - v01) + (1 - lx) * (v10 - v00))
                grad_x[xo] += gc * (ly * (v11 - v10) + (1 - ly) * (v01 - v00))
                if has_mask and inside[xo]:
                    grad_m[xo] += gc * ((1 - ly) * ((1 - lx) * v00 + lx * v01)
                                        + ly * ((1 - lx) * v10 + lx * v11))
        for xo in range(ow):
            m = mask[n, t, y, xo] if has_mask else 1.0
            goff[n, 2 * t, y, xo] = m * grad_y[xo]
            goff[n, 2 * t + 1, y, xo] = m * grad_x[xo]
            if has_mask:
                gmask[n, t, y, xo] = grad_m[xo]
