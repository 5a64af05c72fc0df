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
    if (args.format or ("onnx" if args.out.endswith(".onnx") else "pt")) == "onnx":
        from .onnx_export import export_onnx

        with writing(Path(args.out).resolve(), 2 * src.stat().st_size):
            done = export_onnx(src, args.out)
        diffs = ", ".join(f"{d:.1e} at batch {b}" for b, d in done["max_abs_diff"].items())
        print(f"exported {src} -> {args.out} (ONNX opset {done['opset']}, dynamic batch; ONNX Runtime's outputs "
              f"differ from PyTorch's by at most {diffs} on {done['inputs']})")
        return 0
    with writing(Path(args.out).resolve(), src.stat().st_size):
        shutil.copyfile(src, args.out)
    print(f"exported {src} -> {args.out}")
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
