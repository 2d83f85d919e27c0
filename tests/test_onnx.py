"""ONNX import (onespike.onnx_import): a residual CNN exported with the legacy exporter loads
as plain torch ops, equals the original, and converts; bad files and ops fail clearly."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import golden
from converter import ConversionConfig, convert
from tests.conftest import skip_or_fail

CPU = "cpu"


@pytest.fixture(autouse=True)
def _onnx_backends(one_thread):
    from onespike.onnx_import import _import_backends

    try:
        _import_backends()
    except ImportError as exc:
        skip_or_fail(str(exc))


class ResidualCNN(nn.Module):
    """conv-bn-relu, an identity residual block, global average pooling, flatten, linear."""

    def __init__(self, head: str = "pool"):
        super().__init__()
        self.head = head
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(x + self.bn3(self.conv3(y)))
        if self.head == "mean_view":  # ONNX ReduceMean-13 and Reshape
            x = x.mean((2, 3))
            return self.fc(x.view(x.size(0), -1))
        return self.fc(torch.flatten(self.pool(x), 1))  # GlobalAveragePool and Flatten


def _model(head: str = "pool") -> nn.Module:
    torch.manual_seed(0)
    m = ResidualCNN(head)
    for bn in (m.bn1, m.bn2, m.bn3):  # non-trivial BN statistics
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.1, 0.1)
    return m.eval()


def _export(model: nn.Module, path, x, **kw) -> None:
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, **kw)


@pytest.mark.parametrize(
    "head, folding",
    [("pool", True), ("pool", False), ("mean_view", True)],
    ids=["bn-folded", "bn-kept", "reducemean-reshape"],
)
def test_residual_cnn_loads_and_converts(tmp_path, head, folding):
    import onnx

    from onespike.onnx_import import load_onnx_model

    model = _model(head)
    x = torch.rand(8, 3, 8, 8)
    path = tmp_path / "net.onnx"
    _export(model, path, x[:1], do_constant_folding=folding)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Conv", "Relu", "Add", "Gemm"} <= ops
    assert ("BatchNormalization" in ops) != folding
    assert ("ReduceMean" if head == "mean_view" else "GlobalAveragePool") in ops

    loaded = load_onnx_model(path)
    assert not loaded.training
    # plain torch only: no onnx2torch module survives the rewrite
    assert not [m for m in loaded.modules() if type(m).__module__.startswith("onnx2torch")]

    with torch.no_grad():
        want = model(x)
        got = loaded(x)  # the batch of 8, though exported with a batch of 1
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)

    snn = convert(loaded, x, ConversionConfig(weight_bits=None), progress=False)
    logits = golden.run(snn, x, mode="ann", device=CPU).logits
    torch.testing.assert_close(logits.float(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_not_onnx_file(tmp_path):
    from onespike.onnx_import import load_onnx_model

    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 10)
    with pytest.raises(ValueError, match="not .*ONNX model"):
        load_onnx_model(text)

    good = tmp_path / "good.onnx"
    _export(_model(), good, torch.rand(1, 3, 8, 8))
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[:300])  # truncated
    with pytest.raises(ValueError, match="ONNX model"):
        load_onnx_model(cut)

    with pytest.raises(FileNotFoundError):
        load_onnx_model(tmp_path / "missing.onnx")


def test_reducemean_18_says_how_to_export(tmp_path):
    """What the default (dynamo) exporter writes for the average pool: ReduceMean at opset 18,
    with its axes as an input; onnx2torch 1.5 has no converter for it."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="/pool/ReduceMean")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(proto)
    path = tmp_path / "dynamo.onnx"
    onnx.save(proto, str(path))

    from onespike.onnx_import import load_onnx_model

    with pytest.raises(ValueError) as err:
        load_onnx_model(path)
    msg = str(err.value)
    assert "'/pool/ReduceMean'" in msg and "ReduceMean version 18" in msg
    assert "dynamo=False, opset_version=17" in msg


def test_op_without_one_spike_equivalent(tmp_path):
    """onnx2torch imports Sigmoid, but a one-spike net is ReLU only: the ONNX node is named."""
    from onespike.onnx_import import load_onnx_model

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Sigmoid(), nn.Linear(4, 2)).eval()
    path = tmp_path / "sig.onnx"
    _export(model, path, torch.rand(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"ONNX node '/2/Sigmoid' \(Sigmoid\)"):
        load_onnx_model(path)


def test_dynamo_export_says_how_to_export(tmp_path):
    """The real default exporter (needs onnxscript, part of [onnx]): opset 18+."""
    try:
        import onnxscript  # noqa: F401
    except ImportError as exc:
        skip_or_fail(f"onnxscript is not installed ({exc}); scripts/setup.sh installs it")
    from onespike.onnx_import import load_onnx_model

    path = tmp_path / "dynamo.onnx"
    torch.onnx.export(_model(), (torch.rand(1, 3, 8, 8),), str(path))
    with pytest.raises(ValueError, match=r"ReduceMean version 18.*dynamo=False"):
        load_onnx_model(path)
