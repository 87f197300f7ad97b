"""Weight files (``cnnir.save``/``cnnir.load``, ``load_state_dict``, ``cnnir.data.load_npz``)
on damaged, mismatched and hostile input: each is refused with a ``ModelFormatError`` (a
``CnnirError``) naming the file and the problem, never a raw numpy/zipfile traceback, and
bounded in time and memory. ``cnnir.save`` is atomic: a writer killed mid-write leaves the
previous file intact."""

from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cnnir
from cnnir import nn
from cnnir.errors import CnnirError, ModelFormatError


def small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3, 4))


def state_of(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in model.state_dict().items()}


@pytest.fixture
def saved(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    model = small_model()
    rng = np.random.default_rng(0)
    model.load_state_dict({k: rng.standard_normal(v.shape).astype(v.dtype)
                           for k, v in state_of(model).items()})
    path = tmp_path / "w.npz"
    cnnir.save(model, path)
    return path, state_of(model)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes],
              compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def huge_member(shape: tuple, descr: str = "<f4") -> bytes:
    """An .npy header declaring ``shape`` followed by 64 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue() + b"\0" * 64


def refused(path: Path, *fragments: str) -> str:
    with pytest.raises(ModelFormatError) as info:
        cnnir.load(small_model(), path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- reading back -----------------------------------------------------------------------------

def test_saved_weights_load_back_exactly(saved) -> None:
    path, state = saved
    model = cnnir.load(small_model(), path)
    for key, value in state_of(model).items():
        np.testing.assert_array_equal(value, state[key])
        assert value.dtype == state[key].dtype


def test_files_written_by_numpy_savez_and_savez_compressed_load(tmp_path, saved) -> None:
    _, state = saved
    for writer in (np.savez, np.savez_compressed):
        path = tmp_path / f"{writer.__name__}.npz"
        writer(path, **state)
        model = cnnir.load(small_model(), path)
        for key, value in state_of(model).items():
            np.testing.assert_array_equal(value, state[key])


def test_state_keys_named_like_savez_arguments_survive(tmp_path) -> None:
    """np.savez(f, **arrays) would take a key "file" or "allow_pickle" for its own argument."""
    model = nn.Module()
    model.file = nn.Parameter((2,))
    model.allow_pickle = nn.Parameter((3,))
    model.file.data = np.array([1.0, 2.0], np.float32)
    model.allow_pickle.data = np.array([3.0, 4.0, 5.0], np.float32)
    cnnir.save(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as data:
        assert sorted(data.files) == ["allow_pickle", "file"]
        np.testing.assert_array_equal(data["allow_pickle"], [3.0, 4.0, 5.0])


# -- damaged and foreign files ---------------------------------------------------------------

@pytest.mark.parametrize("keep", [0, 1, 10, 100, 0.5, -22, -1])
def test_a_truncated_file_is_refused(saved, keep) -> None:
    path, _ = saved
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:cut])
    refused(path)


def test_every_single_byte_flip_is_refused_or_loads_numbers(saved) -> None:
    """Flip a bit at a sample of offsets (headers, data, central directory): either the file
    is refused, or (a flip inside array data, which ZIP_STORED has a CRC for, so none) it
    loads; never another exception."""
    path, _ = saved
    data = path.read_bytes()
    outcomes = set()
    for offset in range(0, len(data), max(1, len(data) // 300)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            cnnir.load(small_model(), path)
            outcomes.add("loaded")
        except ModelFormatError:
            outcomes.add("refused")
    assert "refused" in outcomes


@pytest.mark.parametrize("content", [b"", b"hello, weights", b"PK\x03\x04" + b"\0" * 30,
                                     b"\x93NUMPY\x01\x00"])
def test_non_npz_bytes_are_refused(tmp_path, content) -> None:
    path = tmp_path / "w.npz"
    path.write_bytes(content)
    refused(path)


def test_a_single_npy_array_is_refused(tmp_path) -> None:
    path = tmp_path / "w.npy"
    np.save(path, np.zeros(3))
    refused(path, "not an .npz")


def test_a_pickle_file_is_refused_without_running_it(tmp_path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "w.npz"
    path.write_bytes(pickle.dumps({"0.weight": Evil()}))
    refused(path)
    assert not marker.exists()


def test_an_object_array_is_refused_without_unpickling(tmp_path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    obj = np.empty(1, dtype=object)
    obj[0] = Evil()
    path = write_zip(tmp_path / "w.npz", {"0.weight.npy": npy_bytes(obj)})
    refused(path, "pickle")
    assert not marker.exists()


def test_missing_file_and_folder_are_refused(tmp_path) -> None:
    refused(tmp_path / "absent.npz", "no such file")
    refused(tmp_path, "not a regular file")


def test_a_member_that_is_not_an_array_is_refused(tmp_path) -> None:
    path = write_zip(tmp_path / "w.npz", {"notes.txt": b"hi"})
    refused(path, "notes.txt")


def test_duplicate_members_are_refused(tmp_path) -> None:
    with pytest.warns(UserWarning):  # zipfile warns about the duplicate name
        path = write_zip(tmp_path / "w.npz", {"a.npy": npy_bytes(np.zeros(2))})
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("a.npy", npy_bytes(np.ones(2)))
    refused(path, "twice")


@pytest.mark.parametrize("shape", [(10**12,), (10**6, 10**6), (2**40, 2**40), (3,)])
def test_a_header_disagreeing_with_the_stored_bytes_is_refused_before_allocating(
        tmp_path, shape) -> None:
    """A 10¹²-element (or overflowing) declaration over 64 stored bytes; (3,) float32 is 12
    bytes, also not 64."""
    path = write_zip(tmp_path / "w.npz", {"0.weight.npy": huge_member(shape)})
    start = time.perf_counter()
    refused(path, "declares shape", "64 bytes")
    assert time.perf_counter() - start < 2


def test_a_zip_claiming_more_bytes_than_it_compresses_to_is_refused(tmp_path) -> None:
    """A member whose central directory claims 4 TB of an array of 10¹² floats."""
    path = write_zip(tmp_path / "w.npz", {"0.weight.npy": huge_member((10**12,))},
                     zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    # patch the uncompressed size in the local header and the central directory to 4e12
    # via zip64 is heavy; a 32-bit lie (0xFFFFFFF0) makes the same point
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0]
    size = info.file_size.to_bytes(4, "little")
    data = data.replace(size, (0xFFFFFFF0).to_bytes(4, "little"))
    path.write_bytes(bytes(data))
    refused(path)


def test_huge_declarations_stay_within_memory(tmp_path) -> None:
    """In a subprocess limited to 1 GiB of address space beyond what it has at start: the
    refusal allocates nothing of the declared 4 TB."""
    path = write_zip(tmp_path / "w.npz", {"0.weight.npy": huge_member((10**12,)),
                                          "x.npy": huge_member((10**6, 10**6))})
    code = textwrap.dedent(f"""
        import resource, sys
        import cnnir
        from cnnir import nn
        from cnnir.errors import CnnirError
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for call in (lambda: cnnir.load(nn.Linear(2, 2), {str(path)!r}),
                     lambda: cnnir.data.load_npz({str(path)!r})):
            try:
                call()
            except CnnirError as e:
                print(type(e).__name__)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - usage
        print("grown_kb", grown)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[:2] == ["ModelFormatError", "ModelFormatError"], out.stdout + out.stderr
    assert int(lines[3]) < 50_000  # KB


# -- mismatched contents --------------------------------------------------------------------

def test_wrong_shapes_missing_and_extra_keys_are_all_named(saved, tmp_path) -> None:
    _, state = saved
    state = dict(state)
    state["0.weight"] = np.zeros((3, 2, 2, 2), np.float32)  # model: (3, 2, 3, 3)
    del state["3.bias"]
    state["4.weight"] = np.zeros(2, np.float32)
    np.savez(tmp_path / "m.npz", **state)
    message = refused(tmp_path / "m.npz", "0.weight", "[3, 2, 2, 2]", "[3, 2, 3, 3]",
                      "missing keys: 3.bias", "unexpected keys: 4.weight")
    assert "strict=False" in message


def test_strict_false_skips_missing_and_extra_keys(saved, tmp_path) -> None:
    _, state = saved
    partial = {k: v for k, v in state.items() if k.startswith("3.")}
    partial["head.weight"] = np.zeros(2, np.float32)
    np.savez(tmp_path / "m.npz", **partial)
    model = cnnir.load(small_model(), tmp_path / "m.npz", strict=False)
    np.testing.assert_array_equal(np.asarray(model.state_dict()["3.weight"]),
                                  state["3.weight"])


@pytest.mark.parametrize("bad", [np.array(["a", "b", "c"]), np.zeros(3, np.complex64),
                                 np.zeros(3, dtype=[("a", "<f4")])])
def test_arrays_that_are_not_real_numbers_are_refused(saved, tmp_path, bad) -> None:
    _, state = saved
    state = dict(state)
    state["3.bias"] = bad.repeat(4 // 3 + 1)[:4] if bad.ndim else bad
    np.savez(tmp_path / "m.npz", **state)
    refused(tmp_path / "m.npz", "3.bias")


def test_integer_and_float64_weights_are_cast_to_the_parameter_dtype(saved, tmp_path) -> None:
    _, state = saved
    state = {k: v.astype(np.float64) for k, v in state.items()}
    state["3.bias"] = np.arange(4)
    np.savez(tmp_path / "m.npz", **state)
    model = cnnir.load(small_model(), tmp_path / "m.npz")
    bias = np.asarray(model.state_dict()["3.bias"])
    assert bias.dtype == np.float32
    np.testing.assert_array_equal(bias, [0, 1, 2, 3])


def test_data_load_npz_refuses_the_same_files(tmp_path) -> None:
    for name, members in {
            "huge": {"x.npy": huge_member((10**12,)), "y.npy": npy_bytes(np.zeros(2))},
            "objects": {"x.npy": npy_bytes(np.array([None, 1], object)),
                        "y.npy": npy_bytes(np.zeros(2))},
    }.items():
        with pytest.raises(CnnirError):
            cnnir.data.load_npz(write_zip(tmp_path / f"{name}.npz", members))
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04" + b"\0" * 10)
    with pytest.raises(CnnirError):
        cnnir.data.load_npz(tmp_path / "cut.npz")


# -- atomic saving --------------------------------------------------------------------------

WRITER = """
import sys, numpy as np, cnnir
from cnnir import nn
model = nn.Module()
model.big = nn.Parameter((1 << 23,))   # 32 MiB per save
model.big.data = np.full(1 << 23, float(sys.argv[2]), np.float32)
print("ready", flush=True)
while True:
    cnnir.save(model, sys.argv[1])
"""


def test_a_writer_killed_mid_write_leaves_the_previous_file_intact(tmp_path) -> None:
    path = tmp_path / "w.npz"
    old = nn.Module()
    old.big = nn.Parameter((4,))
    old.big.data = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    cnnir.save(old, path)
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "7"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        # wait until a temporary file is being written, then kill the writer in the middle
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".w.npz.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert list(tmp_path.glob(".w.npz.*.tmp")), "the writer never started a save"
        time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    leftovers = list(tmp_path.glob(".w.npz.*.tmp"))
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["w.npz"]
    if path.read_bytes() == before:  # killed during the first save: the old file
        loaded = cnnir.load(old, path)
        np.testing.assert_array_equal(np.asarray(loaded.big.data), [1.0, 2.0, 3.0, 4.0])
    else:  # killed during a later save: a whole earlier one
        with np.load(path) as data:
            np.testing.assert_array_equal(data["big"], np.full(1 << 23, 7.0, np.float32))
    for leftover in leftovers:  # a torn temporary file is never taken for the weights
        with pytest.raises(ModelFormatError):
            cnnir.load(old, leftover)
    assert os.path.getsize(path) > 0


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch,
                                                                   saved) -> None:
    path, state = saved
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(KeyboardInterrupt):
        cnnir.save(small_model(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.npz"]


def test_saving_an_object_array_is_refused(tmp_path) -> None:
    from cnnir.frontend.weights import write_npz

    with pytest.raises(ModelFormatError, match="numbers"):
        write_npz(tmp_path / "o.npz", {"a": np.array([None], object)})
    assert list(tmp_path.iterdir()) == []


def test_train_checkpoints_are_read_with_the_same_checks(tmp_path) -> None:
    from cnnir.trainer import read_checkpoint

    path = write_zip(tmp_path / "ckpt.npz", {"meta.npy": huge_member((10**12,))})
    with pytest.raises(ModelFormatError, match="checkpoint"):
        read_checkpoint(path)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ckpt.npz").read_bytes()[:40])
    with pytest.raises(ModelFormatError, match="checkpoint"):
        read_checkpoint(tmp_path / "cut.npz")
