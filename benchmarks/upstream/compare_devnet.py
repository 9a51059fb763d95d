"""Our DevNet and FLOS next to the released DevNet image code (``--criterion deviation`` and
``--criterion focal``), component by component on identical inputs (issue 16, components
1–6). Not part of the test suite; the upstream tree comes from ``prepare.sh``.

    python benchmarks/upstream/compare_devnet.py UPSTREAM_DIR/devnet [--data ROOT] [--size 64]

Every check prints ``agree`` or ``differ (size)``.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
from compare_dra import fixed_prior, same_prior  # noqa: E402

HEAD_RULES = [("conv.", "head.conv.")]
TRUNK = ("feature_extractor.net.", "trunk.body")


def upstream_cfg(img_size: int, **kw) -> argparse.Namespace:
    base = dict(backbone="resnet18", n_scales=2, img_size=img_size, topk=0.1, batch_size=48,
                steps_per_epoch=20, n_anomaly=10)
    base.update(kw)
    return argparse.Namespace(**base)


def our_method(method: str, size: int):
    from bench.methods.devnet import DevNet
    from bench.methods.flos import FLOS

    return DevNet(img_size=size) if method == "devnet" else FLOS(img_size=size)


def build_pair(method: str, size: int, seed: int):
    from modeling.net import SemiADNet

    torch.manual_seed(seed)
    up = SemiADNet(upstream_cfg(size))
    ours = our_method(method, size)._build_model("none")
    ours.load_state_dict(C.map_state(up.state_dict(), HEAD_RULES, TRUNK))
    return up, ours


def mapped(up) -> dict:
    return C.map_state(up.state_dict(), HEAD_RULES, TRUNK)


def toy_batch(size: int, seed: int, n: int = 12):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.cat([torch.zeros(n // 2), torch.ones(n - n // 2)])
    return x, y


# -- 1. networks -------------------------------------------------------------------------------
def check_networks(size: int) -> None:
    comp = "1 networks"
    for method in ("devnet", "flos"):
        up, ours = build_pair(method, size, 0)
        x, _ = toy_batch(size, 1)
        up.train(), ours.train()
        C.check_close(comp, f"{method}: train mode, pyramid score", up(x)[:, 0], ours(x), 1e-5)
        C.compare_states(comp, f"{method}: BatchNorm running statistics after it",
                         ours.state_dict(), mapped(up), 1e-6)
        up.eval(), ours.eval()
        with torch.no_grad():
            C.check_close(comp, f"{method}: eval mode, pyramid score", up(x)[:, 0], ours(x),
                          1e-5)


# -- 2. losses ---------------------------------------------------------------------------------
def check_losses(size: int) -> None:
    comp = "2 losses"
    from modeling.layers import build_criterion

    for method, crit in (("devnet", "deviation"), ("flos", "focal"), ("devnet", "BCE")):
        up, ours_net = build_pair(method, size, 0)
        x, y = toy_batch(size, 2)
        with torch.no_grad():
            out = up(x)
        m = our_method(method, size)
        if crit == "BCE":
            m.criterion = "bce"
        p_up, p_ours = same_prior(fixed_prior())
        with p_up:
            l_up = build_criterion(crit)(out, y.unsqueeze(1).float())
        with p_ours:
            l_ours = m._loss(out[:, 0], y, None)
        C.check_close(comp, f"{method} {crit} loss on the same outputs, targets, prior", l_up,
                      l_ours, 1e-6)


# -- 3. optimiser ------------------------------------------------------------------------------
def check_optimiser(size: int, epochs: int = 11) -> None:
    """Adam + clip + StepLR(10, 0.1) stepped at the END of each epoch (DevNet's script), one
    step per epoch; float64 is the verdict (see compare_dra.check_optimiser)."""
    comp = "3 optimiser"
    from modeling.layers import build_criterion

    from bench.methods.common.training import adam, fit_loop

    for method, crit in (("devnet", "deviation"), ("flos", "focal")):
        for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
            tag = "float64" if dtype == torch.float64 else "float32"
            up, ours = build_pair(method, size, 3)
            up, ours = up.to(dtype), ours.to(dtype)
            x, y = toy_batch(size, 4)
            x, y = x.to(dtype), y.to(dtype)
            prior = fixed_prior(8).to(dtype)
            criterion = build_criterion(crit)
            opt = torch.optim.Adam(up.parameters(), lr=0.0002, weight_decay=1e-5)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.1)
            up_lrs, up_states = [], []
            p_up, p_ours = same_prior(prior)
            with warnings.catch_warnings(), p_up:
                warnings.simplefilter("ignore")
                for _ in range(epochs):
                    up.train()
                    up_lrs.append(opt.param_groups[0]["lr"])
                    loss = criterion(up(x), y.unsqueeze(1))
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(up.parameters(), 1.0)
                    opt.step()
                    up_states.append(mapped(up))
                    sched.step()
            m = our_method(method, size)
            our_opt = adam(ours.parameters(), 2e-4, 1e-5)
            our_lrs, our_states = [], []

            def step_loss():
                our_lrs.append(our_opt.param_groups[0]["lr"])
                return m._loss(ours(x), y, None)

            with p_ours:
                fit_loop(step_loss, our_opt, modules=ours, epochs=epochs, steps_per_epoch=1,
                         grad_clip=1.0, lr_placement="end",
                         progress=lambda s, t: our_states.append(
                             {k: v.clone() for k, v in ours.state_dict().items()}))
            if dtype == torch.float64:
                C.report(comp, f"{method}: learning rate in epochs 1–{epochs} (StepLR at epoch "
                               f"end)", np.allclose(up_lrs, our_lrs, rtol=1e-12),
                         f"upstream {up_lrs[9]:.0e} in epoch 10, {up_lrs[10]:.0e} in 11; ours "
                         f"{our_lrs[9]:.0e}, {our_lrs[10]:.0e}")
            C.compare_states(comp, f"{method} {tag}: parameters and BN buffers after 1 step",
                             our_states[0], up_states[0], tol, relative=True)
            C.compare_states(comp, f"{method} {tag}: parameters and BN buffers after {epochs} "
                                   f"steps", our_states[-1], up_states[-1], tol, relative=True)


# -- 5. sampling -------------------------------------------------------------------------------
def check_sampling(seed: int = 0) -> None:
    from dataloaders.utlis import BalancedBatchSampler as UpSampler

    C.check_sampler_streams("5 sampling", UpSampler, upstream_cfg(64), 48, 10, 24, seed, 20)


# -- 6. split and scoring ----------------------------------------------------------------------
def _upstream_sets(root: Path, subset: str, shots: int, seed: int, size: int):
    from datasets.mvtecad import MVTecAD

    args = argparse.Namespace(dataset_root=str(root), classname=subset, n_anomaly=shots,
                              ramdn_seed=seed, img_size=size)
    with C.sorted_listdir():
        return MVTecAD(args, train=True), MVTecAD(args, train=False)


def check_split_and_scoring(root: Path, subset: str, size: int, seeds=range(10)) -> None:
    comp = "6 split/scoring"
    from compare_dra import _ours_split

    strip = lambda p: p.split("/", 1)[1]  # noqa: E731
    for shots in (10, 1):
        same_train = same_test = 0
        detail = ""
        for seed in seeds:
            tr, te = _upstream_sets(root, subset, shots, seed, size)
            s = _ours_split(root, subset, "general", shots, seed, None)
            same_train += sorted(strip(p) for p in s.train_anomalies) == sorted(
                p for p, y in zip(tr.images, tr.labels) if y == 1)
            same_test += [strip(p) for p in s.test] == list(te.images)
            detail = f"test set {len(te.images)} upstream vs {len(s.test)} ours"
        n = len(list(seeds))
        C.report(comp, f"general, {shots} shot(s): labelled anomalies, seeds 0–{n - 1}",
                 same_train == n, f"{same_train} of {n} seeds the same images")
        C.report(comp, f"general, {shots} shot(s): test set and its order", same_test == n,
                 f"{same_test} of {n} seeds identical; {detail}")
    from bench.datasets.images import load_image

    _, te = _upstream_sets(root, subset, 10, 0, size)
    imgs = np.stack([load_image(Path(te.root) / p, size) for p in te.images])
    for method in ("devnet", "flos"):
        up, ours = build_pair(method, size, 5)
        up.eval()
        with torch.no_grad():
            up_scores = torch.cat([up(torch.stack([te[i]["image"] for i in
                                                   range(j, min(j + 48, len(te)))]))[:, 0]
                                   for j in range(0, len(te), 48)])
        m = our_method(method, size)
        m.model_, m.device_, m.img_size_ = ours, torch.device("cpu"), size
        C.check_close(comp, f"{method}: test scores, same weights (upstream test loader vs "
                            f"our score())", up_scores, torch.as_tensor(m.score(imgs)), 1e-5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("upstream", type=Path, help="the prepared upstream tree (DEST/devnet)")
    ap.add_argument("--data", type=Path, default=None,
                    help="MVTec-layout dataset root (default: the synthetic dataset)")
    ap.add_argument("--subset", default="disc")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--optimiser-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    tree = C.use_upstream(a.upstream)
    torch.set_num_threads(a.threads)
    if a.data is None:
        from bench.datasets.catalog.synthetic import Synthetic

        a.data = Synthetic().locate(Path("."))
    print(f"DevNet/FLOS: ours vs {tree} on {a.data}/{a.subset}, {a.size} px, "
          f"torch {torch.__version__}")
    check_networks(a.size)
    check_losses(a.size)
    check_optimiser(a.optimiser_size)
    C.check_transforms("4 augmentation", a.data, a.subset, a.size)
    check_sampling()
    check_split_and_scoring(a.data, a.subset, a.size)
    print(C.summary_line())


if __name__ == "__main__":
    main()
