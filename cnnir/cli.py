"""The ``cnnir`` command line.

    cnnir analyze MODEL [--input-shape 1x3x224x224 ...] [--format table|json|csv|markdown]
                        [--depth N]
    cnnir graph   MODEL [--format text|dot]

MODEL is ``path.py`` or ``path.py:NAME``. Loading a .py model file RUNS it, exactly like
``python path.py``: only analyze files you trust.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cnnir.errors import CnnirError

MODEL_HELP = ("path.py or path.py:NAME. A .py file is executed exactly like `python path.py` "
              "(only load files you trust); it defines `model` and `input_shape`")


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
    from cnnir.api import trace
    from cnnir.frontend.model_file import load_model_file

    loaded = load_model_file(args.model, _shapes(args))
    return trace(loaded.module, loaded.inputs, training=False, name=loaded.name)


def cmd_analyze(args: argparse.Namespace) -> str:
    from cnnir import report
    from cnnir.passes.cost import analyze_graph

    rep = analyze_graph(_load_graph(args))
    if args.format == "json":
        return report.format_json(rep)
    if args.format == "csv":
        return report.format_csv(rep, args.depth)
    if args.format == "markdown":
        return report.format_markdown(rep, args.depth if args.depth is not None else 2)
    return report.format_table(rep, args.depth if args.depth is not None else 2)


def cmd_graph(args: argparse.Namespace) -> str:
    from cnnir.ir.printer import format_dot, format_graph

    graph = _load_graph(args)
    return format_dot(graph) if args.format == "dot" else format_graph(graph, with_loc=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnir", description="A compiler for CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help=MODEL_HELP)
        p.add_argument("--input-shape", action="append", type=parse_shape, metavar="SHAPE",
                       help="input shape like 1x3x224x224 (repeat for several inputs)")

    analyze = sub.add_parser("analyze", help="print what a network costs",
                             description="Per-layer and per-block shapes, params, MACs, FLOPs, "
                                         "memory and receptive field. " + MODEL_HELP)
    add_model_args(analyze)
    analyze.add_argument("--format", choices=("table", "json", "csv", "markdown"),
                         default="table")
    analyze.add_argument("--depth", type=int, default=None,
                         help="module-tree depth of the table (default 2; csv: every node)")
    analyze.set_defaults(run=cmd_analyze)

    graph = sub.add_parser("graph", help="print the traced IR", description=MODEL_HELP)
    add_model_args(graph)
    graph.add_argument("--format", choices=("text", "dot"), default="text")
    graph.set_defaults(run=cmd_graph)
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
