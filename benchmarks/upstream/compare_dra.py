"""Our DRA next to the released DRA code, component by component, on identical inputs
(issue 16, components 1–6). Not part of the test suite: the upstream tree is fetched and
patched outside the project by ``prepare.sh``.

    python benchmarks/upstream/compare_dra.py UPSTREAM_DIR/DRA [--data ROOT] [--size 64]

Every check prints ``agree`` or ``differ (size)``. ``--data`` is any MVTec-layout root
(default: the project's synthetic dataset; the subset ``disc`` and known class ``scratch``
are used unless ``--subset`` / ``--known-class`` say otherwise).
"""
from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

# Upstream DRA head names → ours (the trunk is mapped by common.map_state).
HEAD_RULES = [("holistic_head.fc1", "heads.normality.fc1"),
              ("holistic_head.fc2", "heads.normality.fc2"),
              ("seen_head.scoring", "heads.seen.conv"),
              ("pseudo_head.scoring", "heads.pseudo.conv"),
              ("composite_head.conv", "heads.residual.block"),
              ("composite_head.scoring", "heads.residual.score.conv")]
TRUNK = ("feature_extractor.net.", "trunk.body")
UPSTREAM_HEAD_ORDER = ("normality", "seen", "pseudo", "residual")  # its output list order
N_REF = 5


def upstream_cfg(img_size: int, **kw) -> argparse.Namespace:
    base = dict(topk=0.1, n_scales=2, img_size=img_size, nRef=N_REF, total_heads=4,
                batch_size=48, steps_per_epoch=20, nAnomaly=10, backbone="resnet18")
    base.update(kw)
    return argparse.Namespace(**base)


def load_upstream_train(tree: Path):
    spec = importlib.util.spec_from_file_location("upstream_dra_train", tree / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_pair(img_size: int, seed: int):
    """The upstream network with its own (seeded) initialisation and ours with those weights."""
    from modeling.net import DRA as UpstreamDRA

    from bench.methods.dra import DRANet

    torch.manual_seed(seed)
    up = UpstreamDRA(upstream_cfg(img_size))
    ours = DRANet(weights="none")
    ours.load_state_dict(C.map_state(up.state_dict(), HEAD_RULES, TRUNK))
    return up, ours


def mapped(up) -> dict:
    return C.map_state(up.state_dict(), HEAD_RULES, TRUNK)


def toy_batch(img_size: int, seed: int, n_each: int = 4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_REF + 3 * n_each, 3, img_size, img_size, generator=g)
    labels = torch.tensor([0] * n_each + [2] * n_each + [1] * n_each)
    return x, labels


def fixed_prior(seed: int = 7, n: int = 5000) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def same_prior(prior: torch.Tensor):
    """Both deviation losses draw the same N(0,1) reference scores: upstream's
    ``torch.normal`` (float32) and our ``torch.randn`` (float64) return ``prior``."""
    return (mock.patch.object(torch, "normal", lambda *a, **k: prior.clone()),
            mock.patch.object(torch, "randn", lambda *a, **k: prior.to(torch.float64)))


# -- 1. networks -------------------------------------------------------------------------------
def check_networks(size: int) -> None:
    comp = "1 networks"
    up, ours = build_pair(size, seed=0)
    C.report(comp, "state-dict names map one to one (strict load)", True,
             f"{len(mapped(up))} tensors")
    x, labels = toy_batch(size, seed=1)
    up.train(), ours.train()
    out_up = up(x, labels)
    out = ours(x, N_REF)
    subsets = {"normality": labels >= 0, "seen": labels != 2, "pseudo": labels != 1,
               "residual": labels >= 0}
    for i, name in enumerate(UPSTREAM_HEAD_ORDER):
        C.check_close(comp, f"train mode, {name} head (its sample subset)", out_up[i],
                      out[name][subsets[name]], 1e-5)
    C.compare_states(comp, "BatchNorm running statistics after the train-mode forward",
                     ours.state_dict(), mapped(up), 1e-6)
    up.eval(), ours.eval()
    with torch.no_grad():
        out_up = up(x, labels)
        out = ours(x, N_REF)
    for i, name in enumerate(UPSTREAM_HEAD_ORDER):
        C.check_close(comp, f"eval mode, {name} head", out_up[i], out[name], 1e-5)
    from bench.methods.dra import combine_scores

    C.check_close(comp, "eval mode, final score (seen + pseudo + residual − normality)",
                  -out_up[0] + out_up[1] + out_up[2] + out_up[3], combine_scores(out), 1e-5)


# -- 2. losses ---------------------------------------------------------------------------------
def check_losses(tree: Path, size: int) -> None:
    comp = "2 losses"
    train_mod = load_upstream_train(tree)
    from modeling.layers import build_criterion

    from bench.methods.dra import dra_loss

    up, ours = build_pair(size, seed=0)
    x, labels = toy_batch(size, seed=2)
    up.train(), ours.train()
    with torch.no_grad():
        out_up = up(x, labels)
        out = ours(x, N_REF)
    targets = train_mod.Trainer.generate_target(None, labels)
    prior = fixed_prior()
    for crit, ours_name in (("deviation", "deviation"), ("BCE", "bce"), ("focal", "focal")):
        criterion = build_criterion(crit)
        p_up, p_ours = same_prior(prior)
        with p_up:
            up_losses = [criterion(out_up[i], targets[i].float()) for i in range(4)]
        with p_ours:
            total, per_head = dra_loss(out, labels, loss=ours_name)
        for i, name in enumerate(UPSTREAM_HEAD_ORDER):
            C.check_close(comp, f"{crit}, {name} head (targets and subset)", up_losses[i],
                          per_head[name], 1e-5)
        C.check_close(comp, f"{crit}, total = plain sum of the four", sum(up_losses), total,
                      1e-5)


# -- 3. one optimiser step (and the schedule) --------------------------------------------------
def check_optimiser(tree: Path, size: int, epochs: int = 11) -> None:
    """In float64 (the verdict: rounding cannot hide a real difference there) and in float32
    (what runs; Adam's first step g/(|g|+ε) turns float32 rounding of near-zero gradient
    entries — e.g. repeat vs broadcast of the reference mean — into visible parameter
    differences, so its line is for information)."""
    _optimiser_run(tree, size, epochs, torch.float64, 1e-9, 1e-9)
    _optimiser_run(tree, size, epochs, torch.float32, 1e-6, 1e-5)


def _optimiser_run(tree: Path, size: int, epochs: int, dtype, tol1: float, tol_n: float):
    comp = "3 optimiser"
    train_mod = load_upstream_train(tree)
    from modeling.layers import build_criterion

    from bench.methods.common.training import adam, fit_loop
    from bench.methods.dra import dra_loss

    up, ours = build_pair(size, seed=3)
    up, ours = up.to(dtype), ours.to(dtype)
    x, labels = toy_batch(size, seed=4)
    x = x.to(dtype)
    prior = fixed_prior(8).to(dtype)
    tag = "float64" if dtype == torch.float64 else "float32"
    criterion = build_criterion("deviation")
    # Upstream: Trainer.__init__ / training() of the released script, one step per epoch.
    opt = torch.optim.Adam(up.parameters(), lr=0.0002, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.1)
    up_lrs, up_states = [], []
    p_up, p_ours = same_prior(prior)
    with warnings.catch_warnings(), p_up:
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(epochs):
            up.train()
            sched.step()
            up_lrs.append(opt.param_groups[0]["lr"])
            outputs = up(x, labels)
            targets = train_mod.Trainer.generate_target(None, labels)
            loss = torch.sum(torch.cat([criterion(outputs[i], targets[i].float()).view(-1, 1)
                                        for i in range(4)]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(up.parameters(), 1.0)
            opt.step()
            up_states.append(mapped(up))
    # Ours: the fit loop DRA uses, with the same step loss.
    our_opt = adam(ours.parameters(), 2e-4, 1e-5)
    our_lrs, our_states = [], []

    def step_loss():
        our_lrs.append(our_opt.param_groups[0]["lr"])
        return dra_loss(ours(x, N_REF), labels)[0]

    with p_ours:
        fit_loop(step_loss, our_opt, modules=ours, epochs=epochs, steps_per_epoch=1,
                 grad_clip=1.0, lr_step_size=10, lr_gamma=0.1, lr_placement="start",
                 progress=lambda step, total: our_states.append(
                     {k: v.clone() for k, v in ours.state_dict().items()}))
    if dtype == torch.float64:
        C.report(comp, f"learning rate in epochs 1–{epochs} (StepLR(10, 0.1) at epoch start)",
                 np.allclose(up_lrs, our_lrs, rtol=1e-12),
                 f"upstream {sorted(set(up_lrs), reverse=True)}, ours "
                 f"{sorted(set(our_lrs), reverse=True)}")
    C.compare_states(comp, f"{tag}: parameters and BN buffers after 1 step (Adam, L2 1e-5, "
                           f"clip 1.0)", our_states[0], up_states[0], tol1,
                     relative=True)
    C.compare_states(comp, f"{tag}: parameters and BN buffers after {epochs} steps (lr "
                           f"decayed at epoch 10)", our_states[-1], up_states[-1], tol_n,
                     relative=True)


# -- 4. augmentation ---------------------------------------------------------------------------
def _record_cutmix(pil_img, seed: int):
    """Run the upstream CutMix once, recording its crop box, paste box and jitter draw."""
    from PIL import Image
    from torchvision import transforms

    from datasets.cutmix import CutMix

    rec = {}
    real_crop, real_paste = Image.Image.crop, Image.Image.paste
    real_params = transforms.ColorJitter.get_params

    def crop(self, box=None):
        rec["crop"] = tuple(box)
        return real_crop(self, box)

    def paste(self, im, box=None, mask=None):
        rec["paste"] = tuple(box)
        return real_paste(self, im, box, mask)

    def params(*a):
        out = real_params(*a)
        rec["jitter"] = out
        return out

    random.seed(seed)
    torch.manual_seed(seed)
    with mock.patch.object(Image.Image, "crop", crop), \
            mock.patch.object(Image.Image, "paste", paste), \
            mock.patch.object(transforms.ColorJitter, "get_params", staticmethod(params)):
        out = CutMix()(pil_img)
    return np.asarray(out), rec


def check_augmentation(root: Path, subset: str, size: int, n_cutmix: int = 300) -> None:
    comp = "4 augmentation"
    from scipy import stats
    from torchvision.transforms import functional as TF

    from bench.methods.common import augment as A

    C.check_transforms(comp, root, subset, size)
    pil, ours_u8 = C.sample_images(root, subset, 1, size)
    x = A.to_float(ours_u8)
    # Colour jitter, one operation at a time with a fixed factor (PIL ImageEnhance/HSV vs ours).
    ops = [("brightness", TF.adjust_brightness, A.adjust_brightness, 1.08),
           ("contrast", TF.adjust_contrast, A.adjust_contrast, 0.92),
           ("saturation", TF.adjust_saturation, A.adjust_saturation, 1.1),
           ("hue", TF.adjust_hue, A.adjust_hue, 0.07)]
    for name, f_up, f_ours, v in ops:
        up = np.asarray(f_up(pil[0], v)).astype(int)
        ours = (f_ours(x, torch.tensor([v]))[0].permute(1, 2, 0).numpy() * 255).round()
        d = np.abs(up - ours.astype(int))
        C.report(comp, f"colour jitter {name} {v} (PIL uint8 vs ours float)", d.max() == 0,
                 f"max |Δ| = {d.max()} grey levels, mean {d.mean():.2f}, "
                 f"{np.mean(d > 1):.2%} of values off by more than 1")
    # CutMix with the same box and jitter factors.
    n_pix_differ, n_patch, worst = 0, 0, 0
    boxes_up = []
    for trial in range(n_cutmix):
        up, rec = _record_cutmix(pil[0], trial)
        l, t, r, b = rec["crop"]
        pl, pt, _, _ = rec["paste"]
        fn_idx, bf, cf, sf, hf = rec["jitter"]
        box = A.CutMixBox(b - t, r - l, t, l, pt, pl)
        boxes_up.append(box)
        if trial >= 20:
            continue  # pixel comparison on the first 20; all draws feed the statistics
        fixed = lambda patch, gen, *a, **k: A.apply_color_jitter(  # noqa: E731
            patch, torch.tensor([bf]), torch.tensor([cf]), torch.tensor([sf]),
            torch.tensor([hf]), torch.as_tensor(fn_idx).view(1, 4))
        with mock.patch.object(A, "cutmix_box", lambda *a, **k: box), \
                mock.patch.object(A, "color_jitter", fixed):
            ours = A.cutmix(x, torch.Generator().manual_seed(0))
        ours = (ours[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
        d = np.abs(up.astype(int) - ours)
        inside = np.zeros((size, size), bool)
        inside[box.dst_y:box.dst_y + box.h, box.dst_x:box.dst_x + box.w] = True
        n_pix_differ += int(np.any(d[~inside] > 0, axis=-1).sum())
        n_patch += int(inside.sum())
        worst = max(worst, int(d[inside].max()) if inside.any() else 0)
    C.report(comp, "CutMix, same box and jitter factors: pixels outside the pasted patch",
             n_pix_differ == 0, f"{n_pix_differ} pixels differ")
    C.report(comp, "CutMix, same box and jitter factors: pasted patch", worst <= 1,
             f"max |Δ| = {worst} grey levels over {n_patch} patch pixels (jitter rounding)")
    gen = torch.Generator().manual_seed(1)
    boxes_ours = [A.cutmix_box(size, gen) for _ in range(n_cutmix)]
    for what, f in (("area fraction", lambda bx: bx.h * bx.w / size ** 2),
                    ("aspect w/h", lambda bx: bx.w / bx.h),
                    ("source x", lambda bx: bx.src_x), ("destination y", lambda bx: bx.dst_y)):
        a = [f(bx) for bx in boxes_up]
        o = [f(bx) for bx in boxes_ours]
        ks = stats.ks_2samp(a, o)
        C.report(comp, f"CutMix box draws: {what} distribution ({n_cutmix} each, KS)",
                 ks.pvalue > 0.01, f"KS D = {ks.statistic:.3f}, p = {ks.pvalue:.2f}; means "
                 f"{np.mean(a):.3f} vs {np.mean(o):.3f}")


# -- 5. sampling -------------------------------------------------------------------------------
def _upstream_dataset(root: Path, subset: str, seed: int, n_anomaly: int, known: str):
    from datasets.mvtecad import MVTecAD

    args = argparse.Namespace(dataset_root=str(root), classname=subset, know_class=known,
                              cont_rate=0.0, test_threshold=0, test_rate=0.0,
                              nAnomaly=n_anomaly, ramdn_seed=seed, outlier_root=None,
                              img_size=64)
    with C.sorted_listdir():
        return MVTecAD(args, train=True), MVTecAD(args, train=False), args


def check_sampling(root: Path, subset: str, known: str, seed: int = 0,
                   epochs: int = 25) -> None:
    comp = "5 sampling"
    from dataloaders.utlis import BalancedBatchSampler as UpSampler

    from bench.methods.common.samplers import EndlessPermutation
    from bench.methods.dra import plan_slots

    C.check_sampler_streams(comp, UpSampler, upstream_cfg(64), 48, 10, 32, seed, 20)
    # Pseudo-anomaly coin and pseudo source: run the upstream __getitem__ with loading and
    # transforms replaced by the identity, over `epochs` epochs of 20 × 32 normal slots.
    train, _, _ = _upstream_dataset(root, subset, seed, 10, known)
    train.load_image = lambda path: path
    train.transform = train.transform_pseudo = lambda img: img
    n_normal = len(train.normal_idx)
    random.seed(seed)
    np.random.seed(seed)
    labels, sources = [], []
    sampler = UpSampler(upstream_cfg(64), train)
    for _ in range(epochs):
        for batch in sampler:
            for idx in batch[:32]:
                s = train[idx]
                labels.append(s["label"])
                if s["label"] == 2:
                    sources.append(train.images.index(str(Path(s["image"]).relative_to(
                        Path(train.root)))))
    rng = np.random.RandomState(seed)
    stream = EndlessPermutation(n_normal, rng)
    plans = [plan_slots(stream.take(32), rng, 0.5, n_normal) for _ in range(20 * epochs)]
    is_p = np.concatenate([p.is_pseudo for p in plans])
    src = np.concatenate([p.pseudo_src[p.is_pseudo] for p in plans])
    share_up, share_ours = np.mean(np.array(labels) == 2), is_p.mean()
    n = len(labels)
    sd = np.sqrt(0.25 / n)
    C.report(comp, f"share of normal slots made pseudo anomalies ({n} slots each)",
             abs(share_up - 0.5) < 3 * sd and abs(share_ours - 0.5) < 3 * sd,
             f"upstream {share_up:.3f}, ours {share_ours:.3f}, expected 0.5 ± {sd:.3f}")
    from scipy import stats

    cu = np.bincount(sources, minlength=n_normal)
    co = np.bincount(src, minlength=n_normal)
    pu, po = stats.chisquare(cu).pvalue, stats.chisquare(co).pvalue
    C.report(comp, "pseudo-anomaly source image uniform over the normals (χ²)",
             pu > 0.01 and po > 0.01, f"p = {pu:.2f} upstream, {po:.2f} ours; draws per image "
             f"{cu.min()}–{cu.max()} vs {co.min()}–{co.max()}")
    # References: upstream, a second sampler of 5 normals per step (nAnomaly = 0).
    ref_cfg = upstream_cfg(64, batch_size=N_REF, nAnomaly=0)
    np.random.seed(seed)
    ref_sampler = UpSampler(ref_cfg, train)  # built once, as the released ref loader's
    ref_up = np.concatenate([np.array(b) for _ in range(epochs) for b in ref_sampler])
    ref_stream = EndlessPermutation(n_normal, np.random.RandomState(seed))
    ref_ours = np.concatenate([ref_stream.take(N_REF) for _ in range(20 * epochs)])
    C.report(comp, f"reference images: {N_REF} normals per step, one endless permutation "
                   f"stream ({epochs} epochs, same numpy seed)",
             np.array_equal(ref_up, ref_ours),
             f"{np.mean(ref_up == ref_ours):.0%} of indices equal")


# -- 6. split and scoring ----------------------------------------------------------------------
def _ours_split(root: Path, subset: str, setting: str, shots: int, seed: int, known):
    from bench.datasets.layout import read_subset
    from bench.protocol import make_split

    index = read_subset(root, subset)
    return make_split(index, dataset="x", setting=setting, shots=shots, seed=seed,
                      known_class=known)


def check_split_and_scoring(root: Path, subset: str, known: str, size: int,
                            seeds=range(10)) -> None:
    comp = "6 split/scoring"
    strip = lambda p: p.split("/", 1)[1]  # noqa: E731  ("disc/test/x.png" → "test/x.png")
    for setting, shots in (("hard", 10), ("hard", 1), ("general", 10), ("general", 1)):
        same_train = same_test = same_order = 0
        detail = ""
        for seed in seeds:
            args_known = known if setting == "hard" else None
            tr, te, _ = _upstream_dataset(root, subset, seed, shots, args_known)
            up_train = [p for p, y in zip(tr.images, tr.labels) if y == 1]
            up_test = list(te.images)
            s = _ours_split(root, subset, setting, shots, seed, args_known)
            same_train += sorted(strip(p) for p in s.train_anomalies) == sorted(up_train)
            same_order += [strip(p) for p in s.train_anomalies] == up_train
            same_test += [strip(p) for p in s.test] == up_test
            detail = f"test set {len(up_test)} upstream vs {len(s.test)} ours"
        n = len(list(seeds))
        C.report(comp, f"{setting}, {shots} shot(s): labelled anomalies, seeds 0–{n - 1}",
                 same_train == n, f"{same_train} of {n} seeds the same images; in the same "
                 f"list order: {same_order} (upstream sorts them, ours keeps the shuffled "
                 f"order; the sampler permutes the list, so order does not matter)")
        C.report(comp, f"{setting}, {shots} shot(s): test set and its order", same_test == n,
                 f"{same_test} of {n} seeds identical; {detail}")
    # Scoring: the same weights and references, test images through each side's test path.
    from PIL import Image

    from bench.datasets.images import load_image
    from bench.methods.common.augment import normalize, to_float
    from bench.methods.dra import combine_scores

    _, te, _ = _upstream_dataset(root, subset, 0, 10, known)
    te.args.img_size = size
    tf = te.transform_test()
    up_x = torch.stack([tf(Image.open(Path(te.root) / p).convert("RGB")) for p in te.images])
    ours_x = normalize(to_float(np.stack([load_image(Path(te.root) / p, size)
                                          for p in te.images])))
    C.check_close(comp, "test images: upstream transform_test vs our decoder + normalize",
                  up_x, ours_x, 1e-6)
    up, ours = build_pair(size, seed=5)
    refs = torch.randn(N_REF, 3, size, size, generator=torch.Generator().manual_seed(6))
    up.eval(), ours.eval()
    with torch.no_grad():
        up_scores, our_scores = [], []
        for i in range(0, len(up_x), 48):
            o = up(torch.cat([refs, up_x[i:i + 48]]), torch.as_tensor(te.labels[i:i + 48]))
            up_scores.append(-o[0] + o[1] + o[2] + o[3])
            our_scores.append(combine_scores(ours(torch.cat([refs, ours_x[i:i + 48]]), N_REF)))
    C.check_close(comp, "test scores, same weights and references (batches of 48)",
                  torch.cat(up_scores), torch.cat(our_scores), 1e-5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("upstream", type=Path, help="the prepared upstream DRA tree (DEST/DRA)")
    ap.add_argument("--data", type=Path, default=None,
                    help="MVTec-layout dataset root (default: the synthetic dataset)")
    ap.add_argument("--subset", default="disc")
    ap.add_argument("--known-class", default="scratch")
    ap.add_argument("--size", type=int, default=64, help="image side for every check")
    ap.add_argument("--optimiser-size", type=int, default=32,
                    help="image side for the optimiser check (11 steps, float64 and float32)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    tree = C.use_upstream(a.upstream)
    torch.set_num_threads(a.threads)
    if a.data is None:
        from bench.datasets.catalog.synthetic import Synthetic

        a.data = Synthetic().locate(Path("."))
    print(f"DRA: ours vs {tree} on {a.data}/{a.subset}, {a.size} px, torch {torch.__version__}")
    check_networks(a.size)
    check_losses(tree, a.size)
    check_optimiser(tree, a.optimiser_size)
    check_augmentation(a.data, a.subset, a.size)
    check_sampling(a.data, a.subset, a.known_class)
    check_split_and_scoring(a.data, a.subset, a.known_class, a.size)
    print(C.summary_line())


if __name__ == "__main__":
    main()
