"""CutPaste-Scar / CutPaste-Mix pseudo anomalies (common/cutpaste.py), used by DRA's Table 4
pseudo-anomaly study: distributions, paste geometry, mixing, determinism."""
import numpy as np
import pytest
import torch

from bench.methods.common import cutpaste as C


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("side, width, length", [(256, (2, 16), (10, 25)),
                                                 (64, (1, 4), (2, 6))])
def test_scar_box_ranges_scale_with_the_image(side, width, length):
    g = gen(0)
    boxes = [C.scar_box(side, g) for _ in range(500)]
    w = np.array([b.w for b in boxes])
    h = np.array([b.h for b in boxes])
    a = np.array([b.angle for b in boxes])
    assert w.min() >= width[0] and w.max() <= width[1]
    assert h.min() >= length[0] and h.max() <= length[1]
    assert a.min() >= -45 and a.max() <= 45 and a.min() < -40 and a.max() > 40
    for b in boxes:
        assert 0 <= b.src_y <= side - b.h and 0 <= b.src_x <= side - b.w
        assert 0 <= b.dst_y <= side - b.box_h and 0 <= b.dst_x <= side - b.box_w
        assert b.box_h >= min(b.h, b.w) and b.box_w >= min(b.h, b.w)


def test_scar_changes_about_its_area_inside_its_box_only():
    x = torch.rand(6, 3, 256, 256)
    out, boxes = C.cutpaste_scar(x, gen(1), return_boxes=True)
    for i, b in enumerate(boxes):
        changed = (out[i] != x[i]).any(0)
        inside = torch.zeros_like(changed)
        inside[b.dst_y:b.dst_y + b.box_h, b.dst_x:b.dst_x + b.box_w] = True
        assert not (changed & ~inside).any()
        # a rotated h×w rectangle covers about h·w pixel centres (± its border)
        assert abs(int(changed.sum()) - b.h * b.w) <= b.h + b.w + 2


def test_paste_geometry_at_0_and_90_degrees():
    patch = torch.arange(3 * 5, dtype=torch.float32).view(1, 3, 5).expand(3, 3, 5)
    patch = patch + torch.arange(3).view(3, 1, 1) * 100
    for angle, expect in [(0.0, patch), (90.0, torch.rot90(patch, 1, dims=(1, 2)))]:
        box_h, box_w = C._rotated_extent(3, 5, angle)
        b = C.ScarBox(3, 5, 0, 0, angle, 2, 4, box_h, box_w)
        out = torch.full((3, 10, 12), -1.0)
        C._paste_rotated(out, patch, b)
        assert torch.equal(out[:, 2:2 + box_h, 4:4 + box_w], expect)
        out[:, 2:2 + box_h, 4:4 + box_w] = -1.0
        assert (out == -1.0).all()   # nothing outside the box


def test_cutpaste_mix_picks_each_kind_half_the_time_and_is_seeded():
    x = torch.rand(60, 3, 16, 16)
    out, scar = C.cutpaste_mix(x, gen(2), return_choice=True)
    assert 0.3 < scar.float().mean().item() < 0.7   # Binomial(60, ½): 4.5 standard deviations
    again = C.cutpaste_mix(x, gen(2))
    assert torch.equal(out, again)
    assert not torch.equal(out, C.cutpaste_mix(x, gen(3)))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_synthesize_dispatches_and_names_unknown_kinds():
    x = torch.rand(2, 3, 32, 32)
    for kind in C.SYNTHETIC_KINDS:
        y = C.synthesize(kind, x, gen(0))
        assert y.shape == x.shape and not torch.equal(y, x)
    assert torch.equal(C.synthesize("cutmix", x, gen(4)), C.cutpaste_normal(x, gen(4)))
    with pytest.raises(ValueError, match="cutpaste_scar"):
        C.synthesize("scar", x, gen(0))
