"""``cnnir train`` end to end: checkpoints, exact resume, divergence, bad input, curves, and
the digits example's accuracy."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cnnir.cli import main
from cnnir.trainer import SCHEDULERS, Trainer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# conv-BN-ReLU-pool then dropout and a linear layer: every kind of state a checkpoint holds
# (weights, BatchNorm buffers, optimizer moments) and a random op that resume must replay
TINY_MODEL = textwrap.dedent("""\
    from cnnir import nn

    def tiny():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.MaxPool2d(4), nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, 3))

    model = tiny
    input_shape = ("N", 1, 8, 8)
    """)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder with the tiny model and 240 8x8 images of 3 classes (a bright square whose
    place gives the class, plus noise)."""
    folder = tmp_path_factory.mktemp("train")
    (folder / "tiny.py").write_text(TINY_MODEL)
    rng = np.random.default_rng(0)
    y = np.arange(240) % 3
    x = rng.normal(0, 0.3, (240, 1, 8, 8)).astype(np.float32)
    for c in range(3):
        x[y == c, 0, 2 * c:2 * c + 3, 2 * c:2 * c + 3] += 1.0
    np.savez(folder / "data.npz", x=x, y=y)
    return folder


def train(capsys, files: Path, *flags: str) -> tuple[int, str, str]:
    code = main(["train", str(files / "tiny.py"), "--data", str(files / "data.npz"),
                 "--no-progress", *flags])
    out, err = capsys.readouterr()
    return code, out, err


def arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def assert_same_state(a: Path, b: Path) -> None:
    """Every weight, buffer and optimizer array of two checkpoints equal bit for bit."""
    first, second = arrays(a), arrays(b)
    tensors = [k for k in first if k.startswith(("model/", "optimizer/state/"))]
    assert tensors and set(tensors) == {k for k in second if k.startswith(("model/",
                                                                          "optimizer/state/"))}
    for key in tensors:
        assert np.array_equal(first[key], second[key]), key
    for key in ("optimizer/param_groups", "scheduler"):
        assert json.loads(str(first[key])) == json.loads(str(second[key])), key


def test_train_prints_epochs_and_writes_a_complete_checkpoint(capsys, files, tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    code, out, err = train(capsys, files, "--epochs", "2", "--checkpoint", str(ckpt))
    assert code == 0, err
    lines = out.splitlines()
    assert re.match(r"epoch 1/2  train loss \d\.\d{4} acc \d\.\d{4}  val loss \d\.\d{4} acc "
                    r"\d\.\d{4}  lr 0\.003  \d+\.\d s", lines[0])
    assert lines[1].startswith("epoch 2/2") and "trained 2 epochs" in out
    saved = arrays(ckpt)
    assert {"model/0.weight", "model/1.running_var", "model/1.num_batches_tracked",
            "model/6.bias", "optimizer/state/0/exp_avg", "optimizer/state/0/step"} <= set(saved)
    assert saved["optimizer/state/0/step"] == 2 * 6  # 192 training examples, batches of 32
    groups = json.loads(str(saved["optimizer/param_groups"]))
    assert groups[0]["lr"] == 0.003 and groups[0]["betas"] == [0.9, 0.999]
    assert json.loads(str(saved["scheduler"])) is None
    meta = json.loads(str(saved["meta"]))
    assert meta["epoch"] == 2 and meta["optimizer"] == "adam" and meta["seed"] == 0
    assert [r["epoch"] for r in meta["history"]] == [1, 2]
    assert set(meta["history"][0]) == {"epoch", "train_loss", "train_acc", "val_loss",
                                       "val_acc", "lr", "seconds"}
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed


def test_resuming_to_more_epochs_equals_one_longer_run(capsys, files, tmp_path):
    flags = ["--scheduler", "step", "--step-size", "1", "--gamma", "0.7"]
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    assert train(capsys, files, "--epochs", "4", "--checkpoint", str(whole), *flags)[0] == 0
    assert train(capsys, files, "--epochs", "2", "--checkpoint", str(part), *flags)[0] == 0
    code, out, _ = train(capsys, files, "--epochs", "4", "--checkpoint", str(part), "--resume",
                         *flags)
    assert code == 0 and out.startswith(f"resumed from {part} after epoch 2\nepoch 3/4")
    assert_same_state(whole, part)
    history = json.loads(str(arrays(part)["meta"]))["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]


def test_an_interrupted_run_resumes_bit_for_bit(capsys, files, tmp_path, monkeypatch):
    """Killed after epoch 2 of 3 (per-batch one-cycle schedule, SGD with momentum), then
    resumed with the same command."""
    flags = ["--epochs", "3", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9",
             "--scheduler", "onecycle"]
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    assert train(capsys, files, *flags, "--checkpoint", str(whole))[0] == 0
    save = Trainer.save_checkpoint

    def save_then_die(self, epoch):
        save(self, epoch)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(capsys, files, *flags, "--checkpoint", str(part))
    monkeypatch.undo()
    assert json.loads(str(arrays(part)["meta"]))["epoch"] == 2
    assert train(capsys, files, *flags, "--checkpoint", str(part), "--resume")[0] == 0
    assert_same_state(whole, part)


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(capsys, files, tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    # lr 0.1 for epoch 1, then 1e29: the weights overflow early in epoch 2
    code, out, err = train(capsys, files, "--epochs", "3", "--optimizer", "sgd", "--lr", "0.1",
                           "--scheduler", "exponential", "--gamma", "1e30",
                           "--checkpoint", str(ckpt))
    assert code == 1
    assert re.search(r"CnnirError: the loss became (nan|inf) at epoch 2, step \d+ of 6: "
                     rf"training stopped; {re.escape(str(ckpt))} still holds epoch 1", err)
    assert out.startswith("epoch 1/3") and "epoch 2/3" not in out
    saved = arrays(ckpt)
    assert json.loads(str(saved["meta"]))["epoch"] == 1
    assert all(np.isfinite(v).all() for k, v in saved.items() if k.startswith("model/"))


def bad_data(folder: Path, **arrays: np.ndarray) -> str:
    path = folder / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


X = np.zeros((30, 1, 8, 8), np.float32)
Y = np.arange(30) % 3


@pytest.mark.parametrize("data, message", [
    ({"x": X[:, 0], "y": Y}, r"'x' has shape \(30, 8, 8\), but the model's input_shape needs "
                             r"\(N, 1, 8, 8\)"),
    ({"x": X.astype(np.uint8), "y": Y}, "'x' is uint8; the model takes floats"),
    ({"x": X, "y": Y + 1}, "'y' holds labels 1..3, but the model has 3 output classes"),
    ({"x": X, "y": Y.astype(np.float32)}, "one integer class index per example"),
    ({"x": X}, "has no array 'y'"),
    ({"x": X, "y": Y, "x_val": X[:, :, :4], "y_val": Y}, "x_val examples are"),
])
def test_bad_data_is_refused_before_training(capsys, files, tmp_path, data, message):
    code, out, err = main(["train", str(files / "tiny.py"), "--data",
                           bad_data(tmp_path, **data)]), *capsys.readouterr()
    assert code == 1 and re.search(message, err), err
    assert "epoch" not in out


@pytest.mark.parametrize("flags, message", [
    (["--resume"], "--resume needs --checkpoint"),
    (["--resume", "--checkpoint", "missing.npz"], "no checkpoint missing.npz to resume from"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum applies to sgd and rmsprop"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--scheduler", "plateau", "--val-split", "0"], "plateau watches the validation loss"),
])
def test_bad_options_are_refused_before_training(capsys, files, flags, message):
    code, out, err = train(capsys, files, *flags)
    assert code == 1 and message in err, err
    assert "epoch 1" not in out


def test_resume_refuses_a_checkpoint_of_another_run(capsys, files, tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    assert train(capsys, files, "--epochs", "1", "--checkpoint", str(ckpt))[0] == 0
    code, _, err = train(capsys, files, "--epochs", "2", "--checkpoint", str(ckpt), "--resume",
                         "--seed", "1")
    assert code == 1 and "written with seed 0, this run has 1" in err


def test_missing_matplotlib_is_named_before_training(capsys, files, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = train(capsys, files, "--plot", str(tmp_path / "curves.png"))
    assert code == 1 and 'pip install "cnnir[plot]"' in err and "matplotlib" in err
    assert "epoch" not in out


def test_plot_writes_the_curves(capsys, files, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    code, out, _ = train(capsys, files, "--epochs", "2", "--plot", str(png))
    assert code == 0 and f"curves: {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("scheduler", [s for s in SCHEDULERS if s != "none"])
def test_every_scheduler_trains(capsys, files, scheduler):
    code, out, err = train(capsys, files, "--epochs", "2", "--scheduler", scheduler,
                           "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9")
    assert code == 0, err
    assert out.count("epoch ") == 2


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "adagrad", "adadelta", "rmsprop"])
def test_every_optimizer_trains(capsys, files, optimizer):
    code, out, err = train(capsys, files, "--epochs", "1", "--optimizer", optimizer)
    assert code == 0 and "epoch 1/1" in out, err


def test_the_model_file_may_define_loss_and_optimizer(capsys, files, tmp_path):
    model = tmp_path / "custom.py"
    model.write_text(TINY_MODEL + textwrap.dedent("""\
        from cnnir import optim

        loss = nn.CrossEntropyLoss(label_smoothing=0.1)

        def optimizer(params):
            return optim.SGD(params, lr=0.2)
        """))
    ckpt = tmp_path / "ckpt.npz"
    code = main(["train", str(model), "--data", str(files / "data.npz"), "--epochs", "1",
                 "--no-progress", "--checkpoint", str(ckpt)])
    out, err = capsys.readouterr()
    assert code == 0 and "lr 0.2" in out, err
    assert json.loads(str(arrays(ckpt)["meta"]))["optimizer"] == "sgd"


def test_digits_reaches_97_percent_in_ten_epochs(capsys):
    code = main(["train", str(EXAMPLES / "digits.py"), "--epochs", "10", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    accuracy = float(re.search(r"validation accuracy (\d\.\d+)", out).group(1))
    assert accuracy >= 0.97, out


def test_a_custom_loss_reports_its_validation_loss_and_no_accuracy(capsys, files, tmp_path):
    """Float targets under MSE: the validation loss comes from the compiled eval graph."""
    model = tmp_path / "regress.py"
    model.write_text(TINY_MODEL + "loss = nn.MSELoss()\n")
    with np.load(files / "data.npz") as npz:
        x, y = npz["x"], np.eye(3, dtype=np.float32)[npz["y"]]
    code = main(["train", str(model), "--data", bad_data(tmp_path, x=x, y=y), "--epochs", "1",
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert re.match(r"epoch 1/1  train loss \d\.\d{4} acc -  val loss \d\.\d{4} acc -", out)


def test_resuming_past_the_end_of_a_one_cycle_schedule_is_refused(capsys, files, tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    flags = ["--scheduler", "onecycle", "--checkpoint", str(ckpt)]
    assert train(capsys, files, "--epochs", "1", *flags)[0] == 0
    code, out, err = train(capsys, files, "--epochs", "2", "--resume", *flags)
    assert code == 1
    assert "one-cycle schedule ends after 6 steps, and --epochs 2 of 6 batches needs 12" in err
