"""Reading an untrusted ``.onnx`` file (docs/semantics.md §9.1, §9.3, §9.5).

* The file size is checked against the 2 GiB protobuf limit before parsing; a truncated or
  non-ONNX file is a ModelFormatError wrapping protobuf's DecodeError.
* The model is parsed without external data first. Every external tensor's location is then
  checked: not absolute, no ``..``, inside the model's folder once resolved, no symlink in
  any component, a regular file with one hard link, opened with ``O_NOFOLLOW``; its offset
  and length are checked against the file size and against ``prod(dims)·itemsize``, all in
  Python ints. Only then does ``onnx`` itself read the bytes (it repeats its own checks).
* Unknown ``external_data`` keys are refused (the ``ExternalDataInfo`` setattr injection).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PureWindowsPath

import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from cnnir.errors import ModelFormatError

MAX_PROTOBUF_BYTES = onnx.checker.MAXIMUM_PROTOBUF  # 2 GiB − 1
EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum"})


def _parsed(parse: Callable[[], onnx.ModelProto], what: str) -> onnx.ModelProto:
    """Run ``parse``; garbage, truncation and empty files are ModelFormatErrors."""
    try:
        model = parse()
    except DecodeError as e:
        raise ModelFormatError(f"{what} is not a valid ONNX model (truncated or not an ONNX "
                               f"file): {e}") from e
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelFormatError(f"{what} is not an ONNX model (no IR version or no graph)",
                               hint="is this the right file?")
    return model


def parse_model(data: bytes, what: str) -> onnx.ModelProto:
    """A model from serialized bytes (external data is not loaded)."""
    return _parsed(lambda: onnx.load_model_from_string(data), what)


def read_model_file(path: str | os.PathLike) -> onnx.ModelProto:
    """The model at ``path`` with its external data loaded, after every check above."""
    path = os.fspath(path)
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise ModelFormatError(f"cannot read ONNX file {path}: {e.strerror}") from e
    if size > MAX_PROTOBUF_BYTES:
        raise ModelFormatError(f"{path} is {size} bytes, over the 2 GiB protobuf limit "
                               f"({MAX_PROTOBUF_BYTES})",
                               hint="large models keep their weights in external data files")
    model = _parsed(lambda: onnx.load(path, load_external_data=False), path)
    base = os.path.dirname(os.path.abspath(path))
    external = list(external_tensors(model))
    for tensor in external:
        check_external_tensor(tensor, base)
    if external:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, base)
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"{path}: loading external data failed: {e}") from e
    return model


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of the model: initializers and attribute tensors, in every subgraph and
    function (walked with an explicit stack, never recursion)."""
    graphs: list[onnx.GraphProto] = [model.graph]
    nodes: list[onnx.NodeProto] = [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            g = graphs.pop()
            yield from g.initializer
            for sparse in g.sparse_initializer:
                yield sparse.values
                yield sparse.indices
            nodes.extend(g.node)
            continue
        for a in nodes.pop().attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                graphs.append(a.g)
            graphs.extend(a.graphs)


def external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    return (t for t in all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL)


def _refuse(tensor: onnx.TensorProto, why: str) -> ModelFormatError:
    return ModelFormatError(f"external data of tensor '{tensor.name}' {why}",
                            hint="external data must be a plain file inside the model's folder")


def _external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    info: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key not in EXTERNAL_KEYS:
            raise _refuse(tensor, f"has the unknown key {entry.key[:40]!r} (allowed: "
                                  f"{sorted(EXTERNAL_KEYS)})")
        if not isinstance(entry.value, str):  # protobuf's bytes for invalid UTF-8
            raise _refuse(tensor, f"has a {entry.key} that is not UTF-8 text")
        info[entry.key] = entry.value
    return info


def check_location(tensor: onnx.TensorProto, location: str, base: str) -> Path:
    """The checked path of ``location``: relative, no ``..``, inside ``base``, no symlinks,
    a regular file with a single hard link."""
    if not location:
        raise _refuse(tensor, "has no location")
    if os.path.isabs(location) or PureWindowsPath(location).drive or location[0] in "/\\":
        raise _refuse(tensor, f"has the absolute location {location!r}")
    if ".." in re.split(r"[\\/]", location):
        raise _refuse(tensor, f"location {location!r} contains '..'")
    base_path = Path(base).resolve()
    full = Path(base_path, location)
    if not full.resolve().is_relative_to(base_path):
        raise _refuse(tensor, f"location {location!r} leaves the model's folder")
    current = base_path
    for part in Path(location).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except OSError as e:
            raise _refuse(tensor, f"location {location!r} cannot be read: {e.strerror}") from e
        if stat.S_ISLNK(mode):
            raise _refuse(tensor, f"location {location!r} goes through the symlink {current}")
    st = os.lstat(full)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(tensor, f"location {location!r} is not a regular file")
    if st.st_nlink != 1:
        raise _refuse(tensor, f"location {location!r} is a hard link ({st.st_nlink} links)")
    return full


def _open_size(tensor: onnx.TensorProto, full: Path) -> int:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(full, flags)
    except OSError as e:
        raise _refuse(tensor, f"cannot be opened without following links: {e.strerror}") from e
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def expected_bytes(tensor: onnx.TensorProto) -> int:
    """``prod(dims)·itemsize`` in Python ints."""
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        raise _refuse(tensor, "has a type that cannot be stored externally")
    count = 1
    for d in tensor.dims:
        if d < 0:
            raise _refuse(tensor, f"has the negative dim {d}")
        count *= int(d)
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError) as e:
        raise _refuse(tensor, f"has the unknown data type {tensor.data_type}") from e
    return count * itemsize


_PACKED = {getattr(onnx.TensorProto, name): per for name, per in (
    ("INT4", 2), ("UINT4", 2), ("FLOAT4E2M1", 2), ("INT2", 4), ("UINT2", 4))
    if hasattr(onnx.TensorProto, name)}  # elements per byte (and per int32_data entry)


def _stored_entries(tensor: onnx.TensorProto, count: int) -> tuple[int, int]:
    """(entries expected, entries stored) of the tensor's data: bytes of ``raw_data``, or
    items of the typed field its data type uses."""
    per = _PACKED.get(tensor.data_type)
    if tensor.HasField("raw_data"):
        if per is not None:
            return -(-count // per), len(tensor.raw_data)
        if tensor.data_type == onnx.TensorProto.STRING:
            raise _refuse_tensor(tensor, "is a string tensor with raw_data")
        return count * expected_bytes_per_item(tensor), len(tensor.raw_data)
    field = helper.tensor_dtype_to_field(tensor.data_type)
    factor = 2 if tensor.data_type in (onnx.TensorProto.COMPLEX64,
                                       onnx.TensorProto.COMPLEX128) else 1
    expected = -(-count // per) if per is not None else count * factor
    return expected, len(getattr(tensor, field))


def expected_bytes_per_item(tensor: onnx.TensorProto) -> int:
    return helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _refuse_tensor(tensor: onnx.TensorProto, why: str) -> ModelFormatError:
    return ModelFormatError(f"tensor '{tensor.name[:80]}' {why}",
                            hint="the file is damaged or was not written by an ONNX exporter")


def check_tensors(model: onnx.ModelProto) -> None:
    """Every tensor of the model holds exactly the data its dims and type declare (checked on
    the stored sizes, before numpy reads anything, so a tensor declaring 10¹² elements over
    a few bytes is refused without allocating them), and none still points at external data
    (``read_model_file`` loads it after its own checks)."""
    for tensor in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise _refuse_tensor(tensor, "refers to external data, which is read only from a "
                                         "model file (cnnir.load_onnx(path))")
        if any(d < 0 for d in tensor.dims):
            raise _refuse_tensor(tensor, f"has the negative dims {list(tensor.dims)[:8]}")
        count = 1
        for d in tensor.dims:
            count *= int(d)
        try:
            expected, stored = _stored_entries(tensor, count)
        except (KeyError, TypeError, ValueError) as e:
            raise _refuse_tensor(tensor, f"has the unknown data type {tensor.data_type}") from e
        if expected != stored:
            what = "bytes" if tensor.HasField("raw_data") else "values"
            raise _refuse_tensor(tensor, f"declares dims {list(tensor.dims)[:8]} "
                                         f"({expected} {what}) but stores {stored} {what}")


def check_text(model: onnx.ModelProto) -> None:
    """Every name the importer reads is text: protobuf hands a string field holding invalid
    UTF-8 back as ``bytes``, which no name lookup or message expects."""
    def value_infos(g: onnx.GraphProto):
        yield from g.input
        yield from g.output
        yield from g.value_info

    g = model.graph
    texts = [g.name, *(t.name for t in g.initializer)]
    for v in value_infos(g):
        texts.append(v.name)
        if v.type.HasField("tensor_type"):
            texts.extend(d.dim_param for d in v.type.tensor_type.shape.dim)
    for n in g.node:
        texts.extend((n.name, n.op_type, n.domain, *n.input, *n.output,
                      *(a.name for a in n.attribute)))
    texts.extend(o.domain for o in model.opset_import)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ModelFormatError(f"the ONNX graph holds a name that is not UTF-8 text: "
                               f"{bad[:60]!r}", hint="the file is damaged")


def check_external_tensor(tensor: onnx.TensorProto, base: str) -> None:
    info = _external_info(tensor)
    full = check_location(tensor, info.get("location", ""), base)
    file_size = _open_size(tensor, full)
    try:
        offset = int(info.get("offset", "0") or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError as e:
        raise _refuse(tensor, f"has a non-integer offset or length: {e}") from e
    expected = expected_bytes(tensor)
    if offset < 0 or (length is not None and length < 0):
        raise _refuse(tensor, f"has a negative offset {offset} or length {length}")
    if length is not None and length != expected:
        raise _refuse(tensor, f"has length {length} but its shape {list(tensor.dims)} needs "
                              f"{expected} bytes")
    if offset + expected > file_size:
        raise _refuse(tensor, f"reads bytes [{offset}, {offset + expected}) past the end of "
                              f"its {file_size}-byte file")
