"""MIGS on the synthetic humanoids: one factorised model against separately trained avatars.

Prints one JSON line. On :func:`tensorfield.datasets.synthetic_avatars.make_avatars` (default 4
identities, the last held out; 24 training and 6 novel-pose frames each, 64x64, one camera, the
subject turning), in one process at one thread:

* **MIGS**: ``configs/migs_synthetic.yaml`` on the 3 training identities for ``--steps`` steps
  (one view a step): PSNR and SSIM on each identity's held-out novel poses, parameter count.
* **Separate avatars**: the same model, Gaussians per identity and schedule on each identity
  alone, ``--steps / 3`` steps each (equal total steps). Each table is a CP tensor of rank
  ``F`` (the number of attributes) on one identity, which represents any dense ``F x N`` table
  (``F (1 + F + N)`` numbers against ``F N``); each avatar has its own skinning weights and
  non-rigid network, as separately trained 3DGS-Avatar models would.
* **Unseen identity**: ``tensorfield fit-identity`` (:func:`tensorfield.engine.fit.identity_fit`,
  the common trainer) fits only the held-out subject's row of the identity factor on its
  ``novel_identity`` frames for ``--fit-steps`` steps; PSNR and SSIM on its
  ``novel_identity_pose`` frames before (the mean row) and after.

The MIGS claim to reproduce: far fewer parameters than separate avatars at equal or better
novel-pose quality.

    OMP_NUM_THREADS=1 python benchmarks/migs.py                 # defaults, a few minutes
    OMP_NUM_THREADS=1 python benchmarks/migs.py --steps 600 --fit-steps 100   # a quick look
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "migs_synthetic.yaml"


def _per_identity(result: dict) -> dict[str, dict[str, float]]:
    """``{identity: {psnr, ssim}}`` means of an evaluation's per-image records."""
    import numpy as np

    groups: dict[str, list[dict]] = {}
    for record in result["per_image"]:
        groups.setdefault(record["identity"], []).append(record)
    return {name: {"psnr": round(float(np.mean([r["psnr"] for r in rows])), 3), "ssim": round(float(np.mean([r["ssim"] for r in rows])), 4)}
            for name, rows in groups.items()}  # fmt: skip


def _train(config, run_dir: Path, data: Path):
    from tensorfield.engine.trainer import Trainer

    trainer = Trainer.from_config(config, run_dir, data_path=data, device="cpu")
    tick = time.perf_counter()
    trainer.train(progress=False, final_eval=False)
    return trainer, time.perf_counter() - tick


def run(args) -> dict:
    import torch
    from tensorfield.datasets.synthetic_avatars import make_avatars
    from tensorfield.engine.config import load_config
    from tensorfield.engine.fit import identity_fit
    from tensorfield.fields.lowrank import num_attributes

    torch.set_num_threads(args.threads)
    common = [f"num_gaussians={args.gaussians}", "checkpoint_every=100000", "keep_checkpoints=1", "log_every=100", "eval_every=0"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_avatars(tmp / "data", n_identities=args.identities, resolution=args.resolution, seed=args.seed)
        index = json.loads((data / "avatars.json").read_text())
        names, splits = index["identities"], index["splits"]
        trained_names, held_out = names[:-1], names[-1]

        # ---------------------------------------------------------------- MIGS
        config = load_config(CONFIG, common + [f"steps={args.steps}"])
        migs, migs_s = _train(config, tmp / "migs", data)
        novel = migs.evaluate("novel_pose", save_renders=False)
        migs_params = sum(p.numel() for p in migs.model.parameters())
        tensor_params = migs.model.tensor.num_parameters()
        migs.save_checkpoint()

        # ---------------------------------------------------------------- separate avatars
        full_rank = num_attributes(config.sh_degree)
        each = args.steps // len(trained_names)
        separate: dict[str, dict] = {}
        separate_params = separate_tensor_params = separate_s = 0
        for name in trained_names:
            single = load_config(CONFIG, common + [f"steps={each}", f"rank={full_rank}", f"identities=[{name}]"])
            trainer, seconds = _train(single, tmp / f"single_{name}", data)
            separate[name] = _per_identity(trainer.evaluate("novel_pose", save_renders=False))[name]
            separate_params += sum(p.numel() for p in trainer.model.parameters())
            separate_tensor_params += trainer.model.tensor.num_parameters()
            separate_s += seconds

        # ---------------------------------------------------------------- unseen identity
        fit = identity_fit(tmp / "migs", data, tmp / "fit", [f"steps={args.fit_steps}", "train_split=novel_identity",
                                                             f"lr_identity={args.fit_lr}"], device="cpu")  # fmt: skip
        before = fit.trainer.evaluate("novel_identity_pose", save_renders=False)
        tick = time.perf_counter()
        fit.trainer.train(progress=False, final_eval=False)
        fit_s = time.perf_counter() - tick
        after = fit.trainer.evaluate("novel_identity_pose", save_renders=False)
        fit_trainable = sum(p.numel() for p in fit.trainer.model.parameters() if p.requires_grad)

    migs_per = _per_identity(novel)
    mean = lambda table, key: round(sum(v[key] for v in table.values()) / len(table), 3 if key == "psnr" else 4)
    return {
        "benchmark": "migs",
        "data": {"identities": args.identities, "held_out": held_out, "resolution": args.resolution, "seed": args.seed,
                 "frames_per_identity": {split: len(next(iter(per.values()))) for split, per in splits.items()}},
        "threads": args.threads,
        "gaussians_per_identity": args.gaussians,
        "migs": {
            "steps": args.steps, "rank": config.rank, "train_s": round(migs_s, 1),
            "params": migs_params, "tensor_params": tensor_params,
            "novel_pose": migs_per, "novel_pose_mean": {"psnr": mean(migs_per, "psnr"), "ssim": mean(migs_per, "ssim")},
        },
        "separate": {
            "steps_each": each, "rank": full_rank, "train_s": round(separate_s, 1), "params": separate_params, "tensor_params": separate_tensor_params,
            "dense_table_params": len(trained_names) * full_rank * args.gaussians,
            "novel_pose": separate, "novel_pose_mean": {"psnr": mean(separate, "psnr"), "ssim": mean(separate, "ssim")},
        },
        "params_ratio_separate_over_migs": round(separate_params / migs_params, 2),
        "tensor_params_ratio_separate_over_migs": round(separate_tensor_params / tensor_params, 2),
        "unseen_identity": {
            "name": held_out, "fit_steps": args.fit_steps, "lr_identity": args.fit_lr, "trainable_params": fit_trainable, "fit_s": round(fit_s, 1),
            "psnr_mean_row": round(before["psnr"], 3), "ssim_mean_row": round(before["ssim"], 4),
            "psnr": round(after["psnr"], 3), "ssim": round(after["ssim"], 4),
        },
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="MIGS steps (separate avatars: steps / trained identities each)")
    parser.add_argument("--fit-steps", type=int, default=300, help="steps fitting the unseen identity's row")
    parser.add_argument("--fit-lr", type=float, default=0.01, help="learning rate of the unseen identity's row")
    parser.add_argument("--gaussians", type=int, default=3000, help="Gaussians per identity")
    parser.add_argument("--identities", type=int, default=4, help="subjects generated (the last held out)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.identities < 2:
        parser.error("--identities must be at least 2 (one is held out)")
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
