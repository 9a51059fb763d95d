"""MLEP — Margin Learning Embedded Prediction, image adaptation used by the DRA paper
(methods.md §5).

Provenance: the original (Liu et al., IJCAI 2019, ``svip-lab/MLEP``, TensorFlow) is a video
future-frame predictor: a CycleGAN-style encoder + ConvLSTM whose hidden state is the
embedding, a deconvolution decoder predicting the next frame, trained with an L1 prediction
loss on normal clips plus a margin loss on the embeddings of (anchor, positive) normal clips
and an abnormal negative; score = PSNR of the prediction. The DRA paper "adapts it to image
tasks by modifying the backbone network and training settings to be consistent with DRA";
that adaptation was not released, so this module is a reconstruction from the notes. Every
[recon] choice is a parameter:

* [recon] encoder = ResNet-18 up to ``layer4`` (fine-tuned, as every DRA baseline);
* [recon] prediction → reconstruction of the input image (a single image has no future
  frame): :class:`ConvDecoder`, five stages of ×2 nearest up-sampling + 3×3 conv, the first
  four followed by BatchNorm + ReLU (512→256→128→64→32 channels), the last a plain 3×3 conv to
  3 channels (no BN/ReLU: the target is the ImageNet-normalised image, which has negative
  values); resized to the input size if the stride-32 map does not multiply back exactly;
* loss (as the original): L1 prediction loss on the anchor plus the same on the positive
  (normal images only — anomalies are never reconstructed) + λ·max(0, m + intra − inter),
  intra / inter = mean squared difference between the anchor and positive / negative
  embeddings over the whole batch tensors (one hinge per batch, as the original), m = 1,
  λ = 1;
* [recon] embedding = the global average pool of ``layer4`` (``embedding="gap"``) or the
  ``layer4`` map itself (``"map"``), [open] in the notes;
* [recon] triplets: anchor and positive from the normal training images, negative from the
  labelled anomalies; DRA's batch of 48 = 16 triplets, drawn as 32 normal slots + 16 anomaly
  slots from the endless-permutation streams of DRA's sampler; one forward pass through the
  encoder for the whole batch (BatchNorm statistics over all 48);
* [recon] DRA's augmentation (±180° rotation of every training image, ImageNet
  normalisation) and the DRA code's schedule: Adam lr 2e-4, L2 weight decay 1e-5, StepLR(10,
  0.1) stepped at the start of each epoch, gradient norm clipped to 1.0, 30 × 20 steps;
* score = per-image mean squared reconstruction error in the normalised image space (ranks
  images like −PSNR; there is no per-video normalisation for single images). The original's
  best-checkpoint-on-test selection is not reproduced: one evaluation after training.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from bench.api import DEMO_SCHEDULE, MethodCard, RunContext, TrainData
from bench.registry import register_method

from .common.augment import train_transform
from .common.backbones import ResNetTrunk
from .common.decoders import ConvDecoder
from .common.samplers import BalancedBatchSampler
from .common.torch_method import FitState, TorchMethod

EMBEDDINGS = ("gap", "map")


class EncoderDecoder(nn.Module):
    """ResNet trunk + :class:`ConvDecoder`; ``forward`` returns (reconstruction, features)."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.decoder = ConvDecoder(trunk.out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.trunk(x)
        return self.decoder(feat, x.shape[-2:]), feat


def margin_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                margin: float) -> torch.Tensor:
    """MLEP's margin loss: max(0, m + intra − inter) with intra/inter the mean squared
    difference anchor–positive / anchor–negative over the whole batch tensors."""
    intra = (anchor - positive).pow(2).mean()
    inter = (anchor - negative).pow(2).mean()
    return F.relu(margin + intra - inter)


def reconstruction_error(model: EncoderDecoder, x: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared reconstruction error of normalised images x (N×3×H×W) → (N,)."""
    recon, _ = model(x)
    return (recon - x).pow(2).flatten(1).mean(dim=1)


@register_method("mlep")
class MLEP(TorchMethod):
    """Reconstruction network (ResNet-18 encoder + light decoder) trained on normal images with
    an embedding margin against the labelled anomalies; score = reconstruction error."""

    version = "1"
    uses_labeled_anomalies = True
    uses_outliers = False
    min_batch_size = 3  # one triplet: anchor, positive, negative
    card = MethodCard(
        paper="Liu, Luo, Lian, Gao: Margin Learning Embedded Prediction for Video Anomaly "
              "Detection with A Few Anomalies (image adaptation of the DRA paper)",
        venue="IJCAI 2019",
        upstream="https://github.com/svip-lab/MLEP (video, TensorFlow; the image version is "
                 "not released)",
        upstream_license="none stated in the repository",
        notes="[recon] image version: ResNet-18 encoder, 5-stage upsample+conv decoder "
              "reconstructing the input (L1 on normals), margin loss max(0, 1 + intra - "
              "inter) on GAP(layer4) embeddings of anchor/positive normals vs a labelled "
              "anomaly, 16 triplets per 48-image batch, DRA augmentation and schedule, "
              "score = per-image reconstruction MSE; no best-checkpoint selection.")
    # Test-sized budget for the harness' quick preset (64 px, 2 CPU cores).
    quick_params = {"epochs": 3, "steps_per_epoch": 5, "batch_size": 12}
    demo_params = dict(DEMO_SCHEDULE)
    @classmethod
    def test_params(cls) -> dict:
        return {"epochs": 2, "steps_per_epoch": 2, "batch_size": 12}

    def __init__(self, epochs: int = 30, steps_per_epoch: int = 20,
                 batch_size: int = 48, lr: float = 2e-4, weight_decay: float = 1e-5,
                 lr_step_size: int = 10, lr_gamma: float = 0.1,
                 grad_clip: Optional[float] = 1.0, margin: float = 1.0,
                 margin_weight: float = 1.0, embedding: str = "gap", rotate: bool = True,
                 backbone: str = "resnet18", test_batch_size: int = 48):
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step_size = lr_step_size
        self.lr_gamma = lr_gamma
        self.grad_clip = grad_clip
        self.margin = margin
        self.margin_weight = margin_weight
        self.embedding = embedding
        self.rotate = rotate
        self.backbone = backbone
        self.test_batch_size = test_batch_size

    def check_params(self) -> None:
        super().check_params()
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"MLEP embedding={self.embedding!r} is not one of "
                             f"{', '.join(EMBEDDINGS)}")

    def check_data(self, train: TrainData) -> None:
        if len(train.anomalies) == 0:
            raise ValueError("MLEP's margin loss needs labelled anomalies as negatives but the "
                             "training data has none (shots = 0); run it with shots ≥ 1")
        super().check_data(train)

    def lr_step_schedule(self) -> tuple[int, float]:
        return self.lr_step_size, self.lr_gamma

    def build_model(self, train: TrainData, ctx: RunContext) -> nn.Module:
        return EncoderDecoder(ResNetTrunk(self.backbone, ctx.weights))

    def prepare(self, state: FitState) -> None:
        t = self.batch_size // 3  # triplets per batch (16 of 48)
        state.extra["sampler"] = BalancedBatchSampler(len(state.normal), len(state.anomalies),
                                                      3 * t, 2 * t, state.rng)

    def training_step(self, state: FitState) -> torch.Tensor:
        t = self.batch_size // 3
        ni, ai = state.extra["sampler"].next()  # 2t normals (anchors, positives), t negatives
        x = train_transform(state.batch(ni, ai), state.gen, rotate_images=self.rotate)
        feat = state.model.trunk(x)
        recon = state.model.decoder(feat[:2 * t], x.shape[-2:])
        pred = F.l1_loss(recon[:t], x[:t]) + F.l1_loss(recon[t:], x[t:2 * t])
        emb = feat.mean(dim=(2, 3)) if self.embedding == "gap" else feat
        return pred + self.margin_weight * margin_loss(emb[:t], emb[t:2 * t], emb[2 * t:],
                                                       self.margin)

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return reconstruction_error(model, x)
