"""Backbones and their weights: one place that turns the run's ``weights`` option into a
torchvision model, and fails clearly when ImageNet weights are not available offline.

``weights`` is ``"imagenet"`` (torchvision's ImageNet-1k checkpoint, what the released code
downloads at first use; offline it must already sit in torch's hub cache), ``"none"``
(random initialisation, for tests and quick runs) or a folder holding the torchvision-named
checkpoint files (e.g. ``resnet18-f37072fd.pth``) for every backbone in use.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

# torchvision builder and weights enum of every backbone the methods use.
_ARCHS = {
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "vgg16": ("vgg16", "VGG16_Weights"),
}


class WeightsUnavailable(FileNotFoundError):
    """ImageNet weights requested but not present (and not downloadable)."""


def weights_filename(arch: str) -> str:
    """The torchvision file name of ``arch``'s ImageNet-1k weights (e.g. resnet18-f37072fd.pth)."""
    import torchvision.models as tvm

    _, enum_name = _ARCHS[arch]
    return os.path.basename(getattr(tvm, enum_name).IMAGENET1K_V1.url)


def _hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights_file(arch: str, weights: str, *, download: bool = True) -> Path | None:
    """Path of the checkpoint to load for ``arch``, or None for random initialisation.

    ``imagenet`` looks in torch's hub cache and, if absent, tries torchvision's download once
    (never with ``download=False``, as in ``bench run --dry-run``); if the file is not there
    it raises :class:`WeightsUnavailable` naming the exact file."""
    if arch not in _ARCHS:
        raise ValueError(f"unknown backbone {arch!r}; known: {', '.join(_ARCHS)}")
    if weights == "none":
        return None
    fname = weights_filename(arch)
    if weights == "imagenet":
        target = _hub_checkpoint_dir() / fname
        if target.is_file():
            return target
        import torchvision.models as tvm

        _, enum_name = _ARCHS[arch]
        if not download:
            raise WeightsUnavailable(
                f"{fname} is not in torch's cache; a run downloads it to {target} "
                f"(torchvision's {enum_name}.IMAGENET1K_V1); offline, place it there, or pass "
                f"--weights DIR or --weights none")
        try:  # users have internet; the download lands exactly at `target`
            getattr(tvm, enum_name).IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as exc:
            raise WeightsUnavailable(
                f"ImageNet weights for {arch} are not available: place {fname} at {target} "
                f"(torchvision's {enum_name}.IMAGENET1K_V1), or pass --weights DIR with a "
                f"folder holding {fname}, or --weights none to train from random "
                f"initialisation (not the paper's setting). Download failed: {exc}") from exc
        if target.is_file():
            return target
        raise WeightsUnavailable(f"torchvision did not leave {fname} at {target}")
    folder = Path(weights).expanduser()
    if not folder.is_dir():
        raise WeightsUnavailable(f"--weights {weights!r} is neither 'imagenet', 'none' nor an "
                                 f"existing folder")
    path = folder / fname
    if not path.is_file():
        raise WeightsUnavailable(f"--weights folder {folder} has no {fname} (the torchvision "
                                 f"ImageNet checkpoint of {arch}); add it or use --weights none")
    return path


def build_torchvision(arch: str, weights: str) -> nn.Module:
    """A torchvision classification model with the resolved weights loaded."""
    import torchvision.models as tvm

    builder, _ = _ARCHS[arch]
    model = getattr(tvm, builder)(weights=None)
    path = resolve_weights_file(arch, weights)
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model


# The backbones a ResNet trunk can be built on: the one list every method's ``backbone``
# parameter is checked against.
RESNET_ARCHS = ("resnet18", "resnet50")


class ResNetTrunk(nn.Module):
    """ResNet up to ``layer4`` (before global pooling and FC): 512 channels at stride 32
    for ResNet-18 (methods.md §0.1). The whole trunk is trainable."""

    def __init__(self, arch: str = "resnet18", weights: str = "none"):
        super().__init__()
        if arch not in RESNET_ARCHS:
            raise ValueError(f"backbone={arch!r} is not one of {', '.join(RESNET_ARCHS)}")
        m = build_torchvision(arch, weights)
        self.body = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool,
                                  m.layer1, m.layer2, m.layer3, m.layer4)
        self.out_channels = 2048 if arch == "resnet50" else 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
