"""Sweeps, read from the store: final accuracy against prune epoch (a run's branches) and accuracy against
FLOPs (runs of one recipe at several targets, plus a dense baseline of the same schedule).

Pure functions of run readers and plain rows; the CLI and the studio draw what they return.
"""
from __future__ import annotations

import dataclasses
import secrets
import time

import numpy as np

from ..method.config import Config
from .reader import RunReader, list_runs


def training_cost(rows: list[dict]) -> dict:
    """What training the whole cycle of `rows` cost: seconds (the sum of epoch seconds) and epoch-FLOPs
    in dense-epoch equivalents (sum over epochs of model FLOPs / dense FLOPs: 24 dense epochs = 24.0)."""
    done = [r for r in rows if r["model_flops"] and r["dense_flops"]]
    return dict(seconds=float(sum(r["epoch_seconds"] or 0.0 for r in rows)),
                dense_epochs=float(sum(r["model_flops"] / r["dense_flops"] for r in done)))


def indicator_picks(rows: list[dict], threshold: float, eb_threshold: float) -> dict:
    """The epoch each indicator would prune at on the parent's own curves: PSI (the first smoothed PSI
    >= threshold) and Early-Bird (the first distance <= eb_threshold); None where it never fires."""
    psi = next((r["epoch"] for r in rows if r["psi_smoothed"] is not None and r["psi_smoothed"] >= threshold), None)
    eb = next((r["epoch"] for r in rows if r["eb_distance"] is not None and r["eb_distance"] <= eb_threshold), None)
    return dict(psi=psi, early_bird=eb)


def sweep_rows(parent: RunReader, branches: list[RunReader]) -> list[dict]:
    """One row per branch, by prune epoch: its status and final figures, its training cost, and the
    parent's PSI (None where undefined: before the third search), Early-Bird distance and candidate
    accuracy at that epoch."""
    rows = parent.epochs()
    by_epoch = {r["epoch"]: r for r in rows}
    searched = np.cumsum([r["psi_raw"] is not None for r in rows])     # searches up to each epoch
    defined = {r["epoch"]: n >= 3 for r, n in zip(rows, searched)}      # a PSI needs M_t and M_{t-2}
    out = []
    for b in branches:
        s, rows = b.summary(), b.epochs()
        cfg = b.info()["config"]
        k = cfg["branch_epoch"]
        at = by_epoch.get(k, {})
        out.append(dict(epoch=k, run_id=b.run_id, status=s["status"], final_acc=s["final_acc"],
                        flops_reduction=s["flops_reduction"],
                        psi=at.get("psi_smoothed") if defined.get(k) else None,
                        eb_distance=at.get("eb_distance"), cand_acc=at.get("cand_acc"),
                        dense_acc=at.get("val_acc"), distill=cfg.get("distill", 0.0), **training_cost(rows)))
    return sorted(out, key=lambda r: r["epoch"])


def new_sweep_label(cfg: Config) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.preset or cfg.model}-{secrets.token_hex(2)}"


def target_sweep_configs(cfg: Config, targets: list[float], label: str, baseline: bool = True) -> list[Config]:
    """The runs of one target sweep: `cfg` at each target, then (baseline) the same schedule dense."""
    runs = [dataclasses.replace(cfg, target=t, sweep=label) for t in targets]
    if baseline:
        runs.append(dataclasses.replace(cfg, baseline=True, sweep=label))
    return [c.validate() for c in runs]


def target_sweep(root, label: str) -> dict:
    """The finished runs of target sweep `label` under root: {"points": [(target, FLOPs reduction, final acc,
    run id)] by target, "baseline": the dense run's final accuracy or None, "dense_flops": the network's
    dense FLOPs (None before a run has an epoch)}."""
    points, baseline, dense_flops = [], None, None
    for r in list_runs(root):
        if r.problem() is not None or r.info()["config"].get("sweep") != label:
            continue
        s, cfg = r.summary(), r.info()["config"]
        dense_flops = dense_flops or s["dense_flops"]
        if s["status"] != "finished":
            continue
        if cfg.get("baseline"):
            baseline = s["final_acc"]
        else:
            points.append((cfg["target"], s["flops_reduction"], s["final_acc"], r.run_id))
    return dict(points=sorted(points), baseline=baseline, dense_flops=dense_flops)


def sweep_labels(readers: list[RunReader]) -> list[str]:
    """The target-sweep labels among `readers`, newest first."""
    labels = {r.info()["config"].get("sweep") for r in readers}
    return sorted((x for x in labels if x), reverse=True)

