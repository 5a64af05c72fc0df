"""`osp yolo` (registered by osp_engine/__main__.py): a YOLO model pruned in Ultralytics' own trainer on the bundled detection set, offline.

    python -m osp_engine yolo                                  # YOLOv8n, 30 epochs at 64x64, target 0.5
    python -m osp_engine yolo --model yolo11n.yaml --task segment --set threshold=0.99

The set is written once under --data (datasets/), the model built from its yaml (no weights are
downloaded), and the run is an ordinary run folder the studio lists and draws while it trains.
Needs Ultralytics (AGPL-3.0, an optional extra): the command says so in one line when it is missing.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..method.config import Config, ConfigError, apply_overrides
from ..running.detection_set import DetectionSetSpec, write_detection_set


def add_parser(sub) -> None:
    p = sub.add_parser("yolo", help="prune a YOLO model in Ultralytics' trainer on the bundled detection set "
                                    "(needs pip install ultralytics, AGPL-3.0)")
    p.add_argument("--model", default="yolov8n.yaml", help="an Ultralytics model yaml (default yolov8n.yaml; "
                                                           "for --task segment, a -seg yaml)")
    p.add_argument("--task", choices=("detect", "segment"), default="detect")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--imgsz", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--target", type=float, default=0.5, help="fraction of FLOPs to remove (default 0.5)")
    p.add_argument("--data", default="datasets", help="where the bundled set is written (default datasets/)")
    p.add_argument("--out", default="ultralytics", help="Ultralytics' project folder (default ultralytics/)")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--device", default="cpu", help="Ultralytics' device: cpu, 0, ... (default cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any osp Config field, e.g. threshold=0.99, sl_end=12, variant=corrected")
    p.set_defaults(fn=run_yolo)


def run_yolo(args: argparse.Namespace) -> int:
    if args.task == "segment" and "-seg" not in Path(args.model).stem:
        raise ConfigError(f"--task segment trains a segmentation model: pass a -seg yaml, not {args.model}")
    cfg = apply_overrides(Config(), args.set)          # checked and typed as `run --set` does
    settings = {key: getattr(cfg, key) for key in (pair.partition("=")[0].strip() for pair in args.set)}
    os.environ.setdefault("YOLO_OFFLINE", "1")        # the bundled set and a yaml need no network
    try:
        from ultralytics import YOLO

        from .ultralytics import OneCyclePruning
    except ImportError:
        raise ConfigError("osp yolo needs Ultralytics (AGPL-3.0, an optional extra): pip install ultralytics") from None
    data = write_detection_set(args.data, DetectionSetSpec.at(args.imgsz, task=args.task))
    model = YOLO(args.model)
    pruning = OneCyclePruning(target=args.target, runs_dir=args.runs_dir, **settings).add_to(model)
    model.train(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, device=args.device,
                project=str(Path(args.out).resolve()), name=Path(args.model).stem, plots=False, workers=0)
    from ..storage.reader import RunReader

    s = RunReader(pruning.run_dir).summary()
    print(f"{s['status']}: pruned after epoch {s['t_star']} ({s['prune_reason']}), FLOPs "
          f"-{100 * (s['flops_reduction'] or 0):.2f} %, final {s['metric']} {s['final_acc']:.2f} %\n"
          f"run {pruning.run_dir}\nYOLO weights {pruning.trainer.last}")
    return 0 if s["status"] == "finished" else 1
