"""`evpipe train` and `evpipe eval` command lines, and the model recipes they show.

Kept free of torch so that building evpipe's parser stays fast; the commands import
`evpipe.models.train` when they run.
"""

from __future__ import annotations

import argparse

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "constant")
FRAME_INPUTS = ("counts", "log1p", "binary")

# Defaults are small-data settings (the learning tests use them): AdamW with cosine decay
# (E-3DSNN's segmentation recipe uses AdamW lr 2e-3; its ModelNet40 recipe SGD lr 0.1,
# nesterov, wd 1e-3, step schedule, label smoothing 0.2 over 300 epochs; GAC's SGD lr 0.1,
# wd 5e-5, cosine: algorithms.md §1.2(e), §1.3, §4.2). BN momentum 0.1 (torch's) for all;
# E-3DSNN's own 0.01 suits its long runs (`--bn-momentum 0.01`).
_ADAMW = {"optimizer": "adamw", "weight_decay": 1e-2, "momentum": 0.9, "schedule": "cosine",
          "label_smoothing": 0.1, "epochs": 100, "batch_size": 16, "bn_momentum": 0.1}

# model -> shard encodings it reads, model options with defaults, default hyperparameters.
RECIPES = {
    "e3dsnn": {"encodings": ("svc",), "options": {"variant": "T"},
               "train": dict(_ADAMW, lr=2e-3)},
    "spikepoint": {"encodings": ("event_cloud",),
                   "options": {"timesteps": 16, "local_channels": [32, 64],
                               "global_channels": [128, 256], "coding": "bernoulli",
                               "eval_coding": None, "dropout": 0.0},
                   "train": dict(_ADAMW, lr=5e-3)},
    "gac-resnet": {"encodings": ("frames", "poisson"),
                   "options": {"channels": [32, 64, 128], "frame_input": "log1p"},
                   "train": dict(_ADAMW, lr=2e-2)},
}


def valid_pairs() -> str:
    return "; ".join(f"{m} <- {' or '.join(r['encodings'])}" for m, r in RECIPES.items())


def _train(args) -> int:
    from .models.train import train
    return train(args)


def _evaluate(args) -> int:
    from .models.train import evaluate_command
    return evaluate_command(args)


def _defaults(key: str) -> str:
    values = {m: r["train"][key] for m, r in RECIPES.items()}
    if len(set(values.values())) == 1:
        return f"default {next(iter(values.values()))}"
    return "default " + ", ".join(f"{m} {v}" for m, v in values.items())


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (default: cuda when available, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes (default 0)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_parsers(subparsers) -> None:
    """Add `train` and `eval` to an argparse subparsers object; each sets `func(args) -> int`."""
    t = subparsers.add_parser(
        "train", help="train a model on a shard set (checkpoints, resume, progress bar)",
        description="Train a classifier on a shard set. Valid model <- encoding pairs: "
                    + valid_pairs() + ".")
    t.add_argument("--shards", required=True, help="training shard set (folder)")
    t.add_argument("--val", help="validation shard set; picks best.pt")
    t.add_argument("--model", choices=list(RECIPES), help="model (required unless --resume)")
    t.add_argument("--out", help="folder for last.pt, best.pt and log.jsonl (default: "
                                 "runs/<model>-<dataset>, or the --resume file's folder)")
    t.add_argument("--resume", metavar="FILE", help="continue from a checkpoint (last.pt)")
    h = t.add_argument_group("training (defaults per model; a resumed run keeps its own)")
    h.add_argument("--epochs", type=int, metavar="N", help=_defaults("epochs"))
    h.add_argument("--batch-size", type=int, metavar="B",
                   help="records per batch (event_cloud: each brings its windows); "
                        + _defaults("batch_size"))
    h.add_argument("--optimizer", choices=OPTIMIZERS, help=_defaults("optimizer"))
    h.add_argument("--lr", type=float, metavar="X",
                   help="peak learning rate; " + _defaults("lr"))
    h.add_argument("--weight-decay", type=float, metavar="X", help=_defaults("weight_decay"))
    h.add_argument("--momentum", type=float, metavar="X",
                   help="SGD momentum (Nesterov); " + _defaults("momentum"))
    h.add_argument("--schedule", choices=SCHEDULES,
                   help="cosine to 0, step (x0.1 at 60%% and 80%%) or constant; "
                        + _defaults("schedule"))
    h.add_argument("--label-smoothing", type=float, metavar="X",
                   help=_defaults("label_smoothing"))
    h.add_argument("--bn-momentum", type=float, metavar="X",
                   help="BatchNorm running-statistics momentum; " + _defaults("bn_momentum"))
    h.add_argument("--seed", type=int, metavar="N", help="seed of everything random (0)")
    h.add_argument("--interleave", type=int, metavar="N",
                   help="shards shuffled together (default 0: all; fewer reads fewer files "
                        "at once)")
    m = t.add_argument_group("model options (each applies to the model named)")
    m.add_argument("--variant", choices=("T", "S"), help="E-3DSNN size (T) (e3dsnn)")
    m.add_argument("--timesteps", type=int, metavar="T",
                   help="rate-coding time steps (16) (spikepoint)")
    m.add_argument("--local-channels", type=int, nargs="+", metavar="C",
                   help="local stage widths (32 64) (spikepoint)")
    m.add_argument("--global-channels", type=int, nargs="+", metavar="C",
                   help="global stage widths (128 256) (spikepoint)")
    m.add_argument("--coding", choices=("bernoulli", "expected"),
                   help="training rate coding (bernoulli) (spikepoint)")
    m.add_argument("--eval-coding", choices=("bernoulli", "expected"),
                   help="evaluation rate coding (default: as --coding; Bernoulli draws from a fixed "
                        "seed) (spikepoint)")
    m.add_argument("--dropout", type=float, metavar="X",
                   help="dropout before the classifier (0) (spikepoint)")
    m.add_argument("--channels", type=int, nargs="+", metavar="C",
                   help="stage widths, one block each (32 64 128) (gac-resnet)")
    m.add_argument("--frame-input", choices=FRAME_INPUTS,
                   help="frames fed as counts, log1p(counts) (default) or binary "
                        "(gac-resnet)")
    _common(t)
    t.set_defaults(func=_train)

    e = subparsers.add_parser("eval", help="accuracy of a checkpoint on a shard set")
    e.add_argument("--shards", required=True, help="shard set to evaluate on")
    e.add_argument("--checkpoint", required=True, metavar="FILE", help="last.pt or best.pt")
    e.add_argument("--batch-size", type=int, default=32, metavar="B", help="(default 32)")
    e.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    _common(e)
    e.set_defaults(func=_evaluate)
