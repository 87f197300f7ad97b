"""PyTorch eager as a benchmark peer: runs a cnnir graph op by op with torch.nn.functional,
on the graph's own weights, so both engines compute the same network. Only the ops of the
benchmarked models are mapped; torch is never a dependency of cnnir itself."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cnnir import ops


def _pads(a) -> tuple[int, int]:
    top, left, bottom, right = a.padding
    if (top, left) != (bottom, right):
        raise NotImplementedError("asymmetric padding")
    return top, left


TORCH_OPS = {
    ops.conv2d: lambda a, x, w, b: F.conv2d(x, w, b, a.stride, _pads(a), a.dilation, a.groups),
    ops.batch_norm: lambda a, x, rm, rv, w, b: F.batch_norm(x, rm, rv, w, b, a.training,
                                                            a.momentum or 0.0, a.eps),
    ops.relu: lambda a, x: F.relu(x),
    ops.relu6: lambda a, x: F.relu6(x),
    ops.max_pool2d: lambda a, x: F.max_pool2d(x, a.kernel_size, a.stride, a.padding,
                                              a.dilation, a.ceil_mode),
    ops.adaptive_avg_pool2d: lambda a, x: F.adaptive_avg_pool2d(x, a.output_size),
    ops.add: lambda a, x, y: x + y,
    ops.flatten: lambda a, x: torch.flatten(x, a.start_dim, a.end_dim),
    ops.linear: lambda a, x, w, b: F.linear(x, w, b),
    ops.dropout: lambda a, x: F.dropout(x, a.p, a.training),
    ops.mean: lambda a, x: x.mean(dim=a.dims, keepdim=a.keepdim),
    ops.cross_entropy: lambda a, x, t, w=None: F.cross_entropy(
        x, t, w, ignore_index=a.ignore_index, reduction=a.reduction,
        label_smoothing=a.label_smoothing),
}


def _run_nodes(nodes, env: dict) -> None:
    for fn, node in nodes:
        args = [env[id(v)] if v is not None else None for v in node.inputs]
        env[id(node.output)] = fn(node.attrs, *args)


OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-3),
    "adam-3e-3": lambda params: torch.optim.Adam(params, lr=3e-3),
}


def torch_trainer(graph, optimizer: str | None = None):
    """A training step on numpy arrays: ``graph`` (forward and loss, its first output) run
    with autograd in PyTorch eager mode, then ``loss.backward()`` and, with ``optimizer``
    (a key of ``OPTIMIZERS``), its step; returns the loss and the parameters' gradients.
    BatchNorm in training mode updates its running statistics."""
    params = {id(v): torch.from_numpy(np.array(v.const.array)).requires_grad_(
        v.const.kind == "parameter") for v in graph.constants.values()}
    nodes = [(TORCH_OPS[n.op], n) for n in graph.nodes]
    trainable = [t for t in params.values() if t.requires_grad]
    opt = OPTIMIZERS[optimizer](trainable) if optimizer else None

    def step(*arrays):
        for t in trainable:
            t.grad = None
        env = dict(params)
        env.update({id(v): torch.from_numpy(a) for v, a in zip(graph.inputs, arrays)})
        _run_nodes(nodes, env)
        loss = env[id(graph.outputs[0])]
        loss.backward()
        if opt is not None:
            opt.step()
        return float(loss), [t.grad.numpy() for t in trainable]

    return step


def torch_runner(graph):
    """A callable on numpy arrays running ``graph`` in PyTorch eager mode (no autograd)."""
    torch.set_num_threads(torch.get_num_threads())
    consts = {id(v): torch.from_numpy(np.ascontiguousarray(v.const.array))
              for v in graph.constants.values()}
    nodes = [(TORCH_OPS[n.op], n) for n in graph.nodes]

    def run(*arrays):
        env = dict(consts)
        env.update({id(v): torch.from_numpy(a) for v, a in zip(graph.inputs, arrays)})
        with torch.inference_mode():
            _run_nodes(nodes, env)
        return [env[id(v)].numpy() for v in graph.outputs]

    return run
