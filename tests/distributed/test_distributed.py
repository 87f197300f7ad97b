"""Data-parallel training on 2 MPI ranks (``mpiexec -n 2``, MPICH from the ``cnnir[mpi]``
wheels): each check is a job of ``ranks.py`` run as a subprocess with a time limit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnir
from cnnir import distributed as dist

RANKS = Path(__file__).with_name("ranks.py")
LIMIT_S = 240  # a hung collective fails the test instead of the CI job


def mpiexec() -> str:
    found = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or \
        shutil.which("mpiexec")
    assert found, "mpiexec not found: pip install 'cnnir[mpi]' (the test extra includes it)"
    return found


def run_job(*args: str, ranks: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, str(RANKS), *args],
                          capture_output=True, text=True, timeout=LIMIT_S)


@pytest.mark.parametrize("network", ["plain", "syncbn"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_two_ranks_match_one_process_on_both_shards(optimizer: str, dtype: str,
                                                    network: str) -> None:
    """Without BatchNorm, or with SyncBatchNorm against BatchNorm over both shards."""
    job = run_job("equivalence", optimizer, dtype, network)
    assert job.returncode == 0 and job.stdout.strip().endswith("OK"), job.stdout + job.stderr


def test_gradients_sent_in_many_buckets_during_the_backward() -> None:
    job = run_job("equivalence", "adam", "float64", "syncbn", "small-buckets")
    assert job.returncode == 0 and job.stdout.strip().endswith("OK"), job.stdout + job.stderr


def test_outputs_are_reported_final_while_the_program_runs() -> None:
    """Program.run's ``on_ready``: each output once, already holding its final value, and the
    gradients of late layers before the backward has finished."""
    from cnnir import nn

    nn.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 3))
    graph = cnnir.grad_graph(net, nn.CrossEntropyLoss(), inputs=(2, 1, 8, 8), targets=(2,))
    compiled = cnnir.compile(graph, tune=False)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 2])
    program = compiled.program((x.shape, y.shape))
    reported: dict[int, np.ndarray] = {}

    def on_ready(k: int, value: np.ndarray) -> None:
        assert k not in reported
        reported[k] = value.copy()

    outs = program.run([x, y], on_ready)
    assert sorted(reported) == list(range(len(outs)))
    for k, out in enumerate(outs):
        np.testing.assert_array_equal(reported[k], out)
    steps = [i for i, outputs in enumerate(program.ready) for _ in outputs]
    assert len(set(steps)) > 2  # spread over the steps, not all at the end

    job = run_job("equivalence", "sgd", "float64", "syncbn", "reference")
    assert job.returncode == 0 and job.stdout.strip().endswith("OK"), job.stdout + job.stderr


def test_a_failing_rank_ends_the_job_and_is_named() -> None:
    job = run_job("fail")
    assert job.returncode != 0
    assert "rank 1 of 2 failed: RuntimeError: injected failure" in job.stderr, job.stderr


def shard(n: int, replicas: int, rank: int, batch_size: int = 100, **kw) -> list[int]:
    got = cnnir.data.batches(np.arange(n), batch_size=batch_size, num_replicas=replicas,
                             rank=rank, **kw)
    return [int(i) for b in got for i in b[0]]


def test_shards_follow_distributed_sampler() -> None:
    # 10 examples on 4 ranks: padded to 12 by repeating the first two, every 4th from rank
    assert [shard(10, 4, r) for r in range(4)] == [[0, 4, 8], [1, 5, 9], [2, 6, 0],
                                                   [3, 7, 1]]
    # drop_last drops the tail instead (8 examples, 2 a rank), and the last partial batch
    dropped = [shard(10, 4, r, batch_size=2, drop_last=True) for r in range(4)]
    assert dropped == [[0, 4], [1, 5], [2, 6], [3, 7]]
    # shuffled: the same permutation on every rank, so the shards partition it
    order = np.random.default_rng(5).permutation(9)
    padded = np.resize(order, 10)
    for r in range(2):
        assert shard(9, 2, r, shuffle=True, seed=5) == padded[r::2].tolist()
    # 3 examples on 5 ranks: each rank gets one, the first two repeated
    assert [shard(3, 5, r) for r in range(5)] == [[0], [1], [2], [0], [1]]


def test_every_rank_gets_the_same_number_of_batches() -> None:
    lengths = {len(cnnir.data.batches(np.arange(103), batch_size=8, num_replicas=4, rank=r))
               for r in range(4)}
    assert lengths == {4}  # 26 examples a rank: three batches of 8 and one of 2


@pytest.mark.parametrize("kw,match", [(dict(num_replicas=0), "num_replicas"),
                                      (dict(num_replicas=2, rank=2), "rank must be"),
                                      (dict(num_replicas=4, drop_last=True), "cannot be shared")])
def test_bad_sharding_is_a_clear_error(kw, match) -> None:
    with pytest.raises(cnnir.CnnirError, match=match):
        cnnir.data.batches(np.arange(3), batch_size=1, **kw)


def test_one_rank_communicator_needs_no_peers() -> None:
    comm = dist.init()
    assert (comm.rank, comm.size) == (0, 1)
    a = np.arange(4.0)
    average = dist.GradientAverage(comm, [4], a.dtype)
    average.ready(0, a)
    assert average.finish()[0].tolist() == [0.0, 1.0, 2.0, 3.0]  # one rank: its own
    comm.broadcast([a])
    moments = np.array([[1.0, 2.0], [0.5, 0.25]])
    assert comm.moments(moments, 7) == 7 and moments.tolist() == [[1.0, 2.0], [0.5, 0.25]]
    assert a.tolist() == [0.0, 1.0, 2.0, 3.0] and comm.from_root((2.5, None)) == (2.5, None)


def test_missing_mpi4py_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)  # an earlier test may have loaded it
    with pytest.raises(cnnir.CnnirError, match=r"cnnir\[mpi\]"):
        dist.init()


ROOT = Path(__file__).resolve().parents[2]


def test_cnnir_train_on_two_ranks_then_resumed_on_one(tmp_path: Path) -> None:
    """``mpiexec -n 2 cnnir train examples/digits.py`` reaches one rank's accuracy; only rank
    0 reports and writes the checkpoint, which one process then resumes."""
    from cnnir.trainer import TrainConfig, fit, read_checkpoint

    ckpt = tmp_path / "ckpt.npz"
    job = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "cnnir.cli", "train",
                          str(ROOT / "examples" / "digits.py"), "--epochs", "10",
                          "--checkpoint", str(ckpt)],
                         capture_output=True, text=True, timeout=LIMIT_S, cwd=tmp_path)
    assert job.returncode == 0, job.stdout + job.stderr
    assert job.stdout.count("trained 10 epochs") == 1  # rank 1 prints nothing
    assert "data-parallel on 2 MPI ranks" in job.stdout
    history = json.loads(str(read_checkpoint(ckpt)["meta"]))["history"]
    assert len(history) == 10 and history[-1]["val_acc"] >= 0.97
    resumed = fit(TrainConfig(str(ROOT / "examples" / "digits.py"), epochs=11,
                              checkpoint=str(ckpt), resume=True), log=lambda line: None)
    assert resumed.history[:10] == history and len(resumed.history) == 11
    assert resumed.history[-1]["val_acc"] >= 0.95


def test_convert_sync_batchnorm_keeps_arrays_order_and_mode() -> None:
    from cnnir import nn

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4),
                        nn.Sequential(nn.Flatten(), nn.BatchNorm1d(144)), nn.InstanceNorm2d(4))
    net.eval()
    weight, mean = net[1].weight, net[1].running_mean
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert converted is net and list(net._modules) == ["0", "1", "2", "3"]
    assert isinstance(net[1], nn.SyncBatchNorm) and isinstance(net[2][1], nn.SyncBatchNorm)
    assert type(net[3]) is nn.InstanceNorm2d  # not a BatchNorm
    assert net[1].weight is weight and net[1].running_mean is mean and not net[1].training
    single = nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm2d(3))
    assert isinstance(single, nn.SyncBatchNorm) and single.num_features == 3


def test_sync_batchnorm_refuses_a_process_group() -> None:
    from cnnir import nn

    with pytest.raises(cnnir.CnnirError, match="process_group"):
        nn.SyncBatchNorm(4, process_group=object())
