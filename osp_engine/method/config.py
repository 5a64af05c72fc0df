"""The one configuration object of a run: a frozen, validated dataclass, plus `--set` overrides.

Every field keeps the official scripts' meaning (docs/method.md). `validate()` raises `ConfigError`
with a one-line message that names the problem and the fix; nothing touches the file system here.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from .moments import MOMENTS


VARIANTS = ("official", "corrected")     # docs/method.md, 'Official behaviour'
ATTENTION = ("refuse", "whole")          # what a model with attention layers gets (docs/models.md)
SEARCH_MODES = ("threshold", "fill")     # docs/method.md, 'Hitting the FLOPs target': the paper's, or osp's fill
COSTS = ("flops", "latency")             # what the target reduces (docs/method.md, 'Latency as the cost')
LATENCY_RUNTIMES = {"onnxruntime": ("onnx", "onnxruntime"), "torch": ("torch",)}   # latency_runtime -> packages it needs
TEACHER_PRECISIONS = ("float32", "bfloat16")
TEACHERS = ("stable", "best")            # which dense weights teach the fine-tuning (docs/method.md, 'Distillation')
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}   # log_to name -> the package it needs


class ConfigError(ValueError):
    """Bad user input: the message names the problem and the fix (the CLI exits 2 on it)."""


@dataclass(frozen=True)
class Config:
    # what to train
    model: str = "digits-resnet14"        # a registry name (`python -m osp_engine models`)
    weights: str = ""                     # optional local state_dict file for the model (never downloaded)
    dataset: str = "digits"
    data_root: str = ""                   # CIFAR / ImageFolder root; unused for digits and synthetic
    download: bool = False                # CIFAR only: fetch into data_root when missing (opt-in)
    # the one learning-rate cycle
    epochs: int = 40                      # T
    batch_size: int = 64
    lr: float = 0.1
    lr_schedule: str = "multistep"        # "multistep" (x gamma at milestones) or "cosine" (to 0)
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8, 0.9)   # fractions of T, stepped per iteration
    gamma: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # which behaviour: "official" reproduces the official code, quirks included; "corrected" fixes them
    variant: str = "official"
    # the sub-network search
    target: float = 0.5                   # fraction of dense FLOPs to remove
    l_max: float = 0.75                   # per-layer floor: at most L_max*(1-exp(-k*C)) of C may go
    l_k: float = 1.0
    monitor_start: int = 1                # first epoch whose start runs the search
    # the group-sparsity regulariser
    reg: float = 1e-4                     # initial strength
    reg_delta: float = 1e-4               # added every reg_interval epochs
    reg_interval: int = 1
    sl_start: int = 30                    # official CIFAR meaning: the shrink acts while epoch > sl_start + 1
    sl_auto: bool = False                 # start when the smoothed PSI plateaus instead (ImageNet script)
    sl_end: int = 110                     # forced prune after epoch t > sl_end
    round_to: int = 0                     # beyond the paper: every group keeps a multiple of k channels, or all
                                          # (0: off, but 8 with cost=latency; 1: off)
    search: str = "threshold"             # "threshold": the variant's search (the paper's); "fill" (beyond it): within 0.05 pp
    cost: str = "flops"                   # what target removes a fraction of: "flops" (the paper's) or "latency"
                                          # (beyond it: predicted by a table of layer times measured on the runtime)
    latency_runtime: str = "onnxruntime"  # cost=latency: where the layers are timed ("onnxruntime" on the CPU,
                                          # "torch": PyTorch eager on the run's device)
    latency_batch: int = 1                # cost=latency: the batch size the latency is for
    latency_threads: int = 1              # cost=latency on onnxruntime: its CPU threads
    attention: str = "refuse"             # a model with attention layers: "refuse" it, or keep "whole" every group
                                          # that reaches into one and prune the rest (a YOLO11's C2PSA block)
    # distillation after the prune (beyond the paper; docs/method.md, 'Distillation from the dense network')
    distill: float = 0.0                  # alpha: the soft term's weight in the fine-tuning loss (0: off)
    distill_temperature: float = 4.0      # T: both networks' logits divided by it in the soft term
    teacher: str = "stable"               # the teacher's weights: "stable", the network at the prune (the
                                          # issue's), or "best", the dense network at its best validation epoch
    teacher_device: str = ""              # where the teacher runs: "" the run's device, or "cpu" / "cuda"
    teacher_precision: str = "float32"    # the teacher's weights: "float32" or "bfloat16" (half the memory)
    # stability
    threshold: float = 0.999              # smoothed PSI at which the sub-network counts as stable
    eb_threshold: float = 0.1             # Early-Bird: all 4 Hamming distances <= this draws a ticket
    # execution
    baseline: bool = False                # train the same schedule dense: no search, no shrink, no prune
    seed: int = 0
    device: str = "auto"                  # "auto", "cpu" or "cuda"
    amp: bool = True                      # bf16 autocast on CUDA (decisions stay fp32); ignored on CPU
    channels_last: bool = True            # on CUDA only
    gpu_path: bool = False                # run CUDA's code path (bf16 autocast, channels_last) on CPU too: for tests
    synthetic_size: int = 10000           # images in the synthetic throughput set
    threads: int = 0                      # CPU threads; 0: the cores shared among this machine's live CPU runs
    num_workers: int = 4                  # ImageFolder loaders only
    speed_budget_s: float = 1.0           # seconds spent timing the exported model against the dense one (0: skip)
    cost_checks: int = 2                  # pruned copies counted by Torch-Pruning at start (0: trust the model)
    preset: str = ""                      # the preset this config came from (informational)
    # choosing the prune epoch with its consequences in view (docs/engine.md, 'Branches and sweeps')
    candidate_every: int = 1              # evaluate the candidate, physically pruned, every k-th searched epoch (0: never)
    keep_checkpoints: int = 0             # keep every k-th searched epoch's checkpoint for branches (0: none)
    parent: str = ""                      # a branch: the run it was branched from
    branch_epoch: int = -1                # a branch: the epoch whose sub-network it pruned
    sweep: str = ""                       # the target sweep this run belongs to (a label shared by its runs)
    # mirroring the run into the researcher's trackers (osp_engine/tracking, docs/engine.md 'Trackers')
    log_to: str = ""                      # "tensorboard", "mlflow", "wandb", or several joined by commas ("": none)
    log_dir: str = ""                     # TensorBoard's and W&B's folder ("": inside the run folder)
    # a lesson (docs/studio.md, 'The guided lesson')
    pause_at: str = ""                    # moments the run pauses itself at, joined by commas (method/moments.py)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def validate(self, model_registry: bool = True, dataset_registry: bool = True) -> "Config":
        """Return self if every field is usable, else raise ConfigError naming the fix.

        model_registry / dataset_registry False: the model or the data are passed in (osp_engine.interfaces.api),
        and `model` / `dataset` are only their labels."""
        from .catalog import DATASET_NAMES, MODEL_NAMES, ONE_CHANNEL_DATASETS, TIMM_PREFIX

        def fail(msg: str) -> None:
            raise ConfigError(msg)

        if model_registry and self.model.startswith(TIMM_PREFIX):
            if importlib.util.find_spec("timm") is None:
                fail(f"{self.model} is a timm model and timm is not installed: pip install timm")
        elif model_registry and self.model not in MODEL_NAMES:
            fail(f"unknown model {self.model!r}: `python -m osp_engine models` lists the {len(MODEL_NAMES)} known")
        if self.weights and not Path(self.weights).is_file():
            fail(f"weights file {self.weights!r} does not exist: give a local state_dict file (never downloaded)")
        if self.cost_checks < 0:
            fail(f"cost_checks must be >= 0, got {self.cost_checks}")
        if dataset_registry and self.dataset not in DATASET_NAMES:
            fail(f"unknown dataset {self.dataset!r}: choose one of {', '.join(sorted(DATASET_NAMES))}")
        if model_registry and dataset_registry and self.model.startswith("tv-") and self.dataset in ONE_CHANNEL_DATASETS:
            fail(f"{self.model} takes 3-channel images and {self.dataset} has one channel: "
                 f"use an ImageFolder dataset (dataset=folder, data_root=DIR) or a CIFAR one")
        if self.attention not in ATTENTION:
            fail(f"unknown attention {self.attention!r}: use refuse (a model with attention is refused) or whole "
                 f"(every group reaching into an attention layer is kept whole)")
        if self.variant not in VARIANTS:
            fail(f"unknown variant {self.variant!r}: use official (the official code, exactly) or corrected")
        if self.epochs <= 0:
            fail(f"epochs must be a positive number, got {self.epochs}: set epochs=N with N >= 1")
        if self.batch_size <= 0:
            fail(f"batch_size must be positive, got {self.batch_size}: set batch_size=N with N >= 1")
        if not 0.0 < self.target <= 0.95:
            fail(f"target {self.target} is outside (0, 0.95]: it is the fraction of FLOPs to remove, e.g. target=0.5")
        for name in ("threshold", "eb_threshold", "l_max"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                fail(f"{name} {v} is outside (0, 1]: set {name}= a value in (0, 1]")
        for name in ("lr", "gamma", "reg", "reg_delta", "momentum", "weight_decay", "l_k", "target", "threshold"):
            if not math.isfinite(getattr(self, name)):
                fail(f"{name} is {getattr(self, name)}: give a finite number, e.g. --set {name}=0.1")
        if self.lr <= 0:
            fail(f"lr must be positive, got {self.lr}: set lr=0.1, say")
        if self.gamma <= 0:
            fail(f"gamma must be positive, got {self.gamma}: the LR is multiplied by it at each milestone")
        if not 0.0 <= self.momentum < 1.0:
            fail(f"momentum {self.momentum} is outside [0, 1): set momentum=0.9, say")
        if self.nesterov and self.momentum == 0:
            fail("nesterov needs a momentum above 0: set momentum=0.9 or nesterov=false")
        if self.weight_decay < 0:
            fail(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.l_k <= 0:
            fail(f"l_k must be positive, got {self.l_k}: the floor limit(C) = l_max * (1 - exp(-l_k * C))")
        if not all(math.isfinite(m) and 0.0 < m < 1.0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            fail(f"milestones {self.milestones} must be increasing fractions of the epochs in (0, 1), e.g. 0.5,0.75")
        if not 0 <= self.seed < 2 ** 32:
            fail(f"seed {self.seed} is outside [0, 2^32): set seed= a smaller non-negative integer")
        if self.preset and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,60}", self.preset) or ".." in self.preset:
            fail(f"preset {self.preset!r} is not a plain name: it names the run folder, use letters, digits, . _ -")
        if self.lr_schedule not in ("multistep", "cosine"):
            fail(f"lr_schedule {self.lr_schedule!r} is unknown: use multistep or cosine")
        if self.reg < 0 or self.reg_delta < 0 or self.reg_interval <= 0:
            fail("reg and reg_delta must be >= 0 and reg_interval >= 1")
        if self.monitor_start < 0 or self.sl_start < 0:
            fail("monitor_start and sl_start must be >= 0")
        if self.sl_end < self.sl_start:
            fail(f"sl_end ({self.sl_end}) is before sl_start ({self.sl_start}): set sl_end >= sl_start")
        if self.sl_end + 2 >= self.epochs:       # the forced prune ends epoch sl_end + 1; one epoch must follow
            fail(f"sl_end ({self.sl_end}) leaves no epoch to fine-tune in {self.epochs}: "
                 f"set sl_end <= {self.epochs - 3} or raise epochs")
        if self.monitor_start > self.sl_end:
            fail(f"monitor_start ({self.monitor_start}) is after sl_end ({self.sl_end}): lower it")
        if self.device not in ("auto", "cpu", "cuda"):
            fail(f"device {self.device!r} is unknown: use auto, cpu or cuda")
        if self.threads < 0:
            fail(f"threads must be >= 0 (0: share the cores among the live CPU runs), got {self.threads}")
        if self.candidate_every < 0 or self.keep_checkpoints < 0:
            fail("candidate_every and keep_checkpoints must be >= 0 (0: never; k: every k-th searched epoch)")
        if self.sweep and not re.fullmatch(r"[A-Za-z0-9._-]{1,80}", self.sweep):
            fail(f"sweep {self.sweep!r} is not a plain label: use letters, digits, . _ -")
        if not (math.isfinite(self.speed_budget_s) and self.speed_budget_s >= 0):
            fail(f"speed_budget_s must be >= 0 seconds (0: skip the speed measurement), got {self.speed_budget_s}")
        if self.synthetic_size <= 0:
            fail("synthetic_size must be positive")
        for name in self.trackers:
            if name not in TRACKERS:
                fail(f"log_to: unknown tracker {name!r}: use {', '.join(TRACKERS)} (several joined by commas)")
            if importlib.util.find_spec(TRACKERS[name]) is None:
                fail(f"log_to={name} needs the {TRACKERS[name]} package, which is not installed: "
                     f"pip install {TRACKERS[name]}")
        for name in self.pauses:
            if name not in MOMENTS:
                fail(f"pause_at: unknown moment {name!r}: use {', '.join(MOMENTS)} (several joined by commas)")
        if self.search not in SEARCH_MODES:
            fail(f"unknown search {self.search!r}: use threshold (the paper's, as the variant does it) or fill "
                 f"(skips a channel that would overshoot the target and fills the gap with smaller ones)")
        if self.cost not in COSTS:
            fail(f"unknown cost {self.cost!r}: use flops (the target removes FLOPs, the paper's) or latency "
                 f"(the target removes predicted latency on latency_runtime)")
        if self.latency_runtime not in LATENCY_RUNTIMES:
            fail(f"unknown latency_runtime {self.latency_runtime!r}: use {' or '.join(LATENCY_RUNTIMES)}")
        needs = LATENCY_RUNTIMES[self.latency_runtime] if self.cost == "latency" else ()
        if any(importlib.util.find_spec(p) is None for p in needs):
            fail(f"cost=latency on {self.latency_runtime} needs {' and '.join(needs)}, not installed here: "
                 f"pip install {' '.join(needs)}")
        if self.latency_batch < 1 or self.latency_threads < 1:
            fail(f"latency_batch and latency_threads must be >= 1, got {self.latency_batch} and {self.latency_threads}")
        if not (math.isfinite(self.distill) and 0.0 <= self.distill < 1.0):
            fail(f"distill {self.distill} is outside [0, 1): the soft term's weight, e.g. distill=0.5 (0: off)")
        if not (math.isfinite(self.distill_temperature) and self.distill_temperature > 0):
            fail(f"distill_temperature must be positive, got {self.distill_temperature}: e.g. 4")
        if self.teacher not in TEACHERS:
            fail(f"teacher {self.teacher!r} is unknown: use stable (the network at the prune) or best (the dense "
                 f"network at its best validation epoch)")
        if self.teacher_device not in ("", "cpu", "cuda"):
            fail(f"teacher_device {self.teacher_device!r} is unknown: leave it empty (the run's device), cpu or cuda")
        if self.teacher_precision not in TEACHER_PRECISIONS:
            fail(f"teacher_precision {self.teacher_precision!r} is unknown: use {' or '.join(TEACHER_PRECISIONS)}")
        if self.round_to < 0:
            fail(f"round_to must be >= 0 (0: off; k: every group keeps a multiple of k channels), got {self.round_to}")
        return self

    @property
    def kept_multiple(self) -> int:
        """The multiple of channels every group keeps (round_to): round_to when set; else 8 with cost=latency,
        whose table is timed at such widths (a depthwise convolution at 575 channels runs 25x slower in
        ONNX Runtime than at 576), and 0 (off) with cost=flops."""
        return self.round_to or (8 if self.cost == "latency" else 0)

    @property
    def trackers(self) -> list[str]:
        """The trackers of `log_to`, in order, each once."""
        return list(dict.fromkeys(n.strip() for n in self.log_to.split(",") if n.strip()))

    @property
    def pauses(self) -> list[str]:
        """The moments of `pause_at`, in order, each once."""
        return list(dict.fromkeys(n.strip() for n in self.pause_at.split(",") if n.strip()))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "Config":
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(Config)}
        raw = {k: v for k, v in raw.items() if k in known}
        if "milestones" in raw:
            raw["milestones"] = tuple(raw["milestones"])
        return Config(**raw)


def _parse_value(field_type: Any, text: str, key: str) -> Any:
    """Parse one `--set` value by the field's declared type."""
    t = str(field_type)
    try:
        if t in ("bool", "<class 'bool'>"):
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if t in ("int", "<class 'int'>"):
            return int(text)
        if t in ("float", "<class 'float'>"):
            return float(text)
        if t.startswith("tuple"):
            return tuple(float(x) for x in text.split(",") if x.strip())
        if t.startswith("dict"):
            raise ValueError(text)
        return text
    except ValueError:
        raise ConfigError(f"--set {key}={text!r}: {text!r} is not a valid {t} for {key}") from None


def apply_overrides(cfg: Config, pairs: list[str]) -> Config:
    """Apply `key=value` strings to a config; ConfigError for a malformed pair or unknown key."""
    fields = {f.name: f for f in dataclasses.fields(Config) if f.name != "extra"}
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {pair!r} is malformed: write --set key=value, e.g. --set epochs=20")
        if key not in fields:
            raise ConfigError(f"--set {key}: unknown setting; known: {', '.join(sorted(fields))}")
        changes[key] = _parse_value(fields[key].type, value, key)
    if any(k in changes and changes[k] != getattr(cfg, k) for k in ("model", "dataset")):
        changes.setdefault("preset", "")          # no longer the preset's network: named after the model
    return dataclasses.replace(cfg, **changes)
