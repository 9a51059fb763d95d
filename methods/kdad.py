"""KDAD — Multiresolution Knowledge Distillation for Anomaly Detection (Salehi et al., CVPR 2021),
the unsupervised baseline of the DRA paper (methods.md §8).

Provenance (paper, upstream code, licence): the class's ``card``, shown in docs/methods.md.
What the released code does
and this module reproduces:

* source (teacher) = torchvision VGG16 ``features`` with ImageNet weights, frozen and in eval
  mode (VGG16 ``features`` has no BatchNorm or dropout, so the mode only documents intent);
* cloner (student) = a VGG-like net trained from scratch: 3×3 convolutions without bias,
  Xavier-uniform initialisation, BatchNorm after every convolution not directly followed by
  a max-pool, ReLU after every convolution (as VGG), five blocks closed by 2×2 max-pools.
  ``cloner="small"`` (the released default) uses widths [16,16], [16,128], [16,16,256],
  [16,16,512], [16,16,512], so the last convolution of each block matches the teacher's width;
  ``cloner="equal"`` copies VGG16's widths;
* the compared maps are the outputs of the max-pools closing blocks 2, 3, 4 and 5 (128 ch at
  /4, 256 ch at /8, 512 ch at /16, 512 ch at /32);
* training loss = Σ_l mean_batch(1 − cos(flatten S_l, flatten T_l)) + λ·Σ_l MSE(S_l, T_l)
  over blocks 2–5, each MSE averaged over all elements of the batch tensor; λ = 0.5 (the
  config's MVTec value, used for every dataset as the notes recommend);
  ``direction_only=True`` drops the MSE term (the released option, off by default);
* inputs are [0, 1] tensors without ImageNet normalisation (teacher and cloner alike),
  128×128, batch 64 shuffled, Adam lr 1e-3, no weight decay, no schedule, no augmentation;
* anomaly score = the same expression per image over the three deepest maps only (blocks
  3–5), cloner in eval mode (BatchNorm running statistics); higher = more anomalous.

Epoch count: the released loop runs ``num_epochs + 1`` passes (602 for ``num_epochs = 601``)
but the last checkpoint it saves ("epoch_600") holds the weights after 601 passes, and the
final pass is never evaluated or saved. ``epochs`` here is the number of passes actually
trained; the default 601 = the last saved checkpoint, the notes' default. ``epochs=602``
reproduces the loop's extra, never-evaluated pass. The released code evaluates every 10
passes on the test set; the harness scores once after training (no checkpoint selection).

Deliberate differences from the released code:

* the teacher's maps of the training images are computed once and kept (``cache_teacher``):
  the teacher is frozen and nothing is augmented, so every pass would recompute the same
  tensors; this removes most of the compute and changes nothing but floating-point order;
* shuffling and initialisation come from the run's seed (the released code is unseeded);
  the teacher is built once per process and weights (a random one once per seed), as it is
  never trained;
* the released code asks for the ImageNet teacher with an argument newer torchvision versions
  reject; here the weights are resolved by ``bench.methods.common.backbones`` and a missing
  offline checkpoint raises ``WeightsUnavailable`` naming the file;
* [recon] datasets other than MVTec AD use the MVTec settings (128 px, λ = 0.5, 601 passes)
  as the DRA paper's App. B.2 implies; the released code has no loader for them.

With ``weights="none"`` the teacher is a randomly initialised VGG16: the method then runs
(tests use this) but distils features with no meaning, so its accuracy says nothing about KDAD.
"""
from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from bench.api import MethodCard, RunContext, TrainData
from bench.registry import register_method

from .common.augment import to_float
from .common.backbones import build_torchvision
from .common.torch_method import FitSchedule, FitState, TorchMethod, check_budget

# Indices in torchvision's ``vgg16().features`` of the max-pools closing blocks 2, 3, 4, 5.
VGG16_TAPS = (9, 16, 23, 30)

# Convolution widths per block of the cloner; a 2×2 max-pool closes every block.
CLONER_CONFIGS = {
    "small": ((16, 16), (16, 128), (16, 16, 256), (16, 16, 512), (16, 16, 512)),
    "equal": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}

# The training loss compares blocks 2..5; the score only blocks 3..5 (index into the 4 taps).
TRAIN_LAYERS = (0, 1, 2, 3)
SCORE_LAYERS = (1, 2, 3)


# The last teacher built, keyed by (weights, seed of a random init): rebuilding VGG16 costs
# seconds (torchvision also initialises its 120M-parameter classifier, unused here) and the
# teacher is never trained, so consecutive fits in one process (a worker running several
# subsets, the tests) share it. One entry only, to bound memory.
_TEACHER_CACHE: dict[tuple, nn.Sequential] = {}


def vgg16_features(weights: str, seed: int) -> nn.Sequential:
    """A fresh copy of VGG16 ``features`` with ``weights`` (see ``build_torchvision``).

    A random initialisation (``weights="none"``) is drawn from its own RNG stream seeded with
    ``seed``, so the teacher does not depend on the cache or shift the cloner's init."""
    key = (weights, seed if weights == "none" else None)
    if key not in _TEACHER_CACHE:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            features = build_torchvision("vgg16", weights).features
        _TEACHER_CACHE.clear()
        _TEACHER_CACHE[key] = features.eval()
    return copy.deepcopy(_TEACHER_CACHE[key])


class VGGTeacher(nn.Module):
    """VGG16 ``features`` returning the max-pool outputs of blocks 2–5 (frozen)."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features[: VGG16_TAPS[-1] + 1]
        for p in self.features.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG16_TAPS:
                outs.append(x)
        return outs


class Cloner(nn.Module):
    """The VGG-like student: bias-free 3×3 convs (Xavier-uniform), BN after every conv that is
    not the last of its block (i.e. not directly followed by the max-pool), ReLU after every
    conv. ``forward`` returns the outputs of the max-pools closing blocks 2–5."""

    def __init__(self, config: str = "small"):
        super().__init__()
        if config not in CLONER_CONFIGS:
            raise ValueError(f"unknown KDAD cloner config {config!r}; known: "
                             f"{', '.join(CLONER_CONFIGS)}")
        blocks = []
        in_ch = 3
        for widths in CLONER_CONFIGS[config]:
            layers: list[nn.Module] = []
            for j, w in enumerate(widths):
                conv = nn.Conv2d(in_ch, w, kernel_size=3, padding=1, bias=False)
                nn.init.xavier_uniform_(conv.weight)
                layers.append(conv)
                if j < len(widths) - 1:
                    layers.append(nn.BatchNorm2d(w))
                layers.append(nn.ReLU(inplace=True))
                in_ch = w
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= 1:
                outs.append(x)
        return outs


def kd_terms(student: list[torch.Tensor], teacher: list[torch.Tensor], layers: tuple[int, ...],
             lam: float, direction_only: bool) -> torch.Tensor:
    """Per-image KDAD discrepancy Σ_l (1 − cos(S_l, T_l)) + λ·MSE_l over ``layers``
    (indices into the tapped maps). Returns a length-B tensor; the training loss is its mean,
    which equals the batch-mean cosine term plus λ times the all-element MSE because every
    image has the same number of elements per layer."""
    total = None
    for l in layers:
        s, t = student[l].flatten(1), teacher[l].flatten(1)
        term = 1.0 - F.cosine_similarity(s, t, dim=1)
        if not direction_only:
            term = term + lam * (s - t).pow(2).mean(dim=1)
        total = term if total is None else total + term
    return total


@register_method("kdad")
class KDAD(TorchMethod):
    """Multiresolution knowledge distillation (unsupervised): a small VGG-like cloner mimics a
    frozen ImageNet VGG16 on normal images; the discrepancy is the anomaly score."""

    version = "1"
    uses_common_blocks = True
    uses_labeled_anomalies = False
    embeds = True
    uses_outliers = False
    card = MethodCard(
        paper="Salehi et al., Multiresolution Knowledge Distillation for Anomaly Detection",
        venue="CVPR 2021",
        upstream="https://github.com/rohban-lab/Knowledge_Distillation_AD",
        upstream_license="none stated in the repository",
        notes="Re-implemented from the released code's behaviour. epochs = passes trained; "
              "default 601 = the released loop's last saved checkpoint (the loop itself makes "
              "602 passes, the last never evaluated). Teacher maps cached (frozen teacher, no "
              "augmentation). [recon] non-MVTec datasets use the MVTec settings (128 px, "
              "lambda 0.5). Needs the ImageNet VGG16 teacher; weights=none is for tests only.")
    # Test-sized budget for the harness' quick preset (64 px, 2 CPU cores): ~a few seconds.
    quick_params = {"epochs": 20}
    # One epoch is one step over the 48 synthetic normals: 30 steps, as DEMO_SCHEDULE.
    demo_params = {"epochs": 30}
    input_size = 128  # the released MVTec config
    normalizes_inputs = False  # [0, 1] input, no ImageNet normalisation (released code)
    @classmethod
    def test_params(cls) -> dict:
        return {"epochs": 2, "batch_size": 12}

    # The paper preset keeps KDAD's own 128 px instead of the dataset's DRA image size.
    dataset_img_size = False

    def backbones(self) -> list[str]:
        return ["vgg16"]

    @classmethod
    def budget_params(cls, steps: int, batch_size: Optional[int] = None) -> dict:
        """One pass over the normal images (KDAD's epochs are passes; ``steps`` is what the
        batch size makes of them)."""
        return {"epochs": 1, **({"batch_size": batch_size} if batch_size else {})}

    def __init__(self, epochs: int = 601, batch_size: int = 64,
                 lr: float = 1e-3, lam: float = 0.5, direction_only: bool = False,
                 cloner: str = "small", cache_teacher: bool = True,
                 test_batch_size: int = 64):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lam = lam
        self.direction_only = direction_only
        self.cloner = cloner
        self.cache_teacher = cache_teacher
        self.test_batch_size = test_batch_size

    # -- TorchMethod hooks --------------------------------------------------------------------
    def check_params(self) -> None:
        if self.cloner not in CLONER_CONFIGS:
            raise ValueError(f"unknown KDAD cloner config {self.cloner!r}; known: "
                             f"{', '.join(CLONER_CONFIGS)}")
        check_budget("KDAD", lr=self.lr, epochs=self.epochs, batch_size=self.batch_size,
                     test_batch_size=self.test_batch_size)

    def fit_schedule(self, train: TrainData) -> FitSchedule:
        """``epochs`` passes over the normal images, each ⌈N / batch_size⌉ steps (the
        released loader keeps the last incomplete batch); Adam without weight decay, no
        schedule, no clipping."""
        steps = -(-len(train.normal) // self.batch_size)
        return FitSchedule(self.epochs, steps, self.lr, 0.0, None, lr_step_size=1,
                           lr_gamma=1.0, lr_placement="end")

    def build_model(self, train: TrainData, ctx: RunContext) -> nn.Module:
        """The cloner (the trained model); the frozen teacher is built beside it."""
        if ctx.weights == "none":
            warnings.warn("KDAD with a random teacher (weights='none') distils meaningless "
                          "features: fine for tests, not a KDAD result; use the ImageNet "
                          "VGG16 weights", UserWarning, stacklevel=2)
        self.random_teacher_ = ctx.weights == "none"
        self.teacher_ = VGGTeacher(vgg16_features(ctx.weights, ctx.seed)).eval()
        return Cloner(self.cloner)

    def prepare(self, state: FitState) -> None:
        """The teacher on the device, its maps of the training images (``cache_teacher``)
        and the shuffling stream: a torch generator seeded with the run seed itself."""
        teacher = self.teacher_.to(state.device)
        state.extra["shuffle"] = torch.Generator().manual_seed(state.ctx.seed)
        state.extra["pass"] = []  # the index batches left in the current pass
        state.extra["teacher_maps"] = None
        if self.cache_teacher:
            images, step = state.normal, self.test_batch_size
            with torch.no_grad():
                parts = [teacher(to_float(images[i:i + step]))
                         for i in range(0, len(images), step)]
            state.extra["teacher_maps"] = [torch.cat([p[l] for p in parts])
                                           for l in range(len(VGG16_TAPS))]

    def training_step(self, state: FitState) -> torch.Tensor:
        batches = state.extra["pass"]
        if not batches:  # a new pass: a fresh shuffle, cut into batches
            order = torch.randperm(len(state.normal), generator=state.extra["shuffle"])
            batches.extend(order.split(self.batch_size))
        idx = batches.pop(0).to(state.device)
        x = to_float(state.normal[idx])
        cached = state.extra["teacher_maps"]
        if cached is not None:
            t_maps = [c[idx] for c in cached]
        else:
            with torch.no_grad():
                t_maps = self.teacher_(x)
        return kd_terms(state.model(x), t_maps, TRAIN_LAYERS, self.lam,
                        self.direction_only).mean()

    def embed_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The cloner's last feature map (block 5), averaged over positions: the features
        KDAD learns (its teacher's are fixed ImageNet ones)."""
        return model(to_float(x))[-1].mean(dim=(2, 3))

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = to_float(x)
        return kd_terms(model(x), self.teacher_(x), SCORE_LAYERS, self.lam, self.direction_only)

    def state_dict(self) -> dict:
        self._check_fitted("model_")
        state = {"model": self.model_.state_dict()}
        # A random teacher cannot be rebuilt from a weights file; keep it with the cloner.
        if self.random_teacher_:
            state["teacher"] = self.teacher_.state_dict()
        return state
