"""Import an ONNX model as a plain-torch ``fx.GraphModule`` that one-spike can convert.

``load_onnx_model(path)`` reads the file with ``onnx``, converts it with ``onnx2torch`` and
rewrites onnx2torch's graph (whose nodes are onnx2torch modules such as
``OnnxBinaryMathOperation`` or ``OnnxGlobalAveragePoolWithKnownInputShape``) into the torch
ops that ``converter.frontend`` lowers:

==========================================  =============================================
ONNX (onnx2torch)                           plain torch
==========================================  =============================================
Conv, Gemm (constant B), BatchNormalization kept: nn.Conv2d, nn.Linear, nn.BatchNorm1d/2d
Relu, MaxPool, AveragePool, Flatten(axis 1) kept: nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten
Add of two tensors                          operator.add
GlobalAveragePool, ReduceMean over (H, W)   nn.AdaptiveAvgPool2d(1) (then torch.flatten)
Reshape / Flatten to (N, features)          torch.flatten(x, 1); to the same shape: dropped
Identity, Dropout                           dropped (inference)
==========================================  =============================================

Anything else raises ``ValueError`` naming the ONNX node and its op. The rewrite needs the
model's static input shape (a dynamic batch dimension is fine), which the legacy exporter
writes: ``torch.onnx.export(model, x, path, dynamo=False, opset_version=17)``. The default
(dynamo) exporter of torch >= 2.9 writes opset 18+, whose ReduceMean onnx2torch 1.5 cannot
read.

onnx2torch imports torchvision. PyPI's torchvision wheels of the releases paired with torch
2.13 fail to import beside the CPU torch ('operator torchvision::nms does not exist': their
compiled ops link against CUDA torch libraries); scripts/setup.sh installs the extra
``[onnx]`` and ``torchvision==0.16.2 onnx2torch==1.5.15`` with ``--no-deps``, whose Python
part imports without its compiled ops (not needed here: only onnx2torch's NMS and RoiAlign
use them).
"""

from __future__ import annotations

import math
import operator
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

LEGACY_EXPORT = "torch.onnx.export(model, x, path, dynamo=False, opset_version=17)"
INSTALL = (
    "pip install -e .[onnx] && pip install --no-deps torchvision==0.16.2 onnx2torch==1.5.15 "
    "(scripts/setup.sh does both)"
)

#: onnx2torch results that are already plain torch modules the front end lowers.
_KEPT = (
    nn.Conv2d,
    nn.Linear,
    nn.ReLU,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Flatten,
)
#: onnx2torch modules that are identities at inference.
_DROPPED = ("OnnxCopyIdentity", "OnnxDropoutDynamic", "Dropout", "Identity")


def load_onnx_model(path: str | Path) -> fx.GraphModule:
    """Read the ONNX model at ``path`` and return it as plain torch ops, in eval mode.

    Raises FileNotFoundError for a missing file, ImportError when onnx/onnx2torch are not
    installed, and ValueError for a file that is not a valid ONNX model, an op that
    onnx2torch cannot import (with how to export instead), or an op without a one-spike
    equivalent (naming the ONNX node).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such ONNX file: {path}")
    onnx, onnx2torch = _import_backends()
    proto = _read_onnx(onnx, path)
    try:
        gm = onnx2torch.convert(proto)
    except NotImplementedError as exc:
        raise ValueError(_unsupported_by_onnx2torch(proto, path, exc)) from exc
    except Exception as exc:
        raise ValueError(f"{path}: onnx2torch could not import the model: {exc}") from exc
    gm.eval()  # onnx2torch returns it in training mode
    return _plain_torch(gm, proto, path).eval()


# --------------------------------------------------------------------------- reading
def _import_backends():
    try:
        with warnings.catch_warnings():
            # torchvision 0.16 beside torch 2.13 warns that its image extension did not load
            warnings.filterwarnings("ignore", message="Failed to load image Python extension")
            import onnx
            import onnx2torch
    except Exception as exc:  # ImportError, or torchvision's RuntimeError (see the docstring)
        raise ImportError(f"ONNX import needs onnx and onnx2torch ({exc}): {INSTALL}") from exc
    return onnx, onnx2torch


def _read_onnx(onnx, path: Path):
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ValueError(f"{path} is not an ONNX model (it does not parse: {exc})") from exc
    if proto.ir_version == 0 or not proto.opset_import or not proto.graph.node:
        raise ValueError(
            f"{path} is not an ONNX model (no IR version, opset or graph nodes: a corrupt or "
            "non-ONNX file)"
        )
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ValueError(f"{path} is not a valid ONNX model: {exc}") from exc
    return proto


def _unsupported_by_onnx2torch(proto, path: Path, exc: Exception) -> str:
    m = re.search(r"domain='([^']*)', operation_type='(\w+)', version=(\d+)", str(exc))
    if not m:
        return f"{path}: onnx2torch cannot import the model: {exc}"
    domain, op, version = m.groups()
    nodes = [n.name or n.op_type for n in proto.graph.node if n.op_type == op]
    where = f"node '{nodes[0]}'" + (f" (and {len(nodes) - 1} more)" if len(nodes) > 1 else "")
    return (
        f"{path}: ONNX {where} is {op} version {version}"
        + (f" (domain {domain})" if domain else "")
        + f", which onnx2torch cannot import. Export with the legacy exporter at opset 17 or "
        f"lower: {LEGACY_EXPORT}"
    )


# --------------------------------------------------------------------------- rewriting
def _plain_torch(gm: fx.GraphModule, proto, path: Path) -> fx.GraphModule:
    """onnx2torch's GraphModule → a GraphModule of plain torch modules and functions."""
    concrete = _concrete(gm, _example_input(proto, path))
    op_types = _onnx_op_types(proto)
    live = _live(gm)
    root, graph, env = nn.Module(), fx.Graph(), {}

    def module(name: str, mod: nn.Module, x: fx.Node) -> fx.Node:
        safe = re.sub(r"\W", "_", name).strip("_") or "m"
        while hasattr(root, safe):
            safe += "_"
        root.add_module(safe, mod)
        return graph.call_module(safe, (x,))

    for node in gm.graph.nodes:
        if node.name not in live:
            continue
        if node.op == "placeholder":
            env[node.name] = graph.placeholder("x")
            continue
        if node.op == "output":
            graph.output(fx.node.map_arg(node.args[0], lambda n: env[n.name]))
            continue
        if node.op != "call_module":
            raise ValueError(f"{path}: {_describe(node, op_types)} has no one-spike equivalent")
        mod = gm.get_submodule(node.target)
        kind = type(mod).__name__
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        x = env.get(tensors[0].name) if tensors else None
        out = concrete[node.name]
        if isinstance(mod, _KEPT) and len(tensors) == 1 and x is not None:
            env[node.name] = module(node.target, mod, x)
        elif kind in _DROPPED and x is not None:
            env[node.name] = x
        elif kind == "OnnxBinaryMathOperation" and mod.math_op_function is torch.add:
            a, b = node.args[:2]
            if not all(isinstance(v, fx.Node) and v.name in env for v in (a, b)):
                raise ValueError(
                    f"{path}: {_describe(node, op_types)} adds a constant tensor; only the sum "
                    "of two activations (a residual add) is supported"
                )
            env[node.name] = graph.call_function(operator.add, (env[a.name], env[b.name]))
        elif _is_spatial_mean(mod, concrete[tensors[0].name] if tensors else None):
            y = module(node.target, nn.AdaptiveAvgPool2d(1), x)
            env[node.name] = y if out.dim() == 4 else graph.call_function(torch.flatten, (y, 1))
        elif kind in ("OnnxReshape", "OnnxFlatten") and x is not None:
            before = concrete[tensors[0].name]
            if out.shape == before.shape:
                env[node.name] = x
            elif out.dim() == 2 and out.shape[1] == math.prod(before.shape[1:]):
                env[node.name] = graph.call_function(torch.flatten, (x, 1))
            else:
                raise ValueError(
                    f"{path}: {_describe(node, op_types)} reshapes {tuple(before.shape)} to "
                    f"{tuple(out.shape)}; only flattening to (N, features) is supported"
                )
        else:
            raise ValueError(
                f"{path}: {_describe(node, op_types)} has no one-spike equivalent (supported: "
                "Conv, Gemm, BatchNormalization, Relu, Add, MaxPool, AveragePool, "
                "GlobalAveragePool, ReduceMean over H and W, Flatten, Reshape to (N, features), "
                "Identity, Dropout)"
            )
    return fx.GraphModule(root, graph, class_name="ImportedOnnx")


def _live(gm: fx.GraphModule) -> set[str]:
    """Nodes the output depends on, not counting the target-shape operand of a Reshape
    (the rewrite takes the shape from the example run, so its shape arithmetic drops out)."""
    live: set[str] = set()
    stack = [n for n in gm.graph.nodes if n.op == "output"]
    while stack:
        node = stack.pop()
        if node.name in live:
            continue
        live.add(node.name)
        inputs = node.all_input_nodes
        if node.op == "call_module" and type(gm.get_submodule(node.target)).__name__ in (
            "OnnxReshape",
        ):
            inputs = inputs[:1]
        stack.extend(inputs)
    return live


def _is_spatial_mean(mod: nn.Module, x: torch.Tensor | None) -> bool:
    """GlobalAveragePool, or ReduceMean over exactly (H, W), of an (N, C, H, W) tensor."""
    if x is None or x.dim() != 4:
        return False
    kind = type(mod).__name__
    if kind in ("OnnxGlobalAveragePool", "OnnxGlobalAveragePoolWithKnownInputShape"):
        return True
    if kind == "OnnxReduceStaticAxes" and mod.operation_type == "ReduceMean":
        return mod.axes is not None and sorted(a % 4 for a in mod.axes) == [2, 3]
    return False


def _example_input(proto, path: Path) -> torch.Tensor:
    """A zero tensor of the graph input's shape (batch 1 when the batch is dynamic)."""
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"{path}: the model must take exactly one input, it takes {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if not shape or None in shape[1:]:
        raise ValueError(
            f"{path}: input '{inputs[0].name}' has no static shape ({shape}); export with a "
            f"fixed input size: {LEGACY_EXPORT}"
        )
    return torch.zeros([shape[0] or 1, *shape[1:]])


def _concrete(gm: fx.GraphModule, x: torch.Tensor) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            seen[n.name] = out = super().run_node(n)
            return out

    with torch.no_grad():
        Recorder(gm).run(x)
    return seen


def _onnx_op_types(proto) -> dict[str, str]:
    """onnx2torch's module name → ``'<ONNX node name>' (<op type>)``: its naming rule (dots
    become slashes, the leading slash goes, repeated names get ``_1``, ``_2`` …)."""
    counts: dict[str, int] = {}
    names: dict[str, str] = {}
    for n in proto.graph.node:
        base = (f"{n.domain}/" + (n.name.replace(".", "/") or n.op_type)).lstrip("/")
        k = counts.get(base, 0)
        counts[base] = k + 1
        names[base + (f"_{k}" if k else "")] = f"'{n.name or n.op_type}' ({n.op_type})"
    return names


def _describe(node: fx.Node, op_types: dict[str, str]) -> str:
    target = str(node.target)
    onnx_node = op_types.get(target, f"'{target}'")
    if node.op == "call_module":
        kind = type(node.graph.owning_module.get_submodule(target)).__name__
        return f"ONNX node {onnx_node} (onnx2torch {kind})"
    return f"ONNX value {onnx_node} ({node.op})"
