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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.api import Method, MethodCard, TrainData
from bench.registry import register_method

from .common.augment import train_transform
from .common.backbones import ResNetTrunk
from .common.samplers import BalancedBatchSampler
from .common.training import (adam, fit_loop, images_to_device, make_rngs,
                              predict_in_batches, resolve_device, seed_everything)

EMBEDDINGS = ("gap", "map")


class ConvDecoder(nn.Module):
    """Light decoder from a stride-32 feature map back to an image: per stage ×2 nearest
    up-sampling + 3×3 conv (+ BatchNorm + ReLU except in the last stage, which outputs
    ``out_channels`` unbounded values). ``widths`` are the hidden stage widths; with the
    default four, five stages undo the trunk's stride 32."""

    def __init__(self, in_channels: int = 512, widths: tuple[int, ...] = (256, 128, 64, 32),
                 out_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for w in widths:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(ch, w, kernel_size=3, padding=1, bias=False),
                       nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            ch = w
        layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                   nn.Conv2d(ch, out_channels, kernel_size=3, padding=1, bias=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.body(feat)
        if out.shape[-2:] != tuple(size):  # img_size not a multiple of 32
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out


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
class MLEP(Method):
    """Reconstruction network (ResNet-18 encoder + light decoder) trained on normal images with
    an embedding margin against the labelled anomalies; score = reconstruction error."""

    version = "1"
    uses_common_blocks = True
    uses_labeled_anomalies = True
    uses_outliers = False
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
    quick_params = {"img_size": 64, "epochs": 3, "steps_per_epoch": 5, "batch_size": 12}

    # img_size: the DRA default resolution; the harness resizes the data to it, and fit()
    # works at whatever size TrainData carries.
    def __init__(self, img_size: int = 448, epochs: int = 30, steps_per_epoch: int = 20,
                 batch_size: int = 48, lr: float = 2e-4, weight_decay: float = 1e-5,
                 lr_step_size: int = 10, lr_gamma: float = 0.1,
                 grad_clip: Optional[float] = 1.0, margin: float = 1.0,
                 margin_weight: float = 1.0, embedding: str = "gap", rotate: bool = True,
                 backbone: str = "resnet18", test_batch_size: int = 48):
        self.img_size = img_size
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

    def fit(self, train: TrainData) -> "MLEP":
        if self.backbone not in ("resnet18", "resnet50"):
            raise ValueError(f"MLEP backbone={self.backbone!r} is not one of resnet18, "
                             f"resnet50")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"MLEP embedding={self.embedding!r} is not one of "
                             f"{', '.join(EMBEDDINGS)}")
        if self.batch_size < 3:
            raise ValueError(f"MLEP batch_size={self.batch_size!r} must be ≥ 3 (one triplet: "
                             f"anchor, positive, negative)")
        if len(train.anomalies) == 0:
            raise ValueError("MLEP's margin loss needs labelled anomalies as negatives but the "
                             "training data has none (shots = 0); run it with shots ≥ 1")
        if len(train.normal) == 0:
            raise ValueError("MLEP needs normal training images; got none")
        self.model_ = None  # forget an earlier fit before anything can fail
        seed_everything(train.seed)  # before building: the decoder's init repeats
        rng, gen = make_rngs(train.seed)
        device = resolve_device(train.device)
        model = EncoderDecoder(ResNetTrunk(self.backbone, train.weights)).to(device)

        normal = images_to_device(train.normal, device)
        anomalies = images_to_device(train.anomalies, device)
        t = self.batch_size // 3  # triplets per batch (16 of 48)
        sampler = BalancedBatchSampler(len(normal), len(anomalies), 3 * t, 2 * t, rng)

        def step_loss() -> torch.Tensor:
            ni, ai = sampler.next()  # 2t normals (anchors, then positives), t negatives
            x = train_transform(torch.cat([normal[torch.from_numpy(ni).to(device)],
                                           anomalies[torch.from_numpy(ai).to(device)]]),
                                gen, rotate_images=self.rotate)
            feat = model.trunk(x)
            recon = model.decoder(feat[:2 * t], x.shape[-2:])
            pred = F.l1_loss(recon[:t], x[:t]) + F.l1_loss(recon[t:], x[t:2 * t])
            emb = feat.mean(dim=(2, 3)) if self.embedding == "gap" else feat
            return pred + self.margin_weight * margin_loss(emb[:t], emb[t:2 * t], emb[2 * t:],
                                                           self.margin)

        optimizer = adam(model.parameters(), self.lr, self.weight_decay)
        self.loss_history_ = fit_loop(step_loss, optimizer, modules=model, epochs=self.epochs,
                                      steps_per_epoch=self.steps_per_epoch,
                                      grad_clip=self.grad_clip, lr_step_size=self.lr_step_size,
                                      lr_gamma=self.lr_gamma, lr_placement="start",
                                      progress=train.progress)
        model.eval()
        self.model_ = model
        self.device_ = device
        self.img_size_ = train.normal.shape[1]
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted("model_")
        self._check_image_size(images, self.img_size_)
        model = self.model_
        return predict_in_batches(lambda x: reconstruction_error(model, x), images,
                                  self.test_batch_size, self.device_, modules=model)

    def state_dict(self) -> dict:
        self._check_fitted("model_")
        return {"model": self.model_.state_dict()}
