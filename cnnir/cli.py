"""The ``cnnir`` command line.

    cnnir analyze  MODEL [--input-shape 1x3x224x224 ...] [--format table|json|csv|markdown]
                         [--depth N] [--passes p1,p2] [-O] [--option KEY=VALUE ...]
    cnnir optimize MODEL --passes p1,p2 [-O] [--format table|json] [-o out.onnx]
                         [--option KEY=VALUE ...] [--allow-approximate]
    cnnir passes         (or cnnir optimize --list: every pass, its options and defaults)
    cnnir run      MODEL [--backend numba|reference|cuda] [--repeat N] [--dtype float32] [-q]
    cnnir export   MODEL -o model.onnx [--opset 19]
    cnnir graph    MODEL [--format text|dot]
    cnnir train    MODEL [--data digits|mnist5k|file.npz] [--epochs N] [--optimizer adam ...]
                         [--scheduler none|step|...] [--checkpoint f.npz [--resume]]
                         [--plot f.png]

``cnnir --version`` prints the version. MODEL is ``path.py``, ``path.py:NAME`` or
``path.onnx`` (docs/cli.md: what each argument accepts). Loading a .py model file RUNS it,
exactly like ``python path.py``: only analyze files you trust. An .onnx file runs no code.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence

from cnnir.errors import CnnirError

MODEL_HELP = ("path.py, path.py:NAME or path.onnx. A .py file is executed exactly like "
              "`python path.py` (only load files you trust); it defines `model` and "
              "`input_shape`. An .onnx file is imported and runs no code")


SHAPE_FORMS = "1x3x224x224, Nx3x224x224 (a symbolic batch N) or N,3,224,224"


def parse_shape(text: str) -> tuple[int | str, ...]:
    """``1x3x224x224`` or ``1,3,224,224`` -> (1, 3, 224, 224); symbols allowed:
    ``Nx3x224x224``. Sizes are whole numbers of at least 1."""
    body = text.strip().strip("()[]")
    parts = body.split(",") if "," in body else body.lower().split("x")
    try:
        shape = tuple(_dim(part.strip()) for part in parts)
        if all(isinstance(d, str) for d in shape):
            raise ValueError("it has no size, only symbols")
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: {e}; give sizes like "
                                         f"{SHAPE_FORMS}") from None
    return shape


def _dim(text: str) -> int | str:
    if text.isdigit():
        if int(text) == 0:
            raise ValueError("a size is 0 (cnnir refuses empty inputs; sizes are at least 1)")
        return int(text)
    if not text.isidentifier():
        raise ValueError(f"{text!r} is neither a whole number nor a symbol name")
    return text.upper()


def int_at_least(low: int):
    """An argparse type: an int >= ``low``, refused with a clear message otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


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

    if args.plot:
        from cnnir.errors import check_output_dir
        from cnnir.plots import require_matplotlib

        require_matplotlib()
        check_output_dir(args.plot)  # both before the model file runs
    rep = analyze_graph(_optimized(args, _load_graph(args))[0])
    if args.plot:
        from cnnir.plots import plot_costs

        plot_costs(rep, args.plot)
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


def output_change(graph, optimized, seed: int = 0) -> float:
    """Relative L2 change of the outputs, all together, from ``graph`` to ``optimized`` on
    seeded standard-normal inputs (symbolic dims 1), both run by the float64 reference
    backend."""
    import numpy as np

    from cnnir.api import compile as compile_graph

    inputs = _random_inputs(graph, "float64", seed)
    want, got = ((y if isinstance(y, tuple) else (y,)) for y in (
        compile_graph(g, backend="reference", dtype="float64")(*inputs)
        for g in (graph, optimized)))
    diff = sum(float(np.sum((np.asarray(b) - np.asarray(a)) ** 2)) for a, b in zip(want, got))
    norm = sum(float(np.sum(np.asarray(a) ** 2)) for a in want)
    return float(np.sqrt(diff / norm)) if norm > 0 else float(np.sqrt(diff))


def cmd_passes(args: argparse.Namespace) -> str:
    from cnnir.passes.manager import format_catalogue

    return format_catalogue()


def cmd_optimize(args: argparse.Namespace) -> str:
    """Run the passes and compare costs. Passes that change the function (and modified the
    graph) get a warning on stderr with the measured output change, and ``-o`` refuses to
    write their result without ``--allow-approximate``; passes' own warnings (MACs added by
    linear-to-conv1x1) go to stderr too."""
    import json

    from cnnir.passes.cost import analyze_graph
    from cnnir.passes.manager import format_report, get_pass

    if args.list:
        return cmd_passes(args)
    if args.model is None:
        raise CnnirError("cnnir optimize needs a model", hint="give MODEL, or --list to see "
                                                              "the passes")
    if not _pass_names(args):
        raise CnnirError("cnnir optimize needs passes", hint="give --passes a,b or -O")
    graph = _load_graph(args)
    optimized, result = _optimized(args, graph)
    reports = result.report["passes"]
    approximate = list(dict.fromkeys(r["name"] for r in reports if r["modified"]
                                     and not get_pass(r["name"]).preserves_semantics))
    change = output_change(graph, optimized) if approximate else None
    warnings = [w for r in reports for w in r.get("warnings", [])]
    if approximate:
        warnings.insert(0, f"{', '.join(approximate)} changed the network's function: the "
                           f"outputs moved by {change:.3g} (relative L2, seeded random input, "
                           f"reference backend in float64)")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.output and approximate and not args.allow_approximate:
        raise CnnirError(f"refusing to write {args.output}: {', '.join(approximate)} changed "
                         f"the network's function (relative output change {change:.3g})",
                         hint="add --allow-approximate to write it anyway, or drop those "
                              "passes")
    before = analyze_graph(graph).totals.to_dict()
    after = analyze_graph(optimized).totals.to_dict()
    if args.output:
        _export(optimized, args.output)
    if args.format == "json":
        return json.dumps({
            "model": graph.name, "passes": _pass_names(args), "modified": result.modified,
            "approximate": approximate, "output_change": change, "warnings": warnings,
            "before": before, "after": after,
            "difference": {k: after[k] - before[k] for k in before},
            "reports": reports, "output": args.output}, indent=2)
    function = (f"CHANGED by {', '.join(approximate)}: relative output change {change:.3g}"
                if approximate else "preserved")
    lines = [f"Model: {graph.name}",
             *textwrap.wrap(f"Passes: {', '.join(_pass_names(args))}", 100,
                            subsequent_indent="    "),
             f"Function: {function}",
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


class CompileProgress:
    """A tqdm bar on stderr over the nodes being lowered (their kernels compiled and tuned),
    shown only once compiling has taken a second, and only when ``enabled``."""

    def __init__(self, enabled: bool, after_s: float = 1.0) -> None:
        import time

        self.enabled, self.clock, self.bar = enabled, time.perf_counter, None
        self.deadline = self.clock() + after_s

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if not self.enabled or self.clock() < self.deadline:
                return
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="compiling", unit="node", file=sys.stderr,
                            leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_run(args: argparse.Namespace) -> str:
    """Compile, run on random inputs, report output shapes and latency."""
    import statistics
    import time

    from cnnir.api import compile as compile_graph

    graph = _load_graph(args)
    start = time.perf_counter()
    options = {} if args.backend == "reference" else {
        "progress": CompileProgress(not args.quiet and sys.stderr.isatty())}
    try:
        run = compile_graph(graph, backend=args.backend, dtype=args.dtype, **options)
    finally:
        if options:
            options["progress"].close()
    dtype = str(run.dtype)  # the dtype it computes in: the backend's default unless --dtype
    inputs = _random_inputs(graph, dtype)
    outputs = run(*inputs)
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        run(*inputs)
        times.append(time.perf_counter() - t0)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    lines = [f"model: {graph.name}    backend: {args.backend}    dtype: {dtype}",
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
    from cnnir.errors import check_output_dir

    check_output_dir(args.output)  # before the model file runs
    graph = _load_graph(args)
    export(graph, args.output, opset=args.opset)
    return f"wrote {args.output} (opset {args.opset}, {len(graph.nodes)} nodes)"


def cmd_view(args: argparse.Namespace) -> str:
    """Write the graph as annotated ONNX and serve it with Netron until Ctrl-C."""
    import tempfile

    from cnnir import view
    from cnnir.errors import check_output_dir

    if args.no_serve and not args.output:
        raise CnnirError("--no-serve only writes the annotated model: give -o FILE.onnx")
    if args.output:
        check_output_dir(args.output)  # before the model file runs
    if not args.no_serve:
        view.netron()  # a missing extra fails before the model loads
    graph = _optimized(args, _load_graph(args))[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = args.output or os.path.join(tmp, f"{graph.name}.onnx")
        report = view.write_annotated(graph, path)
        line = (f"{graph.name}: {len(graph.nodes)} nodes, MACs {report.totals.macs:,}, "
                f"params {report.totals.params:,}")
        if args.no_serve:
            return f"wrote {path} ({line})"
        url = view.serve(path, args.port, browse=not args.no_browser)
        print(f"{line}\nserving {path} at {url} (Ctrl-C stops)", flush=True)
        view.wait()
    return ""


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
    if not result.leader:
        return ""
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


def _version() -> str:
    """The installed distribution's version, else the package's own."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cnnir")
    except PackageNotFoundError:
        import cnnir

        return cnnir.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnir", description="A compiler for CNNs.")
    parser.add_argument("--version", action="version", version=f"cnnir {_version()}")
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
    analyze.add_argument("--depth", type=int_at_least(1), default=None,
                         help="module-tree depth of the table (default 2; csv: every node)")
    add_pass_args(analyze)
    analyze.add_argument("--training", action="store_true",
                         help="cost a training step: forward and backward MACs/FLOPs and the "
                              "training memory peak")
    analyze.add_argument("--plot", metavar="FILE.png|svg",
                         help="also draw MACs, params and live activation memory per layer "
                              "(pip install 'cnnir[plot]')")
    analyze.set_defaults(run=cmd_analyze)

    optimize = sub.add_parser(
        "optimize", help="run graph passes and print the cost before, after and the difference",
        description="Apply passes (--passes a,b; -O for every semantics-preserving inference "
                    "pass) and compare the costs. " + MODEL_HELP)
    optimize.add_argument("model", nargs="?", help=MODEL_HELP)  # none with --list
    optimize.add_argument("--input-shape", action="append", type=parse_shape, metavar="SHAPE",
                          help="input shape like 1x3x224x224 (repeat for several inputs)")
    add_pass_args(optimize)
    optimize.add_argument("--format", choices=("table", "json"), default="table")
    optimize.add_argument("-o", "--output", metavar="OUT.onnx",
                          help="write the optimized graph as ONNX")
    optimize.add_argument("--allow-approximate", action="store_true",
                          help="let -o write a graph that passes such as stack-3x3 changed "
                               "(their measured output change is printed either way)")
    optimize.add_argument("--list", action="store_true",
                          help="list the passes and their options (as `cnnir passes`)")
    optimize.set_defaults(run=cmd_optimize)

    passes = sub.add_parser("passes", help="list the graph passes, their options and whether "
                                           "they preserve the function",
                            description="The pass catalogue (also in docs/passes.md).")
    passes.set_defaults(run=cmd_passes)

    run = sub.add_parser("run", help="compile and run on random input; print shapes and latency",
                         description=MODEL_HELP)
    add_model_args(run)
    run.add_argument("--backend", choices=("numba", "reference", "cuda"), default="numba")
    run.add_argument("--repeat", type=int_at_least(0), default=10,
                     help="timed runs after the first")
    run.add_argument("--dtype", choices=("float32", "float64"), default=None,
                     help="compute dtype (default the backend's: float64 for reference, "
                          "else float32)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no compile progress bar (shown on a terminal when compiling takes "
                          "over a second)")
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

    view = sub.add_parser(
        "view", help="open the graph in Netron with each node's costs",
        description="Serve MODEL's graph with Netron (pip install 'cnnir[view]'), each node "
                    "annotated with its MACs, FLOPs, params, output shape, receptive field "
                    "and, after passes, the layers it was fused from. " + MODEL_HELP)
    add_model_args(view)
    add_pass_args(view)
    view.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    view.add_argument("--no-browser", action="store_true",
                      help="print the URL instead of opening a browser (remote machines)")
    view.add_argument("-o", "--output", metavar="OUT.onnx",
                      help="also keep the annotated model in this file")
    view.add_argument("--no-serve", action="store_true",
                      help="only write -o, serve nothing")
    view.set_defaults(run=cmd_view)

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
    if out:
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
