"""BGAD: a conditional normalizing flow over frozen pretrained patch features, trained by
maximum likelihood on normal patches plus the boundary-guided semi-push-pull (BG-SPP) loss
that pushes labelled anomalous patches below a log-likelihood boundary set by the normal
ones. The image score is the maximum of the pixel-level anomaly map. Provenance and
differences: ``BGAD.card``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from typing import Optional

from ..api import Method, MethodCard, RunContext, TrainData
from ..registry import register_method
from .common.augment import normalize, to_float
from .common.backbones import build_torchvision
from .common.samplers import BalancedBatchSampler
from .common.training import images_to_device, make_rngs, resolve_device, seed_everything

_LOG_2PI = math.log(2 * math.pi)


# -- networks ----------------------------------------------------------------------------------
class ResNetLevels(nn.Module):
    """Frozen torchvision ResNet returning the outputs of layer1 … layer``n_levels`` (the
    upstream encoder is timm's ``features_only`` model with out_indices 1..3)."""

    def __init__(self, arch: str, weights: str, n_levels: int):
        super().__init__()
        if not 1 <= n_levels <= 4:
            raise ValueError(f"BGAD feature_levels must be 1-4 (ResNet layer1-layer4), got "
                             f"{n_levels!r}")
        m = build_torchvision(arch, weights)
        self.stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
        self.layers = nn.ModuleList([m.layer1, m.layer2, m.layer3, m.layer4][:n_levels])
        self.channels = [getattr(layer[-1], "conv3", layer[-1].conv2).out_channels
                         for layer in self.layers]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "ResNetLevels":
        return super().train(False)  # frozen, BatchNorm in inference mode

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], self.stem(x)
        for layer in self.layers:
            h = layer(h)
            out.append(h)
        return out


def positional_encoding_2d(dim: int, h: int, w: int) -> torch.Tensor:
    """The 2-D sine/cosine positional encoding of CFLOW/BGAD, dim×h×w: the first half of the
    channels encodes the column, the second half the row, alternating sin and cos."""
    if dim % 4:
        raise ValueError(f"BGAD pos_embed_dim must be a multiple of 4, got {dim!r}")
    half = dim // 2
    div = torch.exp(torch.arange(0.0, half, 2) * -(math.log(1e4) / half))
    pos_w = torch.arange(0.0, w)[:, None] * div  # w × half/2
    pos_h = torch.arange(0.0, h)[:, None] * div
    p = torch.zeros(dim, h, w)
    p[0:half:2] = torch.sin(pos_w).t()[:, None, :].expand(-1, h, -1)
    p[1:half:2] = torch.cos(pos_w).t()[:, None, :].expand(-1, h, -1)
    p[half::2] = torch.sin(pos_h).t()[:, :, None].expand(-1, -1, w)
    p[half + 1::2] = torch.cos(pos_h).t()[:, :, None].expand(-1, -1, w)
    return p


class CouplingBlock(nn.Module):
    """One conditional affine coupling block in the manner of FrEIA's ``AllInOneBlock``
    (the upstream flow block): the first half of the channels and the condition predict a
    soft-clamped scale and a shift of the second half (subnet Linear → ReLU → Linear with
    twice the input width), then a learned global affine (softplus scale) and a fixed random
    orthogonal mixing of all channels. ``forward(x, cond)`` → (z, log|det J|) per row."""

    def __init__(self, dim: int, cond_dim: int, clamp: float, generator: torch.Generator):
        super().__init__()
        self.d1 = dim // 2
        self.d2 = dim - self.d1
        width = self.d1 + cond_dim
        self.subnet = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(),
                                    nn.Linear(2 * width, 2 * self.d2))
        nn.init.zeros_(self.subnet[-1].weight)  # start as the identity map
        nn.init.zeros_(self.subnet[-1].bias)
        self.clamp = clamp
        # softplus(0.5413…) = 1: the global scale starts at 1
        self.global_scale = nn.Parameter(torch.full((dim,), 0.5413))
        self.global_shift = nn.Parameter(torch.zeros(dim))
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
        self.register_buffer("mix", q)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = x[:, :self.d1], x[:, self.d1:]
        s, t = self.subnet(torch.cat([x1, cond], dim=1)).chunk(2, dim=1)
        s = self.clamp * 0.636 * torch.atan(s / self.clamp)  # FrEIA's soft clamp
        y = torch.cat([x1, x2 * torch.exp(s) + t], dim=1)
        scale = F.softplus(self.global_scale)
        y = (y * scale + self.global_shift) @ self.mix
        log_det = s.sum(dim=1) + torch.log(scale).sum()  # |det mix| = 1
        return y, log_det


class ConditionalFlow(nn.Module):
    """A stack of :class:`CouplingBlock` conditioned on the positional encoding."""

    def __init__(self, dim: int, cond_dim: int, n_blocks: int, clamp: float,
                 generator: torch.Generator):
        super().__init__()
        self.blocks = nn.ModuleList([CouplingBlock(dim, cond_dim, clamp, generator)
                                     for _ in range(n_blocks)])

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = x.new_zeros(len(x))
        for block in self.blocks:
            x, ld = block(x, cond)
            log_det = log_det + ld
        return x, log_det


def log_likelihood(z: torch.Tensor, log_det: torch.Tensor) -> torch.Tensor:
    """Per-dimension log-likelihood of each row under the flow with a standard normal base:
    (−½·C·log 2π − ½‖z‖² + log|det J|) / C, as upstream's ``get_logp`` / dim."""
    c = z.shape[1]
    return (-0.5 * c * _LOG_2PI - 0.5 * (z ** 2).sum(dim=1) + log_det) / c


# -- loss --------------------------------------------------------------------------------------
def logp_boundaries(normal_logps: torch.Tensor, pos_beta: float, margin_tau: float,
                    normalizer: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(b_n, b_a): the normal boundary is the ``pos_beta`` quantile (index ⌊β·N⌋ of the sorted
    values) of the normal log-likelihoods divided by ``normalizer`` (no gradient), and the
    abnormal boundary lies ``margin_tau`` below it."""
    s = torch.sort(normal_logps.detach())[0]
    b_n = s[int(len(s) * pos_beta)] / normalizer
    return b_n, b_n - margin_tau


def bg_spp_loss(logps: torch.Tensor, is_anomaly: torch.Tensor, boundaries, normalizer: float
                ) -> torch.Tensor:
    """Boundary-guided semi-push-pull loss: normal patches below b_n are pulled up to it
    (mean of b_n − logp/normalizer over them), anomalous patches above b_a pushed down to it
    (mean of logp/normalizer − b_a over them); a term with no such patches is 0."""
    b_n, b_a = boundaries
    z = logps / normalizer
    normal, anomal = z[~is_anomaly], z[is_anomaly]
    pull = b_n - normal[normal <= b_n]
    push = anomal[anomal >= b_a] - b_a
    loss = z.new_zeros(())
    if len(pull):
        loss = loss + pull.mean()
    if len(push):
        loss = loss + push.mean()
    return loss


def anomalous_patch_mask(logps: torch.Tensor, is_anomaly_image: torch.Tensor, rate: float
                         ) -> torch.Tensor:
    """Patches treated as anomalous on a B×h×w map of log-likelihoods: in each labelled
    anomaly image, the ⌈rate·h·w⌉ patches of lowest likelihood (the harness has image labels
    only, no pixel masks); none in normal images."""
    b, h, w = logps.shape
    k = max(int(math.ceil(rate * h * w)), 1)
    mask = torch.zeros(b, h * w, dtype=torch.bool, device=logps.device)
    if bool(is_anomaly_image.any()):
        idx = torch.topk(-logps.detach().reshape(b, -1), k, dim=1).indices
        mask[torch.arange(b, device=logps.device)[:, None], idx] = True
        mask &= is_anomaly_image[:, None]
    return mask.view(b, h, w)


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Upstream ``adjust_learning_rate`` with ``lr_cosine``: cosine from lr to lr·10⁻³ over
    the meta epochs (0-based ``epoch``)."""
    eta_min = base_lr * 0.1 ** 3
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


@register_method("bgad")
class BGAD(Method):
    """Normalizing flows on frozen ResNet features, one per level, trained with maximum
    likelihood and the BG-SPP loss; image score = max of the summed per-level anomaly map."""

    version = "1"
    uses_common_blocks = True
    uses_labeled_anomalies = True
    card = MethodCard(
        paper="Yao, Li, Zhang, Sun, Zhang. Explicit Boundary Guided Semi-Push-Pull "
              "Contrastive Learning for Supervised Anomaly Detection (BGAD)",
        venue="CVPR 2023",
        upstream="https://github.com/xcyao00/BGAD (commit 2806d37f3a98)",
        upstream_license="no licence file in the repository (all rights reserved by "
                         "default); nothing copied, implemented from the paper and code",
        notes="As upstream: frozen encoder, one conditional flow per feature level (3 levels) "
              "with a 128-d sine/cosine positional condition, 8 coupling blocks, clamp 1.9, "
              "subnet Linear-ReLU-Linear (2x width); per-dimension log-likelihood; first "
              "epoch maximum likelihood on normal patches only, then -logsigmoid(logp) on "
              "normal patches + lambda x BG-SPP (beta 0.05, tau 0.1, normalizer 10, lambda "
              "1); Adam 2e-4 with cosine decay to 1e-3 x lr over the meta epochs; anomaly "
              "map = sum over levels of exp(logp - max) upsampled bilinearly, turned into an "
              "anomaly score, image score = its maximum. Differences: ResNet-18 layer1-3 "
              "(the harness's shared backbone; upstream EfficientNet-B6 via timm); the flow "
              "block is our affine coupling in the manner of FrEIA's AllInOneBlock (soft "
              "clamp, softplus global affine, fixed random orthogonal mixing; FrEIA not a "
              "dependency); reconstructed for image-level labels: upstream trains on pixel "
              "masks, here the lowest-likelihood anomalous_patch_rate (10%) of each labelled "
              "anomaly's patches count as anomalous and its other patches are not used; the "
              "likelihood normaliser of the map is the maximum over the training normals "
              "(fixed at fit) instead of over the whole test set, so an image's score does "
              "not depend on the other test images; each step uses a balanced batch of "
              "images (1/8 anomalies) and all their patches instead of 4096-patch chunks of "
              "the data loader's batch; no learning-rate warm-up; no focal weighting "
              "(upstream default off).",
    )
    quick_params = {"epochs": 2, "steps_per_epoch": 5, "batch_size": 8, "coupling_layers": 2}
    input_size = 256  # the released code's MVTec AD setting

    @classmethod
    def test_params(cls) -> dict:
        return {"epochs": 2, "steps_per_epoch": 1, "batch_size": 4, "coupling_layers": 1}

    @classmethod
    def budget_params(cls, steps: int, batch_size: Optional[int] = None) -> dict:
        return {"epochs": 1, "steps_per_epoch": steps,
                **({"batch_size": batch_size} if batch_size else {})}

    def __init__(self, epochs: int = 25, steps_per_epoch: int = 80,
                 batch_size: int = 32, lr: float = 2e-4, backbone: str = "resnet18",
                 feature_levels: int = 3, coupling_layers: int = 8, clamp_alpha: float = 1.9,
                 pos_embed_dim: int = 128, pos_beta: float = 0.05, margin_tau: float = 0.1,
                 normalizer: float = 10.0, bgspp_lambda: float = 1.0,
                 anomalous_patch_rate: float = 0.1, anomaly_fraction: float = 0.125,
                 test_batch_size: int = 32):
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.lr = lr
        self.backbone = backbone
        self.feature_levels = feature_levels
        self.coupling_layers = coupling_layers
        self.clamp_alpha = clamp_alpha
        self.pos_embed_dim = pos_embed_dim
        self.pos_beta = pos_beta
        self.margin_tau = margin_tau
        self.normalizer = normalizer
        self.bgspp_lambda = bgspp_lambda
        self.anomalous_patch_rate = anomalous_patch_rate
        self.anomaly_fraction = anomaly_fraction
        self.test_batch_size = test_batch_size

    def _check_params(self) -> None:
        for name in ("epochs", "steps_per_epoch", "coupling_layers", "test_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"BGAD {name} must be an integer ≥ 1, got {v!r}")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 2:
            raise ValueError(f"BGAD batch_size must be an integer ≥ 2, got {self.batch_size!r}")
        if self.backbone not in ("resnet18", "resnet50"):
            raise ValueError(f"BGAD backbone={self.backbone!r} is not one of resnet18, resnet50")
        for name in ("pos_beta", "anomalous_patch_rate", "anomaly_fraction"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"BGAD {name}={v!r} must lie in (0, 1)")
        if self.lr <= 0 or self.normalizer <= 0 or self.clamp_alpha <= 0 or \
                self.margin_tau < 0 or self.bgspp_lambda < 0:
            raise ValueError("BGAD needs lr, normalizer, clamp_alpha > 0 and margin_tau, "
                             "bgspp_lambda ≥ 0")

    # -- features ----------------------------------------------------------------------------
    def _features(self, images_u8: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features of a uint8 batch, per level B×C×h×w (no gradient)."""
        with torch.no_grad():
            return self.encoder_(normalize(to_float(images_u8)))

    def _level_logps(self, level: int, feat: torch.Tensor) -> torch.Tensor:
        """Per-patch log-likelihood B×h×w of one level's features B×C×h×w."""
        b, c, h, w = feat.shape
        cond = self.pos_[level]  # images are always at the fit size (checked in score)
        e = feat.permute(0, 2, 3, 1).reshape(-1, c)
        p = cond.permute(1, 2, 0).reshape(1, h * w, -1).expand(b, -1, -1).reshape(b * h * w, -1)
        z, log_det = self.flows_[level](e, p)
        return log_likelihood(z, log_det).view(b, h, w)

    def fit(self, train: TrainData, ctx: Optional[RunContext] = None) -> "BGAD":
        ctx = self._context(train, ctx)
        self._check_params()
        if len(train.anomalies) == 0:
            raise ValueError("BGAD trains on labelled anomalies but the training data has none "
                             "(shots = 0); run it with shots ≥ 1")
        if len(train.normal) == 0:
            raise ValueError("BGAD needs normal training images; got none")
        seed_everything(ctx.seed)
        rng, gen = make_rngs(ctx.seed)
        dev = resolve_device(ctx.device)
        self.device_ = dev
        self.img_size_ = train.normal.shape[1]
        self.encoder_ = ResNetLevels(self.backbone, ctx.weights, self.feature_levels).to(dev)
        normal_u8 = images_to_device(train.normal, dev)
        anomalies_u8 = images_to_device(train.anomalies, dev)
        # The encoder is frozen and BGAD does not augment: extract every feature once.
        normal_f = [torch.cat(f) for f in zip(*[self._features(normal_u8[i:i + 32])
                                                for i in range(0, len(normal_u8), 32)])]
        anomal_f = [torch.cat(f) for f in zip(*[self._features(anomalies_u8[i:i + 32])
                                                for i in range(0, len(anomalies_u8), 32)])]
        self.pos_ = [positional_encoding_2d(self.pos_embed_dim, *f.shape[2:]).to(dev)
                     for f in normal_f]
        self.flows_ = nn.ModuleList([
            ConditionalFlow(c, self.pos_embed_dim, self.coupling_layers, self.clamp_alpha, gen)
            for c in self.encoder_.channels]).to(dev)
        n_anom = min(max(1, int(round(self.anomaly_fraction * self.batch_size))),
                     self.batch_size - 1)
        sampler = BalancedBatchSampler(len(normal_u8), len(anomalies_u8), self.batch_size,
                                       self.batch_size - n_anom, rng)
        is_anom_img = torch.cat([torch.zeros(self.batch_size - n_anom, dtype=torch.bool),
                                 torch.ones(n_anom, dtype=torch.bool)]).to(dev)
        optimizer = torch.optim.Adam(self.flows_.parameters(), lr=self.lr)
        total = self.epochs * self.steps_per_epoch
        history = []
        self.flows_.train()
        for epoch in range(self.epochs):
            for g in optimizer.param_groups:
                g["lr"] = cosine_lr(self.lr, epoch, self.epochs)
            running = 0.0
            for step in range(self.steps_per_epoch):
                ni, ai = sampler.next()
                ni_t, ai_t = torch.from_numpy(ni).to(dev), torch.from_numpy(ai).to(dev)
                loss = torch.zeros((), device=dev)
                for level in range(len(self.flows_)):
                    logps = self._level_logps(level, torch.cat([normal_f[level][ni_t],
                                                                anomal_f[level][ai_t]]))
                    if epoch == 0:  # upstream: the first meta epoch is likelihood only
                        loss = loss - F.logsigmoid(logps[~is_anom_img]).mean()
                        continue
                    patch_anom = anomalous_patch_mask(logps, is_anom_img,
                                                      self.anomalous_patch_rate).reshape(-1)
                    normal_patch = ~is_anom_img[:, None, None].expand_as(logps).reshape(-1)
                    flat = logps.reshape(-1)
                    used = normal_patch | patch_anom
                    bounds = logp_boundaries(flat[normal_patch], self.pos_beta,
                                             self.margin_tau, self.normalizer)
                    loss = loss - F.logsigmoid(flat[normal_patch]).mean() + \
                        self.bgspp_lambda * bg_spp_loss(flat[used], patch_anom[used], bounds,
                                                        self.normalizer)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += float(loss.detach())
                ctx.progress(epoch * self.steps_per_epoch + step + 1, total)
            mean = running / self.steps_per_epoch
            if not np.isfinite(mean):
                raise FloatingPointError(f"BGAD training loss became {mean} in epoch "
                                         f"{epoch + 1}; try a lower lr")
            history.append(mean)
        self.loss_history_ = history
        self.flows_.eval()
        with torch.no_grad():
            self.logp_max_ = [float(self._level_logps(lv, normal_f[lv]).max())
                              for lv in range(len(self.flows_))]
        return self

    def anomaly_map(self, images: np.ndarray) -> np.ndarray:
        """Pixel-level anomaly map N×H×W: per level exp(logp − max over training normals),
        bilinearly upsampled to the image size, summed over levels, and subtracted from the
        number of levels (higher = more anomalous)."""
        self._check_fitted("flows_")
        self._check_image_size(images, self.img_size_)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.test_batch_size):
                batch = images_to_device(np.ascontiguousarray(images[i:i + self.test_batch_size]),
                                         self.device_)
                feats = self._features(batch)
                normality = 0
                for lv, f in enumerate(feats):
                    prob = torch.exp(self._level_logps(lv, f) - self.logp_max_[lv])
                    normality = normality + F.interpolate(
                        prob[:, None], size=batch.shape[1:3], mode="bilinear",
                        align_corners=True)[:, 0]
                out.append((len(feats) - normality).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:3])

    def score(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted("flows_")
        maps = self.anomaly_map(images)
        return maps.reshape(len(maps), -1).max(axis=1) if len(maps) else np.zeros(0)

    def state_dict(self) -> dict:
        self._check_fitted("flows_")
        return {"flows": self.flows_.state_dict(),
                "logp_max": torch.tensor(self.logp_max_, dtype=torch.float64)}
