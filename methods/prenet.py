"""PReNet: pairwise relation learning, on images.

A shared network scores an ordered *pair* of images by how anomalous the pair is, trained to
regress ordinal targets (normal–normal 0, normal–anomaly 4, anomaly–anomaly 8). An image is
scored by pairing it with random normal and random labelled-anomaly training images and
averaging the pair scores. Provenance and differences: ``PReNet.card``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from ..api import MethodCard, RunContext, TrainData
from ..registry import register_method
from .common.augment import normalize, to_float, train_transform
from .common.backbones import ResNetTrunk
from .common.samplers import EndlessPermutation
from .common.torch_method import FitSchedule, FitState, TorchMethod

# Pair types and their default ordinal targets (upstream --ordinal_labels "0,4,8").
PAIR_NN, PAIR_NA, PAIR_AA = 0, 1, 2


class PairRelationNet(nn.Module):
    """ResNet trunk → global average pool → shared ``Dense(hidden) + ReLU`` per image →
    concatenation of the two embeddings → ``Dense(1)`` (the upstream depth-2 network on
    image features). ``forward(a, b)`` on normalised image batches → (B,) pair scores."""

    def __init__(self, backbone: str, weights: str, hidden: int):
        super().__init__()
        self.trunk = ResNetTrunk(backbone, weights)
        self.embed = nn.Sequential(nn.Linear(self.trunk.out_channels, hidden), nn.ReLU())
        self.score = nn.Linear(2 * hidden, 1)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.trunk(x).mean(dim=(2, 3)))

    def pair_score(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        """Score of pairs given their embeddings (B×hidden each)."""
        return self.score(torch.cat([ea, eb], dim=1))[:, 0]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.pair_score(self.embedding(a), self.embedding(b))


def pair_plan(batch_size: int) -> np.ndarray:
    """Pair types of one batch, as the upstream generator: half normal–normal, a quarter
    normal–anomaly, the rest anomaly–anomaly (block = ⌊B/4⌋)."""
    if batch_size < 4:
        raise ValueError(f"PReNet batch_size must be ≥ 4 (one block of each pair type), got "
                         f"{batch_size!r}")
    block = batch_size // 4
    return np.array([PAIR_NN] * (2 * block) + [PAIR_NA] * block
                    + [PAIR_AA] * (batch_size - 3 * block))


def draw_pairs(plan: np.ndarray, normal: EndlessPermutation, anomaly: EndlessPermutation
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the two members of each pair, and whether each member is an anomaly.

    Returns (first index, first is anomaly, second index, second is anomaly); normal–anomaly
    pairs put the normal first, as upstream."""
    n = len(plan)
    first_anom = plan == PAIR_AA
    second_anom = plan != PAIR_NN
    first = np.where(first_anom, anomaly.take(n), normal.take(n))
    second = np.where(second_anom, anomaly.take(n), normal.take(n))
    return first, first_anom, second, second_anom


def relation_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Upstream ``regression_loss``: mean absolute error between pair scores and targets."""
    return (pred - target).abs().mean()


@register_method("prenet")
class PReNet(TorchMethod):
    """Pairwise relation network on ResNet-18 image features, trained on normal and
    labelled anomaly images; score = mean relation to random normal and anomaly anchors."""

    version = "1"
    uses_labeled_anomalies = True
    min_batch_size = 4  # one block of each pair type (pair_plan)
    card = MethodCard(
        paper="Pang, Shen, Jin, van den Hengel. Deep Weakly-supervised Anomaly Detection "
              "(PReNet)",
        venue="KDD 2023",
        upstream="https://github.com/mala-lab/PReNet (commit cd9ce3f1de02)",
        upstream_license="MIT (nothing copied; implemented from the paper and code)",
        notes="Upstream is tabular (Keras; Dense(20)+ReLU shared feature learner, "
              "concatenation, linear score; targets 0/4/8; MAE loss; RMSprop clipnorm 1; "
              "batch half n-n, quarter n-a, quarter a-a; score = mean over E inlier anchors of "
              "s(anchor, x) and E outlier anchors of s(x, anchor), halved). Image version "
              "here: the feature learner is the ResNet-18 trunk (fine-tuned, global average "
              "pooled, as the DevNet baseline's) followed by the shared Dense(hidden)+ReLU; "
              "training images get DevNet's ±180° rotation. Differences: L2 penalty as "
              "RMSprop's weight decay (1e-5) instead of per-layer Keras L2 (lambda 0.01); pairs "
              "drawn from seeded endless permutations, so an anomaly-anomaly pair may repeat "
              "one image when only one anomaly is labelled (upstream needs two distinct ones); anchors "
              "drawn once at fit from the run seed (upstream: RandomState(42) at test); "
              "ensemble_size default 30 (upstream default 1, paper 30); budget in "
              "epochs x steps as the other image baselines (upstream 50 x 20, batch 512 on "
              "tabular data; image default batch 48); RMSprop lr 2e-4, the image baselines' rate "
              "(Keras RMSprop default 1e-3 on tabular data).",
    )
    quick_params = {"epochs": 2, "steps_per_epoch": 5, "batch_size": 8, "ensemble_size": 4}

    @classmethod
    def test_params(cls) -> dict:
        return {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "ensemble_size": 2}

    def __init__(self, epochs: int = 50, steps_per_epoch: int = 20,
                 batch_size: int = 48, lr: float = 2e-4, weight_decay: float = 1e-5,
                 hidden: int = 20, targets: str = "0,4,8", ensemble_size: int = 30,
                 backbone: str = "resnet18", grad_clip: Optional[float] = 1.0,
                 rotate: bool = True,
                 test_batch_size: int = 48):
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.hidden = hidden
        self.targets = targets
        self.ensemble_size = ensemble_size
        self.backbone = backbone
        self.grad_clip = grad_clip
        self.rotate = rotate
        self.test_batch_size = test_batch_size

    def _pair_targets(self) -> np.ndarray:
        try:
            values = [float(v) for v in str(self.targets).split(",")]
        except ValueError:
            values = []
        if len(values) != 3 or not values[0] < values[1] < values[2]:
            raise ValueError(f"PReNet targets={self.targets!r}: give three increasing numbers "
                             f"'normal-normal,normal-anomaly,anomaly-anomaly', e.g. '0,4,8'")
        return np.array(values, dtype=np.float32)

    def check_params(self) -> None:
        super().check_params()
        for name in ("hidden", "ensemble_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"PReNet: {name} must be an integer ≥ 1, got {v!r}")
        self._pair_targets()

    def lr_step_schedule(self) -> tuple[int, float]:
        return 10, 1.0  # constant rate: upstream Keras RMSprop has no schedule

    def optimizer(self, model: nn.Module, schedule: FitSchedule) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(model.parameters(), lr=schedule.lr,
                                   weight_decay=schedule.weight_decay)

    def build_model(self, train: TrainData, ctx: RunContext) -> nn.Module:
        return PairRelationNet(self.backbone, ctx.weights, self.hidden)

    def prepare(self, state: FitState) -> None:
        state.extra["normal_stream"] = EndlessPermutation(len(state.normal), state.rng)
        state.extra["anomaly_stream"] = EndlessPermutation(len(state.anomalies), state.rng)
        plan = pair_plan(self.batch_size)
        state.extra["plan"] = plan
        state.extra["targets"] = torch.from_numpy(self._pair_targets()[plan]).to(state.device)

    def _members(self, state: FitState, idx: np.ndarray, is_anom: np.ndarray) -> torch.Tensor:
        """The augmented float batch of one side of the pairs (normal or anomaly per slot)."""
        dev = state.device
        n_img = state.normal[torch.from_numpy(np.where(is_anom, 0, idx)).to(dev)]
        a_img = state.anomalies[torch.from_numpy(np.where(is_anom, idx, 0)).to(dev)]
        mask = torch.from_numpy(is_anom).to(dev)[:, None, None, None]
        return train_transform(torch.where(mask, a_img, n_img), state.gen,
                               rotate_images=self.rotate)

    def training_step(self, state: FitState) -> torch.Tensor:
        i1, a1, i2, a2 = draw_pairs(state.extra["plan"], state.extra["normal_stream"],
                                    state.extra["anomaly_stream"])
        pred = state.model(self._members(state, i1, a1), self._members(state, i2, a2))
        return relation_loss(pred, state.extra["targets"])

    def after_training(self, state: FitState) -> None:
        """Anchors: E random normal and E random labelled anomaly images, drawn once."""
        model, dev = state.model.eval(), state.device
        self.normal_anchor_idx_ = state.rng.choice(len(state.normal), self.ensemble_size)
        self.anomaly_anchor_idx_ = state.rng.choice(len(state.anomalies), self.ensemble_size)
        with torch.no_grad():
            self.normal_anchors_ = model.embedding(normalize(to_float(
                state.normal[torch.from_numpy(self.normal_anchor_idx_).to(dev)])))
            self.anomaly_anchors_ = model.embedding(normalize(to_float(
                state.anomalies[torch.from_numpy(self.anomaly_anchor_idx_).to(dev)])))

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Upstream scoring: (mean_k s(normal_k, x) + mean_k s(x, anomaly_k)) / 2."""
        e = model.embedding(x)
        n, k = len(e), self.ensemble_size
        ex = e.repeat_interleave(k, dim=0)
        s_u = model.pair_score(self.normal_anchors_.repeat(n, 1), ex).view(n, k)
        s_a = model.pair_score(ex, self.anomaly_anchors_.repeat(n, 1)).view(n, k)
        return (s_u.mean(dim=1) + s_a.mean(dim=1)) / 2

    def state_dict(self) -> dict:
        return {**super().state_dict(), "normal_anchors": self.normal_anchors_,
                "anomaly_anchors": self.anomaly_anchors_}
