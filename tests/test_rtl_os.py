"""The output-stationary engine (rtl/os_engine.py, docs/architecture.md §11): linear, conv,
average-pooling and residual layers under cocotb against golden int and hwsim's
``output_stationary`` cycles."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_lints_clean, check_layers, require_simulator
from test_rtl import CFG, SIZES, digits_snn, pool_net, tiny_cnn, tiny_mlp  # noqa: F401 (a fixture)
from test_rtl_residual import tiny_resnet

import hwsim
import rtl
from converter import ConversionConfig


def os_arch(**kw) -> hwsim.ArchConfig:
    return hwsim.ArchConfig(dataflow="output_stationary", **kw)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seed", "cfg", "arch", "kw"),
    [
        # back-pressure (stalled boundaries, a long drain) and an input stream with gaps
        (6, CFG, dict(lanes=4, output_queue_depth=4),
         dict(stalls=hwsim.stall_pattern(seed=8, rate=0.7, length=101), input_gap_rate=0.9)),
        # a partial last tile (P = 3), T_w = 0, L_n = 5 (short phases wait for the neuron
        # pipeline), 16-bit potentials (the clamp), each layer fed the RTL's spikes of its
        # source, a reset in the middle of the first image
        (5, ConversionConfig(T=6, Q=1.3, T_w=0, T_in=5, acc_bits=16),
         dict(lanes=3, output_queue_depth=3, neuron_pipeline_cycles=5, potential_bits=16),
         dict(chain=True, reset_after_cycles=40)),
    ],
)  # fmt: skip
def test_linear_layers_on_the_output_stationary_engine(seed, cfg, arch, kw) -> None:
    """Hidden layers fed by the input layer and by a hidden layer, and the output layer:
    spikes (output potentials and class) = golden int, cycles = hwsim's, counters = hwsim's."""
    snn, x = tiny_mlp(seed, SIZES, cfg)
    a = os_arch(**arch)
    reps = check_layers(snn, x[:3], [1, 2, 3], a, f"os_s{seed}_p{a.lanes}", **kw)
    assert [r.kind for r in reps] == ["neuron", "neuron", "output"]
    assert all(r.spikes_rtl == r.spikes_golden > 0 for r in reps[:2])
    assert all(r.rtl_cycles == r.hwsim_cycles for r in reps)
    if "stalls" in kw:
        assert sum(r.counters["stalled"] for r in reps) > 0


CNN_CFG = ConversionConfig(T=4, Q=1.5, T_w=1, T_in=3)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cfg", "arch", "kw"),
    [
        # tiles of one channel and pixel blocks; a phase without reads after the source's
        # T; L_n = 1 (such a phase is one boundary cycle), L_a = 3
        (CNN_CFG, dict(lanes=4, output_queue_depth=4, neuron_pipeline_cycles=1,
                       adder_pipeline_cycles=3), {}),
        # T_w = 0, L_n = 3, back-pressure
        (ConversionConfig(T=5, Q=1.4, T_w=0, T_in=4),
         dict(lanes=16, output_queue_depth=16, neuron_pipeline_cycles=3),
         dict(stalls=hwsim.stall_pattern(seed=2, rate=0.6, length=89))),
    ],
)  # fmt: skip
def test_conv_layers_on_the_output_stationary_engine(cfg, arch, kw) -> None:
    """3 × 3 convolutions (stride 1 from the input layer, stride 2 from a hidden layer) and
    the linear output layer: tiles, receptive-field rows and their index reads, the tap
    select, cycle for cycle as hwsim."""
    snn, x = tiny_cnn(0, cfg)
    a = os_arch(weight_buffer_kib=0.0, **arch)
    reps = check_layers(snn, x[:2], [1, 2, 3], a, f"os_cnn_p{a.lanes}", **kw)
    assert all(r.spikes_rtl == r.spikes_golden > 0 for r in reps[:2])
    assert all(r.rtl_cycles == r.hwsim_cycles for r in reps)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("lanes", "kw"),
    [
        # each layer fed the RTL's spikes of its source (a max pooling's: an OS engine's
        # tile order), back-pressure
        (4, dict(chain=True, stalls=hwsim.stall_pattern(seed=4, rate=0.5, length=47))),
        # golden's events (a convolution's in its engine's push order, tile by tile, as
        # hwsim models it), a reset in the middle of the first image
        (3, dict(reset_after_cycles=60)),
    ],
)  # fmt: skip
def test_max_pooling_behind_its_phase_sort(lanes, kw, tmp_path) -> None:
    """Max pooling 3 × 3 stride 2 padding 1 (overlapping windows) in the output-stationary
    dataflow (rtl.os_pool.OsMaxPool): its source's events in any order, sorted by phase,
    then the §5 engine; spikes = golden int, cycles and counters = hwsim's, and the consumer
    (a convolution) takes the pool's events in the order it pushed them."""
    snn, x = pool_net(lanes, ConversionConfig(T=5, Q=1.4, T_w=1, T_in=4))
    assert [lay.kind for lay in snn.layers][1:3] == ["neuron", "maxpool"]
    a = os_arch(lanes=lanes, output_queue_depth=lanes, weight_buffer_kib=0.0)
    reps = check_layers(snn, x[:3], [1, 2, 3], a, f"os_pool_p{lanes}", **kw)
    assert all(r.spikes_rtl == r.spikes_golden > 0 for r in reps)
    assert all(r.rtl_cycles == r.hwsim_cycles for r in reps)
    if lanes == 4:  # the pool's Verilog: the sort, the stream out and the §5 engine; lint
        require_simulator("verilator")
        (f,) = rtl.generate_verilog(snn, a, tmp_path, layer=2)
        assert all(f"onespike_layer2.{b} " in f.read_text() for b in ("sort", "out", "engine"))
        assert_lints_clean(f, tmp_path / "verilator.vlt")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("down", "arch", "kw"),
    [
        ("optionA", dict(lanes=4, output_queue_depth=4, weight_buffer_kib=0.0), {}),
        # a weight buffer (its shortcut group's word too), L_n = 3, back-pressure
        ("conv", dict(lanes=16, output_queue_depth=16, neuron_pipeline_cycles=3,
                      weight_buffer_kib=1.0),
         dict(stalls=hwsim.stall_pattern(seed=3, rate=0.6, length=97))),
    ],
)  # fmt: skip
def test_residual_layers_on_the_output_stationary_engine(down, arch, kw) -> None:
    """Every layer of a small ResNet: the stem, each block's first convolution, the residual
    layers (conv + shortcut: a buffer per group, both groups' rows read per phase, the tap
    select per group) of an identity block and of a stride-2 block (its option-A shortcut or
    1 × 1 projection reads single pixels, one index read each), the global average pooling
    and the output layer."""
    snn, x = tiny_resnet(down)
    a = os_arch(**arch)
    runs = rtl.supported_layers(snn, a)
    assert runs == list(range(1, len(snn.layers)))
    assert [s.op for s in snn.layers[5].synapses][1] == ("shortcut" if down == "optionA" else
                                                         "conv")  # fmt: skip
    reps = check_layers(snn, x[:2], runs, a, f"os_res_{down}", **kw)
    assert all(r.rtl_cycles == r.hwsim_cycles for r in reps)


@pytest.mark.slow
def test_output_stationary_engine_under_verilator_lints_clean(tmp_path) -> None:
    snn, x = tiny_cnn(1, CNN_CFG)
    a = os_arch(lanes=16, output_queue_depth=16, weight_buffer_kib=0.5)  # (layer 1 uses it)
    check_layers(snn, x[:2], [1], a, "os_verilator", sim="verilator")  # (buffered)
    require_simulator("verilator")
    files = rtl.generate_verilog(snn, a, tmp_path)
    assert [f.name for f in files] == ["layer1.v", "layer2.v", "layer3.v"]
    for f in files:
        assert_lints_clean(f, tmp_path / "verilator.vlt")


def test_output_stationary_engine_refuses_what_it_does_not_run(tmp_path) -> None:
    """A window smaller than its stride (other than 1 × 1) is refused by name; so is the
    accelerator in this dataflow."""
    from torch import nn

    from converter import convert

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(4, 4, 2, stride=3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4, 3))  # fmt: skip
    snn = convert(net, torch.rand(8, 1, 8, 8), ConversionConfig(T=4), progress=False)
    a = os_arch(lanes=4, weight_buffer_kib=0.0)
    ops = [lay.synapses[0].op if lay.synapses else lay.kind for lay in snn.layers]
    pool, strided = ops.index("avgpool"), ops.index("avgpool") + 1
    assert ops[strided] == "conv"
    assert rtl.supported_layers(snn, a) == [1, pool, len(ops) - 1]
    with pytest.raises(ValueError, match=rf"layer {strided} .*kernel \(2, 2\) smaller than"):
        rtl.generate_verilog(snn, a, tmp_path, layer=strided)
    with pytest.raises(ValueError, match="runs the potential_sram dataflow"):
        rtl.Accelerator(snn, a)


@pytest.mark.slow
def test_cosim_command_runs_the_output_stationary_engine(digits_snn, tmp_path, capsys) -> None:  # noqa: F811
    """`onespike cosim --preset os16 --layer N`: layers of the built-in example on the
    output-stationary engines, one by one: a convolution filling the weight buffer before
    each channel group, max pooling (the §5 engine behind its phase sort), average pooling
    and the linear output layer. (Without --layer the command runs the whole
    output-stationary accelerator: tests/test_rtl_os_accel.py.)"""
    import json

    from onespike.cli import main
    from rtl.os_engine import OsImage

    snn, _, _ = digits_snn
    arch = hwsim.ArchConfig.preset("os16")
    ops = [lay.synapses[0].op if lay.synapses else lay.kind for lay in snn.layers]
    assert [ops[i] for i in rtl.supported_layers(snn, arch)] == ["conv", "maxpool", "conv",
                                                                 "avgpool", "linear"]  # fmt: skip
    assert OsImage.from_snn(snn, 1, arch).buffered
    art = snn.save(tmp_path / "d.safetensors")
    out, js = tmp_path / "c", tmp_path / "c.json"
    argv = ["cosim", str(art), "--preset", "os16", "--images", "2", "-o", str(out)]
    layers = [i for i in range(1, len(snn.layers)) if i != 3]
    assert main([*argv, *(f"--layer={i}" for i in layers), "--json", str(js)]) == 0
    got = json.loads(js.read_text())["layers"]
    assert [x["name"] for x in got] == [snn.layers[i].name for i in layers]
    assert all(x["spikes_match"] and x["rtl_cycles"] == x["hwsim_cycles"] for x in got)
