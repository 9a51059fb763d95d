"""AHL: anomaly heterogeneity learning on top of a base open-set detector (DRA or DevNet).

``fit`` runs the three stages of the released pipeline in one call: (1) train the base
detector; (2) extract multi-scale features of the normal, labelled anomaly and pseudo-anomaly
images with its frozen feature extractor; (3) train fresh scoring heads of the base's kind on
those features by collaborative differentiable learning over heterogeneous anomaly
distributions: the normal features are clustered, every ordered pair of clusters is one
episode (support = one cluster, query = the other, each with the labelled anomalies and a
random kind of pseudo anomaly), heads adapted on the support set by a few SGD steps are
scored on the query set, and the query losses, weighted by importance scores that an LSTM
predicts from the history of the adapted detectors' query scores, update the shared heads.
Provenance and differences: ``AHL.card``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..api import Method, MethodCard, RunContext, TrainData
from ..registry import create_method, register_method
from .common.augment import normalize, to_float
from .common.cutpaste import SYNTHETIC_KINDS, synthesize
from .common.heads import TopKHead, image_pyramid
from .common.losses import deviation_loss
from .common.samplers import BalancedBatchSampler
from .common.training import (adam, fit_loop, images_to_device, make_rngs, predict_in_batches,
                              resolve_device, seed_everything)
from .dra import (DEVIATION_MARGIN, LABEL_NORMAL, LABEL_PSEUDO, LABEL_SEEN, HolisticHead,
                  ResidualHead, combine_scores, dra_loss)

BASES = ("dra", "devnet")


# -- networks ----------------------------------------------------------------------------------
class FeatureHeads(nn.Module):
    """The base detector's scoring heads on precomputed per-scale feature maps.

    ``base="dra"``: seen and pseudo top-K heads, the residual head against a fixed reference
    mean, and the holistic normality head; ``"devnet"``: one plain top-K head. ``forward``
    takes a list (one per scale) of B×C×h×w features and returns {head: (B,)} averaged over
    the scales."""

    def __init__(self, base: str, channels: int, topk: float):
        super().__init__()
        self.base = base
        if base == "dra":
            self.heads = nn.ModuleDict({
                "seen": TopKHead(channels, topk), "pseudo": TopKHead(channels, topk),
                "residual": ResidualHead(channels, topk, block=False),
                "normality": HolisticHead(channels, 256, absolute=False)})
        else:
            self.heads = nn.ModuleDict({"plain": TopKHead(channels, topk)})

    def forward(self, feats: list[torch.Tensor], ref_means: list[torch.Tensor]
                ) -> dict[str, torch.Tensor]:
        out: dict[str, list[torch.Tensor]] = {k: [] for k in self.heads}
        for feat, ref in zip(feats, ref_means):
            for name, head in self.heads.items():
                out[name].append(head(feat, ref) if name == "residual" else head(feat))
        return {k: torch.stack(v).mean(dim=0) for k, v in out.items()}


def head_score(base: str, scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """Anomaly score of the heads' outputs: DRA's combination, or DevNet's single head."""
    return combine_scores(scores) if base == "dra" else scores["plain"]


def heads_loss(base: str, scores: dict[str, torch.Tensor], labels: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
    """The base's training loss: DRA's per-head deviation losses, or DevNet's deviation loss
    with pseudo anomalies counted as anomalies (upstream ``Plain_AHL``)."""
    if base == "dra":
        return dra_loss(scores, labels, loss="deviation", generator=generator)[0]
    return deviation_loss(scores["plain"], (labels != LABEL_NORMAL).float(),
                          margin=DEVIATION_MARGIN, generator=generator)


class ImportanceLSTM(nn.Module):
    """Upstream ``AUX_Model``: a 2-layer bidirectional LSTM over the last ``T`` rounds of a
    query sample's scores by the E adapted detectors (input E per step), then ReLU and a
    linear map to the E scores it predicts for the next round. The upstream random initial
    state is replaced by zeros (deterministic)."""

    def __init__(self, n_models: int):
        super().__init__()
        self.lstm = nn.LSTM(n_models, n_models, 2, batch_first=True, dropout=0.5,
                            bidirectional=True)
        self.fc = nn.Linear(2 * n_models, n_models)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(history)
        return self.fc(torch.relu(out[:, -1]))


def importance_weights(predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax over detectors of the reward −(½·MSE on normals + ½·MSE on pseudo anomalies +
    MSE on seen anomalies) of each detector's predicted query scores against 0/1 targets
    (upstream ``get_reward``; a missing group contributes 0). ``predicted``: N×E."""
    rewards = []
    for e in range(predicted.shape[1]):
        p = predicted[:, e]
        terms = []
        for label, weight, target in ((LABEL_NORMAL, 0.5, 0.0), (LABEL_PSEUDO, 0.5, 1.0),
                                      (LABEL_SEEN, 1.0, 1.0)):
            sel = p[labels == label]
            terms.append(weight * ((sel - target) ** 2).mean() if len(sel) else p.new_zeros(()))
        rewards.append(-torch.stack(terms).sum())
    return torch.softmax(torch.stack(rewards), dim=0)


# -- heterogeneous anomaly distributions -------------------------------------------------------
def cluster_normals(features: np.ndarray, n_clusters: int, min_size: int, seed: int
                    ) -> list[np.ndarray]:
    """KMeans (seeded, 10 inits) of the flattened normal features; clusters with fewer than
    ``min_size`` members are dropped (upstream drops those of ≤ 2). Returns the index array
    of each kept cluster; at least two must remain."""
    from sklearn.cluster import KMeans

    if len(features) < n_clusters:
        raise ValueError(f"AHL n_clusters={n_clusters} needs at least that many normal "
                         f"training images, got {len(features)}")
    labels = KMeans(n_clusters=n_clusters, random_state=seed, n_init=10).fit(
        features.reshape(len(features), -1)).labels_
    clusters = [np.flatnonzero(labels == c) for c in range(n_clusters)]
    kept = [c for c in clusters if len(c) >= min_size]
    if len(kept) < 2:
        raise ValueError(f"AHL: KMeans with n_clusters={n_clusters} left {len(kept)} cluster(s) "
                         f"of ≥ min_cluster_size={min_size} normal images (sizes "
                         f"{sorted(len(c) for c in clusters)}); lower min_cluster_size or "
                         f"n_clusters, or use more normal images")
    return kept


def make_episodes(clusters: list[np.ndarray], n_kinds: int, pseudo_prob: float,
                  rng: np.random.RandomState) -> list[dict]:
    """One episode per ordered pair of clusters (i, j), i ≠ j (upstream: 2·C(m, 2)): support
    normals from cluster i, query normals from cluster j; one pseudo-anomaly kind per episode
    (uniform over ``n_kinds``) and each of its normals replaced by its pseudo anomaly of that
    kind with probability ``pseudo_prob`` (upstream ½)."""
    episodes = []
    for i, ci in enumerate(clusters):
        for j, cj in enumerate(clusters):
            if i == j:
                continue
            kind = int(rng.randint(n_kinds))
            episodes.append({"kind": kind, "support": ci, "query": cj,
                             "support_pseudo": rng.rand(len(ci)) < pseudo_prob,
                             "query_pseudo": rng.rand(len(cj)) < pseudo_prob})
    return episodes


@register_method("ahl")
class AHL(Method):
    """AHL over a base detector (``base``: dra | devnet) trained inside ``fit``; image score
    = the AHL-trained heads' score on the base's frozen features."""

    version = "1"
    uses_common_blocks = True
    uses_labeled_anomalies = True
    card = MethodCard(
        paper="Zhu, Ding, Tian, Pang. Anomaly Heterogeneity Learning for Open-set Supervised "
              "Anomaly Detection (AHL)",
        venue="CVPR 2024",
        upstream="https://github.com/mala-lab/AHL (commit 7114e08243a8; partly released: no "
                 "base-model training or feature-extraction driver)",
        upstream_license="no licence file in the repository (all rights reserved by "
                         "default); nothing copied, implemented from the paper and code",
        notes="Stages in one fit: base DRA (default) or DevNet trained by this harness's own "
              "implementation; features of its frozen trunk at 2 pyramid scales for normals, "
              "labelled anomalies and pseudo anomalies. As upstream: KMeans (3) of normal "
              "features, clusters of <= 2 dropped, one episode per ordered cluster pair, one "
              "random pseudo kind per episode with half of its normals replaced; fresh heads "
              "of the base's kind; 3 inner SGD steps at lr 2e-4 on the support set (second "
              "order through the first step, first order after, as upstream); query losses "
              "weighted by 0.5 + 0.5 x importance once sequence_len rounds of history exist "
              "(mean over episodes before); importance = softmax of the reward of an LSTM's "
              "predicted next-round scores (2-layer biLSTM, Adam 2e-3, wd 1e-3, MSE); outer "
              "Adam 2e-3, wd 1e-4, StepLR(10, 0.1), clip 1.0; 30 epochs of one outer step; "
              "test score from the shared (unadapted) heads. Reconstructed or different: the "
              "base-training and feature-saving steps are not in the release (our DRA/DevNet "
              "and an in-memory feature pass stand in for them); pseudo kinds are CutMix, "
              "CutPaste-Scar and CutPaste-Mix (upstream DRAEM, CutPaste, CutMix; no DRAEM "
              "Perlin generator here); the residual head uses a reference mean of n_ref "
              "normal features drawn once (upstream: 5 reference images per batch) and no "
              "3x3 conv + fixed-statistics BN block; each episode's support and query step "
              "use one balanced batch (half normal slots) instead of a pass over its loader; "
              "the LSTM's initial state is zero (upstream random) and it sees all query "
              "samples of all episodes as one set (upstream pads per episode); the outer "
              "step is applied right after its backward pass (upstream applies it at the "
              "start of the next epoch, so its last gradient is never used).",
    )
    quick_params = {"base_epochs": 2, "base_steps_per_epoch": 5, "base_batch_size": 12,
                    "epochs": 3, "steps_per_epoch": 2, "batch_size": 12, "n_clusters": 3,
                    "min_cluster_size": 1, "sequence_len": 2}

    @classmethod
    def test_params(cls) -> dict:
        return {"base_epochs": 1, "base_steps_per_epoch": 1, "base_batch_size": 4,
                "epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "sequence_len": 1,
                "n_clusters": 2, "min_cluster_size": 1, "inner_steps": 1}

    @classmethod
    def budget_params(cls, steps: int, batch_size: Optional[int] = None) -> dict:
        """Both stages one epoch of about ``steps`` steps."""
        size = {"batch_size": batch_size, "base_batch_size": batch_size} if batch_size else {}
        return {"base_epochs": 1, "base_steps_per_epoch": steps, "epochs": 1,
                "steps_per_epoch": steps, **size}

    def __init__(self, base: str = "dra", base_epochs: Optional[int] = None,
                 base_steps_per_epoch: Optional[int] = None,
                 base_batch_size: Optional[int] = None,
                 epochs: int = 30, steps_per_epoch: int = 1, batch_size: int = 48,
                 lr: float = 2e-3, weight_decay: float = 1e-4, inner_lr: float = 2e-4,
                 inner_steps: int = 3, n_clusters: int = 3, min_cluster_size: int = 3,
                 pseudo_kinds: str = "cutmix,cutpaste_scar,cutpaste_mix",
                 pseudo_prob: float = 0.5, sequence_len: int = 5, aux_lr: float = 2e-3,
                 aux_weight_decay: float = 1e-3, n_ref: int = 5, n_scales: int = 2,
                 topk: float = 0.1, backbone: str = "resnet18", grad_clip: float = 1.0,
                 test_batch_size: int = 48):
        self.base = base
        self.base_epochs = base_epochs
        self.base_steps_per_epoch = base_steps_per_epoch
        self.base_batch_size = base_batch_size
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.n_clusters = n_clusters
        self.min_cluster_size = min_cluster_size
        self.pseudo_kinds = pseudo_kinds
        self.pseudo_prob = pseudo_prob
        self.sequence_len = sequence_len
        self.aux_lr = aux_lr
        self.aux_weight_decay = aux_weight_decay
        self.n_ref = n_ref
        self.n_scales = n_scales
        self.topk = topk
        self.backbone = backbone
        self.grad_clip = grad_clip
        self.test_batch_size = test_batch_size

    def backbones(self) -> list[str]:
        return [self.backbone]

    def _kinds(self) -> list[str]:
        kinds = [k.strip() for k in str(self.pseudo_kinds).split(",") if k.strip()]
        bad = [k for k in kinds if k not in SYNTHETIC_KINDS]
        if bad or not kinds:
            raise ValueError(f"AHL pseudo_kinds={self.pseudo_kinds!r}: give a comma-separated "
                             f"non-empty subset of {', '.join(SYNTHETIC_KINDS)}")
        return kinds

    def _check_params(self) -> None:
        if self.base not in BASES:
            raise ValueError(f"AHL base={self.base!r} is not one of {', '.join(BASES)}")
        for name in ("epochs", "steps_per_epoch", "inner_steps", "n_clusters",
                     "min_cluster_size", "sequence_len", "n_ref", "n_scales", "test_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"AHL {name} must be an integer ≥ 1, got {v!r}")
        if self.n_clusters < 2:
            raise ValueError(f"AHL n_clusters must be ≥ 2 (episodes pair two clusters), got "
                             f"{self.n_clusters!r}")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 2:
            raise ValueError(f"AHL batch_size must be an integer ≥ 2, got {self.batch_size!r}")
        if not 0 <= self.pseudo_prob <= 1:
            raise ValueError(f"AHL pseudo_prob={self.pseudo_prob!r} must lie in [0, 1]")
        if min(self.lr, self.inner_lr, self.aux_lr, self.grad_clip) <= 0:
            raise ValueError("AHL lr, inner_lr, aux_lr and grad_clip must be > 0")
        self._kinds()

    # -- stage 1 and 2 -------------------------------------------------------------------------
    def _base_method(self) -> Method:
        """The untrained base detector with AHL's backbone, pyramid, top-K and base budget."""
        params = {"backbone": self.backbone,
                  "n_scales": self.n_scales, "topk": self.topk}
        for ours, theirs in (("base_epochs", "epochs"), ("base_steps_per_epoch",
                                                         "steps_per_epoch"),
                             ("base_batch_size", "batch_size")):
            if getattr(self, ours) is not None:
                params[theirs] = getattr(self, ours)
        return create_method(self.base, **params)

    def _train_base(self, base: Method, train: TrainData, ctx: RunContext, total: int
                    ) -> Method:
        """Stage 1: ``base`` trained under the run's context on the normals and labelled
        anomalies (no external outliers); its progress counts towards AHL's ``total`` steps."""
        stage = TrainData(normal=train.normal, anomalies=train.anomalies,
                          anomaly_classes=train.anomaly_classes, outliers=None)
        return base.fit(stage, replace(ctx, progress=lambda step, _n: ctx.progress(step, total)))

    def _trunk_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Frozen base-trunk features of a normalised batch, one tensor per pyramid scale."""
        with torch.no_grad():
            return [self.trunk_(xs) for xs in image_pyramid(x, self.n_scales)]

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frozen base-trunk features of float [0, 1] images, one tensor per pyramid scale."""
        out = [self._trunk_features(normalize(images[i:i + self.test_batch_size]))
               for i in range(0, len(images), self.test_batch_size)]
        return [torch.cat(level) for level in zip(*out)]

    # -- stage 3 ---------------------------------------------------------------------------------
    def fit(self, train: TrainData, ctx: Optional[RunContext] = None) -> "AHL":
        ctx = self._context(train, ctx)
        self._check_params()
        kinds = self._kinds()
        if len(train.anomalies) == 0:
            raise ValueError("AHL trains on labelled anomalies but the training data has none "
                             "(shots = 0); run it with shots ≥ 1")
        if len(train.normal) == 0:
            raise ValueError("AHL needs normal training images; got none")
        self.heads_ = None  # forget an earlier fit before anything can fail
        base = self._base_method()
        base.check_params()
        base.check_data(train)
        base_steps = base.planned_steps(base.fit_schedule(train))
        total = base_steps + self.epochs * self.steps_per_epoch
        self.base_model_ = self._train_base(base, train, ctx, total)
        seed_everything(ctx.seed, deterministic=ctx.deterministic)
        # Stage 3 draws from its own stream, not a replay of the base's (seeded the same).
        rng, gen = make_rngs(int(np.random.SeedSequence([ctx.seed, 2]).generate_state(1)[0]))
        dev = resolve_device(ctx.device)
        self.device_ = dev
        self.img_size_ = train.normal.shape[1]
        self.trunk_ = self.base_model_.model_.trunk.eval()
        normal = to_float(images_to_device(train.normal, dev))
        f_normal = self._features(normal)
        f_anom = self._features(to_float(images_to_device(train.anomalies, dev)))
        f_pseudo = [self._features(synthesize(k, normal, gen)) for k in kinds]

        clusters = cluster_normals(f_normal[0].cpu().numpy(), self.n_clusters,
                                   self.min_cluster_size, ctx.seed)
        episodes = make_episodes(clusters, len(kinds), self.pseudo_prob, rng)
        self.cluster_sizes_ = [len(c) for c in clusters]
        n_ep = len(episodes)
        ref_idx = rng.choice(len(normal), self.n_ref, replace=len(normal) < self.n_ref)
        self.ref_means_ = [f[torch.from_numpy(ref_idx).to(dev)].mean(0, keepdim=True)
                           for f in f_normal]

        def gather(normal_idx, pseudo_flags, kind, anomaly_idx):
            """Per-scale features and labels of the given normals (pseudo where flagged) and
            labelled anomalies."""
            ni = torch.from_numpy(normal_idx).to(dev)
            flag = torch.from_numpy(pseudo_flags).to(dev)[:, None, None, None]
            ai = torch.from_numpy(anomaly_idx).to(dev)
            feats = [torch.cat([torch.where(flag, fp[ni], fn[ni]), fa[ai]])
                     for fn, fp, fa in zip(f_normal, f_pseudo[kind], f_anom)]
            labels = np.concatenate([np.where(pseudo_flags, LABEL_PSEUDO, LABEL_NORMAL),
                                     np.full(len(anomaly_idx), LABEL_SEEN)])
            return feats, torch.from_numpy(labels)

        samplers = []
        normal_slots = self.batch_size // 2
        for ep in episodes:
            samplers.append({part: BalancedBatchSampler(len(ep[part]), len(f_anom[0]),
                                                        self.batch_size, normal_slots, rng)
                             for part in ("support", "query")})
        # Every query sample of every episode, for the importance model's history.
        all_query = [gather(ep["query"], ep["query_pseudo"], ep["kind"],
                            np.arange(len(f_anom[0]))) for ep in episodes]
        query_feats = [torch.cat([q[0][s] for q in all_query]) for s in range(self.n_scales)]
        query_labels = torch.cat([q[1] for q in all_query])

        heads = FeatureHeads(self.base, self.trunk_.out_channels, self.topk).to(dev)
        names = [n for n, _ in heads.named_parameters()]
        aux = ImportanceLSTM(n_ep).to(dev)
        aux_opt = torch.optim.Adam(aux.parameters(), lr=self.aux_lr,
                                   weight_decay=self.aux_weight_decay)
        history: list[torch.Tensor] = []  # per round: N_query × E scores
        self.importance_history_: list[list[float]] = []

        def run(params, feats):
            return functional_call(heads, dict(zip(names, params)), (feats, self.ref_means_))

        def batch(e, part):
            ep = episodes[e]
            ni, ai = samplers[e][part].next()
            return gather(ep[part][ni], ep[f"{part}_pseudo"][ni], ep["kind"], ai)

        def step_loss() -> torch.Tensor:
            weights = None
            if len(history) >= self.sequence_len:
                aux.eval()
                with torch.no_grad():
                    seq = torch.stack(history[-self.sequence_len:], dim=1)
                    weights = importance_weights(aux(seq), query_labels.to(dev))
                self.importance_history_.append(weights.tolist())
            shared = list(heads.parameters())
            total = torch.zeros((), device=dev)
            round_scores = []
            for e in range(n_ep):
                feats, labels = batch(e, "support")
                adapted = shared
                for k in range(self.inner_steps):
                    loss = heads_loss(self.base, run(adapted, feats), labels, gen)
                    grads = torch.autograd.grad(loss, adapted, create_graph=(k == 0))
                    adapted = [p - self.inner_lr * g for p, g in zip(adapted, grads)]
                qf, ql = batch(e, "query")
                q_loss = heads_loss(self.base, run(adapted, qf), ql, gen)
                total = total + (q_loss / n_ep if weights is None
                                 else (0.5 + 0.5 * weights[e]) * q_loss)
                with torch.no_grad():
                    round_scores.append(head_score(self.base, run(adapted, query_feats)))
            scores = torch.stack(round_scores, dim=1).detach()  # N_query × E
            if len(history) >= self.sequence_len:  # fit the LSTM: past rounds → this round
                aux.train()
                seq = torch.stack(history[-self.sequence_len:], dim=1)
                aux_loss = ((aux(seq) - scores) ** 2).mean()
                aux_opt.zero_grad(set_to_none=True)
                aux_loss.backward()
                aux_opt.step()
            history.append(scores)
            return total

        optimizer = adam(heads.parameters(), self.lr, self.weight_decay)
        self.loss_history_ = fit_loop(step_loss, optimizer, modules=heads, epochs=self.epochs,
                                      steps_per_epoch=self.steps_per_epoch,
                                      grad_clip=self.grad_clip, lr_placement="end",
                                      progress=lambda step, _n: ctx.progress(base_steps + step,
                                                                             total))
        self.train_steps_ = total
        self.train_batch_size_ = int(self.batch_size)
        heads.eval()
        self.n_episodes_ = n_ep
        self.heads_ = heads
        self.aux_ = aux.eval()
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted("heads_")
        self._check_image_size(images, self.img_size_)
        return predict_in_batches(
            lambda x: head_score(self.base, self.heads_(self._trunk_features(x),
                                                        self.ref_means_)),
            images, self.test_batch_size, self.device_, modules=[self.trunk_, self.heads_])

    def state_dict(self) -> dict:
        self._check_fitted("heads_")
        return {"base": self.base_model_.state_dict()["model"],
                "heads": self.heads_.state_dict(), "importance": self.aux_.state_dict(),
                "ref_means": {str(i): r for i, r in enumerate(self.ref_means_)}}
