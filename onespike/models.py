"""Reference ReLU networks (digits CNN, MNIST CNN, CIFAR-10 ResNets) and their loaders."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from onespike.data import find_data, load_digits

__all__ = [
    "MNIST_CHECKPOINT",
    "BasicBlock",
    "DigitsCNN",
    "LambdaLayer",
    "MnistCNN",
    "ResNetCifar",
    "evaluate",
    "load_cifar_resnet",
    "load_mnist_cnn",
    "resnet20",
    "resnet32",
    "resnet_cifar",
    "train_digits_cnn",
]

#: Committed MNIST CNN weights (safetensors), written by ``benchmarks/train_mnist.py``.
MNIST_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "mnist_cnn.safetensors"


class DigitsCNN(nn.Module):
    """Small CNN for the 8x8 scikit-learn digits (about 1.9 k parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for images shaped (N, 1, 8, 8)."""
        return self.features(x)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Return the top-1 accuracy (a fraction in [0, 1]) of ``model`` on ``(x, y)``.

    Parameters
    ----------
    model
        The network; it is put into eval mode.
    x, y
        Inputs and int64 labels with the same first dimension.
    batch_size
        Examples per forward pass.

    Returns
    -------
    float
        Fraction of correctly classified examples.
    """
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x has {x.shape[0]} examples and y has {y.shape[0]}; need equal, > 0")
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        logits = model(x[i : i + batch_size])
        correct += int((logits.argmax(dim=1) == y[i : i + batch_size]).sum())
    return correct / x.shape[0]


def train_digits_cnn(seed: int = 0, epochs: int = 30) -> tuple[DigitsCNN, float]:
    """Train :class:`DigitsCNN` on :func:`onespike.data.load_digits` deterministically.

    The global torch RNG state is saved and restored, so callers' random streams are not
    disturbed.

    Parameters
    ----------
    seed
        Seed of the data split, the weight initialisation and the batch order.
    epochs
        Passes over the 1347 training images (batch size 32, Adam, cosine learning rate).

    Returns
    -------
    model, test_accuracy
        The trained model in eval mode and its accuracy (fraction) on the 450 test images.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    x_tr, y_tr, x_te, y_te = load_digits(seed=seed)
    batch_size = 32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsCNN()
        fit_one_cycle(
            model, x_tr, y_tr, epochs=epochs, batch_size=batch_size, max_lr=1e-2, seed=seed
        )
    return model, evaluate(model, x_te, y_te)


def fit_one_cycle(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    max_lr: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train with cross-entropy, Adam and a one-cycle schedule; deterministic batch order.

    ``on_epoch(epoch, mean_loss)`` is called after each pass. Returns the model in eval mode.
    """
    steps_per_epoch = (x.shape[0] + batch_size - 1) // batch_size
    opt = torch.optim.Adam(model.parameters(), lr=max_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.shape[0]
        if on_epoch is not None:
            on_epoch(epoch, total / x.shape[0])
    return model.eval()


class MnistCNN(nn.Module):
    """Two-conv CNN for 28x28 MNIST digits (about 215 k parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.relu3 = nn.ReLU()
        self.dropout = nn.Dropout(0.2)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for images shaped (N, 1, 28, 28)."""
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(F.relu(self.bn2(self.conv2(x))))
        x = x.view(x.size(0), -1)
        x = self.dropout(self.relu3(self.fc1(x)))
        return self.fc2(x)


def load_mnist_cnn(path: str | os.PathLike[str] | None = None) -> MnistCNN:
    """Load the committed MNIST CNN weights (safetensors; nothing is unpickled).

    Parameters
    ----------
    path
        A ``.safetensors`` state dict; defaults to :data:`MNIST_CHECKPOINT`.

    Returns
    -------
    MnistCNN
        The model in eval mode.

    Raises
    ------
    FileNotFoundError
        If the file is missing (run ``benchmarks/train_mnist.py`` to create it).
    """
    from safetensors.torch import load_file

    ckpt = MNIST_CHECKPOINT if path is None else Path(path)
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"MNIST checkpoint not found: {ckpt} (run benchmarks/train_mnist.py to create it)"
        )
    model = MnistCNN()
    model.load_state_dict(load_file(str(ckpt)), strict=True)
    return model.eval()


# --- CIFAR-10 ResNets (structure of Yerlan Idelbayev's resnet.py, BSD-2) ----------------------


class LambdaLayer(nn.Module):
    """Wrap a function as a module (used for the parameter-free option-A shortcut)."""

    def __init__(self, lambd: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.lambd = lambd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the wrapped function."""
        return self.lambd(x)


class BasicBlock(nn.Module):
    """CIFAR ResNet basic block: two 3x3 convolutions with BN and an option-A shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            # Option A: subsample spatially and zero-pad planes // 4 channels on each side.
            self.shortcut = LambdaLayer(
                lambda x: F.pad(
                    x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class ResNetCifar(nn.Module):
    """CIFAR-10 ResNet of He et al. (2016): 3 stages of 16/32/64 channels, 6n+2 layers."""

    def __init__(self, num_blocks: list[int] | tuple[int, int, int], num_classes: int = 10):
        super().__init__()
        if len(num_blocks) != 3 or any(int(n) < 1 for n in num_blocks):
            raise ValueError(f"num_blocks must be three positive ints, got {num_blocks!r}")
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(64, num_blocks[2], stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for normalised images shaped (N, 3, 32, 32)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        out = self.linear(out)
        return out


def resnet_cifar(depth: int) -> ResNetCifar:
    """Build an untrained CIFAR ResNet of the given depth (6n + 2: 20, 32, 44, 56, ...)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth!r}")
    n = (depth - 2) // 6
    return ResNetCifar([n, n, n])


def resnet20() -> ResNetCifar:
    """Build an untrained ResNet-20 (3 blocks per stage)."""
    return resnet_cifar(20)


def resnet32() -> ResNetCifar:
    """Build an untrained ResNet-32 (5 blocks per stage)."""
    return resnet_cifar(32)


def load_cifar_resnet(depth: int, root: str | os.PathLike[str] | None = None) -> ResNetCifar:
    """Load a pretrained CIFAR-10 ResNet from ``cifar10-resnet/resnet{depth}-*.th``.

    Parameters
    ----------
    depth
        20, 32, 44 or 56 (whichever checkpoints the data folder holds).
    root
        Folder holding the ``.th`` files; defaults to ``data_root() / "cifar10-resnet"``.

    Returns
    -------
    ResNetCifar
        The model in eval mode. It expects inputs normalised with
        :data:`onespike.data.CIFAR_MEAN` / :data:`onespike.data.CIFAR_STD`.

    Raises
    ------
    FileNotFoundError
        If no checkpoint of that depth exists.
    ValueError
        If the depth is not 6n + 2 or the file does not hold the expected state dict.
    """
    model = resnet_cifar(depth)
    folder = find_data("cifar10-resnet") if root is None else Path(root)
    matches = sorted(folder.glob(f"resnet{depth}-*.th"))
    if not matches:
        raise FileNotFoundError(f"no checkpoint {folder / f'resnet{depth}-*.th'} found")
    path = matches[0]
    # These are legacy pickles; weights_only=False is acceptable ONLY because they are the
    # trusted, sha256-named Idelbayev checkpoints from the shared data folder. Never load
    # user-supplied files this way.
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict with a 'state_dict' entry")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.eval()
