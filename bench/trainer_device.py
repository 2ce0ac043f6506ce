"""Trainer throughput on CUDA and on the CPU of the same machine: the same fine-tune, timed.

Loads training groups dumped by ``python -m bench.ranker --dump-groups FILE`` (real examples
from the ML-100K replay), or, with ``--toy N``, N toy groups of the same shape. For each batch
size, fine-tunes a fresh model (`models.ranker.fine_tune`, listwise loss, Adam) for ``--epochs``
epochs on each device, after one warm-up epoch, and reports examples (groups) per second.

    python -m bench.trainer_device --groups bench/out/ranker_groups.npz
    python -m bench.trainer_device --toy 20000 --devices cpu
    python -m bench.trainer_device --groups FILE --ablate 20   # + held-out nDCG@10 without
                                                                # each feature, 20 epochs each

Needs only numpy and torch (it runs on a bare GPU machine with ``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from models.ranker import COLUMN, FEATURES, Groups, RankerMLP, evaluate, fine_tune, toy_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=Path, default=None)
    parser.add_argument("--toy", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", default="64,1024")
    parser.add_argument("--devices", default="cuda,cpu")
    parser.add_argument("--ablate", type=int, default=0, metavar="EPOCHS",
                        help="also fit without each feature (zeroed) for EPOCHS epochs")
    parser.add_argument("--out", type=Path, default=Path("bench/out/trainer_device.json"))
    args = parser.parse_args()

    groups = (Groups.from_npz(args.groups.read_bytes()) if args.groups
              else toy_groups(n_groups=args.toy, width=100, seed=0))
    groups = Groups(groups.x.astype("float32"), groups.mask, groups.positive, groups.ts)
    train, holdout = groups.split(0.2)
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    results = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        for device in devices:
            torch.manual_seed(0)
            model = RankerMLP()
            model.fit_scaler(train)
            fine_tune(model, train, epochs=1, batch_size=batch_size, device=device)  # warm-up
            torch.manual_seed(0)
            model = RankerMLP()
            model.fit_scaler(train)
            report = fine_tune(model, train, epochs=args.epochs, batch_size=batch_size,
                               device=device)
            metrics = evaluate(model, holdout)
            row = {"device": device, "batch_size": batch_size, "groups": len(train),
                   "candidates_per_group": int(train.x.shape[1]), "epochs": args.epochs,
                   "seconds": round(report.seconds, 3),
                   "examples_per_s": round(report.examples_per_s),
                   "holdout_ndcg@10": round(metrics["ndcg@10"], 4)}
            results.append(row)
            print(json.dumps(row), flush=True)
    ablation = {}
    if args.ablate:
        device = devices[0]
        for name in ("none", *FEATURES):
            x = train.x.copy()
            hx = holdout.x.copy()
            if name != "none":
                x[:, :, COLUMN[name]] = 0.0
                hx[:, :, COLUMN[name]] = 0.0
            torch.manual_seed(0)
            model = RankerMLP()
            part = Groups(x, train.mask, train.positive, train.ts)
            model.fit_scaler(part)
            fine_tune(model, part, epochs=args.ablate, device=device)
            ndcg = evaluate(model, Groups(hx, holdout.mask, holdout.positive, holdout.ts))
            ablation[name] = round(ndcg["ndcg@10"], 4)
            print(json.dumps({"without": name, "holdout_ndcg@10": ablation[name]}), flush=True)
    summary = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "data": str(args.groups) if args.groups else f"toy groups ({args.toy})",
        "baseline_holdout_ndcg@10": round(evaluate(None, holdout)["ndcg@10"], 4),
        "results": results,
        "ablation_holdout_ndcg@10": ablation,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["machine"]))


if __name__ == "__main__":
    main()
