"""What leaves a run from the command line: `export` (model.pt or ONNX), `log` (a tracker, after the
fact) and `report` (one self-contained HTML file). Each writes outside the run folder, or into a tracker."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ..method.config import ConfigError
from ..storage.faults import writing
from .locate import find_run


def check_out(out: Path) -> None:
    """--out must be a new or replaceable file, in an existing folder, outside every run folder."""
    if out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a folder: give a file name, e.g. {out / 'pruned.pt'}")
    if not out.parent.resolve().is_dir():
        raise ConfigError(f"--out {str(out)!r}: the folder {str(out.parent)!r} does not exist; create it first")
    for folder in [out.parent.resolve(), *out.parent.resolve().parents]:
        if (folder / "run.db").exists():
            raise ConfigError(f"--out {str(out)!r} is inside the run folder {str(folder)!r}: write it elsewhere")


def cmd_export(args) -> int:
    reader = find_run(args.run_dir, args.runs_dir)
    src = reader.dir / "model.pt"
    s = reader.summary()
    if not src.is_file() and s["epochs"] == s["total_epochs"] and (reader.dir / "checkpoint.pt").is_file():
        from ..running.run import Run                     # trained to the end, export cut short: export it again

        run = Run.resume(reader.dir)
        run.prepare()
        run.execute()
    if not src.is_file():
        raise ConfigError(f"{reader.dir} has no exported model yet: the run exports it when it finishes")
    check_out(Path(args.out))
    onnx = (args.format or ("onnx" if args.out.endswith(".onnx") else "pt")) == "onnx"
    if getattr(args, "int8", False):
        if not onnx:
            raise ConfigError("--int8 writes an ONNX model: pass --format onnx or an --out ending in .onnx")
        return _export_int8(src, args, s)
    if onnx:
        from .onnx_export import export_onnx

        try:
            with writing(Path(args.out).resolve(), 2 * src.stat().st_size):
                done = export_onnx(src, args.out)
        except ConfigError:
            raise
        except ValueError as e:                           # ONNX Runtime unlike PyTorch: nothing written
            print(f"error: {e}", file=sys.stderr)
            return 1
        diffs = ", ".join(f"{d:.1e} at batch {b}" for b, d in done["max_abs_diff"].items())
        print(f"exported {src} -> {args.out} (ONNX opset {done['opset']}, dynamic batch; ONNX Runtime's outputs "
              f"differ from PyTorch's by at most {diffs} on {done['inputs']})")
        return 0
    with writing(Path(args.out).resolve(), src.stat().st_size):
        shutil.copyfile(src, args.out)
    print(f"exported {src} -> {args.out}")
    return 0


def _export_int8(src: Path, args, s: dict) -> int:
    from .int8 import export_int8

    try:
        with writing(Path(args.out).resolve(), 2 * src.stat().st_size):
            done = export_int8(src, args.out, args.calibration_batches, args.tolerance)
    except ConfigError:                                   # a setting or a missing package: exit 2, one line
        raise
    except ValueError as e:                               # beyond the tolerance, or ONNX unlike PyTorch: nothing written
        print(f"error: {e}", file=sys.stderr)
        return 1
    ort = (s.get("speed") or {}).get("onnxruntime")
    pruning = f"; the prune alone: {ort['latency_speedup']:.2f}x the dense model's speed" if ort else ""
    print(f"exported {src} -> {args.out} (INT8, ONNX Runtime static quantization calibrated on "
          f"{done['calibration_images']} training images): accuracy {done['int8_acc']:.2f} % against FP32's "
          f"{done['fp32_acc']:.2f} % ({0.0 - done['drop']:+.2f} pp); batch 1, one thread: {done['int8_ms']:.3f} ms against "
          f"{done['fp32_ms']:.3f} ms, {done['speedup']:.2f}x{pruning}")
    return 0


def cmd_log(args) -> int:
    from ..tracking.backfill import backfill

    reader = find_run(args.run_dir, args.runs_dir)
    logged = backfill(reader, args.to, args.log_dir, say=lambda line: print(line, file=sys.stderr))
    print(f"logged {logged} epochs of {reader.run_id} to {args.to}")
    return 0


def cmd_report(args) -> int:
    reader = find_run(args.run_dir, args.runs_dir)
    out = Path(args.out)
    check_out(out)
    try:
        from osp_engine.charts.report import write_report         # Plotly and pandas: the studio extra
    except ImportError as e:
        raise ConfigError(f"the report is drawn with Plotly: pip install \"osp[studio]\" ({e})") from None
    with writing(out.resolve(), 8 << 20):
        write_report(reader.dir, out)
    print(f"wrote the report of {reader.run_id} to {out} ({out.stat().st_size / 1e6:.1f} MB, opens offline)")
    return 0
