"""BGAD: a conditional normalizing flow over frozen pretrained patch features, trained by
maximum likelihood on normal patches plus the boundary-guided semi-push-pull (BG-SPP) loss
that pushes labelled anomalous patches below a log-likelihood boundary set by the normal
ones. The image score is the maximum of the pixel-level anomaly map. Provenance and
differences: ``BGAD.card``.
"""
from __future__ import annotations

import math

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..api import MethodCard, RunContext, TrainData
from ..registry import register_method
from .common.augment import normalize, to_float
from .common.backbones import build_torchvision
from .common.samplers import BalancedBatchSampler
from .common.torch_method import FitSchedule, FitState, TorchMethod
from .common.training import adam, fit_loop, images_to_device

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


class BGADNet(nn.Module):
    """The frozen encoder and, once :meth:`add_flows` has built them, one conditional flow
    per feature level with its positional condition (a buffer, so it moves with the model).
    Inputs are normalised N×3×H×W batches."""

    def __init__(self, encoder: ResNetLevels):
        super().__init__()
        self.encoder = encoder
        self.flows = nn.ModuleList()

    def add_flows(self, sizes: list[tuple[int, int]], pos_dim: int, n_blocks: int,
                  clamp: float, generator: torch.Generator) -> None:
        """One flow per level (feature map ``sizes[level]`` = (h, w)); the flows' fixed
        orthogonal mixings are drawn from ``generator``."""
        for level, (c, (h, w)) in enumerate(zip(self.encoder.channels, sizes)):
            self.register_buffer(f"pos_{level}", positional_encoding_2d(pos_dim, h, w),
                                 persistent=False)
            self.flows.append(ConditionalFlow(c, pos_dim, n_blocks, clamp, generator))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features per level, B×C×h×w (no gradient: the encoder is frozen)."""
        with torch.no_grad():
            return self.encoder(x)

    def level_logps(self, level: int, feat: torch.Tensor) -> torch.Tensor:
        """Per-patch log-likelihood B×h×w of one level's features B×C×h×w."""
        b, c, h, w = feat.shape
        cond = getattr(self, f"pos_{level}")  # images are always at the fit size
        e = feat.permute(0, 2, 3, 1).reshape(-1, c)
        p = cond.permute(1, 2, 0).reshape(1, h * w, -1).expand(b, -1, -1).reshape(b * h * w, -1)
        z, log_det = self.flows[level](e, p)
        return log_likelihood(z, log_det).view(b, h, w)

    def anomaly_map(self, x: torch.Tensor, logp_max: list[float]) -> torch.Tensor:
        """B×H×W map: per level exp(logp − ``logp_max[level]``), bilinearly upsampled to the
        image size, summed over levels, and subtracted from the number of levels."""
        feats = self.features(x)
        normality = 0
        for lv, f in enumerate(feats):
            prob = torch.exp(self.level_logps(lv, f) - logp_max[lv])
            normality = normality + F.interpolate(prob[:, None], size=x.shape[-2:],
                                                  mode="bilinear", align_corners=True)[:, 0]
        return len(feats) - normality


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
class BGAD(TorchMethod):
    """Normalizing flows on frozen ResNet features, one per level, trained with maximum
    likelihood and the BG-SPP loss; image score = max of the summed per-level anomaly map."""

    version = "1"
    # The flows' log-determinants and likelihoods need fp32; its loop is its own (cosine
    # meta epochs), so bf16 autocast is not offered.
    precisions = ("fp32",)
    uses_labeled_anomalies = True
    min_batch_size = 2  # at least one normal and one anomaly slot
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

    def __init__(self, epochs: int = 25, steps_per_epoch: int = 80,
                 batch_size: int = 32, lr: float = 2e-4, backbone: str = "resnet18",
                 feature_levels: int = 3, coupling_layers: int = 8, clamp_alpha: float = 1.9,
                 pos_embed_dim: int = 128, pos_beta: float = 0.05, margin_tau: float = 0.1,
                 normalizer: float = 10.0, bgspp_lambda: float = 1.0,
                 anomalous_patch_rate: float = 0.1, anomaly_fraction: float = 0.125,
                 weight_decay: float = 0.0, grad_clip: Optional[float] = None,
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
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.test_batch_size = test_batch_size

    def check_params(self) -> None:
        super().check_params()
        if not isinstance(self.coupling_layers, (int, np.integer)) or self.coupling_layers < 1:
            raise ValueError(f"BGAD coupling_layers must be an integer ≥ 1, got "
                             f"{self.coupling_layers!r}")
        if self.backbone not in ("resnet18", "resnet50"):
            raise ValueError(f"BGAD backbone={self.backbone!r} is not one of resnet18, resnet50")
        if self.feature_levels not in (1, 2, 3, 4):
            raise ValueError(f"BGAD feature_levels must be 1-4 (ResNet layer1-layer4), got "
                             f"{self.feature_levels!r}")
        for name in ("pos_beta", "anomalous_patch_rate", "anomaly_fraction"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"BGAD {name}={v!r} must lie in (0, 1)")
        if self.normalizer <= 0 or self.clamp_alpha <= 0 or self.margin_tau < 0 or \
                self.bgspp_lambda < 0:
            raise ValueError("BGAD needs normalizer, clamp_alpha > 0 and margin_tau, "
                             "bgspp_lambda ≥ 0")

    # -- the TorchMethod hooks ------------------------------------------------------------
    def build_model(self, train: TrainData, ctx: RunContext) -> nn.Module:
        return BGADNet(ResNetLevels(self.backbone, ctx.weights, self.feature_levels))

    def _all_features(self, model: BGADNet, images_u8: torch.Tensor) -> list[torch.Tensor]:
        """Features per level of a whole uint8 array on the device, in chunks of 32."""
        chunks = [model.features(normalize(to_float(images_u8[i:i + 32])))
                  for i in range(0, len(images_u8), 32)]
        return [torch.cat(level) for level in zip(*chunks)]

    def prepare(self, state: FitState) -> None:
        """Features of every training image (extracted once: the encoder is frozen and BGAD
        does not augment), then the flows, built here because their fixed mixings draw
        from the fit's generator, and the balanced sampler."""
        model = state.model
        normal_f = self._all_features(model, state.normal)
        state.extra["normal_f"] = normal_f
        state.extra["anomal_f"] = self._all_features(model, state.anomalies)
        model.add_flows([tuple(f.shape[2:]) for f in normal_f], self.pos_embed_dim,
                        self.coupling_layers, self.clamp_alpha, state.gen)
        model.to(state.device)
        n_anom = min(max(1, int(round(self.anomaly_fraction * self.batch_size))),
                     self.batch_size - 1)
        state.extra["sampler"] = BalancedBatchSampler(
            len(state.normal), len(state.anomalies), self.batch_size, self.batch_size - n_anom,
            state.rng)
        state.extra["is_anom_img"] = torch.cat([
            torch.zeros(self.batch_size - n_anom, dtype=torch.bool),
            torch.ones(n_anom, dtype=torch.bool)]).to(state.device)

    def optimizer(self, model: nn.Module, schedule: FitSchedule) -> torch.optim.Optimizer:
        return adam(model.flows.parameters(), schedule.lr, schedule.weight_decay)

    def run_fit_loop(self, state: FitState, optimizer: torch.optim.Optimizer) -> list[float]:
        """Upstream's cosine schedule over the meta epochs (StepLR's factors do not cover
        it): one :func:`fit_loop` epoch per meta epoch at its cosine rate; the first meta
        epoch trains by maximum likelihood only (``training_step`` reads the epoch)."""
        total, spe = self.planned_steps(state.schedule), self.steps_per_epoch
        self.train_steps_ = total
        history: list[float] = []
        for epoch in range(self.epochs):
            for g in optimizer.param_groups:
                g["lr"] = cosine_lr(self.lr, epoch, self.epochs)
            state.extra["epoch"] = epoch
            try:
                history += fit_loop(
                    lambda: self.training_step(state), optimizer, modules=state.model,
                    epochs=1, steps_per_epoch=spe, grad_clip=self.grad_clip, lr_gamma=1.0,
                    progress=lambda step, _n, e=epoch: state.ctx.progress(e * spe + step,
                                                                         total))
            except FloatingPointError as exc:
                raise FloatingPointError(f"BGAD meta epoch {epoch + 1}: {exc}") from exc
        for g in optimizer.param_groups:
            g["lr"] = self.lr
        return history

    def training_step(self, state: FitState) -> torch.Tensor:
        model, dev, is_anom_img = state.model, state.device, state.extra["is_anom_img"]
        normal_f, anomal_f = state.extra["normal_f"], state.extra["anomal_f"]
        ni, ai = state.extra["sampler"].next()
        ni_t, ai_t = torch.from_numpy(ni).to(dev), torch.from_numpy(ai).to(dev)
        loss = torch.zeros((), device=dev)
        for level in range(len(model.flows)):
            logps = model.level_logps(level, torch.cat([normal_f[level][ni_t],
                                                        anomal_f[level][ai_t]]))
            if state.extra["epoch"] == 0:  # upstream: the first meta epoch is likelihood only
                loss = loss - F.logsigmoid(logps[~is_anom_img]).mean()
                continue
            patch_anom = anomalous_patch_mask(logps, is_anom_img,
                                              self.anomalous_patch_rate).reshape(-1)
            normal_patch = ~is_anom_img[:, None, None].expand_as(logps).reshape(-1)
            flat = logps.reshape(-1)
            used = normal_patch | patch_anom
            bounds = logp_boundaries(flat[normal_patch], self.pos_beta, self.margin_tau,
                                     self.normalizer)
            loss = loss - F.logsigmoid(flat[normal_patch]).mean() + \
                self.bgspp_lambda * bg_spp_loss(flat[used], patch_anom[used], bounds,
                                                self.normalizer)
        return loss

    def after_training(self, state: FitState) -> None:
        """The likelihood normaliser of the map: the maximum over the training normals."""
        model = state.model.eval()
        with torch.no_grad():
            self.logp_max_ = [float(model.level_logps(lv, f).max())
                              for lv, f in enumerate(state.extra["normal_f"])]

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Image score = the maximum of the pixel-level anomaly map."""
        return model.anomaly_map(x, self.logp_max_).flatten(1).max(dim=1).values

    # -- the map, and the state ---------------------------------------------------------
    def anomaly_map(self, images: np.ndarray) -> np.ndarray:
        """Pixel-level anomaly map N×H×W of uint8 images (higher = more anomalous; see
        :meth:`BGADNet.anomaly_map`)."""
        self._check_fitted("model_")
        self._check_image_size(images, self.img_size_)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.test_batch_size):
                batch = images_to_device(np.ascontiguousarray(images[i:i + self.test_batch_size]),
                                         self.device_)
                out.append(self.model_.anomaly_map(normalize(to_float(batch)), self.logp_max_)
                           .double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:3])

    def state_dict(self) -> dict:
        return {**super().state_dict(),
                "logp_max": torch.tensor(self.logp_max_, dtype=torch.float64)}
