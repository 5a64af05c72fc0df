"""YOLO on the bundled detection set: the plain Ultralytics trainer against the same trainer with osp's
cycle (osp_engine.integrations.ultralytics), side by side in one process, same seed and data.

Prints per model: dense and pruned mAP50-95 (the final validation of best.pt) and FLOPs (Torch-Pruning's
counter at imgsz), the seconds per epoch of each trainer before the prune and their ratio (what the
cycle adds), and the exported ONNX models' latency at batch 1 on ONNX Runtime (CPU) with the speed-up.

    python benchmarks/bench_yolo.py --models yolov8n.yaml yolo11n.yaml --epochs 30
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="osp-yolo-settings-"))
os.environ["YOLO_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch_pruning as tp  # noqa: E402
import ultralytics  # noqa: E402
from ultralytics import YOLO  # noqa: E402

from osp_engine.integrations.ultralytics import OneCyclePruning  # noqa: E402
from osp_engine.running.speed import cpu_session, session_latencies  # noqa: E402
from osp_engine.running.detection_set import DetectionSetSpec, write_detection_set  # noqa: E402
from osp_engine.storage.reader import RunReader  # noqa: E402

ultralytics.settings.update({"mlflow": False, "tensorboard": False, "wandb": False, "sync": False})


class TimedPruning(OneCyclePruning):
    """OneCyclePruning that adds up the seconds spent in its own steps, per epoch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spent: dict[int, float] = {}

    def _timed(self, epoch: int, fn, *args) -> None:
        t0 = time.perf_counter()
        fn(*args)
        self.spent[epoch] = self.spent.get(epoch, 0.0) + time.perf_counter() - t0

    def on_train_epoch_start(self, trainer) -> None:
        self._timed(trainer.epoch, super().on_train_epoch_start, trainer)

    def _after_step(self, optimizer, args, kwargs) -> None:
        self._timed(self.trainer.epoch, super()._after_step, optimizer, args, kwargs)

    def on_fit_epoch_end(self, trainer) -> None:
        self._timed(trainer.epoch, super().on_fit_epoch_end, trainer)


def train(yaml: str, data: Path, root: Path, epochs: int, imgsz: int, cycle: bool, target: float, settings: dict):
    model = YOLO(yaml)
    pruning = TimedPruning(target=target, runs_dir=root / "runs", **settings).add_to(model) if cycle else None
    seconds: list[float] = []
    model.add_callback("on_train_epoch_start", lambda t: setattr(t, "_osp_t0", time.perf_counter()))
    model.add_callback("on_fit_epoch_end", lambda t: seconds.append(time.perf_counter() - t._osp_t0))
    model.train(data=str(data), epochs=epochs, imgsz=imgsz, batch=32, workers=0, plots=False, verbose=False,
                device="cpu", amp=False, seed=0, project=str(root), name=("osp-" if cycle else "plain-") + yaml,
                exist_ok=True)
    trainer = model.trainer
    return dict(trainer=trainer, seconds=seconds, map=float(trainer.metrics["metrics/mAP50-95(B)"]),
                run=pruning and RunReader(pruning.run_dir), spent=pruning and pruning.spent)


def flops(weights: str, imgsz: int) -> float:
    count, _ = tp.utils.count_ops_and_params(YOLO(weights).model.float().eval(), torch.zeros(1, 3, imgsz, imgsz))
    return count / 1e6


def onnx_latencies(weights: list[str], imgsz: int) -> list[float]:
    """Median seconds of one batch-1 inference of each exported model on ONNX Runtime (CPU, 1 thread),
    the models timed in turns for 200 rounds (running/speed.py), so that a change of machine load falls
    on all alike."""
    sessions = [cpu_session(YOLO(w).export(format="onnx", imgsz=imgsz, simplify=False, dynamic=False, device="cpu"))
                for w in weights]
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    return session_latencies(sessions, {"images": x}, budget_s=0.0, min_rounds=200)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["yolov8n.yaml", "yolo11n.yaml"])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="osp Config fields")
    ap.add_argument("--onnx-of", nargs=2, metavar=("DENSE_PT", "PRUNED_PT"),
                    help="only time these two YOLO weights exported to ONNX, side by side")
    args = ap.parse_args()
    if args.onnx_of:
        d_lat, p_lat = onnx_latencies(args.onnx_of, args.imgsz)
        print(f"ONNX Runtime batch 1 (1 thread): dense {1e3 * d_lat:.3f} ms, pruned {1e3 * p_lat:.3f} ms "
              f"({d_lat / p_lat:.2f}x)")
        return
    settings = {k: float(v) if v.replace(".", "").replace("e-", "").isdigit() else v
                for k, _, v in (p.partition("=") for p in args.set)}
    root = Path(tempfile.mkdtemp(prefix="osp-bench-yolo-"))
    data = write_detection_set(root / "set", DetectionSetSpec(imgsz=args.imgsz))
    print(f"bundled set (600 train, 150 val canvases, imgsz {args.imgsz}); {args.epochs} epochs; "
          f"torch threads {torch.get_num_threads()}; osp settings {settings or 'defaults'}; {root}")
    for yaml in args.models:
        osp = train(yaml, data, root, args.epochs, args.imgsz, True, args.target, settings)
        plain = train(yaml, data, root, args.epochs, args.imgsz, False, args.target, settings)
        t_star = osp["run"].info()["t_star"]
        before = slice(1, t_star + 1)                      # epoch 0 warms caches: left out of both
        dense_s, cycle_s = np.mean(plain["seconds"][before]), np.mean(osp["seconds"][before])
        own = np.mean([osp["spent"].get(e, 0.0) for e in range(1, t_star + 1)])   # in osp's own steps
        d_flops, p_flops = flops(str(plain["trainer"].best), args.imgsz), flops(str(osp["trainer"].best), args.imgsz)
        d_lat, p_lat = onnx_latencies([str(plain["trainer"].best), str(osp["trainer"].best)], args.imgsz)
        print(f"{yaml}: t* = {t_star} ({osp['run'].info()['prune_reason']})\n"
              f"  mAP50-95 dense {100 * plain['map']:.2f}, pruned {100 * osp['map']:.2f} (best.pt, final validation)\n"
              f"  FLOPs dense {d_flops:.2f} M, pruned {p_flops:.2f} M: -{100 * (1 - p_flops / d_flops):.2f} %\n"
              f"  seconds per epoch before the prune (epochs 1..{t_star}): plain {dense_s:.2f}, with the cycle "
              f"{cycle_s:.2f} ({cycle_s / dense_s:.3f}x), of which in osp's steps {own:.3f} ({100 * own / cycle_s:.1f} %); "
              f"after it {np.mean(osp['seconds'][t_star + 1:]):.2f} against plain {np.mean(plain['seconds'][t_star + 1:]):.2f}\n"
              f"  ONNX Runtime batch 1 (1 thread): dense {1e3 * d_lat:.3f} ms, pruned {1e3 * p_lat:.3f} ms "
              f"({d_lat / p_lat:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
