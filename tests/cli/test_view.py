"""``cnnir view`` (the annotated ONNX file and Netron serving it) and ``cnnir analyze --plot``.

What a browser shows is checked by ``benchmarks/view_in_browser.py`` (headless Chromium
clicking a node); here: what the served file carries, that Netron serves it, and the
pictures' files."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import onnx
import pytest

import cnnir
from cnnir.api import run_passes
from cnnir.backends.onnx_export.annotate import annotated_model
from cnnir.cli import main
from cnnir.passes.cost import analyze_graph
from cnnir.passes.memory import peak_activation_bytes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.py"))


def small_cifar_graph() -> cnnir.Graph:
    import runpy

    model = runpy.run_path(str(EXAMPLES / "cifar.py"))["small_cifar"]().eval()
    return cnnir.trace(model, (1, 3, 32, 32))


def nodes_by_name(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {node.name: node for node in model.graph.node}


def test_every_node_carries_its_cost_and_the_model_its_totals() -> None:
    graph = small_cifar_graph()
    report = analyze_graph(graph)
    model = annotated_model(graph, report)
    conv = nodes_by_name(model)["features.0.0"]
    layer = next(layer for layer in report.layers if layer.name == "features.0.0")
    assert conv.op_type == "Conv"
    assert conv.doc_string.startswith("MACs 884.74K · FLOPs 1.77M · params 864 · out 1x32x32x32")
    props = {p.key: p.value for p in conv.metadata_props}
    assert props["MACs"] == f"{layer.macs:,}" == "884,736" and props["RF"] == "3"
    assert props["output"] == "1x32x32x32" and props["params"] == "864"
    totals = {p.key: p.value for p in model.metadata_props}
    assert totals["cnnir.total.macs"] == f"{report.totals.macs:,}"
    assert all(node.doc_string for node in model.graph.node)


def test_fused_nodes_name_the_layers_they_were_made_of() -> None:
    import runpy

    model = runpy.run_path(str(EXAMPLES / "resnet.py"))["resnet18"]().eval()
    graph = run_passes(cnnir.trace(model, (1, 3, 224, 224)),
                       ["fuse-conv-bn", "fuse-conv-activation"]).graph
    onnx_model = annotated_model(graph, analyze_graph(graph))
    main_node = next(n for n in onnx_model.graph.node if n.name == "layer1.0.conv2")
    props = {p.key: p.value for p in main_node.metadata_props}
    assert props["fused from"] == ("layer1.0.add, layer1.0.bn2, layer1.0.conv2, "
                                   "layer1.0.relu_1")
    helper_node = next(n for n in onnx_model.graph.node
                       if n.name.startswith("layer1.0.conv2/"))
    assert helper_node.doc_string.startswith("part of layer1.0.conv2: MACs")


def test_ops_onnx_has_no_name_for_show_as_cnnir_nodes() -> None:
    from cnnir import nn

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    graph = cnnir.grad_graph(net, nn.CrossEntropyLoss(), inputs=(2, 1, 4, 4), targets=(2,))
    model = annotated_model(graph, analyze_graph(graph))
    custom = [n for n in model.graph.node if n.domain == "cnnir"]
    assert {n.op_type for n in custom} >= {"conv2d_weight_grad", "loss_grad"}
    conv_grad = next(n for n in custom if n.op_type == "conv2d_weight_grad")
    assert {a.name for a in conv_grad.attribute} >= {"stride", "padding"}
    assert conv_grad.doc_string.startswith("MACs")
    assert ("cnnir", 1) in {(o.domain, o.version) for o in model.opset_import}


@pytest.mark.parametrize("example", EXAMPLE_FILES)
def test_view_writes_every_example(example: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model.onnx"
    assert main(["view", str(EXAMPLES / example), "--no-serve", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    model = onnx.load(str(out))
    assert any(node.metadata_props for node in model.graph.node)


def test_view_of_an_imported_onnx_file_and_optimized(tmp_path: Path, capsys) -> None:
    exported = tmp_path / "cifar.onnx"
    assert main(["export", str(EXAMPLES / "cifar.py"), "-o", str(exported)]) == 0
    out = tmp_path / "viewed.onnx"
    assert main(["view", str(exported), "-O", "--no-serve", "-o", str(out)]) == 0
    fused = [n for n in onnx.load(str(out)).graph.node
             if any(p.key == "fused from" for p in n.metadata_props)]
    assert fused  # BN folded into the imported convs


def test_netron_serves_the_annotated_file(tmp_path: Path) -> None:
    out = tmp_path / "cifar.onnx"
    server = subprocess.Popen([sys.executable, "-m", "cnnir.cli", "view",
                               str(EXAMPLES / "cifar.py"), "--no-browser", "--port", "0",
                               "-o", str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        for line in server.stdout:
            found = re.search(r"serving .* at (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "no URL printed"
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert 'content="/data/cifar.onnx"' in page
        served = urllib.request.urlopen(f"{url}/data/cifar.onnx", timeout=30).read()
        assert served == out.read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_view_errors_name_what_is_missing(tmp_path: Path, capsys, monkeypatch) -> None:
    assert main(["view", str(EXAMPLES / "cifar.py"), "--no-serve"]) == 1
    assert "give -o FILE.onnx" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "netron", None)
    assert main(["view", str(EXAMPLES / "cifar.py")]) == 1
    assert "cnnir[view]" in capsys.readouterr().err


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_analyze_plot_draws_the_picture(tmp_path: Path, suffix: str, magic: bytes,
                                        capsys) -> None:
    picture = tmp_path / f"costs{suffix}"
    assert main(["analyze", str(EXAMPLES / "mobilenet.py"), "--plot", str(picture)]) == 0
    assert "MACs" in capsys.readouterr().out  # the table is printed as well
    assert picture.read_bytes().startswith(magic)
    if suffix == ".svg":
        text = picture.read_text()
        assert "peak 9.2 MiB" in text and "features.2.conv.0.1" in text


def test_analyze_plot_without_matplotlib_names_the_extra(tmp_path: Path, capsys,
                                                         monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["analyze", str(EXAMPLES / "cifar.py"), "--plot",
                 str(tmp_path / "x.png")]) == 1
    assert "cnnir[plot]" in capsys.readouterr().err


def test_live_bytes_peak_is_the_reported_peak() -> None:
    graph = small_cifar_graph()
    report = analyze_graph(graph)
    assert max(report.live_bytes) == report.totals.peak_activation_bytes
    assert len(report.live_bytes) == len(graph.nodes)
    from cnnir.passes.shape_inference import bind_types

    assert peak_activation_bytes(graph, bind_types(graph, {})) == max(report.live_bytes)


def test_training_step_plot_marks_the_backward(tmp_path: Path, capsys) -> None:
    picture = tmp_path / "step.svg"
    assert main(["analyze", str(EXAMPLES / "cifar.py"), "--training", "--plot",
                 str(picture)]) == 0
    capsys.readouterr()
    text = picture.read_text()
    assert "backward" in text and "peak 1.0 MiB" in text
