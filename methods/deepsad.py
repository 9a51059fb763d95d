"""Deep SAD — Deep Semi-supervised Anomaly Detection (Ruff et al., ICLR 2020), image version of
the DRA paper's appendix baseline (methods.md §6).

Provenance (paper, upstream code, licence): the class's ``card``, shown in docs/methods.md.
The training rules follow the authors' code; the adaptation to DRA's
setting was not released and is [recon]:

From the original code:
* centre c = mean representation from one eval-mode pass over the *whole* semi-supervised
  training set (normals and labelled anomalies), then every coordinate with
  0 < |c_j| < ``eps_c`` = 0.1 pushed to ±0.1 keeping its sign (exact zeros stay 0); fixed
  afterwards;
* per-sample loss with d = ‖φ(x) − c‖²: unlabelled (the normal training images) → d;
  labelled anomaly → η/(d + ε), η = ``eta`` = 1, ε = ``eps`` = 1e-6; mean over the batch;
* score = d;
* optional autoencoder pre-training on all training images (labels ignored) with a mean
  squared reconstruction loss, after which the encoder is kept (``ae_pretrain_epochs``;
  same batch/step budget and schedule, learning rate ``ae_lr`` = the original's 1e-3).

[recon] adaptation (DRA: "same backbone for all baselines"):
* φ = ResNet-18 up to ``layer4`` + global average pooling → 512-d, optionally a bias-free
  linear projection to ``rep_dim`` (None = no projection). ImageNet weights replace AE
  pre-training, hence ``ae_pretrain_epochs = 0``; the AE variant uses the light decoder of
  the MLEP module (``bench.methods.common.decoders.ConvDecoder``). ResNet's BatchNorm has affine terms
  (the original nets avoid biases to prevent the collapse of everything onto c); the
  pretrained start and the ε-adjusted centre are what keep it away, as the notes advise;
* the centre pass uses the test transform (no rotation) and every training image; the
  original reuses its shuffled ``drop_last`` training loader, which leaves out a random
  remainder and yields nothing at all for fewer images than a batch;
* batches: ``balanced=True`` draws ``batch_size // 2`` normals and the rest labelled
  anomalies per step from DRA's endless-permutation streams (24/24 of 48), as the notes
  recommend; ``balanced=False`` draws plain shuffled batches from one endless permutation
  over normals + anomalies (the original's sampling, without its drop_last pitfall). Without
  labelled anomalies every slot is normal (Deep SVDD);
* DRA's augmentation (±180° rotation of every training image, ImageNet normalisation) and
  the DRA code's schedule: Adam lr 2e-4, L2 weight decay 1e-6 (Deep SAD's default; the
  notes allow 1e-5 or 1e-6), StepLR(10, 0.1) stepped at the start of each epoch, 30 × 20
  steps, batch 48. No gradient clipping by default (the original has none).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.api import DEMO_SCHEDULE, MethodCard, RunContext, TrainData
from bench.registry import register_method

from .common.augment import normalize, to_float, train_transform
from .common.backbones import ResNetTrunk
from .common.decoders import ConvDecoder
from .common.samplers import BalancedBatchSampler, EndlessPermutation
from .common.torch_method import FitSchedule, FitState, TorchMethod
from .common.training import adam, fit_loop


class DeepSADNet(nn.Module):
    """φ: ResNet trunk → global average pool → optional bias-free linear map to ``rep_dim``."""

    def __init__(self, trunk: nn.Module, rep_dim: Optional[int]):
        super().__init__()
        self.trunk = trunk
        self.proj = (nn.Linear(trunk.out_channels, rep_dim, bias=False)
                     if rep_dim is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.trunk(x).mean(dim=(2, 3))
        return self.proj(z) if self.proj is not None else z


def adjust_centre(c: torch.Tensor, eps_c: float) -> torch.Tensor:
    """Push coordinates with 0 < |c_j| < eps_c to ±eps_c, keeping the sign; zeros stay 0."""
    small = (c.abs() < eps_c) & (c != 0)
    return torch.where(small, torch.sign(c) * eps_c, c)


def deepsad_loss(dist: torch.Tensor, is_anomaly: torch.Tensor, eta: float,
                 eps: float) -> torch.Tensor:
    """Mean over the batch of d (unlabelled/normal) or η/(d + ε) (labelled anomaly)."""
    return torch.where(is_anomaly, eta / (dist + eps), dist).mean()


@register_method("deepsad")
class DeepSAD(TorchMethod):
    """Deep SAD on ResNet-18 features: normals pulled to a centre c, labelled anomalies pushed
    away by an inverse-distance loss; score = squared distance to c."""

    version = "1"
    uses_labeled_anomalies = True
    uses_outliers = False
    min_batch_size = 2
    card = MethodCard(
        paper="Ruff, Vandermeulen, Görnitz, Binder, Müller, Müller, Kloft: Deep "
              "Semi-Supervised Anomaly Detection",
        venue="ICLR 2020",
        upstream="https://github.com/lukasruff/Deep-SAD-PyTorch",
        upstream_license="MIT",
        notes="Loss, centre (eps-adjusted, whole training set) and score as the original "
              "code. [recon] DRA adaptation: ResNet-18 + GAP (512-d, optional bias-free "
              "projection), ImageNet weights instead of AE pre-training (ae_pretrain_epochs "
              "option), balanced 24/24 batches, rotation augmentation, Adam 2e-4 / wd 1e-6, "
              "StepLR(10, 0.1) at epoch start, 30x20 steps; centre from un-augmented images.")
    # Test-sized budget for the harness' quick preset (64 px, 2 CPU cores).
    quick_params = {"epochs": 3, "steps_per_epoch": 5, "batch_size": 12}
    demo_params = dict(DEMO_SCHEDULE)
    @classmethod
    def test_params(cls) -> dict:
        return {"epochs": 2, "steps_per_epoch": 2, "batch_size": 12}

    def __init__(self, epochs: int = 30, steps_per_epoch: int = 20,
                 batch_size: int = 48, lr: float = 2e-4, weight_decay: float = 1e-6,
                 lr_step_size: int = 10, lr_gamma: float = 0.1,
                 grad_clip: Optional[float] = None, rep_dim: Optional[int] = None,
                 eta: float = 1.0, eps: float = 1e-6, eps_c: float = 0.1,
                 balanced: bool = True, ae_pretrain_epochs: int = 0, ae_lr: float = 1e-3,
                 rotate: bool = True, backbone: str = "resnet18", test_batch_size: int = 48):
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step_size = lr_step_size
        self.lr_gamma = lr_gamma
        self.grad_clip = grad_clip
        self.rep_dim = rep_dim
        self.eta = eta
        self.eps = eps
        self.eps_c = eps_c
        self.balanced = balanced
        self.ae_pretrain_epochs = ae_pretrain_epochs
        self.ae_lr = ae_lr
        self.rotate = rotate
        self.backbone = backbone
        self.test_batch_size = test_batch_size

    def check_params(self) -> None:
        super().check_params()
        if self.rep_dim is not None and self.rep_dim < 1:
            raise ValueError(f"DeepSAD rep_dim={self.rep_dim!r} must be ≥ 1 or None (no "
                             f"projection)")
        if self.ae_pretrain_epochs < 0:
            raise ValueError(f"DeepSAD ae_pretrain_epochs={self.ae_pretrain_epochs!r} must be "
                             f"≥ 0")
        if self.eta <= 0 or self.eps <= 0 or self.eps_c < 0:
            raise ValueError(f"DeepSAD needs eta > 0, eps > 0, eps_c ≥ 0; got eta={self.eta!r}"
                             f", eps={self.eps!r}, eps_c={self.eps_c!r}")

    def check_data(self, train: TrainData) -> None:
        if len(train.normal) == 0:  # without labelled anomalies it is Deep SVDD
            raise ValueError("DeepSAD needs normal training images; got none")

    def _pretrain_autoencoder(self, trunk: nn.Module, images: torch.Tensor,
                              rng: np.random.RandomState, gen: torch.Generator,
                              progress) -> list[float]:
        """Train ``trunk`` + a light decoder to reconstruct all training images (MSE); the
        decoder is discarded afterwards."""
        decoder = ConvDecoder(trunk.out_channels).to(images.device)
        stream = EndlessPermutation(len(images), rng)

        def step_loss() -> torch.Tensor:
            idx = torch.from_numpy(stream.take(self.batch_size)).to(images.device)
            x = train_transform(images[idx], gen, rotate_images=self.rotate)
            return F.mse_loss(decoder(trunk(x), x.shape[-2:]), x)

        params = list(trunk.parameters()) + list(decoder.parameters())
        return fit_loop(step_loss, adam(params, self.ae_lr, self.weight_decay),
                        modules=[trunk, decoder], epochs=self.ae_pretrain_epochs,
                        steps_per_epoch=self.steps_per_epoch, grad_clip=self.grad_clip,
                        lr_step_size=self.lr_step_size, lr_gamma=self.lr_gamma,
                        lr_placement="start", progress=progress)

    def lr_step_schedule(self) -> tuple[int, float]:
        return self.lr_step_size, self.lr_gamma

    def planned_steps(self, schedule: FitSchedule) -> int:
        return self.ae_pretrain_epochs * self.steps_per_epoch + schedule.total_steps

    def build_model(self, train: TrainData, ctx: RunContext) -> nn.Module:
        self.c_ = None
        return DeepSADNet(ResNetTrunk(self.backbone, ctx.weights), self.rep_dim)

    def prepare(self, state: FitState) -> None:
        everything = torch.cat([state.normal, state.anomalies])
        n_norm, n_anom, device = len(state.normal), len(state.anomalies), state.device
        state.extra["everything"] = everything
        self.ae_loss_history_ = []
        if self.ae_pretrain_epochs:
            total = self.planned_steps(state.schedule)
            self.ae_loss_history_ = self._pretrain_autoencoder(
                state.model.trunk, everything, state.rng, state.gen,
                lambda step, _total: state.ctx.progress(step, total))
        # Centre: one eval-mode pass over every training image, labels ignored.
        self.c_ = adjust_centre(self._centre(state.model, everything), self.eps_c)
        if self.balanced and n_anom:
            normal_slots = self.batch_size // 2  # DevNet/DRA-style 24/24
            sampler = BalancedBatchSampler(n_norm, n_anom, self.batch_size, normal_slots,
                                           state.rng)

            def draw() -> tuple[torch.Tensor, torch.Tensor]:
                ni, ai = sampler.next()
                idx = torch.from_numpy(np.concatenate([ni, n_norm + ai])).to(device)
                return idx, torch.arange(len(idx), device=device) >= len(ni)
        else:
            stream = EndlessPermutation(n_norm + n_anom, state.rng)

            def draw() -> tuple[torch.Tensor, torch.Tensor]:
                idx = torch.from_numpy(stream.take(self.batch_size)).to(device)
                return idx, idx >= n_norm
        state.extra["draw"] = draw

    def training_step(self, state: FitState) -> torch.Tensor:
        idx, is_anom = state.extra["draw"]()
        x = train_transform(state.extra["everything"][idx], state.gen, rotate_images=self.rotate)
        dist = (state.model(x) - self.c_).pow(2).sum(dim=1)
        return deepsad_loss(dist, is_anom, self.eta, self.eps)

    def _centre(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Mean representation of the (un-augmented) ``images`` with ``model`` in eval mode."""
        was = model.training
        model.eval()
        total, n = None, 0
        with torch.no_grad():
            for i in range(0, len(images), self.test_batch_size):
                z = model(normalize(to_float(images[i:i + self.test_batch_size])))
                s = z.sum(dim=0)
                total = s if total is None else total + s
                n += len(z)
        model.train(was)
        return total / n

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return (model(x) - self.c_).pow(2).sum(dim=1)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "c": self.c_.detach().cpu()}
