"""TinyCNN: a small convolutional classifier of normal images vs labelled anomalies, trained
on balanced batches with binary cross-entropy; the score is its logit."""
import torch
import torch.nn.functional as F
from torch import nn

from bench import MethodCard, register_method
from bench.methods.common.augment import train_transform
from bench.methods.common.samplers import BalancedBatchSampler
from bench.methods.common.torch_method import TorchMethod


@register_method("tinycnn")
class TinyCNN(TorchMethod):
    version = "1"                       # bump when results change (part of every run id)
    input_size = 64                     # the image side the harness resizes to
    min_batch_size = 2                  # one normal and one anomaly slot
    card = MethodCard(paper="Example plugin: a small CNN classifier (no paper)",
                      upstream="none", upstream_license="Apache-2.0")
    quick_params = {"epochs": 2, "steps_per_epoch": 5}

    @classmethod
    def test_params(cls) -> dict:       # a budget that fits in seconds on a CPU
        return {"epochs": 1, "steps_per_epoch": 2, "batch_size": 8}

    def __init__(self, epochs: int = 10, steps_per_epoch: int = 20, batch_size: int = 32,
                 lr: float = 1e-3, weight_decay: float = 1e-5,
                 grad_clip: float = 1.0, width: int = 16,
                 test_batch_size: int = 64):
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.width = width
        self.test_batch_size = test_batch_size

    def build_model(self, train, ctx) -> nn.Module:
        w = self.width
        return nn.Sequential(
            nn.Conv2d(3, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(2 * w, 1))

    def prepare(self, state) -> None:
        half = self.batch_size // 2
        state.extra["sampler"] = BalancedBatchSampler(
            len(state.normal), len(state.anomalies), self.batch_size, half, state.rng)
        state.extra["labels"] = torch.tensor([0.0] * half + [1.0] * (self.batch_size - half),
                                             device=state.device)

    def training_step(self, state) -> torch.Tensor:
        x = train_transform(state.batch(*state.extra["sampler"].next()), state.gen)
        logits = state.model(x)[:, 0]
        return F.binary_cross_entropy_with_logits(logits, state.extra["labels"])

    def score_batch(self, model, x) -> torch.Tensor:
        return model(x)[:, 0]
