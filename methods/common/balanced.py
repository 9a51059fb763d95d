"""The training pipeline DevNet, FLOS and MINNS share (methods.md §2, §3, §7): a backbone
trunk and a head mapping a normalised image batch to one score per image, averaged over an
image pyramid, trained on balanced normal/anomaly batches (``batch_size // 2`` normal slots)
with Adam + end-of-epoch StepLR(10, 0.1) + gradient clipping and ±180° rotation of every
training image, as the DevNet image code does."""
from __future__ import annotations

import torch
from torch import nn

from bench.api import RunContext, TrainData

from .augment import train_transform
from .backbones import ResNetTrunk
from .heads import pyramid_mean
from .samplers import BalancedBatchSampler
from .torch_method import FitState, TorchMethod


class PyramidScoreNet(nn.Module):
    """Backbone trunk → ``head`` (feature map → (B,) scores), averaged over an
    ``n_scales`` image pyramid (methods.md §0.3)."""

    def __init__(self, trunk: nn.Module, head: nn.Module, n_scales: int):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.n_scales = n_scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pyramid_mean(lambda xs: self.head(self.trunk(xs)), x, self.n_scales)


class BalancedPyramidMethod(TorchMethod):
    """Shared ``fit``/``score`` of DevNet, FLOS and MINNS. Subclasses declare their
    parameters (the budget ones plus n_scales, backbone, rotate) and implement
    ``build_head`` and ``batch_loss``."""

    uses_labeled_anomalies = True
    embeds = True
    lr_placement = "end"
    min_batch_size = 2  # half normal, half anomalies

    def build_head(self, in_channels: int) -> nn.Module:
        raise NotImplementedError

    def batch_loss(self, out: torch.Tensor, targets: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def check_params(self) -> None:
        super().check_params()
        if not isinstance(self.n_scales, int) or self.n_scales < 1:
            raise ValueError(f"{type(self).__name__}: n_scales must be an integer ≥ 1, got "
                             f"{self.n_scales!r}")

    def build_model(self, train: TrainData, ctx: RunContext) -> nn.Module:
        trunk = ResNetTrunk(self.backbone, ctx.weights)
        return PyramidScoreNet(trunk, self.build_head(trunk.out_channels), self.n_scales)

    def prepare(self, state: FitState) -> None:
        normal_slots = self.batch_size // 2
        state.extra["sampler"] = BalancedBatchSampler(
            len(state.normal), len(state.anomalies), self.batch_size, normal_slots, state.rng)
        state.extra["targets"] = torch.cat([torch.zeros(normal_slots), torch.ones(
            self.batch_size - normal_slots)]).to(state.device)

    def training_step(self, state: FitState) -> torch.Tensor:
        x = train_transform(state.batch(*state.extra["sampler"].next()), state.gen,
                            rotate_images=self.rotate)
        return self.batch_loss(state.model(x), state.extra["targets"], state.gen)

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    def embed_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map the head scores, averaged over positions."""
        return model.trunk(x).mean(dim=(2, 3))
