"""The pass registry and the pass manager.

A pass is a function ``Graph -> PassResult(graph, modified, report)`` registered under a
kebab-case name, with a flag saying whether it preserves the network's function. Pass modules
are imported lazily, by name, the first time a pipeline asks for them.

``run_pipeline(graph, names)`` copies the input graph first (the caller's graph is never
mutated), runs the passes in order and, with ``verify_each`` (the default; tests and debug
runs keep it), verifies the graph after each pass. A pass that raises or leaves an invalid
graph is reported as a ``PassError`` naming it and the passes that ran before it.

Options are keyword arguments; each pass receives the ones its function declares
(``run_pipeline(g, ["stack-3x3"], width=32)``). An option no pass of the pipeline takes is
an error, so a typo never passes silently.

    >>> result = run_pipeline(g, ["fuse-conv-bn", "eliminate-dead-code"])
    >>> result.graph, result.modified, result.report["passes"][0]["name"]
"""

from __future__ import annotations

import importlib
import inspect
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cnnir.errors import CnnirError, PassError
from cnnir.ir import Graph, verify
from cnnir.ir.clone import clone_graph


@dataclass
class PassResult:
    """What a pass returns: the (rewritten) graph, whether it changed, and a JSON-ready report.

    Every report has ``summary`` (one line) and ``lines`` (rows for people, such as one per
    rewritten layer); passes add structured data (counts, per-layer costs, layers left alone
    with the reason) and ``warnings`` (sentences `cnnir optimize` prints on stderr, such as
    the MACs linear-to-conv1x1 adds)."""

    graph: Graph
    modified: bool
    report: dict[str, Any] = field(default_factory=dict)


PassFn = Callable[..., PassResult]


@dataclass(frozen=True)
class Pass:
    """A registered pass: ``run(graph, **options)`` rewrites ``graph`` in place and returns a
    PassResult; ``preserves_semantics`` is False for passes that change the function
    (3x3 stacking, depthwise separation), whose tests check shapes and costs, not values."""

    name: str
    run: PassFn
    preserves_semantics: bool
    summary: str = ""

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(self.defaults)

    @property
    def defaults(self) -> dict[str, Any]:
        """Each option (a keyword-only parameter of ``run``) and its default."""
        params = list(inspect.signature(self.run).parameters.values())[1:]
        return {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY}


PASS_MODULES: dict[str, str] = {
    "eliminate-dead-code": "cnnir.passes.dead_code",
    "eliminate-common-subexpressions": "cnnir.passes.cse",
    "fold-constants": "cnnir.passes.fold_constants",
    "remove-identity": "cnnir.passes.remove_identity",
    "fuse-conv-bn": "cnnir.passes.fuse_conv_bn",
    "linear-to-conv1x1": "cnnir.passes.linear_to_conv1x1",
    "fuse-conv-activation": "cnnir.passes.fuse_conv_activation",
    "fuse-activation-grad": "cnnir.passes.fuse_activation_grad",
    "stack-3x3": "cnnir.passes.stack_3x3",
    "depthwise-separable": "cnnir.passes.depthwise_separable",
}

# `cnnir optimize -O`: every semantics-preserving pass that makes inference cheaper, in an
# order where each one exposes work for the next. linear-to-conv1x1 also preserves semantics
# but multiplies the head's MACs by H·W (it is a layout change for fully convolutional
# deployment), so -O leaves it out; SEMANTICS_PRESERVING lists it with the others.
DEFAULT_INFERENCE_PIPELINE: list[str] = [
    "remove-identity",
    "fold-constants",
    "eliminate-common-subexpressions",
    "fuse-conv-bn",
    "fuse-conv-activation",
    "eliminate-dead-code",
]

_LOADED: dict[str, Pass] = {}


def get_pass(name: str) -> Pass:
    """The registered pass called ``name`` (its module is imported on first use)."""
    if name not in _LOADED:
        if name not in PASS_MODULES:
            raise PassError(f"unknown pass {name!r}",
                            hint=f"choose from {', '.join(sorted(PASS_MODULES))} (`cnnir "
                                 f"passes` describes them)")
        module = importlib.import_module(PASS_MODULES[name])
        _LOADED[name] = module.PASS
    return _LOADED[name]


def all_passes() -> list[Pass]:
    return [get_pass(name) for name in PASS_MODULES]


def semantics_preserving() -> list[str]:
    """Names of every pass that keeps the network's function, in pipeline order."""
    rest = [p.name for p in all_passes()
            if p.preserves_semantics and p.name not in DEFAULT_INFERENCE_PIPELINE]
    return DEFAULT_INFERENCE_PIPELINE[:-1] + rest + DEFAULT_INFERENCE_PIPELINE[-1:]


def _split_options(passes: Sequence[Pass], options: dict[str, Any]) -> list[dict[str, Any]]:
    wanted = [set(p.options) for p in passes]
    unknown = set(options) - set().union(*wanted) if wanted else set(options)
    if unknown:
        takes = {p.name: list(p.options) for p in passes}
        raise PassError(f"no pass of the pipeline takes the option(s) {sorted(unknown)}",
                        hint=f"options by pass: {takes} (`cnnir passes` lists every pass's "
                             f"options and defaults)")
    return [{k: v for k, v in options.items() if k in names} for names in wanted]


class PassManager:
    """Runs named passes in order on a copy of a graph (see the module docstring).

    >>> pm = PassManager(["fuse-conv-bn", "eliminate-dead-code"])
    >>> result = pm.run(graph)
    """

    def __init__(self, names: Sequence[str], *, fixpoint: bool = False,
                 verify_each: bool = True, max_rounds: int = 10, **options: Any) -> None:
        if isinstance(names, str):
            names = [n for n in names.split(",") if n]
        self.passes = [get_pass(n) for n in names]
        self.fixpoint = fixpoint
        self.verify_each = verify_each
        self.max_rounds = max_rounds
        self.options = _split_options(self.passes, options)

    def run(self, graph: Graph) -> PassResult:
        work = clone_graph(graph)
        reports: list[dict[str, Any]] = []
        done: list[str] = []
        modified = False
        for _ in range(self.max_rounds if self.fixpoint else 1):
            changed = False
            for p, opts in zip(self.passes, self.options):
                result = self._run_one(p, work, opts, done)
                work, changed = result.graph, changed or result.modified
                reports.append({"name": p.name, "modified": result.modified, **result.report})
                done.append(p.name)
            modified = modified or changed
            if not changed:
                break
        return PassResult(work, modified, {"passes": reports})

    def _run_one(self, p: Pass, graph: Graph, options: dict[str, Any],
                 done: list[str]) -> PassResult:
        after = f" after the passes {done}" if done else " (the first pass)"
        try:
            result = p.run(graph, **options)
        except CnnirError as e:
            raise PassError(f"pass '{p.name}' failed{after}: {type(e).__name__}: {e.message}",
                            hint=e.hint) from e
        except Exception as e:  # a bug in the pass: name it, keep the traceback as the cause
            raise PassError(f"pass '{p.name}' crashed{after}: {type(e).__name__}: {e}",
                            hint="this is a bug in the pass; please report it") from e
        if self.verify_each:
            try:
                verify(result.graph)
            except CnnirError as e:
                raise PassError(f"pass '{p.name}' left an invalid graph{after}: {e.message}",
                                hint="this is a bug in the pass; run the passes one at a "
                                     "time to isolate it") from e
        return result


def run_pipeline(graph: Graph, names: Sequence[str], fixpoint: bool = False,
                 verify_each: bool = True, **options: Any) -> PassResult:
    """Run the named passes on a copy of ``graph``; the input graph is never mutated.

    >>> out = run_pipeline(g, DEFAULT_INFERENCE_PIPELINE).graph
    """
    return PassManager(names, fixpoint=fixpoint, verify_each=verify_each, **options).run(graph)


def catalogue() -> list[dict[str, Any]]:
    """Every registered pass, in registry order: name, one-line summary, whether it preserves
    the network's function, and its options with their defaults (what ``cnnir passes``
    prints and docs/passes.md lists)."""
    return [{"name": p.name, "summary": p.summary, "preserves_function": p.preserves_semantics,
             "options": dict(p.defaults), "in_O": p.name in DEFAULT_INFERENCE_PIPELINE}
            for p in all_passes()]


def format_catalogue(markdown: bool = False) -> str:
    """The catalogue as text (``cnnir passes``) or as the Markdown table of docs/passes.md."""
    def options(entry: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in entry["options"].items()) or "none"

    def function(entry: dict[str, Any]) -> str:
        return "preserved" if entry["preserves_function"] else "CHANGED (approximate)"

    entries = catalogue()
    if markdown:
        rows = ["| Pass | What it does | Function | In `-O` | Options (defaults) |",
                "|---|---|---|---|---|"]
        rows += [f"| `{e['name']}` | {e['summary']} | {function(e)} | "
                 f"{'yes' if e['in_O'] else 'no'} | "
                 f"{f'`{options(e)}`' if e['options'] else '–'} |" for e in entries]
        return "\n".join(rows)
    lines = []
    for e in entries:
        lines.append(f"{e['name']}{'  [-O]' if e['in_O'] else ''}")
        lines += textwrap.wrap(e["summary"], 100, initial_indent="    ",
                               subsequent_indent="    ")
        lines.append(f"    function: {function(e)}")
        lines += textwrap.wrap(f"options: {options(e)}", 100, initial_indent="    ",
                               subsequent_indent="        ")
    return "\n".join(lines)


def format_report(result: PassResult, width: int = 100) -> str:
    """The pass reports as text, wrapped to ``width`` columns: one line per pass, then each
    pass's own rows, indented."""
    lines = []
    for rep in result.report.get("passes", []):
        summary = rep.get("summary") or ("changed the graph" if rep["modified"] else
                                         "no change")
        lines += textwrap.wrap(f"{rep['name']}: {summary}", width, subsequent_indent="    ")
        for row in rep.get("lines", []):
            lines += textwrap.wrap(row, width, initial_indent="  ", subsequent_indent="      ")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_INFERENCE_PIPELINE", "PASS_MODULES", "Pass", "PassManager", "PassResult",
    "all_passes", "catalogue", "format_catalogue", "format_report", "get_pass", "run_pipeline",
    "semantics_preserving",
]
