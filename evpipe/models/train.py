"""Training and evaluation of evpipe's classifiers on shard sets: `evpipe train`,
`evpipe eval`, checkpoints and a one-record predictor for streaming.

Models and the encodings they read (`MODELS`):

    e3dsnn      svc          SparseVoxelCollate -> spconv SparseConvTensor -> E3DSNN
    spikepoint  event_cloud  EventCloudCollate (grouped) -> groups [B', M, K, C] -> SpikePoint
    gac-resnet  frames       StackCollate (time first) -> float [B, T, C, H, W] -> GACResNet
                poisson      the same with the stored spikes

Sizes come from the shard set's manifest (feature channels, time bins, classes); class
names from the dataset's loader when it has a fixed class list. An event_cloud record
holds W windows: each window is a training item with its recording's label (SpikePoint,
EventMamba), and a recording is predicted from the mean of its windows' logits.

Training reads `ShardDataset` through `ShardSampler` (`set_epoch` every epoch) and a
DataLoader. Everything random comes from `--seed`: model initialisation
(`torch.manual_seed`), the sample order (sampler seed) and SpikePoint's rate coding (a
torch Generator); its state and the global RNG state travel in the checkpoint, so a
resumed run continues the uninterrupted one. The learning rate is a pure function of the
optimiser step (cosine, step at 60 % / 80 % as E-3DSNN's MultiStepLR, or constant).

Checkpoints (`last.pt` every epoch, `best.pt` at the best validation accuracy) are
`torch.save`d dicts of tensors and plain Python values only, written atomically, and
always read with `torch.load(..., weights_only=True)`:
format, format_version, evpipe_version, model, model_kwargs, encoding, dataset, classes,
num_classes, train (hyperparameters), epoch (epochs done), step, state_dict, optimizer,
rng, metrics, best_accuracy.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .. import __version__
from ..errors import ConfigError, ShardError
from ..train_cli import FRAME_INPUTS, RECIPES, valid_pairs

CHECKPOINT_FORMAT = "evpipe-checkpoint"
CHECKPOINT_VERSION = 1
# E-3DSNN's MultiStepLR: x0.1 at 60 % and 80 % of the iterations (algorithms.md §1.2(e)).
STEP_MILESTONES, STEP_GAMMA = (0.6, 0.8), 0.1


# -- models ---------------------------------------------------------------------------------

def _schema_tail(manifest: dict, field: str) -> list[int]:
    spec = manifest.get("schema", {}).get(field)
    if spec is None:
        raise ShardError(f"shard set has no {field!r} field (encoding "
                         f"{manifest['encoding']['name']!r}, params "
                         f"{manifest['encoding']['params']})")
    return [int(v) for v in spec["tail"]]


def _e3dsnn_kwargs(opts: dict, manifest: dict, num_classes: int) -> dict:
    params = manifest["encoding"]["params"]
    feature = "spikes" if params.get("store") == "spikes" else "feats"
    return {"in_channels": _schema_tail(manifest, feature)[-1], "num_classes": num_classes,
            "variant": opts["variant"]}


def _e3dsnn_logits(model, batch: dict, device, generator) -> torch.Tensor:
    from ..shards.collate import to_sparse_tensor
    return model(to_sparse_tensor(dict(batch, feats=batch["feats"].to(device),
                                       coords=batch["coords"].to(device))))


def _spikepoint_kwargs(opts: dict, manifest: dict, num_classes: int) -> dict:
    if not manifest["encoding"]["params"].get("n_groups"):
        raise ConfigError("spikepoint needs grouped event clouds: convert with "
                          "--to event_cloud --n-groups M (M > 0)")
    return {"in_channels": _schema_tail(manifest, "groups")[-1], "num_classes": num_classes,
            "T": opts["timesteps"], "local_channels": [int(c) for c in opts["local_channels"]],
            "local_blocks": [1] * len(opts["local_channels"]),
            "global_channels": [int(c) for c in opts["global_channels"]],
            "global_blocks": [1] * len(opts["global_channels"]),
            "coding": opts["coding"], "eval_coding": opts["eval_coding"],
            "dropout": opts["dropout"]}


def _spikepoint_logits(model, batch: dict, device, generator) -> torch.Tensor:
    groups = batch["groups"].to(device)
    if len(groups) == 0:  # records without windows
        return torch.zeros(0, model.fc.out_features, device=device)
    return model(groups, generator=generator)


_FRAME_FIELDS = {"frames": "frames", "poisson": "spikes"}




class FrameInput(nn.Module):
    """Stored frames -> network input, float `[B, T, C, H, W]`: `counts` as they are,
    `log1p` log(1 + x), `binary` 1[x > 0]. Raw counts are heavy tailed, and GAC's
    temporal attention reads the max over each frame, so one bright pixel moves it."""

    def __init__(self, mode: str):
        super().__init__()
        if mode not in FRAME_INPUTS:
            raise ConfigError(f"frame input must be one of {FRAME_INPUTS}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.mode == "log1p":
            return torch.log1p(x)
        return (x > 0).float() if self.mode == "binary" else x

    def extra_repr(self) -> str:
        return self.mode


def _gac_kwargs(opts: dict, manifest: dict, num_classes: int) -> dict:
    T, C = _schema_tail(manifest, _FRAME_FIELDS[manifest["encoding"]["name"]])[:2]
    return {"in_channels": C, "num_classes": num_classes, "T": T,
            "channels": [int(c) for c in opts["channels"]],
            "blocks": [1] * len(opts["channels"]), "frame_input": opts["frame_input"]}


def _gac_logits(model, batch: dict, device, generator) -> torch.Tensor:
    field = "frames" if "frames" in batch else "spikes"
    # StackCollate stores these time first, [T, B, C, H, W]; GACResNet takes [B, T, ...].
    return model(batch[field].to(device).transpose(0, 1))


def _build_e3dsnn(**kw):
    from .e3dsnn import E3DSNN
    return E3DSNN(**kw)


def _build_spikepoint(**kw):
    from .spikepoint import SpikePoint
    return SpikePoint(**kw)


def _build_gac(frame_input: str = "counts", **kw):
    """`FrameInput` then `GACResNet` (state_dict keys "0." and "1.")."""
    from .gac_resnet import GACResNet
    return nn.Sequential(FrameInput(frame_input), GACResNet(**kw))


@dataclass(frozen=True)
class ModelSpec:
    """How `evpipe train` builds and feeds one model.

    `encodings`: the shard encodings it reads; `kwargs(opts, manifest, num_classes)`:
    constructor keywords (plain values) from the model options and the manifest;
    `build(**kwargs)`: the module; `logits(model, batch, device, generator)`: logits
    float32 [items, num_classes] of a collated batch; `options`: model option -> default;
    `train`: default hyperparameters.
    """

    encodings: tuple[str, ...]
    kwargs: Callable[[dict, dict, int], dict]
    build: Callable[..., nn.Module]
    logits: Callable
    options: dict
    train: dict


# Encodings, options and default hyperparameters: evpipe.train_cli.RECIPES (no torch, so
# the command line builds its parser without importing torch).
_HOOKS = {"e3dsnn": (_e3dsnn_kwargs, _build_e3dsnn, _e3dsnn_logits),
          "spikepoint": (_spikepoint_kwargs, _build_spikepoint, _spikepoint_logits),
          "gac-resnet": (_gac_kwargs, _build_gac, _gac_logits)}
MODELS = {name: ModelSpec(r["encodings"], *_HOOKS[name], options=r["options"], train=r["train"])
          for name, r in RECIPES.items()}


def check_pair(model: str, encoding: dict) -> ModelSpec:
    """The spec of `model`, or ConfigError when it cannot read shards of `encoding`."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    name = (encoding or {}).get("name")
    if name not in MODELS[model].encodings:
        raise ConfigError(f"model {model!r} cannot read {name!r} shards; valid model <- "
                          f"encoding pairs: {valid_pairs()}")
    return MODELS[model]


# -- data ---------------------------------------------------------------------------------

class LabelledCollate:
    """The encoding's collate plus `record_label` int64 [B]: each record's label, also for
    event_cloud records without windows (whose items, and item labels, are absent)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, records: list[dict]) -> dict:
        batch = self.inner(records)
        batch["record_label"] = torch.tensor([int(r["label"]) for r in records],
                                             dtype=torch.int64)
        return batch


def _open_set(path, what: str):
    from ..shards import ShardDataset
    ds = ShardDataset(path)
    spec = ds.manifest.get("schema", {}).get("label")
    if spec is None or spec.get("kind") != "scalar":
        raise ShardError(f"{what} shard set has no per-sample 'label' field: not a "
                         "classification set", path=path)
    return ds


def _labels(path) -> np.ndarray:
    """int64 [n] labels of a shard set (reads only the label field)."""
    from ..shards import ShardDataset
    ds = ShardDataset(path, fields=["label"])
    try:
        return np.array([int(ds[i]["label"]) for i in range(len(ds))], np.int64)
    finally:
        ds.close()


def class_names(manifest: dict) -> list[str] | None:
    """The dataset loader's fixed class list (label i -> name), or None."""
    from ..loaders import DATASETS
    dataset = manifest.get("dataset")
    names = getattr(DATASETS.get(dataset), "classes", None) if dataset in DATASETS else None
    return list(names) if isinstance(names, (tuple, list)) else None


def _loader(ds, batch_size: int, workers: int, sampler) -> DataLoader:
    from ..shards.collate import collate_for
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=LabelledCollate(collate_for(ds.encoding)),
                      persistent_workers=workers > 0)


def _check_encoding(expected: dict, manifest: dict, path, what: str) -> None:
    got = manifest["encoding"]
    if got != expected:
        diff = sorted(k for k in set(expected["params"]) | set(got["params"])
                      if expected["params"].get(k) != got["params"].get(k))
        detail = (f"encoding {got['name']!r} instead of {expected['name']!r}"
                  if got["name"] != expected["name"] else
                  "encoding parameters differ: " + ", ".join(
                      f"{k} {got['params'].get(k)!r} (model: {expected['params'].get(k)!r})"
                      for k in diff))
        raise ShardError(f"{what} does not match the model's shards: {detail}", path=path)


# -- evaluation ---------------------------------------------------------------------------

def _record_logits(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean logits per record [B, classes] and bool [B]: records with at least one item."""
    from .e3dsnn import mean_per_sample
    n = len(batch["record_label"])
    if "sample" not in batch:
        return logits, torch.ones(n, dtype=torch.bool, device=logits.device)
    sample = batch["sample"].to(logits.device)
    has = torch.bincount(sample, minlength=n) > 0
    return mean_per_sample(logits, sample, n), has


def evaluate(model: nn.Module, spec: ModelSpec, loader, device, classes, num_classes: int,
             seed: int = 0, progress: bool = False) -> dict:
    """Metrics of `model` on every batch of `loader`: `loss` (mean cross-entropy per
    item), `accuracy` per sample (event_cloud: from the mean logits of its windows; a
    recording without windows counts as wrong), `samples`, `items`, and for event_cloud
    `window_accuracy`; `per_class` {name: {"accuracy", "samples"}} for the labels present.
    SpikePoint's Bernoulli eval coding draws from a generator seeded with `seed`."""
    from tqdm import tqdm
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    loss_sum, items, item_ok = 0.0, 0, 0
    correct = np.zeros(num_classes, np.int64)
    total = np.zeros(num_classes, np.int64)
    windowed = False
    with torch.no_grad():
        for batch in tqdm(loader, desc="eval", leave=False, disable=not progress,
                          file=sys.stderr):
            windowed |= "sample" in batch
            logits = spec.logits(model, batch, device, gen)
            labels = batch.get("label", batch["record_label"]).to(device)
            if len(logits):
                loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
                item_ok += int((logits.argmax(1) == labels).sum())
            items += len(logits)
            rec_logits, has = _record_logits(logits, batch)
            rec_labels = batch["record_label"].to(device)
            ok = (rec_logits.argmax(1) == rec_labels) & has
            total += np.bincount(rec_labels.cpu().numpy(), minlength=num_classes)
            correct += np.bincount(rec_labels.cpu().numpy(), weights=ok.cpu().numpy(),
                                   minlength=num_classes).astype(np.int64)
    n = int(total.sum())
    out = {"loss": loss_sum / max(items, 1), "accuracy": float(correct.sum()) / max(n, 1),
           "samples": n, "items": items}
    if windowed:
        out["window_accuracy"] = item_ok / max(items, 1)
    out["per_class"] = {(classes[c] if classes else str(c)):
                        {"accuracy": float(correct[c] / total[c]), "samples": int(total[c])}
                        for c in np.flatnonzero(total).tolist()}
    return out


# -- checkpoints ---------------------------------------------------------------------------

def _save_atomic(obj: dict, path: Path) -> None:
    from ..shards.format import fsync_path
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def read_checkpoint(path, device="cpu") -> dict:
    """The checkpoint dict at `path`, loaded with `weights_only=True` onto `device`;
    ConfigError if it is missing or not an evpipe checkpoint of a known version."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise ConfigError("checkpoint file not found", path=path) from None
    except Exception as e:  # unpickling, zip and torch errors share no narrower base
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else "")
        raise ConfigError(f"not a loadable checkpoint ({type(e).__name__}: {why})",
                          path=path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError("not an evpipe checkpoint", path=path)
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise ConfigError(f"checkpoint format version {ckpt.get('format_version')!r}; this "
                          f"evpipe reads version {CHECKPOINT_VERSION}", path=path)
    if ckpt.get("model") not in MODELS:
        raise ConfigError(f"checkpoint holds unknown model {ckpt.get('model')!r}", path=path)
    return ckpt


def load_checkpoint(path, device="cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode on `device`, checkpoint dict without the optimiser and RNG
    state). The dict carries `model`, `model_kwargs`, `encoding`, `classes`, `metrics`,
    `epoch` and `state_dict`."""
    device = resolve_device(device)
    ckpt = read_checkpoint(path, device)
    model = MODELS[ckpt["model"]].build(**ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("optimizer", "rng")}
    return model, meta


class Predictor:
    """One-record classifier from a checkpoint (`load_predictor`).

    `encoding`: the manifest encoding entry {"name", "params"} the model was trained on;
    `classes`: class names (label order) or None. `predictor(record)` takes the fields
    `params.encode(...)` returns for one sample (NumPy arrays, no batch axis) and returns
    {"class": int | None, "label": str | None, "scores": [float] softmax}; event_cloud
    records are predicted from the mean logits of their windows (no window: class None,
    scores []). A SpikePoint with Bernoulli eval coding draws its spikes from a generator
    seeded with 0 on every call: repeatable per record, not equal to a batch's draws.
    """

    def __init__(self, model: nn.Module, meta: dict, device):
        from ..shards.collate import collate_for
        self.model = model
        self.meta = meta
        self.device = device
        self.encoding = meta["encoding"]
        self.classes = meta["classes"]
        self._spec = MODELS[meta["model"]]
        self._collate = collate_for(self.encoding)

    def __call__(self, record: dict) -> dict:
        batch = self._collate([record])
        gen = torch.Generator(device=self.device).manual_seed(0)
        with torch.no_grad():
            logits = self._spec.logits(self.model, batch, self.device, gen)
        if len(logits) == 0:
            return {"class": None, "label": None, "scores": []}
        scores = torch.softmax(logits.mean(0), 0)
        k = int(scores.argmax())
        return {"class": k, "label": self.classes[k] if self.classes else None,
                "scores": [float(s) for s in scores]}


def load_predictor(path, device="cpu") -> Predictor:
    """`Predictor` for the checkpoint at `path` (model in eval mode on `device`)."""
    device = resolve_device(device)
    model, meta = load_checkpoint(path, device)
    return Predictor(model, meta, device)


# -- training -----------------------------------------------------------------------------

def resolve_device(device) -> torch.device:
    """`auto` -> cuda when available, else cpu; other names as torch reads them."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available")
    return torch.device(device)


def lr_at(train: dict, step: int, total: int) -> float:
    """Learning rate at optimiser step `step` of `total`: cosine from lr to 0, step
    (x0.1 at 60 % and 80 %), or constant."""
    lr, frac = train["lr"], step / max(total, 1)
    if train["schedule"] == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    if train["schedule"] == "step":
        return lr * STEP_GAMMA ** sum(frac >= m for m in STEP_MILESTONES)
    return lr


def _optimizer(train: dict, model: nn.Module) -> torch.optim.Optimizer:
    if train["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=train["lr"], momentum=train["momentum"],
                               weight_decay=train["weight_decay"],
                               nesterov=train["momentum"] > 0)
    return torch.optim.AdamW(model.parameters(), lr=train["lr"],
                             weight_decay=train["weight_decay"])


TRAIN_KEYS = ("optimizer", "lr", "weight_decay", "momentum", "schedule", "label_smoothing",
              "epochs", "batch_size", "seed", "interleave", "bn_momentum")


def _set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Running-statistics momentum of every BatchNorm (timm's `--bn-momentum`): E-3DSNN's
    0.01 needs thousands of steps before the running statistics fit the weights."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def _given(args, keys) -> dict:
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _settings(args, spec: ModelSpec, resume: dict | None) -> tuple[dict, dict]:
    """(hyperparameters, model options): the checkpoint's when resuming (flags given must
    agree), else flags over the model's defaults."""
    given_train = _given(args, TRAIN_KEYS)
    given_opts = _given(args, spec.options)
    if resume is not None:
        train, opts = resume["train"], resume["model_options"]
        clash = [f"--{k.replace('_', '-')} {v!r} (checkpoint: {ref[k]!r})"
                 for ref, given in ((train, given_train), (opts, given_opts))
                 for k, v in given.items() if _plain(v) != ref[k]]
        if clash:
            raise ConfigError("a resumed run keeps its checkpoint's settings; these flags "
                              "differ: " + ", ".join(clash))
        return dict(train), dict(opts)
    train = {**spec.train, "seed": 0, "interleave": 0, **given_train}
    opts = {**spec.options, **{k: _plain(v) for k, v in given_opts.items()}}
    _check_train(train)
    return train, opts


def _plain(v):
    return [*v] if isinstance(v, tuple) else v


def _check_train(train: dict) -> None:
    for key in ("epochs", "batch_size"):
        if train[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {train[key]}")
    if not train["lr"] > 0 or train["weight_decay"] < 0 or train["momentum"] < 0:
        raise ConfigError("--lr must be > 0, --weight-decay and --momentum >= 0")
    if not 0 <= train["label_smoothing"] < 1:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {train['label_smoothing']}")
    if not 0 < train["bn_momentum"] <= 1:
        raise ConfigError(f"--bn-momentum must be in (0, 1], got {train['bn_momentum']}")
    if train["interleave"] < 0:
        raise ConfigError(f"--interleave must be >= 0, got {train['interleave']}")


def _rng_state(gen: torch.Generator) -> dict:
    """Global CPU (and CUDA) RNG states and the rate-coding generator's, as ByteTensors."""
    state = {"torch": torch.get_rng_state(), "generator": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _model_owner_flags(args, model: str) -> None:
    """ConfigError for a model option given for a model it does not belong to."""
    for name, spec in MODELS.items():
        if name == model:
            continue
        for opt in spec.options:
            if opt not in MODELS[model].options and getattr(args, opt, None) is not None:
                raise ConfigError(f"--{opt.replace('_', '-')} does not apply to model "
                                  f"{model!r} (it belongs to {name})")


def _epoch_line(rec: dict) -> str:
    line = (f"epoch {rec['epoch']}/{rec['epochs']}: train loss {rec['train_loss']:.4f} "
            f"acc {100 * rec['train_accuracy']:.2f}%")
    if "val_accuracy" in rec:
        line += f", val loss {rec['val_loss']:.4f} acc {100 * rec['val_accuracy']:.2f}%"
    return line + f" ({rec['seconds']:.1f} s)"


def train(args) -> int:
    """`evpipe train`: see the module docstring and `--help`."""
    from ..shards import ShardSampler
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    resume = read_checkpoint(args.resume, "cpu") if args.resume else None
    model_name = args.model or (resume and resume["model"])
    if not model_name:
        raise ConfigError("--model is required (or --resume a checkpoint)")
    if resume is not None and model_name != resume["model"]:
        raise ConfigError(f"--model {model_name} but the checkpoint holds "
                          f"{resume['model']}", path=args.resume)
    _model_owner_flags(args, model_name)
    train_set = _open_set(args.shards, "training")
    manifest = train_set.manifest
    if len(train_set) == 0:
        raise ShardError("training shard set is empty", path=args.shards)
    spec = check_pair(model_name, manifest["encoding"])
    if resume is not None:
        _check_encoding(resume["encoding"], manifest, args.shards, "--shards")
    val_set = _open_set(args.val, "validation") if args.val else None
    if val_set is not None:
        _check_encoding(manifest["encoding"], val_set.manifest, args.val, "--val")
    hp, opts = _settings(args, spec, resume)

    classes = resume["classes"] if resume else class_names(manifest)
    labels = _labels(args.shards)
    num_classes = resume["num_classes"] if resume else (
        len(classes) if classes else int(labels.max(initial=0)) + 1)
    for path, lab in ((args.shards, labels), (args.val, _labels(args.val) if args.val else None)):
        if lab is not None and len(lab) and not 0 <= lab.min() <= lab.max() < num_classes:
            raise ShardError(f"labels {lab.min()}..{lab.max()} outside the model's "
                             f"{num_classes} classes", path=path)

    torch.manual_seed(hp["seed"])
    kwargs = resume["model_kwargs"] if resume else spec.kwargs(opts, manifest, num_classes)
    model = spec.build(**kwargs).to(device)
    _set_bn_momentum(model, hp["bn_momentum"])
    optimizer = _optimizer(hp, model)
    gen = torch.Generator(device=device).manual_seed(hp["seed"])
    sampler = ShardSampler(train_set, num_replicas=1, rank=0, shuffle=True, seed=hp["seed"],
                           interleave=hp["interleave"] or max(len(train_set.shard_sizes), 1))
    loader = _loader(train_set, hp["batch_size"], args.workers, sampler)
    val_loader = (_loader(val_set, hp["batch_size"], args.workers, None)
                  if val_set is not None else None)
    start, best = 0, -1.0
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        _set_rng_state(resume["rng"], gen)
        start, best = resume["epoch"], resume["best_accuracy"]
    out = Path(args.out or (Path(args.resume).parent if args.resume else
                            Path("runs") / f"{model_name}-{manifest['dataset']}"))
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.jsonl"
    _trim_log(log_path, start)

    base = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
            "evpipe_version": __version__, "model": model_name, "model_kwargs": kwargs,
            "model_options": opts, "encoding": manifest["encoding"],
            "dataset": manifest.get("dataset"), "classes": classes,
            "num_classes": num_classes, "train": hp}
    for epoch in range(start, hp["epochs"]):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        rec = _train_epoch(model, spec, loader, optimizer, gen, hp, epoch, device, args.quiet)
        metrics = {}
        if val_loader is not None:
            metrics = evaluate(model, spec, val_loader, device, classes, num_classes,
                               hp["seed"], progress=not args.quiet)
            rec.update(val_loss=metrics["loss"], val_accuracy=metrics["accuracy"])
        rec["seconds"] = time.perf_counter() - t0
        ckpt = dict(base, epoch=epoch + 1, step=(epoch + 1) * len(loader),
                    state_dict=model.state_dict(), optimizer=optimizer.state_dict(),
                    rng=_rng_state(gen), metrics={"train": rec, "val": metrics},
                    best_accuracy=max(best, metrics.get("accuracy", -1.0)))
        # Log first: a run killed before the checkpoint lands redoes the epoch, and
        # resuming drops log lines past the checkpoint's epoch.
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if val_loader is not None and metrics["accuracy"] > best:
            best = metrics["accuracy"]
            _save_atomic(ckpt, out / "best.pt")
        _save_atomic(ckpt, out / "last.pt")
        print(_epoch_line(rec), flush=True)
    if start >= hp["epochs"]:
        print(f"nothing to do: the checkpoint has finished its {hp['epochs']} epochs")
    print(f"checkpoints: {out / 'last.pt'}" + (f", {out / 'best.pt'} (val accuracy "
                                                 f"{100 * best:.2f}%)" if best >= 0 else ""))
    return 0


def _train_epoch(model, spec: ModelSpec, loader, optimizer, gen, hp: dict, epoch: int,
                 device, quiet: bool) -> dict:
    """One pass over `loader` (lr set per step by `lr_at`); returns the log record
    {"epoch", "epochs", "lr", "train_loss", "train_accuracy"} (per item, smoothed loss)."""
    from tqdm import tqdm
    model.train()
    total = hp["epochs"] * len(loader)
    loss_sum, ok, seen, lr = 0.0, 0, 0, hp["lr"]
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{hp['epochs']}", leave=False, disable=quiet,
               file=sys.stderr)
    for i, batch in enumerate(bar):
        lr = lr_at(hp, epoch * len(loader) + i, total)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = spec.logits(model, batch, device, gen)
        if len(logits) == 0:
            continue
        target = batch.get("label", batch["record_label"]).to(device)
        loss = F.cross_entropy(logits, target, label_smoothing=hp["label_smoothing"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * len(target)
        ok += int((logits.detach().argmax(1) == target).sum())
        seen += len(target)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * ok / seen:.1f}%",
                        lr=f"{lr:.2e}")
    return {"epoch": epoch + 1, "epochs": hp["epochs"], "lr": lr,
            "train_loss": loss_sum / max(seen, 1), "train_accuracy": ok / max(seen, 1)}


def _trim_log(path: Path, epochs_done: int) -> None:
    """Keep the log lines of the epochs a (resumed) checkpoint holds."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines()
             if ln.strip() and json.loads(ln).get("epoch", 0) <= epochs_done]
    path.write_text("".join(ln + "\n" for ln in lines))


def evaluate_command(args) -> int:
    """`evpipe eval`: metrics of a checkpoint on a shard set; prints them, `--json` file."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device)
    ds = _open_set(args.shards, "evaluation")
    spec = check_pair(meta["model"], ds.manifest["encoding"])
    _check_encoding(meta["encoding"], ds.manifest, args.shards, "--shards")
    lab = _labels(args.shards)
    if len(lab) and not 0 <= lab.min() <= lab.max() < meta["num_classes"]:
        raise ShardError(f"labels {lab.min()}..{lab.max()} outside the model's "
                         f"{meta['num_classes']} classes", path=args.shards)
    metrics = evaluate(model, spec, _loader(ds, args.batch_size, args.workers, None), device,
                       meta["classes"], meta["num_classes"], meta["train"]["seed"],
                       progress=not args.quiet)
    line = (f"{args.shards}: loss {metrics['loss']:.4f}, accuracy "
            f"{100 * metrics['accuracy']:.2f}% of {metrics['samples']} samples")
    if "window_accuracy" in metrics:
        line += (f" (windows: {100 * metrics['window_accuracy']:.2f}% of "
                 f"{metrics['items']})")
    print(line)
    width = max((len(c) for c in metrics["per_class"]), default=5)
    for name, m in metrics["per_class"].items():
        print(f"  {name:<{width}}  {100 * m['accuracy']:6.2f}%  {m['samples']} samples")
    if args.json:
        report = dict(metrics, checkpoint=str(args.checkpoint), shards=str(args.shards),
                      model=meta["model"], epoch=meta["epoch"])
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0
