"""NIR export (onespike.nir_export, onespike.exportcli): the graph read back with nir.read has
the artifact's nodes, edges, float weights and thresholds (exactly), computes the artifact's
synapse ops, and carries the one-spike semantics and the integer datapath in metadata."""

from __future__ import annotations

import argparse
import json

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from converter import ArtifactError, ConversionConfig, convert
from converter.model import SnnModel
from converter.ops import synapse_forward
from onespike.exportcli import add_parsers, run_export
from onespike.nir_export import NirExportError, export_nir, to_nir

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = ConversionConfig(T=5, Q=1.4, T_w=2, T_in=4)


# --------------------------------------------------------------------------------------------
# small networks
# --------------------------------------------------------------------------------------------


class SmallCnn(nn.Module):
    """conv+BN → max pool → conv → avg pool → flatten → linear → linear (output)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.b1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 6, 3, stride=1, padding=1, bias=False)
        self.fc1 = nn.Linear(6 * 2 * 2, 10)
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.avg_pool2d(F.relu(self.c2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


# the residual nets of the rtl tests (identity, projection and option-A shortcuts)
from tests.test_rtl_residual import TinyResNet  # noqa: E402


def _randomise_bn(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.6, 1.4)
                mod.bias.uniform_(-0.2, 0.2)
    return net.eval()


def _convert(name: str, cfg: ConversionConfig = CFG) -> SnnModel:
    torch.manual_seed(0)
    if name == "cnn":
        net, shape = SmallCnn(), (2, 8, 8)
    else:
        net, shape = TinyResNet(name.removeprefix("resnet_")), (3, 8, 8)
    net = _randomise_bn(net)
    return convert(net, torch.rand(32, *shape), cfg, progress=False)


NETS = ("cnn", "resnet_conv", "resnet_optionA")


@pytest.fixture(scope="module")
def snns() -> dict[str, SnnModel]:
    torch.set_num_threads(1)
    return {name: _convert(name) for name in NETS}


@pytest.fixture(scope="module")
def graphs(snns, tmp_path_factory) -> dict[str, object]:
    """Each model exported to a .nir file and read back with nir.read (type checked)."""
    out = tmp_path_factory.mktemp("nir")
    return {name: nir.read(export_nir(snn, out / f"{name}.nir")) for name, snn in snns.items()}


# --------------------------------------------------------------------------------------------
# structure: nodes and edges
# --------------------------------------------------------------------------------------------


def expected_graph(snn: SnnModel) -> tuple[dict[str, type], set[tuple[str, str]]]:
    """The node types and edges the mapping promises, derived from the artifact."""
    types: dict[str, type] = {"output": nir.Output}
    edges: set[tuple[str, str]] = set()
    names: dict[int, str] = {}
    for i, lay in enumerate(snn.layers):
        if lay.kind == "input":
            names[i] = "input"
            types["input"] = nir.Input
            continue
        if lay.kind == "maxpool":
            names[i] = f"layer{i}_maxpool"
            types[names[i]] = nir.SumPool2d
            edges.add((names[lay.source], names[i]))
            continue
        names[i] = f"layer{i}"
        types[names[i]] = nir.I if lay.kind == "output" else nir.IF
        for g, s in enumerate(lay.synapses):
            base = f"layer{i}_syn{g}"
            chain = {
                "conv": [(f"{base}_conv", nir.Conv2d)],
                "shortcut": [(f"{base}_shortcut", nir.Conv2d)],
                "avgpool": [(f"{base}_sumpool", nir.SumPool2d), (f"{base}_scale", nir.Scale)],
                "linear": ([(f"{base}_flatten", nir.Flatten)] if len(snn.layers[s.source].shape) > 1
                           else []) + [(f"{base}_affine", nir.Affine)],
            }[s.op]  # fmt: skip
            types.update(chain)
            path = [names[s.source], *(n for n, _ in chain), names[i]]
            edges.update(zip(path, path[1:], strict=False))
    edges.add((names[len(snn.layers) - 1], "output"))
    return types, edges


@pytest.mark.parametrize("name", NETS)
def test_nodes_and_edges_match_the_artifact(snns, graphs, name) -> None:
    snn, g = snns[name], graphs[name]
    types, edges = expected_graph(snn)
    assert {k: type(v) for k, v in g.nodes.items()} == types
    assert set(g.edges) == edges
    assert len(g.edges) == len(edges)  # no duplicates
    layer_nodes = json.loads(g.metadata["onespike.layer_nodes_json"])
    assert len(layer_nodes) == len(snn.layers)
    for i, lay in enumerate(snn.layers):
        node = g.nodes[layer_nodes[str(i)]]
        if lay.kind != "input":
            assert node.metadata["onespike.layer"] == i
            assert node.metadata["onespike.name"] == lay.name
    # a residual layer: two edges into the same IF node (NIR sums incoming edges)
    residual = [i for i, lay in enumerate(snn.layers) if len(lay.synapses) == 2]
    assert bool(residual) == name.startswith("resnet")
    for i in residual:
        into = [a for a, b in g.edges if b == f"layer{i}"]
        ops = [s.op for s in snn.layers[i].synapses]
        assert ops[0] == "conv" and ops[1] in ("conv", "shortcut")
        assert sorted(into) == [f"layer{i}_syn0_conv", f"layer{i}_syn1_{ops[1]}"]


def test_mapping_covers_every_construct(snns) -> None:
    """The test nets exercise every synapse op and layer kind the mapping handles."""
    ops = {s.op for snn in snns.values() for lay in snn.layers for s in lay.synapses}
    kinds = {lay.kind for snn in snns.values() for lay in snn.layers}
    assert ops == {"conv", "linear", "avgpool", "shortcut"}
    assert kinds == {"input", "neuron", "maxpool", "output"}
    offsets = {s.channel_offset for lay in snns["resnet_optionA"].layers for s in lay.synapses}
    assert offsets != {0}  # option A: a channel-offset shortcut


# --------------------------------------------------------------------------------------------
# values: weights and thresholds exactly, and the synapse ops computed by the NIR nodes
# --------------------------------------------------------------------------------------------


def _channel_broadcast(v: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.asarray(v).reshape(-1, *([1] * (len(shape) - 1))), shape)


@pytest.mark.parametrize("name", NETS)
def test_weights_and_thresholds_equal_the_artifact(snns, graphs, name) -> None:
    snn, g = snns[name], graphs[name]
    assert np.array_equal(g.nodes["input"].input_type["input"], snn.input.shape)
    for i, lay in enumerate(snn.layers):
        if lay.kind in ("input", "maxpool"):
            continue
        node = g.nodes[f"layer{i}"]
        assert np.array_equal(node.r, np.ones(lay.shape, np.float32))
        if lay.kind == "neuron":
            assert node.v_threshold.dtype == np.float32
            assert np.array_equal(node.v_threshold, _channel_broadcast(lay.threshold, lay.shape))
            assert np.array_equal(node.v_reset, np.zeros(lay.shape))
        for gi, s in enumerate(lay.synapses):
            base = f"layer{i}_syn{gi}"
            if s.op == "conv":
                conv = g.nodes[f"{base}_conv"]
                assert conv.weight.dtype == np.float32
                assert np.array_equal(conv.weight, s.weight)
                assert tuple(conv.stride) == s.stride and tuple(conv.padding) == s.padding
                assert tuple(conv.dilation) == (1, 1) and conv.groups == 1
                assert not conv.bias.any()
            elif s.op == "linear":
                aff = g.nodes[f"{base}_affine"]
                assert np.array_equal(aff.weight, s.weight) and not aff.bias.any()
            elif s.op == "avgpool":
                pool, scale = g.nodes[f"{base}_sumpool"], g.nodes[f"{base}_scale"]
                assert tuple(pool.kernel_size) == s.kernel and tuple(pool.stride) == s.stride
                assert tuple(pool.padding) == s.padding
                assert np.array_equal(scale.scale, _channel_broadcast(s.weight, lay.shape))
            else:
                sc = g.nodes[f"{base}_shortcut"]
                cin = snn.layers[s.source].channels
                assert sc.weight.shape == (lay.channels, cin, 1, 1)
                assert tuple(sc.stride) == s.stride and tuple(sc.padding) == (0, 0)
                for c in range(lay.channels):
                    row = sc.weight[c, :, 0, 0]
                    src = c - s.channel_offset
                    if 0 <= src < cin:
                        assert row[src] == s.weight[c]
                        assert np.count_nonzero(np.delete(row, src)) == 0
                    else:  # option A zero padding: no source channel
                        assert not row.any()
                assert np.array_equal(sc.metadata["onespike.weight"], s.weight)


def _apply(node, x: torch.Tensor) -> torch.Tensor:
    """One NIR node on a batch (N, *shape), torch semantics (cross-correlation, zero pad)."""
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    if isinstance(node, nir.Conv2d):
        return F.conv2d(x, t(node.weight), t(node.bias), tuple(node.stride),
                        tuple(node.padding), tuple(node.dilation), int(node.groups))  # fmt: skip
    if isinstance(node, nir.Affine):
        return x @ t(node.weight).T + t(node.bias)
    if isinstance(node, nir.Flatten):
        assert node.start_dim == 0 and node.end_dim == -1
        return x.reshape(x.shape[0], -1)
    if isinstance(node, nir.SumPool2d):
        k = tuple(int(v) for v in node.kernel_size)
        ones = torch.ones(x.shape[1], 1, *k, dtype=x.dtype)
        return F.conv2d(x, ones, stride=tuple(int(v) for v in node.stride),
                        padding=tuple(int(v) for v in node.padding), groups=x.shape[1])  # fmt: skip
    if isinstance(node, nir.Scale):
        return x * t(node.scale)
    raise AssertionError(f"unexpected node {type(node).__name__}")


@pytest.mark.parametrize("name", NETS)
def test_nir_synapse_nodes_compute_the_artifact_ops(snns, graphs, name) -> None:
    """Random source values through the NIR nodes into each neuron node (incoming edges
    summed) equal the sum of converter.ops.synapse_forward over the layer's groups."""
    snn, g = snns[name], graphs[name]
    layer_nodes = json.loads(g.metadata["onespike.layer_nodes_json"])
    gen = torch.Generator().manual_seed(1)
    given = {
        layer_nodes[str(i)]: torch.rand(2, *lay.shape, generator=gen, dtype=torch.float64)
        for i, lay in enumerate(snn.layers)
    }
    preds: dict[str, list[str]] = {}
    for a, b in g.edges:
        preds.setdefault(b, []).append(a)

    def value(n: str) -> torch.Tensor:
        if n in given:
            return given[n]
        (p,) = preds[n]  # synapse chain nodes have one input
        return _apply(g.nodes[n], value(p))

    for i, lay in enumerate(snn.layers):
        if not lay.synapses:
            continue
        got = sum(value(p) for p in preds[f"layer{i}"])
        want = sum(
            synapse_forward(given[layer_nodes[str(s.source)]], s,
                            torch.as_tensor(s.weight, dtype=torch.float64), lay)
            for s in lay.synapses
        )  # fmt: skip
        assert got.shape == want.shape == (2, *lay.shape)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# metadata: the one-spike semantics and the integer datapath
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NETS)
def test_metadata_carries_the_one_spike_semantics(snns, graphs, name) -> None:
    snn, g = snns[name], graphs[name]
    m = g.metadata
    assert m["onespike.format"] == "one-spike-snn"
    assert (m["onespike.T"], m["onespike.Q"], m["onespike.T_w"]) == (5, 1.4, 2)
    assert m["onespike.T_in"] == 4 and m["onespike.Q_in_input"] == 2.0
    assert m["onespike.shift"] == pytest.approx((1 + 1 / 1.4) / 2)
    assert m["onespike.weight_bits"] == 8 and m["onespike.acc_bits"] == 32
    assert m["onespike.quantized"] and m["onespike.fire_at_most_once"]
    assert json.loads(m["onespike.config_json"]) == snn.config
    assert json.loads(m["onespike.meta_json"]) == snn.meta
    assert "continuous-time" in m["onespike.caveat"]
    assert "does NOT reproduce" in m["onespike.caveat"]

    inp = g.nodes["input"].metadata
    lay0 = snn.input
    assert inp["onespike.T_in"] == 4 and inp["onespike.Q"] == 2.0
    assert bool(inp["onespike.signed"]) == lay0.signed
    for key in ("lam", "input_gain", "input_offset"):
        assert np.array_equal(inp[f"onespike.{key}"], getattr(lay0, key))

    first_hidden = True
    for i, lay in enumerate(snn.layers):
        if lay.kind in ("input", "maxpool"):
            continue
        nm = g.nodes[f"layer{i}"].metadata
        src = snn.source_of(lay)
        assert nm["onespike.kind"] == lay.kind
        assert nm["onespike.T_src"] == src.T and nm["onespike.Q_in"] == src.Q
        assert nm["onespike.leak_per_phase_in"] == src.Q
        assert nm["onespike.T_w"] == lay.T_w and nm["onespike.shift"] == lay.shift
        assert nm["onespike.M_in"] == round(src.Q * 2**16)
        assert np.array_equal(nm["onespike.lam"], lay.lam)
        assert np.array_equal(nm["onespike.v_init"], lay.bias)
        assert np.array_equal(nm["onespike.bias_q"], lay.bias_q)
        assert np.array_equal(nm["onespike.scale"], lay.scale)
        assert nm["onespike.sat_limit"] == lay.sat_limit
        if lay.kind == "neuron":
            assert np.array_equal(nm["onespike.threshold"], lay.threshold)
            assert np.array_equal(nm["onespike.threshold_q"], lay.threshold_q)
            assert nm["onespike.threshold_q"].dtype == np.int64
            assert nm["onespike.leak_per_phase_out"] == lay.Q
            assert nm["onespike.fire_at_most_once"] and nm["onespike.compare"] == ">="
            if first_hidden:  # base manipulation: binary input, Q_in = 2, Q_out = Q
                assert nm["onespike.Q_in"] == 2.0 and nm["onespike.Q"] == 1.4
                first_hidden = False
        else:
            assert not nm["onespike.fires"] and "onespike.threshold_q" not in nm
        for gi, s in enumerate(lay.synapses):
            node = next(
                n for k, n in g.nodes.items()
                if k.startswith(f"layer{i}_syn{gi}_") and "onespike.weight_q" in n.metadata
            )  # fmt: skip
            wq = node.metadata["onespike.weight_q"]
            assert wq.dtype == s.weight_q.dtype and np.array_equal(wq, s.weight_q)
            assert node.metadata["onespike.op"] == s.op
            assert node.metadata["onespike.source"] == s.source
            assert node.metadata["onespike.channel_offset"] == s.channel_offset
    assert not first_hidden


def test_shortcut_weights_are_int16_in_metadata(snns, graphs) -> None:
    snn, g = snns["resnet_conv"], graphs["resnet_conv"]
    dtypes = {
        g.nodes[k].metadata["onespike.weight_q_dtype"] for k in g.nodes if k.endswith("_shortcut")
    }
    assert dtypes == {"int16"}
    assert any(len(lay.synapses) == 2 for lay in snn.layers)


def test_float_artifact_exports_without_integer_datapath(tmp_path) -> None:
    snn = _convert("cnn", ConversionConfig(T=5, Q=1.4, T_w=2, T_in=4, weight_bits=None))
    g = nir.read(export_nir(snn, tmp_path / "float.nir"))
    assert not g.metadata["onespike.quantized"]
    assert "onespike.weight_bits" not in g.metadata
    for node in g.nodes.values():
        assert not any(k in node.metadata for k in ("onespike.weight_q", "onespike.bias_q"))
    assert np.array_equal(g.nodes["layer1_syn0_conv"].weight, snn.layers[1].synapses[0].weight)


def test_maxpool_is_a_marked_placeholder_or_refused(snns, graphs) -> None:
    snn, g = snns["cnn"], graphs["cnn"]
    pools = [i for i, lay in enumerate(snn.layers) if lay.kind == "maxpool"]
    assert pools
    for i in pools:
        lay, node = snn.layers[i], g.nodes[f"layer{i}_maxpool"]
        assert node.metadata["onespike.op"] == "maxpool"
        assert "earliest" in node.metadata["onespike.placeholder"]
        assert tuple(node.kernel_size) == lay.kernel and tuple(node.stride) == lay.stride
        assert np.array_equal(node.metadata["onespike.lam"], lay.lam)
        assert np.array_equal(node.output_type["output"], lay.shape)
    with pytest.raises(NirExportError, match="max pooling"):
        to_nir(snn, strict=True)
    assert isinstance(to_nir(snns["resnet_conv"], strict=True), nir.NIRGraph)


def test_in_memory_graph_equals_the_file(snns, graphs) -> None:
    mem = to_nir(snns["resnet_optionA"])
    disk = graphs["resnet_optionA"]
    assert set(mem.nodes) == set(disk.nodes) and set(mem.edges) == set(disk.edges)
    assert np.array_equal(mem.nodes["layer5_syn1_shortcut"].weight,
                          disk.nodes["layer5_syn1_shortcut"].weight)  # fmt: skip


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onespike")
    add_parsers(p.add_subparsers(dest="command", required=True))
    return p


def test_cli_export_writes_a_readable_nir_file(snns, tmp_path, capsys) -> None:
    art = snns["resnet_optionA"].save(tmp_path / "a.safetensors")
    out = tmp_path / "sub" / "a.nir"
    args = _parser().parse_args(["export", str(art), "--nir", str(out)])
    assert run_export(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0]
    g = nir.read(out)
    want = snns["resnet_optionA"].layers[3].synapses[0].weight
    assert np.array_equal(g.nodes["layer3_syn0_conv"].weight, want)


def test_cli_export_needs_nir_and_strict_refuses_maxpool(snns, tmp_path, capsys) -> None:
    art = snns["cnn"].save(tmp_path / "cnn.safetensors")
    with pytest.raises(SystemExit):
        _parser().parse_args(["export", str(art)])
    capsys.readouterr()
    args = _parser().parse_args(["export", str(art), "--nir", str(tmp_path / "c.nir"), "--strict"])
    with pytest.raises(ValueError, match="max pooling"):
        run_export(args)
    assert not (tmp_path / "c.nir").exists()


def test_cli_export_bad_artifacts(snns, tmp_path) -> None:
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    out = tmp_path / "x.nir"
    with pytest.raises(ArtifactError):
        run_export(_parser().parse_args(["export", str(bad), "--nir", str(out)]))
    good = snns["cnn"].save(tmp_path / "good.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError):
        run_export(_parser().parse_args(["export", str(truncated), "--nir", str(out)]))
    with pytest.raises(FileNotFoundError):
        run_export(_parser().parse_args(["export", str(tmp_path / "no.safetensors"),
                                         "--nir", str(out)]))  # fmt: skip
    assert not out.exists()
    # an output path that cannot be written (its parent is a file): a ValueError, one line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    art = tmp_path / "good.safetensors"
    with pytest.raises(NirExportError, match="cannot write"):
        run_export(_parser().parse_args(["export", str(art), "--nir", str(blocker / "y.nir")]))


def test_cli_main_export(snns, tmp_path, capsys) -> None:
    """Through onespike.cli.main: the file is written; errors exit 2 with one line."""
    from onespike import cli

    art = snns["cnn"].save(tmp_path / "m.safetensors")
    assert cli.main(["export", str(art), "--nir", str(tmp_path / "m.nir")]) == 0
    assert isinstance(nir.read(tmp_path / "m.nir"), nir.NIRGraph)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    capsys.readouterr()
    assert cli.main(["export", str(bad), "--nir", str(tmp_path / "n.nir")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onespike export: error:")
