"""Co-simulation of the rtl layer engine on residual layers (two synapse groups: a ResNet
block's second convolution plus its shortcut) against golden and hwsim."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import check_layers
from torch import nn

import hwsim
from converter import ConversionConfig, convert

CFG = ConversionConfig(T=5, Q=1.4, T_w=1, T_in=4)


class Block(nn.Module):
    """A ResNet basic block: identity, projection (1 × 1 conv + BN) or option-A (subsample +
    channel zero padding) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.kind, self.pad = shortcut, (cout - cin) // 2
        if shortcut == "conv":
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.kind == "conv":
            sc = self.shortcut(x)
        elif self.kind == "optionA":
            sc = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        else:
            sc = x
        return F.relu(out + sc)


class TinyResNet(nn.Module):
    """stem conv 3 × 3 → identity block → stride-2 block (``down`` shortcut) → GAP → linear."""

    def __init__(self, down: str):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.layer1 = Block(4, 4, 1, "identity")
        self.layer2 = Block(4, 8, 2, down)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def tiny_resnet(down: str, seed: int = 0, n_test: int = 3):
    """A random TinyResNet converted to an SnnModel (calibrated on 32 images), test images."""
    torch.manual_seed(seed)
    net = TinyResNet(down)
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.6, 1.4)
                mod.bias.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.rand(32 + n_test, 3, 8, 8)
    return convert(net, x[:32], CFG, progress=False), x[32:]


def residual_layers(snn) -> list[int]:
    """The neuron layers with two synapse groups."""
    return [i for i, lay in enumerate(snn.layers) if len(lay.synapses) == 2]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("down", "block", "arch"),
    [
        # identity shortcut (stride 1, every event has one target)
        ("conv", 0, dict(lanes=4, output_queue_depth=4)),
        # projection shortcut: a 1 × 1 stride-2 conv group (3 of 4 source pixels: no target)
        ("conv", 1, dict(lanes=4, output_queue_depth=4)),
        # option A: subsample + channel offset (3 of 4 pixels: no target)
        ("optionA", 1, dict(lanes=4, output_queue_depth=4)),
        # events without fan-out ending in ISSUE_WAIT (I = 2), L_a = 1, P = 3
        ("optionA", 1, dict(lanes=3, output_queue_depth=3, event_issue_cycles=2,
                            adder_pipeline_cycles=1, neuron_pipeline_cycles=1)),
        # I = 1 with L_a = 1: the phase-end cycle after an event without fan-out is L_a
        ("conv", 1, dict(lanes=8, output_queue_depth=8, adder_pipeline_cycles=1)),
    ],
)  # fmt: skip
def test_residual_layer_matches_golden_and_hwsim(down, block, arch) -> None:
    """A residual layer: group 0's events of each phase, then group 1's, each issued with its
    group bit; spikes equal golden int's, cycles and counts equal hwsim's, under output
    back-pressure."""
    snn, x = tiny_resnet(down)
    layer = residual_layers(snn)[block]
    cfg = hwsim.ArchConfig(**arch)
    name = f"residual_{down}_b{block}_p{cfg.lanes}_i{cfg.event_issue_cycles}"
    stalls = hwsim.stall_pattern(seed=cfg.lanes, rate=0.4, length=41)
    (rep,) = check_layers(snn, x, [layer], cfg, name, stalls=stalls)
    assert rep.spikes_rtl > 0


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_residual_layer_image_and_refusal() -> None:
    """Two groups' weight words one after the other (group 1's int16 shortcut weights widen
    the lanes to 16 bits); with L_a = 0 the registered-read pipeline has no cycle for the
    phase's last write-back (nor, with I = 1, an event without fan-out for its phase end), so
    the engine refuses it."""
    from hwsim.sim import memory_bits
    from rtl.engine import LayerEngine, LayerImage

    snn, _ = tiny_resnet("optionA")
    layer = residual_layers(snn)[1]
    img = LayerImage.from_snn(snn, layer, 4)
    g0, g1 = img.groups
    assert (g0.op, g1.op, g1.stride, g1.channel_offset) == ("conv", "shortcut", (2, 2), 2)
    assert g1.base == g0.words == 8 * 9 * 2 and len(img.weights) == g0.words + g1.words
    assert img.weight_bits == 16 and img.has_events_without_fanout()
    engine = LayerEngine(hwsim.ArchConfig(lanes=4), img)
    assert engine.weight_bits == 16
    # hwsim sizes the parameter memory as the engine holds it: 16-bit lanes, then B and Θq
    lay = snn.layers[layer]
    want = len(img.weights) * 4 * 16 + engine.rows * 4 * 32 + lay.channels * lay.T * 32
    assert memory_bits(snn, lay, hwsim.ArchConfig(lanes=4))[0] == want
    with pytest.raises(ValueError, match=r"adder_pipeline_cycles \(L_a\) ≥ 1"):
        LayerEngine(hwsim.ArchConfig(lanes=4, adder_pipeline_cycles=0), img)
