"""Unit tests of the shared building blocks in bench.methods.common: they pin the numbers of
methods.md §9.5 (top-K sizes, deviation-loss values, sampler splits, CutMix ranges, the two
StepLR placements) and check the batched augmentations against torchvision."""
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn

from bench.methods.common import augment as A
from bench.methods.common.heads import TopKHead, image_pyramid, pyramid_mean, topk_count
from bench.methods.common.losses import (bce_loss, bce_prob_loss, binary_focal_loss,
                                         deviation_loss)
from bench.methods.common.samplers import BalancedBatchSampler, EndlessPermutation
from bench.methods.common.training import (adam, fit_loop, make_rngs, predict_in_batches,
                                           resolve_device, seed_everything, step_lr_factor)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- heads -----------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w,k", [(14, 14, 19), (7, 7, 4), (4, 4, 1), (1, 1, 1), (2, 2, 1)])
def test_topk_count_pins_released_values(h, w, k):
    assert topk_count(h, w, 0.1) == k


@pytest.mark.parametrize("rate", [0, -0.1, 1.5])
def test_topk_count_rejects_bad_rate(rate):
    with pytest.raises(ValueError, match="rate"):
        topk_count(7, 7, rate)


def test_topk_head_is_mean_of_largest_absolute_patch_scores():
    torch.manual_seed(0)
    head = TopKHead(8, 0.1)
    feat = torch.randn(3, 8, 7, 7)
    out = head(feat)
    assert out.shape == (3,)
    assert (out >= 0).all()
    manual = (torch.einsum("bchw,c->bhw", feat, head.conv.weight[0, :, 0, 0])
              + head.conv.bias).abs().flatten(1)
    expected = manual.sort(dim=1, descending=True).values[:, :4].mean(1)
    torch.testing.assert_close(out, expected)
    # without abs the head can give negative scores (FLOS's corrected variant)
    raw = TopKHead(8, 0.1, absolute=False)
    with torch.no_grad():
        raw.conv.bias.fill_(-100.0)
    assert (raw(feat) < 0).all()


def test_image_pyramid_is_nearest_neighbour_halving():
    x = torch.randn(2, 3, 64, 64)
    p = image_pyramid(x, 3)
    assert [t.shape[-1] for t in p] == [64, 32, 16]
    assert p[0] is x
    torch.testing.assert_close(p[1], x[..., ::2, ::2])
    assert torch.equal(pyramid_mean(lambda t: t.mean(dim=(1, 2, 3)), x, 1), x.mean(dim=(1, 2, 3)))
    with pytest.raises(ValueError, match="n_scales"):
        image_pyramid(x, 0)


# -- losses ----------------------------------------------------------------------------------
def test_deviation_loss_pinned_values():
    g = gen(0)
    z = torch.zeros(4)
    assert deviation_loss(z, torch.zeros(4), generator=g).item() == pytest.approx(0, abs=0.05)
    assert deviation_loss(z, torch.ones(4), generator=g).item() == pytest.approx(5, abs=0.1)
    assert deviation_loss(torch.full((4,), 6.0), torch.ones(4), generator=g).item() == 0.0
    # mean over a mixed batch
    assert deviation_loss(torch.zeros(2), torch.tensor([0., 1.]), generator=g).item() == \
        pytest.approx(2.5, abs=0.05)
    # paper eq. 11 squares both terms
    assert deviation_loss(z, torch.ones(4), squared=True, generator=g).item() == \
        pytest.approx(25, abs=1.0)
    assert deviation_loss(torch.full((4,), 2.0), torch.zeros(4), squared=True,
                          generator=g).item() == pytest.approx(4, abs=0.2)


def test_deviation_loss_uses_fresh_bessel_prior_from_generator():
    s, y = torch.tensor([0.3, 1.2, 7.0]), torch.tensor([0., 1., 1.])
    prior = torch.randn(5000, generator=gen(3), dtype=torch.float64)
    dev = (s.double() - prior.mean()) / prior.std(unbiased=True)
    expected = ((1 - y) * dev.abs() + y * (5 - dev).clamp(min=0)).mean()
    g = gen(3)
    first = deviation_loss(s, y, generator=g)
    assert first.item() == pytest.approx(expected.item(), rel=1e-6)
    assert deviation_loss(s, y, generator=g).item() != first.item()  # prior re-drawn per call
    with pytest.raises(ValueError, match="targets"):
        deviation_loss(s, torch.ones(2))


def test_focal_loss_matches_hand_computation():
    z, y = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.0, 0.0])
    expected = []
    for zi, yi in zip(z.tolist(), y.tolist()):
        p = 1 / (1 + math.exp(-zi))
        bce = -(yi * math.log(p) + (1 - yi) * math.log(1 - p))
        pt = math.exp(-bce)
        expected.append((1 - pt) ** 2 * bce)
    assert binary_focal_loss(z, y).item() == pytest.approx(sum(expected) / 3, rel=1e-5)
    assert expected[0] == pytest.approx(0.067574, abs=1e-5)
    assert binary_focal_loss(z, y, alpha=0.25).item() == pytest.approx(sum(expected) / 12,
                                                                       rel=1e-5)
    assert binary_focal_loss(z, y, gamma=0.0).item() == pytest.approx(bce_loss(z, y).item(),
                                                                      rel=1e-6)
    # stable for large logits (naive log(sigmoid) would give inf)
    assert torch.isfinite(binary_focal_loss(torch.tensor([200.0]), torch.tensor([0.0])))


def test_bce_prob_loss_agrees_with_logit_form():
    z, y = torch.tensor([0.3, -2.0]), torch.tensor([1.0, 0.0])
    assert bce_prob_loss(torch.sigmoid(z), y).item() == pytest.approx(bce_loss(z, y).item(),
                                                                      rel=1e-5)


# -- samplers --------------------------------------------------------------------------------
def test_endless_permutation_covers_each_pass_and_persists():
    p = EndlessPermutation(7, np.random.RandomState(0))
    stream = np.concatenate([p.take(5), p.take(5), p.take(4)])
    assert sorted(stream[:7]) == list(range(7))
    assert sorted(stream[7:]) == list(range(7))
    with pytest.raises(ValueError):
        EndlessPermutation(0, np.random.RandomState(0))


def test_balanced_sampler_devnet_and_dra_splits():
    s = BalancedBatchSampler(100, 10, 48, 48 // 2, np.random.RandomState(0))
    n, a = s.next()
    assert len(n) == 24 and len(a) == 24
    assert len(set(n.tolist())) == 24  # no replacement within a pass
    fresh = BalancedBatchSampler(100, 10, 48, 24, np.random.RandomState(1))
    counts = np.bincount(np.concatenate([fresh.next()[1] for _ in range(5)]), minlength=10)
    assert (counts == 12).all()  # 120 slots = 12 whole passes over 10 anomalies
    n, a = BalancedBatchSampler(100, 10, 48, 2 * 48 // 3, np.random.RandomState(0)).next()
    assert len(n) == 32 and len(a) == 16


def test_balanced_sampler_single_anomaly_and_errors():
    n, a = BalancedBatchSampler(50, 1, 48, 24, np.random.RandomState(0)).next()
    assert a.tolist() == [0] * 24
    with pytest.raises(ValueError, match="n_anomalies=0"):
        BalancedBatchSampler(50, 0, 48, 24, np.random.RandomState(0))
    with pytest.raises(ValueError, match="normal_slots"):
        BalancedBatchSampler(50, 3, 8, 9, np.random.RandomState(0))


def test_balanced_sampler_is_seeded():
    a = BalancedBatchSampler(30, 4, 8, 4, np.random.RandomState(5))
    b = BalancedBatchSampler(30, 4, 8, 4, np.random.RandomState(5))
    for _ in range(10):
        (n1, a1), (n2, a2) = a.next(), b.next()
        assert np.array_equal(n1, n2) and np.array_equal(a1, a2)


# -- augmentation ----------------------------------------------------------------------------
def test_to_float_and_normalize():
    u8 = np.zeros((2, 5, 6, 3), np.uint8)
    u8[..., 0] = 255
    x = A.to_float(u8, "cpu")
    assert x.shape == (2, 3, 5, 6) and x.dtype == torch.float32
    assert x[:, 0].eq(1).all() and x[:, 1:].eq(0).all()
    n = A.normalize(x)
    assert n[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229)
    assert n[0, 1, 0, 0].item() == pytest.approx(-0.456 / 0.224)
    with pytest.raises(ValueError, match="uint8"):
        A.to_float(u8.astype(np.float32))


def test_rotation_shape_zero_corners_and_direction():
    x = torch.ones(3, 3, 32, 32)
    r = A.rotate(x, torch.tensor([45.0, 0.0, 90.0]))
    assert r.shape == x.shape
    assert r[0, :, 0, 0].eq(0).all() and r[0, :, -1, -1].eq(0).all()  # black corners
    assert r[0, :, 16, 16].eq(1).all()
    y = torch.randn(1, 3, 9, 9)
    assert torch.equal(A.rotate(y, torch.tensor([0.0])), y)
    assert torch.equal(A.rotate(y, torch.tensor([90.0])), torch.rot90(y, 1, dims=(2, 3)))
    # random angles: seeded, per image, shape kept, corners black for generic angles
    a = A.random_rotate(x, gen(1))
    assert torch.equal(a, A.random_rotate(x, gen(1)))
    assert a.shape == x.shape
    assert a[:, :, 0, 0].eq(0).float().mean() > 0.5


def test_color_jitter_matches_torchvision():
    img = torch.rand(3, 12, 12, generator=gen(0))
    ref = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(
        TF.adjust_brightness(img, 1.07), 0.93), 1.05), -0.08)
    out = A.apply_color_jitter(img[None], torch.tensor([1.07]), torch.tensor([0.93]),
                               torch.tensor([1.05]), torch.tensor([-0.08]),
                               torch.tensor([[0, 1, 2, 3]]))
    torch.testing.assert_close(out[0], ref, atol=1e-5, rtol=0)
    ref2 = TF.adjust_brightness(TF.adjust_hue(img, 0.05), 0.95)
    out2 = A.apply_color_jitter(img[None], torch.tensor([0.95]), torch.tensor([1.0]),
                                torch.tensor([1.0]), torch.tensor([0.05]),
                                torch.tensor([[3, 0, 1, 2]]))
    torch.testing.assert_close(out2[0], ref2, atol=1e-5, rtol=0)
    j = A.color_jitter(torch.rand(4, 3, 8, 8, generator=gen(1)), gen(2))
    assert j.shape == (4, 3, 8, 8) and j.min() >= 0 and j.max() <= 1
    with pytest.raises(ValueError, match="hue"):
        A.color_jitter(img[None], gen(0), hue=0.7)


def test_cutmix_box_ranges():
    g = gen(0)
    size = 448
    frac, aspect = [], []
    for _ in range(3000):
        b = A.cutmix_box(size, g)
        assert 0 <= b.src_y <= size - b.h and 0 <= b.src_x <= size - b.w
        assert 0 <= b.dst_y <= size - b.h and 0 <= b.dst_x <= size - b.w
        frac.append(b.h * b.w / size ** 2)
        aspect.append(b.w / b.h)
    frac, aspect = np.array(frac), np.array(aspect)
    # width/height are rounded to whole pixels, which moves area and aspect by a few percent
    assert frac.min() >= 0.02 * 0.97 and frac.max() <= 0.15 * 1.03
    assert aspect.min() >= 0.3 * 0.97 and aspect.max() <= 3.34 * 1.03
    # the draws span the ranges (not a degenerate constant box)
    assert frac.min() < 0.025 and frac.max() > 0.14
    assert aspect.min() < 0.35 and aspect.max() > 3.0
    assert np.median(aspect) == pytest.approx(1.0, abs=0.1)  # log-uniform: median ≈ 1


def test_cutmix_changes_only_the_pasted_box():
    x = torch.rand(6, 3, 40, 40, generator=gen(4))
    out, boxes = A.cutmix(x, gen(5), return_boxes=True)
    assert out.shape == x.shape and len(boxes) == 6
    changed = 0
    for i, b in enumerate(boxes):
        inside = torch.zeros(40, 40, dtype=torch.bool)
        inside[b.dst_y:b.dst_y + b.h, b.dst_x:b.dst_x + b.w] = True
        assert torch.equal(out[i][:, ~inside], x[i][:, ~inside])
        changed += int(not torch.equal(out[i], x[i]))
    assert changed == 6
    again = A.cutmix(x, gen(5))
    assert torch.equal(again, out)  # seeded
    assert torch.equal(x, torch.rand(6, 3, 40, 40, generator=gen(4)))  # input untouched


# -- training helpers ------------------------------------------------------------------------
@pytest.mark.parametrize("epoch,end,start", [(1, 1, 1), (9, 1, 1), (10, 1, 0.1), (11, 0.1, 0.1),
                                             (20, 0.1, 0.01), (30, 0.01, 0.001),
                                             (41, 1e-4, 1e-4)])
def test_step_lr_factor_both_placements(epoch, end, start):
    assert step_lr_factor(epoch, placement="end") == pytest.approx(end)
    assert step_lr_factor(epoch, placement="start") == pytest.approx(start)


def test_step_lr_factor_errors():
    with pytest.raises(ValueError, match="1-based"):
        step_lr_factor(0)
    with pytest.raises(ValueError, match="placement"):
        step_lr_factor(3, placement="middle")


def test_fit_loop_schedule_clipping_and_history():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = adam(model.parameters(), lr=1e-2, weight_decay=0.0)
    seen_lr, norms, calls = [], [], []
    x = torch.randn(8, 3) * 100  # large inputs → gradient norms well above the clip

    def step():
        seen_lr.append(opt.param_groups[0]["lr"])
        return model(x).pow(2).mean()

    orig_step = opt.step

    def recording_step(*a, **k):
        norms.append(torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item())
        return orig_step(*a, **k)

    opt.step = recording_step
    hist = fit_loop(step, opt, modules=model, epochs=12, steps_per_epoch=2, grad_clip=1.0,
                    lr_placement="end", progress=lambda s, t: calls.append((s, t)))
    assert len(hist) == 12
    assert seen_lr[:20] == [1e-2] * 20 and seen_lr[20:] == pytest.approx([1e-3] * 4)
    assert max(norms) <= 1.0 + 1e-5
    assert calls[-1] == (24, 24) and len(calls) == 24
    assert opt.param_groups[0]["lr"] == 1e-2


def test_fit_loop_reports_nan():
    model = nn.Linear(1, 1)
    opt = adam(model.parameters(), 1e-3, 0.0)
    with pytest.raises(FloatingPointError, match="epoch 1"):
        fit_loop(lambda: model(torch.ones(1, 1)).sum() * float("nan"), opt, modules=model,
                 epochs=1, steps_per_epoch=1)


def test_predict_in_batches_eval_mode_and_order():
    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.modes = []

        def forward(self, x):
            self.modes.append(self.training)
            return x.float().mean(dim=(1, 2, 3))

    imgs = np.stack([np.full((4, 4, 3), v, np.uint8) for v in range(7)])
    probe = Probe().train()
    s = predict_in_batches(probe, imgs, 3, "cpu", preprocess=False)
    assert s.dtype == np.float64 and s.tolist() == list(range(7))
    assert probe.modes == [False] * 3 and probe.training
    s2 = predict_in_batches(probe, imgs, 4, "cpu")
    assert s2.shape == (7,) and s2[0] < s2[-1]
    assert predict_in_batches(probe, imgs[:0], 4, "cpu").shape == (0,)
    with pytest.raises(ValueError, match="uint8"):
        predict_in_batches(probe, imgs.astype(np.float32), 4, "cpu")


def test_seeding_and_devices():
    seed_everything(11)
    a = (torch.rand(3), np.random.rand(), make_rngs(11)[1].initial_seed())
    seed_everything(11)
    b = (torch.rand(3), np.random.rand(), make_rngs(11)[1].initial_seed())
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
