"""The ``cnnir`` command line.

    cnnir analyze  MODEL [--input-shape 1x3x224x224 ...] [--format table|json|csv|markdown]
                         [--depth N] [--passes p1,p2] [-O] [--option KEY=VALUE ...]
    cnnir optimize MODEL --passes p1,p2 [-O] [--format table|json] [-o out.onnx]
                         [--option KEY=VALUE ...]
    cnnir run      MODEL [--backend numba|reference|cuda] [--repeat N] [--dtype float32]
    cnnir export   MODEL -o model.onnx [--opset 19]
    cnnir graph    MODEL [--format text|dot]
    cnnir train    MODEL [--data digits|mnist5k|file.npz] [--epochs N] [--optimizer adam ...]
                         [--scheduler none|step|...] [--checkpoint f.npz [--resume]]
                         [--plot f.png]

MODEL is ``path.py``, ``path.py:NAME`` or ``path.onnx``. Loading a .py model file RUNS it,
exactly like ``python path.py``: only analyze files you trust. An .onnx file runs no code.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from cnnir.errors import CnnirError

MODEL_HELP = ("path.py, path.py:NAME or path.onnx. A .py file is executed exactly like "
              "`python path.py` (only load files you trust); it defines `model` and "
              "`input_shape`. An .onnx file is imported and runs no code")


def parse_shape(text: str) -> tuple[int | str, ...]:
    """``1x3x224x224`` -> (1, 3, 224, 224); symbols allowed: ``Nx3x224x224``."""
    try:
        return tuple(int(d) if d.isdigit() else _symbol(d) for d in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: {e}") from None


def _symbol(text: str) -> str:
    if not text.isidentifier():
        raise ValueError(f"{text!r} is neither a size nor a symbol name")
    return text.upper()


def _shapes(args: argparse.Namespace) -> object:
    if not args.input_shape:
        return None
    return args.input_shape[0] if len(args.input_shape) == 1 else list(args.input_shape)


def _load_graph(args: argparse.Namespace):
    """The model's graph; with ``--training`` its gradient graph (``cnnir.analyze``'s
    training analysis: forward in training mode, backward from the sum of the outputs)."""
    from cnnir.api import _with_loss, trace
    from cnnir.frontend.model_file import load_model_file
    from cnnir.grad import grad_graph, sum_of_outputs

    training = getattr(args, "training", False)
    if args.model.endswith(".onnx"):
        from cnnir.frontend.onnx_import import load

        graph = load(args.model, input_shapes=args.input_shape)
        return grad_graph(_with_loss(graph)) if training else graph
    loaded = load_model_file(args.model, _shapes(args))
    if training:
        return grad_graph(loaded.module, sum_of_outputs, loaded.inputs)
    return trace(loaded.module, loaded.inputs, training=False, name=loaded.name)


def parse_option(text: str) -> tuple[str, object]:
    """``width=32`` -> ("width", 32); values read as int, float, true/false/none or text;
    dashes in the key become underscores (``stride-position=last``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"bad option {text!r}: expected KEY=VALUE")
    words = {"true": True, "false": False, "none": None}
    if raw.lower() in words:
        return key.replace("-", "_"), words[raw.lower()]
    for kind in (int, float):
        try:
            return key.replace("-", "_"), kind(raw)
        except ValueError:
            pass
    return key.replace("-", "_"), raw


def _pass_names(args: argparse.Namespace) -> list[str]:
    from cnnir.passes.manager import DEFAULT_INFERENCE_PIPELINE

    names = list(DEFAULT_INFERENCE_PIPELINE) if args.O else []
    names += [n.strip() for n in (args.passes or "").split(",") if n.strip()]
    return names


def _optimized(args: argparse.Namespace, graph):
    """``(graph after the passes, PassResult or None)``."""
    from cnnir.api import run_passes

    names = _pass_names(args)
    if not names:
        if args.option:
            raise CnnirError("--option needs passes to apply to", hint="add --passes or -O")
        return graph, None
    result = run_passes(graph, names, **dict(args.option or []))
    return result.graph, result


def cmd_analyze(args: argparse.Namespace) -> str:
    from cnnir import report
    from cnnir.passes.cost import analyze_graph

    rep = analyze_graph(_optimized(args, _load_graph(args))[0])
    if args.format == "json":
        return report.format_json(rep)
    if args.format == "csv":
        return report.format_csv(rep, args.depth)
    if args.format == "markdown":
        return report.format_markdown(rep, args.depth if args.depth is not None else 2)
    return report.format_table(rep, args.depth if args.depth is not None else 2)


COST_ROWS = (("params", "Params"), ("trainable_params", "Trainable params"),
             ("buffers", "Buffers"), ("macs", "MACs"), ("flops", "FLOPs"),
             ("param_bytes", "Param bytes"), ("activation_bytes", "Activation bytes"),
             ("peak_activation_bytes", "Peak activation bytes"))


def _cost_table(before: dict[str, int], after: dict[str, int]) -> list[str]:
    lines = [f"{'':24}{'before':>18}{'after':>18}{'difference':>18}"]
    for key, label in COST_ROWS:
        diff = after[key] - before[key]
        lines.append(f"{label:24}{before[key]:>18,}{after[key]:>18,}{diff:>+18,}")
    return lines


def _export(graph, path: str) -> None:
    from cnnir.api import export_onnx

    try:
        export_onnx(graph, path)
    except ImportError as e:
        raise CnnirError(f"ONNX export is unavailable, so {path} was not written: {e}",
                         hint="run without -o, or install cnnir with its ONNX backend") from e


def cmd_optimize(args: argparse.Namespace) -> str:
    import json

    from cnnir.passes.cost import analyze_graph
    from cnnir.passes.manager import format_report

    if not _pass_names(args):
        raise CnnirError("cnnir optimize needs passes", hint="give --passes a,b or -O")
    graph = _load_graph(args)
    optimized, result = _optimized(args, graph)
    before = analyze_graph(graph).totals.to_dict()
    after = analyze_graph(optimized).totals.to_dict()
    if args.output:
        _export(optimized, args.output)
    if args.format == "json":
        return json.dumps({
            "model": graph.name, "passes": _pass_names(args), "modified": result.modified,
            "before": before, "after": after,
            "difference": {k: after[k] - before[k] for k in before},
            "reports": result.report["passes"], "output": args.output}, indent=2)
    lines = [f"Model: {graph.name}",
             *textwrap.wrap(f"Passes: {', '.join(_pass_names(args))}", 100,
                            subsequent_indent="    "),
             "", format_report(result), "", *_cost_table(before, after)]
    if args.output:
        lines.append(f"\nwrote {args.output}")
    return "\n".join(lines)


def _random_inputs(graph, dtype: str, seed: int = 0) -> list:
    """Standard-normal inputs (integer inputs get zeros); symbolic dims become 1."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = []
    for value in graph.inputs:
        shape = tuple(d if isinstance(d, int) else 1 for d in value.type.shape)
        if np.dtype(value.type.dtype).kind == "f":
            arrays.append(rng.standard_normal(shape).astype(dtype))
        else:
            arrays.append(np.zeros(shape, value.type.dtype))
    return arrays


def cmd_run(args: argparse.Namespace) -> str:
    """Compile, run on random inputs, report output shapes and latency."""
    import statistics
    import time

    from cnnir.api import compile as compile_graph

    graph = _load_graph(args)
    start = time.perf_counter()
    run = compile_graph(graph, backend=args.backend, dtype=args.dtype)
    inputs = _random_inputs(graph, args.dtype)
    outputs = run(*inputs)
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        run(*inputs)
        times.append(time.perf_counter() - t0)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    lines = [f"model: {graph.name}    backend: {args.backend}    dtype: {args.dtype}",
             "inputs:  " + ", ".join(f"{v.name} {list(a.shape)}"
                                     for v, a in zip(graph.inputs, inputs)),
             "outputs: " + ", ".join(str(list(o.shape)) for o in outputs),
             f"compile + first run: {first:.3f} s"]
    planned = run.planned_bytes
    if planned is not None:
        from cnnir.passes.cost import analyze_graph

        peak = analyze_graph(graph).totals.peak_activation_bytes
        lines.append(f"activation buffers: {planned / 2**20:.2f} MiB planned "
                     f"(analysis peak {peak / 2**20:.2f} MiB)")
    if times:
        ms = [1e3 * t for t in times]
        lines.append(f"latency over {len(ms)} runs: median {statistics.median(ms):.3f} ms, "
                     f"min {min(ms):.3f} ms, max {max(ms):.3f} ms")
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> str:
    from cnnir.backends.onnx_export import export

    graph = _load_graph(args)
    export(graph, args.output, opset=args.opset)
    return f"wrote {args.output} (opset {args.opset}, {len(graph.nodes)} nodes)"


def cmd_graph(args: argparse.Namespace) -> str:
    from cnnir.ir.printer import format_dot, format_graph

    graph = _load_graph(args)
    return format_dot(graph) if args.format == "dot" else format_graph(graph, with_loc=True)


def parse_milestones(text: str) -> tuple[int, ...]:
    """``3,6`` -> (3, 6)."""
    try:
        return tuple(int(m) for m in text.split(",") if m.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad milestones {text!r}: expected epochs like 3,6") \
            from None


def cmd_train(args: argparse.Namespace) -> str:
    """Train (``cnnir.trainer``): a summary line per epoch as it ends, then the outcome."""
    import dataclasses

    from cnnir.trainer import TrainConfig, fit

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"input_shape"}
    config = TrainConfig(input_shape=_shapes(args),
                         **{k: v for k, v in vars(args).items() if k in fields})
    result = fit(config, log=lambda line: print(line, flush=True))
    lines = [result.summary()]
    lines += [f"checkpoint: {config.checkpoint}"] if config.checkpoint else []
    lines += [f"curves: {config.plot}"] if config.plot else []
    return "\n".join(lines)


def add_train_args(p: argparse.ArgumentParser) -> None:
    from cnnir.trainer import OPTIMIZERS, SCHEDULERS

    p.add_argument("--data", default="digits",
                   help="digits, mnist5k, or an .npz file with x, y (and x_val, y_val)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam",
                   help="ignored when the model file defines optimizer(params)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 3e-3 for adam and adamw, else PyTorch's)")
    p.add_argument("--momentum", type=float, default=0.0, help="sgd and rmsprop")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 penalty (decoupled for adamw; default the optimizer's)")
    p.add_argument("--nesterov", action="store_true", help="sgd with --momentum")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="none",
                   help="per epoch, except cyclic and onecycle (per batch); plateau watches "
                        "the validation loss")
    p.add_argument("--step-size", type=int, default=None, metavar="EPOCHS",
                   help="step: the period (default epochs/3); cyclic: the half cycle "
                        "(default 2)")
    p.add_argument("--gamma", type=float, default=None,
                   help="step, multistep (default 0.1), exponential (default 0.9)")
    p.add_argument("--milestones", type=parse_milestones, default=None, metavar="E1,E2",
                   help="multistep (default epochs/2, 3*epochs/4)")
    p.add_argument("--eta-min", type=float, default=0.0, help="cosine (T_max = --epochs)")
    p.add_argument("--factor", type=float, default=0.1, help="plateau")
    p.add_argument("--patience", type=int, default=10, help="plateau")
    p.add_argument("--max-lr", type=float, default=None,
                   help="cyclic and onecycle peak (default --lr)")
    p.add_argument("--base-lr", type=float, default=None,
                   help="cyclic floor (default max-lr/10)")
    p.add_argument("--start-factor", type=float, default=1.0 / 3, help="linear")
    p.add_argument("--total-iters", type=int, default=5, help="linear, in epochs")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the initial weights, the split, data order and dropout")
    p.add_argument("--val-split", type=float, default=0.2,
                   help="fraction held out for validation, stratified (0: none; unused when "
                        "the data has x_val)")
    p.add_argument("--checkpoint", metavar="FILE.npz",
                   help="written atomically after every epoch")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint (bit-identical to an uninterrupted run)")
    p.add_argument("--plot", metavar="FILE.png",
                   help='loss and accuracy curves (needs pip install "cnnir[plot]")')
    p.add_argument("--backend", choices=("numba", "reference"), default="numba")
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="show the progress bar (default: when stderr is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnir", description="A compiler for CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help=MODEL_HELP)
        p.add_argument("--input-shape", action="append", type=parse_shape, metavar="SHAPE",
                       help="input shape like 1x3x224x224 (repeat for several inputs)")

    def add_pass_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--passes", metavar="P1,P2",
                       help="graph passes to apply first, by name (e.g. fuse-conv-bn,stack-3x3)")
        p.add_argument("-O", action="store_true",
                       help="apply every semantics-preserving inference pass (before --passes)")
        p.add_argument("--option", action="append", type=parse_option, metavar="KEY=VALUE",
                       help="a pass option, e.g. width=32 or stride_position=last (repeatable)")

    analyze = sub.add_parser("analyze", help="print what a network costs",
                             description="Per-layer and per-block shapes, params, MACs, FLOPs, "
                                         "memory and receptive field. " + MODEL_HELP)
    add_model_args(analyze)
    analyze.add_argument("--format", choices=("table", "json", "csv", "markdown"),
                         default="table")
    analyze.add_argument("--depth", type=int, default=None,
                         help="module-tree depth of the table (default 2; csv: every node)")
    add_pass_args(analyze)
    analyze.add_argument("--training", action="store_true",
                         help="cost a training step: forward and backward MACs/FLOPs and the "
                              "training memory peak")
    analyze.set_defaults(run=cmd_analyze)

    optimize = sub.add_parser(
        "optimize", help="run graph passes and print the cost before, after and the difference",
        description="Apply passes (--passes a,b; -O for every semantics-preserving inference "
                    "pass) and compare the costs. " + MODEL_HELP)
    add_model_args(optimize)
    add_pass_args(optimize)
    optimize.add_argument("--format", choices=("table", "json"), default="table")
    optimize.add_argument("-o", "--output", metavar="OUT.onnx",
                          help="write the optimized graph as ONNX")
    optimize.set_defaults(run=cmd_optimize)

    run = sub.add_parser("run", help="compile and run on random input; print shapes and latency",
                         description=MODEL_HELP)
    add_model_args(run)
    run.add_argument("--backend", choices=("numba", "reference", "cuda"), default="numba")
    run.add_argument("--repeat", type=int, default=10, help="timed runs after the first")
    run.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    run.set_defaults(run=cmd_run)

    export = sub.add_parser("export", help="write the model as a validated ONNX file",
                            description="Trace (or import) MODEL and write it as ONNX, weights "
                                        "as initializers, a symbolic batch as a dim_param. "
                                        + MODEL_HELP)
    add_model_args(export)
    export.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    export.add_argument("--opset", type=int, default=19,
                        help="ONNX opset to write (19, the default, or newer)")
    export.set_defaults(run=cmd_export)

    graph = sub.add_parser("graph", help="print the traced IR", description=MODEL_HELP)
    add_model_args(graph)
    graph.add_argument("--format", choices=("text", "dot"), default="text")
    graph.add_argument("--training", action="store_true",
                       help="print the gradient graph: forward in training mode, then the "
                            "generated backward")
    graph.set_defaults(run=cmd_graph)

    train = sub.add_parser(
        "train", help="train the model on a data set (checkpoints, resume, curves)",
        description="Train MODEL with the compiled training step. The file may also define "
                    "`loss` ((output, target) -> scalar; default cross-entropy) and "
                    "`optimizer` (params -> Optimizer). " + MODEL_HELP)
    add_model_args(train)
    add_train_args(train)
    train.set_defaults(run=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = args.run(args)
    except CnnirError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
