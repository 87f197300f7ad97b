"""Fuzzing the ONNX importer: valid models, mutated, imported in a bounded worker process.

Seed models are cnnir exports (random graphs from ``graphs.py`` with a symbolic batch, the
digits example) and hand-built ones (shape chains, constants that fold, external data).
``mutate`` applies one or a few mutations: byte flips, truncation, dims made huge, negative
or zero, attributes of the wrong type or value, cycles, dangling names, duplicate outputs,
tensors whose data disagrees with their dims, a 10¹²-element tensor, external data paths
(absolute, ``..``-escaping, missing, out of range), opsets, op types and domains.

``Worker`` imports files one at a time in a subprocess whose address space is capped
(``RLIMIT_AS``) and which is killed when a file takes longer than the time bound. Every file
must be imported (a verified graph) or refused with a ``CnnirError``: anything else (another
exception, a crash, a hang, memory over the bound) is a failure.
"""

from __future__ import annotations

import json
import os
import runpy
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HUGE = 10**12

# -- seed models ------------------------------------------------------------------------------


def seed_models() -> list[onnx.ModelProto]:
    from graphs import FuzzNet, RandomDraw, batch_stays_apart, draw_spec

    import cnnir
    from cnnir.backends.onnx_export import to_model

    seeds = []
    for i in range(8):
        spec = draw_spec(RandomDraw(np.random.default_rng([99, i])), 10)
        n, *rest = spec.input_shape
        batch = "N" if batch_stays_apart(spec) else n
        graph = cnnir.trace(FuzzNet(spec), [(batch, *rest)])
        seeds.append(to_model(graph))
    digits = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" /
                                "digits.py"), run_name="__cnnir_model__")
    seeds.append(to_model(cnnir.trace(digits["model"]().eval(), [("N", 1, 8, 8)])))
    seeds.extend([shape_chain_model(), folding_model()])
    return seeds


def shape_chain_model() -> onnx.ModelProto:
    """A dynamic-batch flatten as exporters write it (Shape-Gather-Unsqueeze-Concat-Reshape),
    then Gemm, Clip and Softmax."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes0"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(np.ones((4, 18), np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(1.0, np.float32), "hi")]
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w", "b"], ["g"], transB=1, alpha=0.5),
             helper.make_node("Clip", ["g", "lo", "hi"], ["c"]),
             helper.make_node("Softmax", ["c"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "chain", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def folding_model() -> onnx.ModelProto:
    """Constants that fold (ConstantOfShape, Range, Expand, Tile, ReduceMean) into a Conv's
    weight and an Add, then a Resize with constant scales and a Pad with constant pads."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 10, 10])
    inits = [numpy_helper.from_array(np.array([3, 2, 1, 1], np.int64), "wshape"),
             numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "bshape"),
             numpy_helper.from_array(np.array(0.0, np.float32), "start"),
             numpy_helper.from_array(np.array(3.0, np.float32), "limit"),
             numpy_helper.from_array(np.array(1.0, np.float32), "delta"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.int64), "reps"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    nodes = [helper.make_node("ConstantOfShape", ["wshape"], ["w"],
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("Range", ["start", "limit", "delta"], ["r"]),
             helper.make_node("Expand", ["r", "bshape"], ["r4"]),  # (1, 3, 1, 3)
             helper.make_node("Tile", ["r4", "reps"], ["t"]),  # (1, 3, 2, 6)
             helper.make_node("ReduceMean", ["t"], ["bias"], keepdims=1, axes=[2, 3]),
             helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["c", "bias"], ["a"]),
             helper.make_node("Resize", ["a", "", "scales"], ["z"], mode="nearest"),
             helper.make_node("Pad", ["z", "pads"], ["y"], mode="constant")]
    graph = helper.make_graph(nodes, "folding", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


# -- mutations --------------------------------------------------------------------------------

Mutation = Callable[[onnx.ModelProto, np.random.Generator, Path], None]


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))] if items else None


def _huge_dim(rng: np.random.Generator) -> int:
    return int(_pick(rng, [HUGE, -1, -HUGE, 0, 2**62, 2**63 - 1, 10**6, 3]))


def m_tensor_dims(model, rng, _):
    """An initializer or Constant tensor's dims changed: data and dims disagree."""
    t = _pick(rng, list(_tensors(model)))
    if t is None:
        return
    if t.dims and rng.random() < 0.7:
        t.dims[int(rng.integers(len(t.dims)))] = _huge_dim(rng)
    else:
        t.dims.append(_huge_dim(rng))


def m_tensor_data(model, rng, _):
    """Stored data cut, extended or moved to another field."""
    t = _pick(rng, list(_tensors(model)))
    if t is None:
        return
    choice = int(rng.integers(4))
    if choice == 0 and t.raw_data:
        t.raw_data = t.raw_data[:int(rng.integers(len(t.raw_data)))]
    elif choice == 1:
        t.raw_data = t.raw_data + bytes(int(rng.integers(1, 9)))
    elif choice == 2:
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * int(rng.integers(0, 5)))
    else:
        t.data_type = int(_pick(rng, [0, 8, 11, 7, 10, 16, 999, 2, 14, 22, 23]))


def m_declare_huge_tensor(model, rng, _):
    """A 10¹²-element initializer (with almost no data) fed to the first node."""
    name = "huge_tensor"
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[10**6, 10**6],
                    raw_data=bytes(16))
    model.graph.initializer.append(t)
    if model.graph.node:
        node = _pick(rng, list(model.graph.node))
        if node.input:
            node.input[int(rng.integers(len(node.input)))] = name
        else:
            node.input.append(name)


def m_huge_fold(model, rng, _):
    """A constant subgraph whose value would be 10¹² elements (ConstantOfShape, Expand,
    Range, Tile, a broadcast Mul), feeding an Add on the first graph input."""
    g = model.graph
    kind = int(rng.integers(5))
    inits, nodes = [], []
    if kind == 0:
        inits = [numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "hs")]
        nodes = [helper.make_node("ConstantOfShape", ["hs"], ["hv"])]
    elif kind == 1:
        inits = [numpy_helper.from_array(np.ones(1, np.float32), "h1"),
                 numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "hs")]
        nodes = [helper.make_node("Expand", ["h1", "hs"], ["hv"])]
    elif kind == 2:
        inits = [numpy_helper.from_array(np.array(v, np.float32), n)
                 for n, v in (("ha", 0.0), ("hb", 1e12), ("hc", 1.0))]
        nodes = [helper.make_node("Range", ["ha", "hb", "hc"], ["hv"])]
    elif kind == 3:
        inits = [numpy_helper.from_array(np.ones((1, 1), np.float32), "h1"),
                 numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "hr")]
        nodes = [helper.make_node("Tile", ["h1", "hr"], ["hv"])]
    else:
        inits = [numpy_helper.from_array(np.ones((4000, 1), np.float32), "ha"),
                 numpy_helper.from_array(np.ones((1, 4000), np.float32), "hb"),
                 numpy_helper.from_array(np.ones((4000, 1, 1), np.float32), "hc")]
        nodes = [helper.make_node("Mul", ["ha", "hb"], ["hm"]),
                 helper.make_node("Mul", ["hm", "hc"], ["hv"])]  # 6.4e10 elements
    g.initializer.extend(inits)
    first = g.input[0].name if g.input else "hv"
    nodes.append(helper.make_node("Add", [first, "hv"], ["h_out"]))
    for i, n in enumerate(nodes):
        g.node.insert(i, n)
    g.output.append(helper.make_tensor_value_info("h_out", TensorProto.FLOAT, None))


def m_input_dims(model, rng, _):
    v = _pick(rng, list(model.graph.input))
    if v is None or not v.type.HasField("tensor_type"):
        return
    dims = v.type.tensor_type.shape.dim
    choice = int(rng.integers(4))
    if choice == 0 and dims:
        d = dims[int(rng.integers(len(dims)))]
        d.dim_value = _huge_dim(rng)
    elif choice == 1:
        v.type.tensor_type.ClearField("shape")
    elif choice == 2 and dims:
        dims[int(rng.integers(len(dims)))].dim_param = _pick(
            rng, ["", "a b", "floor", "1x", "N" * 200, "__import__('os')"])
    else:
        v.type.tensor_type.elem_type = int(_pick(rng, [0, 8, 7, 9, 999, 11]))


def m_attribute(model, rng, _):
    """An attribute replaced by one of another type, or a wild value of its own type."""
    nodes = [n for n in model.graph.node if n.attribute]
    node = _pick(rng, nodes)
    if node is None:
        return
    index = int(rng.integers(len(node.attribute)))
    name = node.attribute[index].name
    value = _pick(rng, [
        1.5, -1, 0, HUGE, -HUGE, "text", b"\xff\xfe", [], [HUGE, HUGE], [-5, -5, -5, -5],
        [0, 0], [1.5, 2.5], ["a", "b"], list(range(20)), [2**63 - 1] * 4,
        numpy_helper.from_array(np.zeros((2, 2), np.float32)),
        helper.make_graph([], "g", [], [])])
    new = helper.make_attribute(name, value) if not isinstance(value, list) or value else \
        helper.make_attribute(name, value, attr_type=_pick(
            rng, [onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS]))
    node.attribute[index].CopyFrom(new)


def m_add_attribute(model, rng, _):
    node = _pick(rng, list(model.graph.node))
    if node is None:
        return
    name = _pick(rng, ["axis", "axes", "pads", "strides", "group", "kernel_shape", "perm",
                       "dilations", "auto_pad", "mode", "ceil_mode", "alpha", "to",
                       "count_include_pad", "output_padding", "output_shape", "split",
                       "keepdims", "allowzero", "coordinate_transformation_mode"])
    value = _pick(rng, [HUGE, -7, 0, 3, "SAME_UPPER", "VALID", "bogus", [HUGE], [-1, -1],
                        [0, 0, 0, 0], [1, 2, 3], 2.5, [7, 7, 7, 7, 7, 7, 7, 7]])
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def m_cycle(model, rng, _):
    nodes = model.graph.node
    if len(nodes) < 2:
        return
    i, j = sorted(int(k) for k in rng.choice(len(nodes), 2, replace=False))
    if nodes[i].input and nodes[j].output:
        nodes[i].input[int(rng.integers(len(nodes[i].input)))] = nodes[j].output[0]


def m_self_loop(model, rng, _):
    node = _pick(rng, list(model.graph.node))
    if node is not None and node.input and node.output:
        node.input[0] = node.output[0]


def m_dangling(model, rng, _):
    node = _pick(rng, list(model.graph.node))
    if node is None:
        return
    if node.input and rng.random() < 0.7:
        node.input[int(rng.integers(len(node.input)))] = "nothing_defines_this"
    else:
        model.graph.output.append(helper.make_tensor_value_info("ghost", TensorProto.FLOAT,
                                                                None))


def m_duplicate(model, rng, _):
    g = model.graph
    choice = int(rng.integers(4))
    if choice == 0 and len(g.node) >= 2:
        a, b = (g.node[int(k)] for k in rng.choice(len(g.node), 2, replace=False))
        if a.output and b.output:
            b.output[0] = a.output[0]
    elif choice == 1 and g.output:
        g.output.append(g.output[0])
    elif choice == 2 and g.initializer and g.input:
        g.initializer[0].name = g.input[0].name
    elif choice == 3 and g.node:
        g.node.append(g.node[int(rng.integers(len(g.node)))])


def m_remove_node(model, rng, _):
    if model.graph.node:
        del model.graph.node[int(rng.integers(len(model.graph.node)))]


def m_node_inputs(model, rng, _):
    node = _pick(rng, list(model.graph.node))
    if node is None:
        return
    choice = int(rng.integers(4))
    if choice == 0 and node.input:
        del node.input[int(rng.integers(len(node.input)))]
    elif choice == 1:
        node.input.append(_pick(rng, ["", node.input[0] if node.input else "x"]))
    elif choice == 2 and len(node.input) >= 2:
        node.input[0], node.input[1] = node.input[1], node.input[0]
    elif node.output:
        node.output.append(node.output[0] + "_extra")


def m_op_type(model, rng, _):
    node = _pick(rng, list(model.graph.node))
    if node is None:
        return
    if rng.random() < 0.8:
        node.op_type = _pick(rng, [
            "Conv", "ConvTranspose", "MaxPool", "AveragePool", "Gemm", "MatMul", "Reshape",
            "Transpose", "Concat", "Split", "Slice", "Resize", "Pad", "BatchNormalization",
            "Softmax", "Flatten", "Gather", "Squeeze", "Unsqueeze", "Expand", "Clip", "Where",
            "Cast", "PRelu", "LayerNormalization", "GroupNormalization", "DeformConv",
            "Upsample", "Loop", "If", "Scan", "NoSuchOp", "GlobalAveragePool", "Identity"])
    else:
        node.domain = _pick(rng, ["com.microsoft", "ai.onnx.ml", "x" * 100])


def m_opset(model, rng, _):
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = int(_pick(rng, [0, 1, 6, 7, 9, 11, 13, 18, 21, 28, 29, 1000, -3]))
    if rng.random() < 0.2:
        model.ir_version = int(_pick(rng, [0, 1, 3, 99]))


def m_external(model, rng, folder: Path):
    """An initializer moved to external data, with a good, missing or hostile location,
    offset or length."""
    inits = [t for t in model.graph.initializer if t.raw_data or t.float_data]
    t = _pick(rng, inits)
    if t is None:
        return
    data = t.raw_data or np.asarray(t.float_data, np.float32).tobytes()
    (folder / "weights.bin").write_bytes(bytes(16) + data)
    (folder.parent / "secret.bin").write_bytes(bytes(len(data) + 16))
    location = _pick(rng, ["weights.bin", "weights.bin", "/etc/passwd", "../secret.bin",
                           "sub/../../secret.bin", "missing.bin", "", ".", "weights.bin/x",
                           str(folder / "weights.bin"), "C:\\x.bin", "\\\\server\\share"])
    offset = _pick(rng, ["16", "16", "0", "-4", str(HUGE), "x", ""])
    length = _pick(rng, [str(len(data)), str(len(data)), None, str(HUGE), "-1", "1"])
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": offset}
    if length is not None:
        entries["length"] = length
    if rng.random() < 0.1:
        entries["basepath"] = "/"
    for key, value in entries.items():
        e = t.external_data.add()
        e.key, e.value = key, value


BYTE_LEVEL = {"flip", "truncate", "splice"}
MUTATIONS: dict[str, Mutation] = {
    "tensor_dims": m_tensor_dims, "tensor_data": m_tensor_data,
    "huge_tensor": m_declare_huge_tensor, "huge_fold": m_huge_fold,
    "input_dims": m_input_dims, "attribute": m_attribute, "add_attribute": m_add_attribute,
    "cycle": m_cycle, "self_loop": m_self_loop, "dangling": m_dangling,
    "duplicate": m_duplicate, "remove_node": m_remove_node, "node_inputs": m_node_inputs,
    "op_type": m_op_type, "opset": m_opset, "external": m_external,
}


def _tensors(model: onnx.ModelProto):
    yield from model.graph.initializer
    for n in model.graph.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t


def mutate(seed: onnx.ModelProto, rng: np.random.Generator, folder: Path) -> tuple[Path, str]:
    """Write one mutated copy of ``seed`` as ``folder/model.onnx``; returns it and the names
    of the mutations applied."""
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.ModelProto()
    model.CopyFrom(seed)
    names = []
    for _ in range(1 if rng.random() < 0.6 else int(rng.integers(2, 4))):
        name = _pick(rng, list(MUTATIONS) + sorted(BYTE_LEVEL))
        if name in BYTE_LEVEL:
            continue
        names.append(name)
        MUTATIONS[name](model, rng, folder)
    data = model.SerializeToString()
    if not names or rng.random() < 0.15:
        kind = _pick(rng, sorted(BYTE_LEVEL))
        names.append(kind)
        data = _byte_mutation(kind, data, rng)
    path = folder / "model.onnx"
    path.write_bytes(data)
    return path, "+".join(names)


def _byte_mutation(kind: str, data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    if not buf:
        return data
    if kind == "truncate":
        return bytes(buf[:int(rng.integers(len(buf)))])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 12))):
            i = int(rng.integers(len(buf)))
            buf[i] = int(rng.integers(256)) if rng.random() < 0.5 else buf[i] ^ 0xFF
        return bytes(buf)
    i, j = sorted(int(k) for k in rng.integers(0, len(buf), 2))
    return bytes(buf[:i] + buf[j:] + buf[i:j])  # splice: move a span to the end


# -- the bounded worker -------------------------------------------------------------------

WORKER = r"""
import json, resource, signal, sys, time, traceback
import cnnir
from cnnir.errors import CnnirError
import cnnir.frontend.onnx_import  # import everything before the address space is capped

def vm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1])
    return 0

limit = vm_kb() * 1024 + int(sys.argv[1]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

def alarm(signum, frame):
    raise TimeoutError("time bound exceeded")

signal.signal(signal.SIGALRM, alarm)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    path = line.rstrip("\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    signal.alarm(int(sys.argv[2]))
    try:
        graph = cnnir.load_onnx(path)
        outcome, detail = "imported", f"{len(graph.nodes)} nodes"
    except CnnirError as e:
        outcome, detail = "refused", f"{type(e).__name__}: {str(e)[:300]}"
        cause = e
        while cause is not None:  # refused only because the capped allocation failed
            if isinstance(cause, (MemoryError, TimeoutError)):
                outcome = "memory" if isinstance(cause, MemoryError) else "hang"
            cause = cause.__cause__ or cause.__context__
    except BaseException as e:
        outcome = "error"
        detail = "".join(traceback.format_exception(e)[-4:])[-1500:]
    finally:
        signal.alarm(0)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"outcome": outcome, "detail": detail, "seconds":
                      time.perf_counter() - start, "grown_kb": grown}), flush=True)
"""


@dataclass
class Result:
    path: str
    mutation: str
    outcome: str  # imported, refused, error, crash, hang, memory
    detail: str
    seconds: float
    grown_kb: int = 0  # how much the worker's peak resident memory grew on this file


class Worker:
    """A subprocess importing files one at a time, restarted after a crash or a hang."""

    def __init__(self, memory_mb: int = 400, seconds: int = 5) -> None:
        self.memory_mb, self.seconds = memory_mb, seconds
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(self.memory_mb), str(self.seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env)
        self._read(120)

    def _read(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else {"eof": True}

    def run(self, path: Path, mutation: str) -> Result:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        start = time.perf_counter()
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        reply = self._read(self.seconds * 2 + 5)
        if reply is None or "eof" in reply:
            self.close()
            outcome = "hang" if reply is None else "crash"
            detail = f"worker {'killed after' if reply is None else 'died after'} " \
                     f"{time.perf_counter() - start:.1f} s"
            return Result(str(path), mutation, outcome, detail, time.perf_counter() - start)
        outcome = reply["outcome"]
        if outcome != "error" and reply["grown_kb"] > self.memory_mb * 1024:
            outcome = "memory"
        return Result(str(path), mutation, outcome, reply["detail"], reply["seconds"],
                      reply["grown_kb"])

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def campaign(count: int, seed: int, folder: Path, worker: Worker,
             on_result: Callable[[Result], None] | None = None,
             keep: bool = False) -> list[Result]:
    """``count`` mutated files from ``seed`` (file i is reproducible from (seed, i)); with
    ``keep`` the files stay in ``folder``, else only those that fail."""
    seeds = seed_models()
    results = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        path, names = mutate(seeds[int(rng.integers(len(seeds)))], rng, folder / f"f{i}")
        result = worker.run(path, names)
        if not keep and result.outcome in ("imported", "refused"):
            shutil.rmtree(path.parent)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
