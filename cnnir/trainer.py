"""``cnnir train``: fit a model file's network to a data set, with a progress bar, a summary
line per epoch, atomic checkpoints, exact resume and loss/accuracy curves.

    >>> from cnnir.trainer import TrainConfig, fit
    >>> result = fit(TrainConfig("examples/digits.py", epochs=10, checkpoint="run/ckpt.npz"))
    >>> result.history[-1]["val_acc"]
    0.977...

The model file is the command line's (``model`` and ``input_shape``); it may also define
``loss`` (``(output, target) -> scalar``; default ``nn.CrossEntropyLoss()``) and
``optimizer`` (``params -> Optimizer``; default: the one the options name). The training step
is ``cnnir.compile_train``'s single graph: forward, generated backward and the update.

Determinism. Every random choice derives from ``seed``: the parameters' initial values
(``nn.manual_seed(seed)`` before the file runs), the stratified train/validation split, and
for epoch ``e`` the order of the examples and the dropout masks (generators seeded from
``(seed, e)``, drawn afresh at the start of each epoch). So a run stopped after epoch k and
resumed from its checkpoint computes exactly what the uninterrupted run computes: the same
weights, bit for bit. Convolution algorithms are fixed (``tune=False``), never chosen by
timing. A schedule whose length depends on ``epochs`` (cosine, onecycle and the default
step/multistep periods) continues as the checkpoint saved it: resuming with a larger
``epochs`` extends the old schedule rather than replaying a longer one.

Checkpoint (``.npz``, written to a temporary file in the same folder then renamed, read
without pickle): ``model/<state_dict key>`` arrays; ``optimizer/state/<i>/<name>`` arrays and
``optimizer/param_groups`` (JSON) as in ``Optimizer.state_dict()``; ``scheduler`` (JSON of
``state_dict()``, ``null`` without one); ``meta`` (JSON: format, epoch, seed, data,
val_split, optimizer and scheduler names, and the per-epoch history).

Validation runs the eval-mode network followed by the loss as one compiled graph
(BatchNorm folded at compile time, so it is recompiled each epoch), on chunks of
``EVAL_CHUNK`` examples: the validation loss is the chunk losses weighted by chunk size,
which is the loss of the whole set for a mean-reduced loss. Accuracy is the argmax of a
``(N, classes)`` output against integer labels; other outputs report none.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnir import data as datasets
from cnnir import distributed as dist
from cnnir import nn, optim
from cnnir.api import compile as compile_graph
from cnnir.api import input_types, trace
from cnnir.errors import CnnirError
from cnnir.frontend.model_file import instantiate, run_user_file, split_spec
from cnnir.frontend.module import Module
from cnnir.frontend.weights import read_npz, write_npz
from cnnir.ir import TensorType
from cnnir.optim import lr_scheduler
from cnnir.plots import plot_history, require_matplotlib
from cnnir.train import compile_train, with_output

OPTIMIZERS: dict[str, type[optim.Optimizer]] = {
    "sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW, "adagrad": optim.Adagrad,
    "adadelta": optim.Adadelta, "rmsprop": optim.RMSprop}
# --lr when not given: 3e-3 for Adam and AdamW (the digits recipe), else PyTorch's default
DEFAULT_LR = {"sgd": 1e-3, "adam": 3e-3, "adamw": 3e-3, "adagrad": 1e-2, "adadelta": 1.0,
              "rmsprop": 1e-2}
SCHEDULERS = ("none", "step", "multistep", "exponential", "cosine", "plateau", "cyclic",
              "onecycle", "linear")
PER_BATCH = ("cyclic", "onecycle")  # stepped after every batch; the others once per epoch
BACKENDS = ("numba", "reference")
EVAL_CHUNK = 1000
CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    """The options of ``cnnir train`` (the flags of the same names)."""

    model: str
    data: str = "digits"
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float | None = None  # DEFAULT_LR[optimizer]
    momentum: float = 0.0  # sgd, rmsprop
    weight_decay: float | None = None  # the optimizer's default (AdamW 1e-2, others 0)
    nesterov: bool = False  # sgd
    scheduler: str = "none"
    step_size: int | None = None  # epochs: StepLR's period (epochs // 3), CyclicLR's half (2)
    gamma: float | None = None  # step and multistep 0.1, exponential 0.9
    milestones: tuple[int, ...] | None = None  # multistep: epochs // 2 and 3 * epochs // 4
    eta_min: float = 0.0  # cosine (T_max = epochs)
    factor: float = 0.1  # plateau
    patience: int = 10  # plateau
    max_lr: float | None = None  # cyclic and onecycle peak: lr
    base_lr: float | None = None  # cyclic floor: max_lr / 10
    start_factor: float = 1.0 / 3  # linear
    total_iters: int = 5  # linear
    seed: int = 0
    val_split: float = 0.2
    input_shape: Any = None  # overrides the file's input_shape
    checkpoint: str | None = None
    resume: bool = False
    plot: str | None = None
    backend: str = "numba"
    progress: bool | None = None  # a tqdm bar; None: when stderr is a terminal


@dataclass
class FitResult:
    """What ``fit`` leaves: the trained model and one metrics dict per epoch (``epoch``,
    ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``lr``, ``seconds``)."""

    model: Module
    history: list[dict[str, Any]] = field(default_factory=list)
    leader: bool = True  # False on MPI ranks other than 0, which report nothing

    def summary(self) -> str:
        if not self.history:
            return "no epochs trained"
        last = self.history[-1]
        text = f"trained {last['epoch']} epochs"
        if last["val_acc"] is not None:
            text += f": validation accuracy {last['val_acc']:.4f}"
        return text


def fit(config: TrainConfig, log: Callable[[str], None] = print) -> FitResult:
    """Train as ``config`` says (see the module docstring); ``log`` receives the summary
    line of each epoch. Started by ``mpiexec`` on several ranks, it trains data-parallel
    (see ``Trainer``): an error on any rank ends the whole job, naming the rank."""
    if not dist.launched_by_mpi():
        return Trainer(config, log).fit()
    comm = dist.init()
    with dist.abort_on_error(comm):
        return Trainer(config, log, comm).fit()


# -- data -------------------------------------------------------------------------------------

@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None


def derived_seed(seed: int, epoch: int, stream: int) -> int:
    """An independent seed for ``stream`` (0: data order, 1 + r: dropout on MPI rank r) of
    ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def _expected_example_shape(input_shape: Any, model_file: str) -> tuple[int | str, ...]:
    types = input_types(input_shape)
    if len(types) != 1:
        raise CnnirError(f"cnnir train feeds one input array, but {model_file} declares "
                         f"{len(types)} inputs",
                         hint="train multi-input networks with cnnir.compile_train in Python "
                              "(see examples/siamese_digits.py)")
    return tuple(types[0].shape[1:])


def check_examples(name: str, x: np.ndarray, shape: tuple[int | str, ...]) -> None:
    """``x`` holds finite floats of the model's example ``shape`` (symbols match anything)."""
    fits = x.ndim == len(shape) + 1 and all(
        isinstance(d, str) or d == n for d, n in zip(shape, x.shape[1:]))
    if not fits:
        want = "(N, " + ", ".join(str(d) for d in shape) + ")"
        raise CnnirError(f"data array {name!r} has shape {x.shape}, but the model's "
                         f"input_shape needs {want}",
                         hint="reshape the data (e.g. x[:, None] adds the channel axis) or "
                              "fix input_shape in the model file")
    if x.dtype.kind != "f":
        raise CnnirError(f"data array {name!r} is {x.dtype}; the model takes floats",
                         hint="store floats, e.g. x.astype(np.float32) / 255 for 8-bit pixels")
    if not np.isfinite(x).all():
        raise CnnirError(f"data array {name!r} holds NaN or infinite values")


def check_labels(name: str, y: np.ndarray, classes: int) -> None:
    """Class indices for cross-entropy: integers in ``0..classes-1``, one per example."""
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise CnnirError(f"data array {name!r} is {y.dtype} of shape {y.shape}; the default "
                         f"cross-entropy loss needs one integer class index per example",
                         hint="store labels as integers, or define `loss` in the model file")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise CnnirError(f"data array {name!r} holds labels {y.min()}..{y.max()}, but the "
                         f"model has {classes} output classes (labels 0..{classes - 1})",
                         hint="relabel the data or change the model's last layer")


# -- checkpoints ------------------------------------------------------------------------------

def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of a checkpoint, read without pickle."""
    arrays = read_npz(path, "the checkpoint",
                      hint="checkpoints are .npz files written by cnnir train")
    if "meta" not in arrays or "optimizer/param_groups" not in arrays:
        raise CnnirError(f"{path} is not a cnnir train checkpoint (no meta or optimizer "
                         "state)", hint="weights saved with cnnir.save load with cnnir.load")
    return arrays


def _json(value: Any) -> np.ndarray:
    return np.array(json.dumps(value, default=float))


def optimizer_arrays(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """``Optimizer.state_dict()`` as checkpoint arrays."""
    arrays = {f"optimizer/state/{index}/{key}": np.asarray(value)
              for index, slots in state["state"].items() for key, value in slots.items()}
    arrays["optimizer/param_groups"] = _json(state["param_groups"])
    return arrays


def optimizer_state(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The inverse of ``optimizer_arrays``."""
    state: dict[int, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("optimizer/state/"):
            index, name = key[len("optimizer/state/"):].split("/", 1)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": json.loads(str(arrays["optimizer/param_groups"]))}


# -- the model file ---------------------------------------------------------------------------

@dataclass
class TrainingFile:
    """What a model file gives training: the network, its input shape, the loss (and whether
    it is the default cross-entropy) and an optional ``optimizer(params)`` factory."""

    model: Module
    input_shape: Any
    loss: Callable[..., Any]
    default_loss: bool
    optimizer: Callable[..., Any] | None


def load_training_file(spec: str, input_shape: Any, seed: int) -> TrainingFile:
    """Run the model file ``path.py[:NAME]`` with parameter initializers seeded by ``seed``."""
    path, name = split_spec(spec)
    if not path.endswith(".py"):
        raise CnnirError(f"cnnir train takes a .py model file, got {path}",
                         hint="an .onnx model has no Python loss or training code")
    nn.manual_seed(seed)
    namespace = run_user_file(path)
    key = name or "model"
    if key not in namespace:
        raise CnnirError(f"{path} defines no {key!r}",
                         hint="define `model` (an nn.Module or a builder) and `input_shape`")
    model = instantiate(namespace[key], f"{path}:{key}")
    shape = (input_shape or getattr(namespace[key], "input_shape", None)
             or namespace.get("input_shape"))
    if shape is None:
        raise CnnirError(f"{path} defines no input_shape",
                         hint="add input_shape = ('N', 1, 8, 8) or pass --input-shape")
    loss = namespace.get("loss")
    return TrainingFile(model.train(), shape, nn.CrossEntropyLoss() if loss is None else loss,
                        loss is None, namespace.get("optimizer"))


# -- the trainer -------------------------------------------------------------------------------

class Trainer:
    """Everything ``fit`` needs, checked before the first step: the model file, the data
    against the model, the optimizer, the scheduler and, with ``resume``, the checkpoint."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None] = print,
                 comm: dist.Communicator | None = None) -> None:
        self.comm = comm
        self.leader = self.comm is None or self.comm.rank == 0
        self.config, self.log = config, (log if self.leader else _silent)
        check_config(config)
        self.file = load_training_file(config.model, config.input_shape, config.seed)
        self.model, self.loss = self.file.model, self.file.loss
        self.classes = self._classes()
        self.data = self._load_data()
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.history: list[dict[str, Any]] = []
        self.start_epoch = self._restore() if config.resume else 0
        options = {"tune": False} if config.backend == "numba" else {}
        self.step = compile_train(self.model, self.loss, self.optimizer,
                                  inputs=("N", *self.data.x.shape[1:]),
                                  targets=("N", *self.data.y.shape[1:]),
                                  backend=config.backend, seed=config.seed, comm=self.comm,
                                  **options)

    # -- setup ---------------------------------------------------------------------------
    def _classes(self) -> int | None:
        """The width of a ``(N, classes)`` output (None for other outputs)."""
        example = _expected_example_shape(self.file.input_shape, self.config.model)
        graph = trace(self.model, ("N", *example), training=False)
        out = graph.outputs[0].type.shape
        if len(out) == 2 and isinstance(out[1], int):
            return out[1]
        if self.file.default_loss:
            raise CnnirError(f"the default cross-entropy loss needs (N, classes) outputs, but "
                             f"{self.config.model} outputs {list(out)}",
                             hint="define `loss` in the model file")
        return None

    def _load_data(self) -> Split:
        config = self.config
        ds = datasets.load(config.data)
        example = _expected_example_shape(self.file.input_shape, config.model)
        pairs = [("x", ds.x, "y", ds.y)]
        if ds.x_val is not None:
            pairs.append(("x_val", ds.x_val, "y_val", ds.y_val))
        for x_name, x, y_name, y in pairs:
            check_examples(x_name, x, example)
            if self.file.default_loss:
                check_labels(y_name, y, self.classes)
        x, y = self._cast(ds.x), self._targets(ds.y)
        if ds.x_val is not None:
            return Split(x, y, self._cast(ds.x_val), self._targets(ds.y_val))
        if config.val_split == 0:
            return Split(x, y, None, None)
        classes = y.ndim == 1 and y.dtype.kind in "iu"
        x, x_val, y, y_val = datasets.split(x, y, config.val_split, seed=config.seed,
                                            stratify=classes)
        return Split(x, y, x_val, y_val)

    def _cast(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=next(iter(self.model.parameters())).data.dtype)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Class indices as int64 (what cross-entropy's targets are), others as floats."""
        return y.astype(np.int64) if y.dtype.kind in "iu" else self._cast(y)

    def _make_optimizer(self) -> optim.Optimizer:
        config = self.config
        if self.file.optimizer is not None:
            opt = self.file.optimizer(self.model.parameters())
            if not isinstance(opt, optim.Optimizer):
                raise CnnirError(f"optimizer(params) in {config.model} returned a "
                                 f"{type(opt).__name__}, not a cnnir.optim optimizer")
            return opt
        options: dict[str, Any] = {"lr": _learning_rate(config)}
        if config.weight_decay is not None:
            options["weight_decay"] = config.weight_decay
        if config.optimizer in ("sgd", "rmsprop"):
            options["momentum"] = config.momentum
        elif config.momentum:
            raise CnnirError(f"--momentum applies to sgd and rmsprop, not {config.optimizer}",
                             hint="adam's momentum is its first beta")
        if config.nesterov:
            if config.optimizer != "sgd":
                raise CnnirError("--nesterov applies to sgd only")
            options["nesterov"] = True
        return OPTIMIZERS[config.optimizer](self.model.parameters(), **options)

    def _make_scheduler(self) -> Any:
        config = self.config
        if config.scheduler == "none":
            return None
        if config.scheduler == "plateau" and self.data.x_val is None:
            raise CnnirError("--scheduler plateau watches the validation loss, and this run "
                             "has no validation data", hint="give --val-split > 0")
        steps = len(self.loader(0))
        try:
            return _scheduler(config, self.optimizer, steps)
        except (ValueError, KeyError, TypeError) as err:
            raise CnnirError(f"cannot make the {config.scheduler} scheduler: {err}") from None

    def _restore(self) -> int:
        """Load the checkpoint's weights, optimizer and scheduler state and history; the
        epoch it was written after."""
        config = self.config
        arrays = read_checkpoint(config.checkpoint)
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise CnnirError(f"{config.checkpoint} has checkpoint format {meta.get('format')}, "
                             f"this cnnir reads format {CHECKPOINT_FORMAT}")
        for key in ("seed", "data", "val_split", "optimizer", "scheduler"):
            if meta[key] != self._meta()[key]:
                raise CnnirError(
                    f"{config.checkpoint} was written with {key} {meta[key]!r}, this run has "
                    f"{self._meta()[key]!r}",
                    hint="resume with the options of the interrupted run, or start afresh "
                         "without --resume")
        self.model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items()
                                    if k.startswith("model/")})
        self.optimizer.load_state_dict(optimizer_state(arrays))
        if self.scheduler is not None:
            self.scheduler.load_state_dict(json.loads(str(arrays["scheduler"])))
            self._check_schedule_length()
        self.history = meta["history"]
        return int(meta["epoch"])

    def _check_schedule_length(self) -> None:
        """A one-cycle schedule cannot step past its end (PyTorch raises there)."""
        if not isinstance(self.scheduler, lr_scheduler.OneCycleLR):
            return
        total = self.scheduler.total_steps
        steps = len(self.loader(0))
        if total < self.config.epochs * steps:
            raise CnnirError(f"the checkpoint's one-cycle schedule ends after {total} steps, "
                             f"and --epochs {self.config.epochs} of {steps} batches needs "
                             f"{self.config.epochs * steps}",
                             hint="resume with the interrupted run's --epochs")

    def _meta(self) -> dict[str, Any]:
        optimizer = (type(self.optimizer).__name__.lower() if self.file.optimizer
                     else self.config.optimizer)
        return {"format": CHECKPOINT_FORMAT, "seed": self.config.seed, "data": self.config.data,
                "val_split": self.config.val_split, "optimizer": optimizer,
                "scheduler": self.config.scheduler}

    # -- training ------------------------------------------------------------------------
    def loader(self, epoch: int) -> datasets.Batches:
        """The epoch's batches in their seeded order; under MPI, this rank's shard of them
        (``--batch-size`` examples a rank)."""
        shard = ({"num_replicas": self.comm.size, "rank": self.comm.rank}
                 if self.comm is not None else {})
        return datasets.batches(self.data.x, self.data.y, batch_size=self.config.batch_size,
                                shuffle=True, seed=derived_seed(self.config.seed, epoch, 0),
                                **shard)

    def fit(self) -> FitResult:
        config = self.config
        if self.comm is not None and self.comm.size > 1:
            self.log(f"data-parallel on {self.comm.size} MPI ranks, batch size "
                     f"{config.batch_size} a rank")
        if self.start_epoch:
            self.log(f"resumed from {config.checkpoint} after epoch {self.start_epoch}")
        for epoch in range(self.start_epoch, config.epochs):
            record = self.train_epoch(epoch)
            self.history.append(record)
            self.log(format_record(record, config.epochs))
            if config.checkpoint and self.leader:
                self.save_checkpoint(epoch + 1)
        if config.plot and self.leader:
            plot_history(self.history, config.plot)
        return FitResult(self.model, self.history, self.leader)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training data, then validation and the epoch's scheduler step."""
        config, start = self.config, time.perf_counter()
        self.step.reseed(derived_seed(config.seed, epoch, 1 + self._rank()))
        loader = self.loader(epoch)
        total = Totals()
        with progress_bar(config, epoch, loader.count, self.leader) as bar:
            for index, (x, y) in enumerate(loader):
                lr = self.optimizer.param_groups[0]["lr"]
                with np.errstate(all="ignore"):  # a diverging run stops below, with a message
                    loss = self.step(x, y)
                if not math.isfinite(loss):
                    self._diverged(f"the loss became {loss}", epoch, index, len(loader))
                total.add(loss, _correct(self.step.output, y), len(x))
                if config.scheduler in PER_BATCH:
                    self.scheduler.step()
                bar.set_postfix(total.postfix(), refresh=False)
                bar.update(len(x))
        self._check_weights(epoch, len(loader))
        if self.comm is not None:  # every rank's examples, and rank 0's BatchNorm statistics
            total.combine(self.comm)
            self.comm.broadcast([b.data for b in self.model.buffers() if b.data.size])
        val_loss, val_acc = self.evaluate()
        if config.scheduler == "plateau":
            self.scheduler.step(val_loss)
        elif self.scheduler is not None and config.scheduler not in PER_BATCH:
            self.scheduler.step()
        return {"epoch": epoch + 1, "train_loss": total.loss(), "train_acc": total.accuracy(),
                "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
                "seconds": time.perf_counter() - start}

    def _rank(self) -> int:
        return 0 if self.comm is None else self.comm.rank

    def _diverged(self, what: str, epoch: int, index: int, steps: int) -> None:
        kept = (f"; {self.config.checkpoint} still holds epoch {epoch}"
                if self.config.checkpoint and epoch > 0 else "")
        raise CnnirError(f"{what} at epoch {epoch + 1}, step {index + 1} of {steps}: "
                         f"training stopped{kept}",
                         hint="lower --lr, or check the data for extreme values")

    def _check_weights(self, epoch: int, steps: int) -> None:
        """A finite loss can still leave non-finite weights after the last update: never
        checkpoint those."""
        for name, value in self.model.state_dict().items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                self._diverged(f"{name} became non-finite", epoch, steps - 1, steps)

    def evaluate(self) -> tuple[float | None, float | None]:
        """``(loss, accuracy)`` on the validation data (see the module docstring)."""
        if self.data.x_val is None:
            return None, None
        if not self.leader:  # rank 0 evaluates: every rank then steps the same schedule
            return self.comm.from_root(None)
        evaluator = self._evaluator()
        total = Totals()
        for x, y in datasets.batches(self.data.x_val, self.data.y_val, batch_size=EVAL_CHUNK):
            loss, output = evaluator(x, y)
            total.add(float(loss), _correct(output, y), len(x))
        result = total.loss(), total.accuracy()
        return result if self.comm is None else self.comm.from_root(result)

    def _evaluator(self) -> Any:
        wrapped = WithLoss(self.model, self.loss).eval()
        y = self.data.y
        specs = [("N", *self.data.x.shape[1:]), TensorType(("N", *y.shape[1:]), y.dtype.name)]
        options = {"tune": False} if self.config.backend == "numba" else {}
        try:
            return compile_graph(wrapped, specs, backend=self.config.backend,
                                 dtype=self.data.x.dtype.name, **options)
        finally:
            self.model.train()

    def save_checkpoint(self, epoch: int) -> None:
        arrays = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        arrays.update(optimizer_arrays(self.optimizer.state_dict()))
        state = self.scheduler.state_dict() if self.scheduler is not None else None
        arrays["scheduler"] = _json(state)
        arrays["meta"] = _json({**self._meta(), "epoch": epoch, "history": self.history})
        write_npz(self.config.checkpoint, arrays)


class WithLoss(Module):
    """The network followed by its loss: ``(loss, output)``, for validation."""

    def __init__(self, model: Module, loss: Callable[..., Any]) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, x: Any, target: Any) -> Any:
        return with_output(self.loss)(self.model(x), target)


class Totals:
    """Running sums over an epoch's batches: loss weighted by batch size, correct count."""

    def __init__(self) -> None:
        self.loss_sum, self.correct, self.count, self.scored = 0.0, 0, 0, True

    def add(self, loss: float, correct: int | None, count: int) -> None:
        self.loss_sum += loss * count
        self.count += count
        if correct is None:
            self.scored = False
        else:
            self.correct += correct

    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    def accuracy(self) -> float | None:
        return self.correct / max(self.count, 1) if self.scored else None

    def combine(self, comm: dist.Communicator) -> None:
        """The sums over every rank's examples (padding repeats count twice, as in PyTorch's
        DistributedSampler)."""
        sums = np.array([self.loss_sum, self.correct, self.count, int(self.scored)], np.float64)
        comm.sum_in_place(sums)
        self.loss_sum, self.correct, self.count = float(sums[0]), int(sums[1]), int(sums[2])
        self.scored = int(sums[3]) == comm.size

    def postfix(self) -> dict[str, str]:
        shown = {"loss": f"{self.loss():.4f}"}
        if self.scored:
            shown["acc"] = f"{self.accuracy():.4f}"
        return shown


def _silent(line: str) -> None:
    """The log of MPI ranks other than 0."""


def _correct(output: np.ndarray | None, y: np.ndarray) -> int | None:
    """How many argmax predictions of a ``(N, classes)`` output equal integer labels."""
    if output is None or output.ndim != 2 or y.ndim != 1 or y.dtype.kind not in "iu":
        return None
    return int((output.argmax(axis=1) == y).sum())


def format_record(record: dict[str, Any], epochs: int) -> str:
    """The summary line of one epoch."""
    def metric(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    width = len(str(epochs))
    return (f"epoch {record['epoch']:>{width}}/{epochs}  "
            f"train loss {metric(record['train_loss'])} acc {metric(record['train_acc'])}  "
            f"val loss {metric(record['val_loss'])} acc {metric(record['val_acc'])}  "
            f"lr {record['lr']:.3g}  {record['seconds']:.1f} s")


def progress_bar(config: TrainConfig, epoch: int, examples: int, shown: bool = True) -> Any:
    """A tqdm bar over the epoch's examples (rate in examples/s) on stderr; ``shown`` False
    (an MPI rank other than 0) keeps it off."""
    from tqdm import tqdm

    show = shown and (sys.stderr.isatty() if config.progress is None else config.progress)
    return tqdm(total=examples, desc=f"epoch {epoch + 1}/{config.epochs}", unit="ex",
                leave=False, disable=not show, file=sys.stderr, dynamic_ncols=True)


# -- options ------------------------------------------------------------------------------

def check_config(config: TrainConfig) -> None:
    """Option values that need no file read, and the checkpoint and plot prerequisites."""
    problems = [
        (config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}"),
        (config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}"),
        (0 <= config.val_split < 1, f"--val-split must be in [0, 1), got {config.val_split}"),
        (config.seed >= 0, f"--seed must be a non-negative integer, got {config.seed}"),
        (config.optimizer in OPTIMIZERS, f"unknown optimizer {config.optimizer!r} "
                                         f"(choose from {', '.join(OPTIMIZERS)})"),
        (config.scheduler in SCHEDULERS, f"unknown scheduler {config.scheduler!r} "
                                         f"(choose from {', '.join(SCHEDULERS)})"),
        (config.backend in BACKENDS, f"cnnir train runs on {' or '.join(BACKENDS)}, not "
                                     f"{config.backend!r}"),
        (not config.resume or config.checkpoint, "--resume needs --checkpoint FILE.npz"),
    ]
    for ok, message in problems:
        if not ok:
            raise CnnirError(message)
    if config.resume and not os.path.isfile(config.checkpoint):
        raise CnnirError(f"--resume: there is no checkpoint {config.checkpoint} to resume from",
                         hint="drop --resume to start a new run")
    for path in (config.checkpoint, config.plot):
        if path and not Path(path).resolve().parent.is_dir():
            raise CnnirError(f"cannot write {path}: its folder does not exist")
    if config.plot:
        require_matplotlib()


def _learning_rate(config: TrainConfig) -> float:
    return DEFAULT_LR[config.optimizer] if config.lr is None else config.lr


def _scheduler(config: TrainConfig, opt: optim.Optimizer, steps: int) -> Any:
    """The scheduler ``config.scheduler`` names, with the defaults ``TrainConfig`` lists;
    ``steps`` is the number of batches per epoch."""
    epochs, kind = config.epochs, config.scheduler
    if kind == "step":
        return lr_scheduler.StepLR(opt, config.step_size or max(1, epochs // 3),
                                   _gamma(config, 0.1))
    if kind == "multistep":
        milestones = config.milestones or (max(1, epochs // 2), max(1, 3 * epochs // 4))
        return lr_scheduler.MultiStepLR(opt, milestones, _gamma(config, 0.1))
    if kind == "exponential":
        return lr_scheduler.ExponentialLR(opt, _gamma(config, 0.9))
    if kind == "cosine":
        return lr_scheduler.CosineAnnealingLR(opt, epochs, config.eta_min)
    if kind == "plateau":
        return lr_scheduler.ReduceLROnPlateau(opt, factor=config.factor,
                                              patience=config.patience)
    if kind == "linear":
        return lr_scheduler.LinearLR(opt, config.start_factor, total_iters=config.total_iters)
    peak = config.max_lr or _learning_rate(config)
    cycles = _has_momentum(opt)
    if kind == "cyclic":
        return lr_scheduler.CyclicLR(opt, config.base_lr or peak / 10, peak,
                                     step_size_up=(config.step_size or 2) * steps,
                                     cycle_momentum=cycles)
    return lr_scheduler.OneCycleLR(opt, peak, epochs=epochs, steps_per_epoch=steps,
                                   cycle_momentum=cycles)


def _gamma(config: TrainConfig, default: float) -> float:
    return default if config.gamma is None else config.gamma


def _has_momentum(opt: optim.Optimizer) -> bool:
    """Whether the cyclic schedules may cycle momentum: Adam's first beta, or a momentum
    already on (cycling would switch on a momentum the user left off)."""
    group = opt.param_groups[0]
    return "betas" in group or group.get("momentum", 0) > 0


__all__ = ["FitResult", "TrainConfig", "Trainer", "fit", "read_checkpoint"]
