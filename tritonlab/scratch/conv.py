"""Conv2d (cross-correlation, as torch.nn.Conv2d computes it) from scratch, two tiers.

Shapes, in the letters used throughout this file:

    x       (N, C, H, W)         batch, input channels, height, width
    weight  (O, C/G, kh, kw)     output channels; each sees only its group's C/G inputs
    bias    (O,) or None
    out     (N, O, P, Q)         P = (H + top + bottom - (dh (kh - 1) + 1)) // sh + 1, same for Q

`stride` (sh, sw) and `dilation` (dh, dw) are pairs of ints; `padding` is explicit,
((top, bottom), (left, right)), so asymmetric 'same' padding needs no special case here
(the layer turns 'same'/'valid'/int/tuple into this form). Output position (p, q) sees the
kh x kw input pixels at rows p*sh + i*dh and columns q*sw + j*dw of the zero-padded input,
and with G groups, output channel o only sees input channels of group o // (O/G):

    out[n, o, p, q] = bias[o] + sum over c in group, i, j of
                      xpad[n, c, p*sh + i*dh, q*sw + j*dw] * weight[o, c - group start, i, j]

- naive: the formula above as loops, one Python iteration per output position and group,
  each a (N, K) @ (K, O/G) product of the flattened patch and the flattened filters.
- reference: im2col. Copy every patch into a column of one matrix, then all output
  positions are a single matrix product with the flattened filters.
"""
from __future__ import annotations


import torch

from ._autograd import first_order, first_order_only, own

Pair = tuple[int, int]


def _zero_pad(x: torch.Tensor, padding: tuple[Pair, Pair]) -> torch.Tensor:
    """x surrounded by zeros: `top` rows above, `bottom` below, `left`/`right` columns."""
    (top, bottom), (left, right) = padding
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    xp = x.new_zeros(n, c, top + h + bottom, left + w + right)
    xp[:, :, top:top + h, left:left + w] = x
    return xp


def _out_size(size: int, k: int, stride: int, dilation: int) -> int:
    """How many kernel placements fit in `size` padded pixels (a dilated kernel spans
    dilation * (k - 1) + 1 of them)."""
    return (size - dilation * (k - 1) - 1) // stride + 1


# ---- naive: one Python iteration per output position and group -----------------------

def conv2d_naive(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 stride: Pair, padding: tuple[Pair, Pair], dilation: Pair, groups: int) -> torch.Tensor:
    """Slide the kernel over the padded input; at each stop take the dot product of the
    patch under it with every filter. Autograd differentiates through the loops."""
    n = x.shape[0]
    o, cg, kh, kw = weight.shape
    og = o // groups
    (sh, sw), (dh, dw) = stride, dilation
    xp = _zero_pad(x, padding)
    p_out = _out_size(xp.shape[2], kh, sh, dh)
    q_out = _out_size(xp.shape[3], kw, sw, dw)
    # filters of group g, one per row, flattened to (O/G, C/G * kh * kw)
    filters = [weight[g * og:(g + 1) * og].reshape(og, cg * kh * kw) for g in range(groups)]

    rows = []
    for p in range(p_out):
        row = []
        for q in range(q_out):
            top, left = p * sh, q * sw
            per_group = []
            for g in range(groups):
                # the kh x kw pixels under the kernel, dilation apart, of this group's channels
                patch = xp[:, g * cg:(g + 1) * cg,
                           top:top + dh * (kh - 1) + 1:dh,
                           left:left + dw * (kw - 1) + 1:dw]
                per_group.append(patch.reshape(n, cg * kh * kw) @ filters[g].t())  # (N, O/G)
            y = torch.cat(per_group, dim=1)  # (N, O)
            row.append(y + bias if bias is not None else y)
        rows.append(torch.stack(row, dim=-1))  # (N, O, Q)
    return torch.stack(rows, dim=-2)  # (N, O, P, Q)


# ---- reference: im2col + one batched matmul, col2im in the backward -------------------

def _patches(xp: torch.Tensor, kernel: Pair, stride: Pair, dilation: Pair, out: Pair) -> torch.Tensor:
    """A (N, C, kh, kw, P, Q) view of the padded input: [n, c, i, j, p, q] is the pixel
    kernel tap (i, j) sees at output position (p, q). No copy: moving one kernel tap
    moves `dilation` pixels, moving one output position moves `stride` pixels, so each
    is just a stride on xp's own memory (neighbouring patches overlap in memory)."""
    s_n, s_c, s_h, s_w = xp.stride()
    (kh, kw), (sh, sw), (dh, dw), (p, q) = kernel, stride, dilation, out
    # as_strided keeps xp's storage offset (Dynamo cannot trace storage_offset())
    return xp.as_strided((xp.shape[0], xp.shape[1], kh, kw, p, q),
                         (s_n, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w))


def _im2col(x: torch.Tensor, kernel: Pair, stride: Pair, padding: tuple[Pair, Pair], dilation: Pair,
            groups: int) -> tuple[torch.Tensor, Pair]:
    """The column matrix of x, (N, G, K, L) with K = C/G * kh * kw and L = P * Q: column
    l of cols[n, g] is the patch (group g's channels) that output position l sees. Also
    returns (P, Q). It is a fresh copy, never a view of x, so it may be overwritten."""
    xp = _zero_pad(x, padding)
    p = _out_size(xp.shape[2], kernel[0], stride[0], dilation[0])
    q = _out_size(xp.shape[3], kernel[1], stride[1], dilation[1])
    patches = _patches(xp, kernel, stride, dilation, (p, q))
    # the one copy im2col makes: no view can lay overlapping patches out as a matrix
    cols = patches.clone(memory_format=torch.contiguous_format)  # always a copy
    return cols.view(x.shape[0], groups, x.shape[1] // groups * kernel[0] * kernel[1], p * q), (p, q)


def _conv_im2col(x, weight, bias, stride, padding, dilation, groups) -> torch.Tensor:
    """The im2col forward (_Conv2dIm2col's), in ops autograd can differentiate too."""
    n = x.shape[0]
    o, _, kh, kw = weight.shape
    cols, (p, q) = _im2col(x, (kh, kw), stride, padding, dilation, groups)
    out = torch.matmul(weight.reshape(groups, o // groups, -1), cols)  # (N, G, O/G, L)
    out = out.view(n, o, p, q)
    if bias is not None:
        out.add_(bias.view(o, 1, 1))  # in place: `out` is our own fresh tensor
    return out


class _Conv2dIm2col(torch.autograd.Function):
    """im2col forward, written-out backward.

    Forward: the column matrix `cols` (N, G, K, L) of `_im2col`. Then
    out[n, g] = W[g] (O/G, K) @ cols[n, g] (K, L): one batched matmul over (N, G), each
    operand contiguous, and its (N, G, O/G, L) result already is the (N, O, P, Q)
    output in memory.

    Backward (dY = grad of out, same (N, G, O/G, L) layout):
      dW[g] = sum over n of dY[n, g] @ cols[n, g]^T
      dcols = W[g]^T @ dY[n, g], then col2im: every column entry goes back to the pixel
              it was copied from, summing where patches overlap; then drop the padding.
      db    = dY summed over everything but O.

    cols is rebuilt from x in the backward rather than saved: the rebuild is one copy
    (a few % of the step) and saving it would hold kh * kw times the input's memory from
    forward to backward. The backward writes dcols over it once dW is done, so one
    buffer of that size serves both.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        out = _conv_im2col(x, weight, bias, stride, padding, dilation, groups)
        ctx.geometry = (x.shape, stride, padding, dilation, groups)
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
        return own(out)

    @staticmethod
    # this backward is written out (col2im, in-place writes), not a graph autograd could
    # differentiate again: refuse a second derivative rather than return a wrong one
    @first_order_only
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        x_shape, stride, padding, dilation, groups = ctx.geometry
        n, o, p, q = grad_out.shape
        w_mat = weight.reshape(groups, o // groups, -1)  # (G, O/G, K)
        dy = grad_out.reshape(n, groups, o // groups, p * q)
        grad_x = grad_w = grad_b = cols = None

        if ctx.needs_input_grad[1]:
            cols, _ = _im2col(x, weight.shape[2:], stride, padding, dilation, groups)
            # (N, G, O/G, K) per sample, then summed over the batch
            grad_w = torch.matmul(dy, cols.transpose(2, 3)).sum(0).reshape(weight.shape)
        if ctx.needs_input_grad[0]:
            # cols is done with and has dcols' shape: write dcols over it
            dcols = torch.matmul(w_mat.transpose(1, 2), dy, out=cols)  # (N, G, K, L)
            grad_x = _col2im(dcols, x_shape, weight.shape[2:], stride, padding, dilation, (p, q))
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


def _col2im(dcols, x_shape, kernel, stride, padding, dilation, out):
    """Scatter-add a (N, G, K, L) column-matrix gradient back onto the input's pixels.

    One strided add per kernel tap (i, j): that tap saw, across all output positions, the
    pixels (p*sh + i*dh, q*sw + j*dw), a strided slice of the padded input. Slices of
    different taps overlap where patches overlap, so they are added one after another.
    """
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (dh, dw), (p, q) = kernel, stride, dilation, out
    (top, bottom), (left, right) = padding
    taps = dcols.view(n, c, kh, kw, p, q)
    grad = dcols.new_zeros(n, c, top + h + bottom, left + w + right)
    for i in range(kh):
        for j in range(kw):
            grad[:, :, i * dh:i * dh + sh * (p - 1) + 1:sh,
                 j * dw:j * dw + sw * (q - 1) + 1:sw] += taps[:, :, i, j]
    return grad[:, :, top:top + h, left:left + w]


@first_order
def conv2d_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride: Pair, padding: tuple[Pair, Pair], dilation: Pair, groups: int) -> torch.Tensor:
    """im2col: gather every patch into one column matrix, then one batched matmul."""
    if torch.compiler.is_exporting():
        # torch.export keeps a Function's forward ops, never its backward (strict export
        # drops the gradient): there autograd differentiates the forward itself
        return _conv_im2col(x, weight, bias, tuple(stride), tuple(map(tuple, padding)), tuple(dilation), groups)
    return _Conv2dIm2col.apply(x, weight, bias, tuple(stride), tuple(map(tuple, padding)),
                               tuple(dilation), groups)
