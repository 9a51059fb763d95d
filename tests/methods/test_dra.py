"""DRA (methods.md §1) at toy size: the numbers of §9.5 pinned through DRA's own code path,
the code/paper profiles, every head ablation, loss and pseudo-anomaly source, and learning
on toy defects in a general-like and a hard-like setting."""
from dataclasses import replace
import copy

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bench.api import NotFittedError, RunContext
from bench.registry import create_method, get_method_entry, method_defaults
from bench.testing import toy_problem
from bench.methods import dra as D
from bench.methods.common.augment import normalize, to_float
from bench.methods.common.heads import topk_count
from bench.methods.common.training import make_rngs

# Smallest budget that still runs every code path (two optimiser steps at 32 px).
TINY = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 6, "n_ref": 2,
        "test_batch_size": 8}
# Learning budget: 30 steps of 16 images at 64 px (2×2 feature maps, so the top-K heads
# localise) from random initialisation, about 15 s on one CPU thread.
LEARN = {"epochs": 3, "steps_per_epoch": 10, "batch_size": 16}


@pytest.fixture(scope="module")
def problem():
    return toy_problem(size=32, n_normal=12, shots=2, n_test=6, seed=0)


@pytest.fixture(scope="module")
def fitted(problem):
    calls = []
    ctx = replace(problem.context, progress=lambda step, total: calls.append((step, total)))
    m = create_method("dra", **TINY).fit(problem.train, ctx)
    return m, calls


@pytest.fixture(scope="module")
def net():
    return D.DRANet(weights="none").eval()


# -- architecture --------------------------------------------------------------------------
def test_head_parameter_counts(net):
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert n(net.heads["normality"]) == 131_585
    assert n(net.heads["residual"].block[0]) == 2_359_808          # 3×3 conv 512→512
    assert n(net.heads["residual"].block[1]) == 1_024               # BN affine
    assert n(net.heads["residual"].score) == n(net.heads["seen"]) == n(net.heads["pseudo"]) \
        == 513
    paper = D.DRANet(heads=("residual",), residual_block=False)
    assert isinstance(paper.heads["residual"].block, torch.nn.Identity)


@pytest.mark.parametrize("side, k", [(14, 19), (7, 4), (4, 1), (2, 1), (1, 1)])
def test_topk_heads_average_the_k_largest_abs_patch_scores(net, side, k):
    assert topk_count(side, side, 0.1) == k
    torch.manual_seed(side)
    feat = torch.randn(3, 512, side, side)
    ref = torch.randn(1, 512, side, side)
    with torch.no_grad():
        for head, x in ((net.heads["seen"], feat), (net.heads["pseudo"], feat)):
            patches = head.conv(x)[:, 0].abs().flatten(1)
            expect = patches.topk(k, dim=1).values.mean(1)
            assert torch.allclose(head(x), expect, atol=1e-6)
        r = net.heads["residual"]
        patches = r.score.conv(r.block(ref - feat))[:, 0].abs().flatten(1)
        assert torch.allclose(r(feat, ref), patches.topk(k, dim=1).values.mean(1), atol=1e-6)


def test_feature_maps_at_448_give_k_19_and_4(net):
    with torch.no_grad():
        sizes = [net.trunk(xs).shape[-2:] for xs in
                 D.image_pyramid(torch.zeros(1, 3, 448, 448), 2)]
    assert [tuple(s) for s in sizes] == [(14, 14), (7, 7)]
    assert [topk_count(*s, 0.1) for s in sizes] == [19, 4]


def test_forward_shapes_nonnegative_and_reference_rows_removed(net):
    torch.manual_seed(0)
    x = torch.randn(2 + 3, 3, 64, 64)   # 2 references then 3 images
    with torch.no_grad():
        out = net(x, n_ref=2)
        again = net(x[2:], ref_means=net.reference_means(x[:2]))
    assert set(out) == set(D.HEAD_NAMES)
    for name, s in out.items():
        assert s.shape == (3,) and (s >= 0).all(), name
        # eval mode: references in the same pass = precomputed reference means
        assert torch.allclose(s, again[name], atol=1e-5), name
    with pytest.raises(ValueError, match="reference"):
        net(x)
    # abs_scores=False (paper): the holistic head's FC output is used as is, sign included.
    raw = D.HolisticHead(512, 256, absolute=False)
    with torch.no_grad():
        raw.fc2.bias.fill_(-10.0)
        assert (raw(torch.randn(4, 512, 2, 2)) < 0).all()


def test_final_score_subtracts_the_normality_head():
    s = {"seen": torch.tensor([1.0]), "pseudo": torch.tensor([2.0]),
         "residual": torch.tensor([3.0]), "normality": torch.tensor([4.0])}
    assert D.combine_scores(s).item() == pytest.approx(2.0)
    assert D.combine_scores({"seen": s["seen"]}).item() == pytest.approx(1.0)


def test_forcing_the_normality_head_large_lowers_the_score(problem, fitted):
    m, _ = fitted
    base = m.score(problem.test_images)
    big = copy.deepcopy(m)
    with torch.no_grad():
        big.model_.heads["normality"].fc2.bias += 100.0
    lowered = big.score(problem.test_images)
    assert (lowered < base - 50).all()


# -- batch assembly --------------------------------------------------------------------------
def test_batch_label_counts_over_many_draws():
    rng = np.random.RandomState(0)
    sampler = D.make_batch_sampler(100, 10, 48, rng)
    n_pseudo = []
    for _ in range(2000):
        ni, ai = sampler.next()
        plan = D.plan_slots(ni, rng, D.PSEUDO_PROB, 100)
        labels = D.batch_labels(plan, len(ai))
        assert len(labels) == 48 and (labels[32:] == D.LABEL_SEEN).all()
        assert (labels == D.LABEL_SEEN).sum() == 16
        assert ((labels == D.LABEL_NORMAL) | (labels == D.LABEL_PSEUDO)).sum() == 32
        src = plan.pseudo_src[plan.is_pseudo]
        assert ((0 <= src) & (src < 100)).all() and (plan.pseudo_src[~plan.is_pseudo] == -1).all()
        n_pseudo.append((labels == D.LABEL_PSEUDO).sum())
    assert np.mean(n_pseudo) == pytest.approx(16, abs=0.3)    # Binomial(32, ½): mean 16
    assert np.var(n_pseudo) == pytest.approx(8, abs=1.5)      # variance 8
    assert D.make_batch_sampler(5, 1, 12, rng).normal_slots == 8


def test_pseudo_slot_is_cutmix_of_a_fresh_normal_image(problem, fitted):
    m, _ = fitted
    assert m.effective_params_["pseudo"] == "cutmix"
    plan = D.SlotPlan(np.array([0, 1]), np.array([False, True]), np.array([-1, 5]))
    out = m._slot_images(plan, make_rngs(3)[1])
    normal = to_float(problem.train.normal)
    assert torch.equal(out[0], normal[0])                      # stays the sampled normal
    changed = (out[1] != normal[5]).any(0)                     # CutMix of image 5, not 1
    ys, xs = torch.nonzero(changed, as_tuple=True)
    assert len(ys) > 0
    box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert box_area <= 0.15 * 32 * 32 + 2 * 32                 # ≤ 15 % of the image (+ rounding)


def test_deviation_loss_values_through_the_dra_loss_path():
    gen = torch.Generator().manual_seed(0)
    lab = torch.tensor([D.LABEL_NORMAL])
    one = lambda s, labels, **kw: D.dra_loss(  # noqa: E731
        {"seen": torch.tensor([s])}, labels, generator=gen, **kw)[0].item()
    assert one(0.0, lab) == pytest.approx(0.0, abs=0.1)                 # normal at 0
    assert one(0.0, torch.tensor([D.LABEL_SEEN])) == pytest.approx(5.0, abs=0.1)
    assert one(6.0, torch.tensor([D.LABEL_SEEN])) == pytest.approx(0.0, abs=0.1)
    assert one(2.0, lab) == pytest.approx(2.0, abs=0.1)
    assert one(2.0, lab, squared=True) == pytest.approx(4.0, abs=0.3)   # paper eq. 11
    # Per-head subsets and targets (§1.7): labels normal, seen, pseudo.
    labels = torch.tensor([0, 1, 2])
    s = torch.tensor([0.0, 0.0, 0.0])
    total, per = D.dra_loss({h: s for h in D.HEAD_NAMES}, labels, generator=gen)
    assert per["seen"].item() == pytest.approx(5 / 2, abs=0.1)       # {normal, seen}
    assert per["pseudo"].item() == pytest.approx(5 / 2, abs=0.1)     # {normal, pseudo}
    assert per["residual"].item() == pytest.approx(10 / 3, abs=0.1)  # seen+pseudo positive
    assert per["normality"].item() == pytest.approx(5 / 3, abs=0.1)  # normal positive
    assert total.item() == pytest.approx(sum(v.item() for v in per.values()))
    # A huge seen-head score on a pseudo anomaly is outside the seen head's subset.
    _, per2 = D.dra_loss({"seen": torch.tensor([0.0, 6.0, 1e6])}, labels, generator=gen)
    assert per2["seen"].item() == pytest.approx(0.0, abs=0.1)
    bce = D.dra_loss({"pseudo": s}, labels, loss="bce")[1]["pseudo"]
    assert bce.item() == pytest.approx(np.log(2), abs=1e-6)


def test_effective_learning_rate_per_epoch():
    lr = [D.epoch_lr(2e-4, e, "step_start") for e in range(1, 31)]
    assert lr[:9] == pytest.approx([2e-4] * 9)
    assert lr[9:19] == pytest.approx([2e-5] * 10)
    assert lr[19:29] == pytest.approx([2e-6] * 10)
    assert lr[29] == pytest.approx(2e-7)
    assert D.epoch_lr(2e-4, 10, "step_end") == pytest.approx(2e-4)
    assert D.epoch_lr(2e-4, 11, "step_end") == pytest.approx(2e-5)
    assert D.epoch_lr(1e-3, 25, "none") == pytest.approx(1e-3)


def test_training_applies_the_code_schedule(problem):
    m = create_method("dra", **{**TINY, "epochs": 11, "steps_per_epoch": 1, "batch_size": 3,
                                "n_ref": 1})
    m.fit(problem.train)
    assert m.lr_history_ == pytest.approx([2e-4] * 9 + [2e-5] * 2)


# -- parameters and profiles ---------------------------------------------------------------
def test_profiles_and_single_flips():
    code = D.DRA().resolve_params(train_img_size=32)
    paper = D.DRA(profile="paper").resolve_params(train_img_size=32)
    for k, v in D.PROFILES["code"].items():
        assert code[k] == v
    assert (paper["lr"], paper["weight_decay"], paper["squared_loss"], paper["ref_mode"],
            paper["residual_block"], paper["abs_scores"]) == \
        (1e-3, 1e-2, True, "fixed_mixed", False, False)
    # what the paper does not mention stays as in the code
    for k in ("lr_schedule", "grad_clip", "rotate", "pseudo_prob", "normal_fraction"):
        assert paper[k] == code[k]
    flipped = D.DRA(squared_loss=True).resolve_params()
    assert flipped["squared_loss"] is True and flipped["lr"] == 2e-4
    assert flipped["img_size"] == D.DRA.input_size == 448
    assert D.DRA(profile="paper", lr=5e-4).resolve_params()["lr"] == 5e-4


def test_pseudo_source_follows_the_outliers_unless_given():
    assert D.DRA().resolve_params(has_outliers=True)["pseudo"] == "external"
    assert D.DRA().resolve_params(has_outliers=False)["pseudo"] == "cutmix"
    assert D.DRA(pseudo="cutmix").resolve_params(has_outliers=True)["pseudo"] == "cutmix"


@pytest.mark.parametrize("kw, match", [
    ({"heads": "seen,foo"}, "heads"), ({"heads": ""}, "heads"), ({"loss": "ce"}, "loss"),
    ({"pseudo": "mixup"}, "pseudo"), ({"profile": "other"}, "profile"),
    ({"ref_mode": "fixed"}, "ref_mode"), ({"lr_schedule": "cosine"}, "lr_schedule"),
    ({"n_ref": 0}, "n_ref"), ({"topk": 0}, "topk"), ({"batch_size": 1}, "batch_size"),
    ({"pseudo_prob": -0.1}, "pseudo_prob"), ({"pseudo_prob": 1.5}, "pseudo_prob"),
    ({"pseudo_prob": 0.0}, "pseudo_prob=0 leaves the pseudo head"),
    ({"normal_fraction": 0.0}, "normal_fraction"), ({"normal_fraction": 1.0}, "normal_fraction"),
    ({"normal_fraction": 0.1, "batch_size": 6}, "normal_fraction"),
])
def test_invalid_parameters_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        D.DRA(**kw).resolve_params()


def test_external_pseudo_without_outliers_tells_to_pass_outliers(problem):
    with pytest.raises(ValueError, match="--outliers"):
        create_method("dra", pseudo="external", **TINY).fit(problem.train)


def test_variants_are_registered_aliases():
    for name, heads in [("dra1a", "seen"), ("dra2a", "seen,pseudo"),
                        ("dra3ar", "seen,pseudo,residual"),
                        ("dra3an", "seen,pseudo,normality")]:
        entry = get_method_entry(name)
        assert entry.cls is D.DRA and entry.variant_of == "dra"
        assert method_defaults(name)["heads"] == heads
    assert method_defaults("dra")["heads"] == "seen,pseudo,residual,normality"


def test_contract_basics(problem, fitted):
    m, calls = fitted
    with pytest.raises(NotFittedError):
        create_method("dra", **TINY).score(problem.test_images)
    assert m.get_params()["lr"] is None and m.get_params()["profile"] == "code"
    assert m.effective_params_["lr"] == 2e-4 and m.effective_params_["img_size"] == 32
    assert m.used_outliers_ is False
    assert list(m.state_dict()) == ["model"]
    assert calls[-1] == (2, 2)
    with pytest.raises(ValueError, match="32 px"):
        m.score(np.zeros((1, 16, 16, 3), np.uint8))
    assert m.score(problem.test_images[:0]).shape == (0,)


# -- training runs ---------------------------------------------------------------------------
def test_same_seed_same_scores_and_repeatable_scoring(problem, fitted):
    m, _ = fitted
    a = m.score(problem.test_images)
    assert np.array_equal(a, m.score(problem.test_images))   # seeded test-time references
    b = create_method("dra", **TINY).fit(problem.train).score(problem.test_images)
    assert np.array_equal(a, b)
    c = create_method("dra", **TINY).fit(problem.train, RunContext(seed=1)).score(
        problem.test_images)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", ["dra1a", "dra2a", "dra3ar", "dra3an"])
def test_every_variant_trains_and_scores(problem, name):
    m = create_method(name, **TINY).fit(problem.train)
    s = m.score(problem.test_images)
    assert s.shape == (len(problem.test_images),) and np.isfinite(s).all()
    assert m.model_.head_names == tuple(method_defaults(name)["heads"].split(","))
    if not m.model_.needs_reference:   # no random references: the score is exactly the sum
        with torch.no_grad():
            heads = m.model_(normalize(to_float(problem.test_images)))
        assert np.allclose(s, D.combine_scores(heads).double().numpy(), atol=1e-5)


@pytest.mark.parametrize("kw", [{"loss": "bce"}, {"loss": "focal"},
                                {"pseudo": "cutpaste_scar"}, {"pseudo": "cutpaste_mix"}])
def test_losses_and_synthetic_pseudo_sources_train(problem, kw):
    m = create_method("dra", **TINY, **kw).fit(problem.train)
    assert np.isfinite(m.score(problem.test_images)).all()
    assert all(m.effective_params_[k] == v for k, v in kw.items())
    assert np.isfinite(m.loss_history_).all()


def test_external_outliers_fill_the_pseudo_slots():
    p = toy_problem(size=32, n_normal=12, shots=2, n_test=6, seed=0, n_outliers=5)
    m = create_method("dra", pseudo="external", **TINY).fit(p.train)
    assert m.used_outliers_ and np.isfinite(m.score(p.test_images)).all()
    plan = D.SlotPlan(np.array([0]), np.array([True]), np.array([3]))
    out = m._slot_images(plan, make_rngs(0)[1])
    assert torch.equal(out[0], to_float(p.train.outliers)[3])   # the image itself, no CutMix


def test_paper_profile_trains_with_a_fixed_normal_reference_set(problem):
    m = create_method("dra", profile="paper", ref_mode="fixed_normal", **TINY).fit(problem.train)
    e = m.effective_params_
    assert (e["lr"], e["weight_decay"], e["squared_loss"], e["ref_mode"]) == \
        (1e-3, 1e-2, True, "fixed_normal")
    assert isinstance(m.model_.heads["residual"].block, torch.nn.Identity)
    assert m.ref_idx_ is not None and len(m.ref_idx_) == TINY["n_ref"]
    assert not m.ref_is_pseudo_.any()
    assert torch.equal(m.ref_images_, to_float(problem.train.normal[m.ref_idx_]))
    s = m.score(problem.test_images)
    assert np.isfinite(s).all() and np.array_equal(s, m.score(problem.test_images))
    # Fixed references: a test image's score does not depend on its batch.
    single = np.concatenate([m.score(problem.test_images[i:i + 1]) for i in range(3)])
    assert np.allclose(single, s[:3], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["general", "hard"])
def test_dra_learns_toy_defects(setting):
    # general: labelled anomalies of every class; hard: of one class, tested on the others.
    seen = ("bright_square",) if setting == "hard" else None
    p = toy_problem(size=64, n_normal=24, shots=4, n_test=24, seed=0, seen=seen)
    m = create_method("dra", **LEARN).fit(p.train)
    s = m.score(p.test_images)
    keep = np.array([c not in (seen or ()) for c in p.test_classes])
    assert roc_auc_score(p.test_labels[keep], s[keep]) >= 0.85
    assert m.loss_history_[-1] < m.loss_history_[0]


# -- reference modes and batch parameters (issue 8 item 8) ---------------------------------
def test_fixed_mixed_reference_set_is_drawn_once_and_reused(problem, monkeypatch):
    """App. B.1 reading: each fixed slot is a pseudo anomaly with pseudo_prob, decided once."""
    calls = []
    real = D.DRA._draw_references
    monkeypatch.setattr(D.DRA, "_draw_references",
                        lambda self, *a: calls.append(1) or real(self, *a))
    kw = {**TINY, "n_ref": 4}
    m = create_method("dra", profile="paper", pseudo_prob=1.0, **kw).fit(problem.train)
    assert m.effective_params_["ref_mode"] == "fixed_mixed" and calls == []  # never re-drawn
    assert m.ref_is_pseudo_.all() and len(m.ref_images_) == 4
    normals = to_float(problem.train.normal[m.ref_idx_])
    assert all(not torch.equal(m.ref_images_[i], normals[i]) for i in range(4))  # CutMix'd
    s = m.score(problem.test_images)
    assert calls == [] and np.array_equal(s, m.score(problem.test_images))
    single = np.concatenate([m.score(problem.test_images[i:i + 1]) for i in range(3)])
    assert np.allclose(single, s[:3], atol=1e-5)
    # The stored set is what scoring uses: another set gives other scores.
    other = copy.deepcopy(m)
    other.ref_images_ = normals
    assert not np.allclose(other.score(problem.test_images), s)
    # pseudo_prob = ½: a mix of both kinds over many runs' reference draws.
    rng = np.random.RandomState(0)
    flips = [D.plan_slots(np.arange(5), rng, 0.5, 12).is_pseudo.mean() for _ in range(400)]
    assert np.mean(flips) == pytest.approx(0.5, abs=0.05)


def test_fixed_mixed_with_pseudo_prob_zero_equals_fixed_normal(problem):
    kw = {**TINY, "heads": "seen,residual", "pseudo_prob": 0.0}
    mixed = create_method("dra", ref_mode="fixed_mixed", **kw).fit(problem.train)
    normal = create_method("dra", ref_mode="fixed_normal", **kw).fit(problem.train)
    assert not mixed.ref_is_pseudo_.any()
    assert torch.equal(mixed.ref_images_, normal.ref_images_)
    assert np.array_equal(mixed.score(problem.test_images), normal.score(problem.test_images))


@pytest.mark.parametrize("name, prob", [("dra", 0.25), ("dra1a", 0.0), ("dra1a", 0.5)])
def test_pseudo_prob_reaches_every_batch_and_reference_draw(problem, monkeypatch, name, prob):
    seen = []
    real = D.plan_slots
    monkeypatch.setattr(D, "plan_slots",
                        lambda idx, rng, p, pool: seen.append(p) or real(idx, rng, p, pool))
    labels = []
    real_labels = D.batch_labels
    monkeypatch.setattr(D, "batch_labels",
                        lambda plan, n: labels.append(real_labels(plan, n)) or labels[-1])
    m = create_method(name, pseudo_prob=prob, **{**TINY, "steps_per_epoch": 4}).fit(problem.train)
    assert m.effective_params_["pseudo_prob"] == prob
    assert seen and set(seen) == {prob}
    n_pseudo = sum(int((lab == D.LABEL_PSEUDO).sum()) for lab in labels)
    assert (n_pseudo == 0) == (prob == 0.0)


def test_dra1a_without_pseudo_slots_needs_no_outliers():
    p = toy_problem(size=32, n_normal=12, shots=2, n_test=6, seed=0, n_outliers=5)
    m = create_method("dra1a", pseudo_prob=0.0, **TINY).fit(p.train)
    assert m.used_outliers_ is False and np.isfinite(m.score(p.test_images)).all()
    p.train.outliers = None
    assert create_method("dra1a", pseudo="external", pseudo_prob=0.0, **TINY).fit(p.train)


def test_normal_fraction_sets_the_batch_composition():
    # 2/3 must give the released 2·B // 3 for every batch size despite float rounding.
    assert all(D.normal_slot_count(b) == 2 * b // 3 for b in range(2, 500))
    assert D.normal_slot_count(48, 0.5) == 24 and D.normal_slot_count(48, 0.75) == 36
    rng = np.random.RandomState(0)
    sampler = D.make_batch_sampler(100, 10, 48, rng, normal_fraction=0.5)
    ni, ai = sampler.next()
    assert (len(ni), len(ai)) == (24, 24)
    assert D.DRA(normal_fraction=0.5).resolve_params()["normal_fraction"] == 0.5


def test_normal_fraction_reaches_training(problem, monkeypatch):
    sizes = []
    real = D.batch_labels
    monkeypatch.setattr(D, "batch_labels",
                        lambda plan, n: sizes.append((len(plan.normal_idx), n)) or real(plan, n))
    create_method("dra", normal_fraction=0.5, **{**TINY, "batch_size": 8}).fit(problem.train)
    assert sizes and set(sizes) == {(4, 4)}
