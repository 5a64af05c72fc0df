"""Command line: `python -m osp_engine presets | models | run | resume | branch | sweep | sweep-targets |
list | show | export | log | report | studio`.

Bad input gets one line on stderr naming the problem and the fix, and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys

from ..method.config import ConfigError, apply_overrides
from ..storage.faults import DiskFull
from .presets import DESCRIPTIONS, PRESETS, get_preset
from ..running.branch import epoch_label, parse_epoch           # no torch: the CLI starts at once
from ..running.detection_set import DetectionSetSpec
from ..running.origin import Branch
from ..storage.metric import summary_metric
from ..storage.reader import RunReader, split_runs
from .locate import find_run, runs_folder
from .studio import cmd_studio
from .takeaway import cmd_export, cmd_log, cmd_report


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every other bad input
        raise ConfigError(f"{message} (see `python -m osp_engine --help`)")


def _cmd_presets(args) -> int:
    for name in PRESETS:
        print(f"{name:<22} {DESCRIPTIONS.get(name, '')}")
    return 0


def _cmd_models(args) -> int:
    from ..models import MODELS

    notes = {"cifar": "official CIFAR definition, 32x32", "digits": "the demo's network, 8x8 one-channel digits",
             "imagenet": "torchvision, weights=None (input size from the dataset)"}
    for name, spec in MODELS.items():
        print(f"{name:<32} {spec.family:<9} {notes[spec.family]}")
    try:
        from ..models.timm_zoo import timm_classifiers
        zoo = timm_classifiers()
    except ConfigError:
        zoo = []
        print("timm models: timm is not installed (pip install timm adds its convolutional classifiers)")
    for name, module in zoo:
        print(f"{name:<32} {'timm':<9} timm ({module}), pretrained=False (input size from the dataset)")
    print(f"{len(MODELS) + len(zoo)} models; a model the engine cannot prune exactly is refused when a run starts, "
          f"and groups it cannot prune are kept whole (docs/models.md gives the results model by model)")
    return 0


def _cmd_run(args) -> int:
    cfg = apply_overrides(get_preset(args.preset), args.set or []).validate()   # before torch loads: a bad
    from ..running.distributed import join_world                                       # setting is answered at once
    from ..running.run import Run, new_run_id

    world = join_world(cfg.device)                    # under torchrun: this rank; rank 0 names the run
    run = Run(cfg, args.runs_dir, run_id=world.broadcast(new_run_id(cfg)), world=world)
    run.prepare(log=(lambda line: print(line, file=sys.stderr, flush=True)) if world.leader else None)
    return _execute(run)


def _cmd_resume(args) -> int:
    from ..running.distributed import join_world
    from ..running.run import Run

    path = find_run(args.run_dir, args.runs_dir, check=False).dir
    world = join_world(RunReader(path).info()["config"].get("device", "auto"))
    run = Run.resume(path, world)
    world.barrier()                                   # every rank has checked the run before rank 0 reopens it
    run.prepare()
    return _execute(run)


def _cmd_branch(args) -> int:
    from ..running.run import Run

    run = Run.branch(find_run(args.run_dir, args.runs_dir).dir, args.epoch, changes=_changes(args.set or []))
    run.prepare()
    return _execute(run)


def _changes(pairs: list[str]) -> dict:
    """{setting: value} of `--set key=value` pairs, each value parsed by its Config field's type."""
    from ..method.config import Config

    parsed = apply_overrides(Config(), pairs)
    return {key: getattr(parsed, key) for key in (p.partition("=")[0].strip() for p in pairs)}


def _epoch_list(text: str, what: str) -> list:
    try:
        return [parse_epoch(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text!r}: give epochs separated by commas (init: the untrained network), "
                          f"e.g. init,4,8,12") from None


def _cmd_sweep(args) -> int:
    """Branches of one run at several prune epochs, one after another, then the sweep's table."""
    from ..running.branch import branch_epochs, branches_of, sweep_epochs
    from ..running.run import Run
    from ..storage.sweep import indicator_picks, sweep_rows

    parent = find_run(args.run_dir, args.runs_dir)
    info = parent.info()
    if info["config"].get("parent"):
        raise ConfigError(f"{parent.run_id} is itself a branch: sweep its parent {info['config']['parent']}")
    cfg = info["config"]
    epochs = sweep_epochs(branch_epochs(parent.dir), args.every, _epoch_list(args.epochs, "--epochs") if args.epochs else None,
                          first=info["t_sl_start"] if info["t_sl_start"] is not None else cfg["monitor_start"],
                          last=cfg["sl_end"])
    done = {b.info()["config"]["branch_epoch"] for b in branches_of(parent.dir.parent, parent.run_id)
            if b.info()["status"] == "finished"}
    todo = [e for e in epochs if e not in done]
    print(f"sweep of {parent.run_id}: prune epochs {epochs}" + (f" ({len(epochs) - len(todo)} already branched)"
                                                                  if len(todo) < len(epochs) else ""), flush=True)
    code = _in_turn("branch", [(f"prune at epoch {e}", lambda e=e: Run.branch(parent.dir, e)) for e in todo])
    if code:
        return code
    rows = [r for r in sweep_rows(parent, branches_of(parent.dir.parent, parent.run_id)) if r["epoch"] in epochs]
    picks = indicator_picks(parent.epochs(), info["threshold"], cfg["eb_threshold"])
    print(f"{'epoch':>5} {'final acc':>9} {'FLOPs':>7} {'seconds':>8} {'dense-epochs':>12} {'PSI':>7} "
          f"{'EB dist':>7} {'cand acc':>8}  run")
    for r in rows:
        def f(v, fmt):
            return format("-", ">" + fmt.split(".")[0]) if v is None else format(v, fmt)
        print(f"{r['epoch']:>5} {f(r['final_acc'], '9.2f')} {f(r['flops_reduction'] and -100 * r['flops_reduction'], '6.1f')}% "
              f"{r['seconds']:8.1f} {r['dense_epochs']:12.2f} {f(r['psi'], '7.4f')} {f(r['eb_distance'], '7.3f')} "
              f"{f(r['cand_acc'], '8.2f')}  {r['run_id']}")
    print(f"the indicators' picks on {parent.run_id}: PSI epoch {picks['psi']}, Early-Bird epoch {picks['early_bird']}; "
          f"the run itself pruned at epoch {info['t_star']} ({info['prune_reason']})")
    return 0


def _in_turn(noun: str, jobs: list) -> int:
    """Run [(label, make a Run)] one after another with progress lines; the first non-zero exit code
    (a failure or a cancel) stops the rest and is returned."""
    for i, (label, make) in enumerate(jobs, 1):
        print(f"{noun} {i} of {len(jobs)}: {label}", flush=True)
        run = make()
        run.prepare()
        code = _execute(run)
        if code:
            return code
    return 0


def _cmd_sweep_targets(args) -> int:
    """The same recipe at several FLOPs targets plus a dense baseline, one after another."""
    from ..running.run import Run
    from ..storage.sweep import new_sweep_label, target_sweep, target_sweep_configs

    try:
        targets = [float(x) for x in args.targets.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--targets {args.targets!r}: give fractions separated by commas, e.g. 0.3,0.5,0.7") from None
    if not targets:
        raise ConfigError("--targets: give FLOPs fractions to remove, e.g. --targets 0.3,0.5,0.7")
    base = apply_overrides(get_preset(args.preset), args.set or []).validate()
    label = new_sweep_label(base)
    configs = target_sweep_configs(base, targets, label, baseline=not args.no_baseline)
    print(f"target sweep {label}: {len(configs)} runs", flush=True)
    code = _in_turn("run", [("dense baseline" if c.baseline else f"target {c.target}",
                             lambda c=c: Run(c, args.runs_dir)) for c in configs])
    if code:
        return code
    result = target_sweep(runs_folder(args.runs_dir), label)
    for target, reduction, acc, run_id in result["points"]:
        print(f"target {target:.2f}: FLOPs -{100 * reduction:.1f} %, final accuracy {acc:.2f} %  {run_id}")
    if result["baseline"] is not None:
        print(f"dense baseline (same schedule): final accuracy {result['baseline']:.2f} %")
    return 0


def _execute(run) -> int:
    """Run to the end with SIGINT/SIGTERM as cancel (a second one stops at once); print the outcome
    (under torchrun, rank 0 prints)."""
    def stop(signum, frame):
        if run.commands.cancelled:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        run.commands.cancel(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    leader = run.world.leader
    origin = (f" (branch of {run.cfg.parent}: prunes at epoch {epoch_label(run.cfg.branch_epoch)})"
              if isinstance(run.origin, Branch)
              else f" (resumed after epoch {run.origin.checkpoint['epoch']})" if run.origin.checkpoint else "")
    if leader:
        world = f" on {run.world.size} processes" if run.world.size > 1 else ""
        print(f"run {run.run_id} -> {run.dir}{origin}{world}", flush=True)
    status = run.execute(log=(lambda line: print(line, flush=True)) if leader else None)
    if not leader:
        return {"finished": 0, "cancelled": 3}.get(status, 1)
    summary = RunReader(run.dir).summary()
    if status in ("failed", "cancelled"):
        print(f"run {status}: {run.error}", file=sys.stderr)
        return 1 if status == "failed" else 3
    pruned = f"t* = {epoch_label(summary['t_star'])} ({summary['prune_reason']})" if summary["t_star"] is not None \
        else "not pruned"
    print(f"{status}: {pruned}, {_reduced(summary, run.cfg)}, final accuracy {summary['final_acc']:.2f} %, "
          f"{summary['wall_seconds']:.1f} s, variant {run.cfg.variant}")
    if summary["target_miss"]:                          # further than 0.5 pp from the target: why, and the fix
        print(summary["target_miss"]["message"])
    if summary["latency"]:                              # cost=latency: the table's prediction against the measurement
        print(summary["latency"]["message"])
    return 0


def _reduced(summary: dict, cfg) -> str:
    """'FLOPs -50.01 % (target 50.0 %)'; with cost=latency the predicted latency's reduction before the FLOPs'."""
    flops, target, lat = f"FLOPs -{100 * (summary['flops_reduction'] or 0):.2f} %", f"(target {100 * cfg.target:.1f} %)", \
        summary["latency"]
    if cfg.cost != "latency":
        return f"{flops} {target}"
    if not lat:
        return f"{flops}, latency not measured {target}"
    return f"predicted latency -{100 * (1 - lat['predicted_ms'] / lat['dense_predicted_ms']):.2f} % {target}, {flops}"


def _cmd_list(args) -> int:
    root = runs_folder(args.runs_dir)
    runs, unreadable = split_runs(root)
    if not runs and not unreadable:
        print(f"no runs under {root}")
    for run_id, problem in unreadable:
        print(f"{run_id:<40} unreadable: {problem}")
    for r in runs:
        s = r.summary()
        fr, metric = s["flops_reduction"], summary_metric(s)
        print(f"{r.run_id:<40} {s['status']:<10} {s['variant']:<10} {s['phase'] or '':<9} "
              f"epoch {s['epochs']}/{s['total_epochs']} "
              f"{metric.name} {metric.format(s['final_acc'])}  FLOPs -{100 * (fr or 0):.1f}%")
    return 0


def _cmd_show(args) -> int:
    s = find_run(args.run_dir, args.runs_dir).summary()
    if args.json:
        print(json.dumps(s, indent=1))
    else:
        for k, v in s.items():
            if k != "psi":
                print(f"{k:<24} {v}")
    return 0


def _cmd_detection_set(args) -> int:
    from ..running.detection_set import write_detection_set

    print(write_detection_set(args.out, DetectionSetSpec.at(args.imgsz, train=args.train, val=args.val,
                                                            task=args.task)))
    return 0


def on_run(sub, name: str, help: str, fn) -> argparse.ArgumentParser:
    """A subcommand that acts on one run: its folder or id, and the runs folder an id is looked up in."""
    parser = sub.add_parser(name, help=help)
    parser.add_argument("run_dir", help="a run folder, or a run id under the runs folder")
    parser.add_argument("--runs-dir", default=None)
    parser.set_defaults(fn=fn)
    return parser


def build_parser(commands: tuple = ()) -> argparse.ArgumentParser:
    """The command line; commands: add_parser(sub) functions of commands from later layers (the
    integrations' `osp yolo`), which the package's door, osp_engine/__main__.py, passes in."""
    p = _Parser(prog="python -m osp_engine", description="One-cycle structured pruning (OCSPruner) engine")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("presets", help="list the named configurations").set_defaults(fn=_cmd_presets)
    sub.add_parser("models", help="list the models a run can name").set_defaults(fn=_cmd_models)
    r = sub.add_parser("run", help="train, search, prune and fine-tune in one cycle")
    r.add_argument("--preset", default="demo")
    r.add_argument("--runs-dir", default=None, help="where run folders go (default runs/ or $OSP_RUNS_DIR)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config field")
    r.set_defaults(fn=_cmd_run)
    on_run(sub, "resume", "continue a stopped, cancelled or failed run after its last epoch", _cmd_resume)
    br = on_run(sub, "branch", "what if the run had pruned at epoch K: a new run from its checkpoint", _cmd_branch)
    br.add_argument("--epoch", type=parse_epoch, required=True,
                    help="a searched epoch whose checkpoint the run kept, or init (prune the untrained network)")
    br.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="the branch's fine-tuning: distill, distill_temperature, teacher, teacher_device, "
                         "teacher_precision (e.g. --set distill=0.5)")
    sw = on_run(sub, "sweep", "branches at several prune epochs, one after another, and their table", _cmd_sweep)
    sw.add_argument("--epochs", default=None, help="prune epochs, e.g. init,4,6,8 (default: every kept one)")
    sw.add_argument("--every", type=int, default=None, help="every N-th kept epoch from t_sl_start to sl_end")
    st = sub.add_parser("sweep-targets", help="one recipe at several FLOPs targets plus a dense baseline")
    st.add_argument("--preset", default="demo")
    st.add_argument("--targets", required=True, help="FLOPs fractions to remove, e.g. 0.3,0.5,0.7")
    st.add_argument("--no-baseline", action="store_true", help="skip the dense run of the same schedule")
    st.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config field")
    st.add_argument("--runs-dir", default=None)
    st.set_defaults(fn=_cmd_sweep_targets)
    ls = sub.add_parser("list", help="list runs")
    ls.add_argument("--runs-dir", default=None)
    ls.set_defaults(fn=_cmd_list)
    on_run(sub, "show", "a run's figures", _cmd_show).add_argument("--json", action="store_true")
    ex = on_run(sub, "export", "copy a run's pruned model, or write it as ONNX", cmd_export)
    ex.add_argument("--out", required=True)
    ex.add_argument("--format", choices=["pt", "onnx"], default=None,
                    help="pt: model.pt as is; onnx: ONNX with a dynamic batch, checked on ONNX Runtime "
                         "(default: from --out's suffix)")
    ex.add_argument("--int8", action="store_true",
                    help="ONNX only: quantize to INT8 (ONNX Runtime static quantization, calibrated on the run's "
                         "training images); written only if validation accuracy drops by at most --tolerance")
    ex.add_argument("--calibration-batches", type=int, default=8, help="training batches to calibrate on (default 8)")
    ex.add_argument("--tolerance", type=float, default=1.0,
                    help="largest accuracy drop of INT8 below FP32 allowed, in percentage points (default 1.0)")
    lg = on_run(sub, "log", "log a run that has ended to TensorBoard, MLflow or W&B", cmd_log)
    lg.add_argument("--to", required=True, help="tensorboard, mlflow or wandb")
    lg.add_argument("--log-dir", default=None, help="TensorBoard's and W&B's folder (default: the run's log_dir, "
                                                    "else inside the run folder)")
    rp = on_run(sub, "report", "one self-contained HTML file of a run: its card and interactive charts", cmd_report)
    rp.add_argument("--out", required=True, help="the HTML file to write, e.g. run.html")
    ds = sub.add_parser("detection-set", help="write the bundled digits as a small detection set in "
                                              "Ultralytics' layout (offline) and print its data.yaml")
    ds.add_argument("--out", default="datasets", help="the folder it goes in (default: datasets/)")
    spec = DetectionSetSpec()
    ds.add_argument("--imgsz", type=int, default=spec.imgsz, help=f"canvas side in pixels (default {spec.imgsz})")
    ds.add_argument("--train", type=int, default=spec.train, help=f"training canvases (default {spec.train})")
    ds.add_argument("--val", type=int, default=spec.val, help=f"validation canvases (default {spec.val})")
    ds.add_argument("--task", choices=("detect", "segment"), default=spec.task,
                    help="detect: boxes; segment: each digit's outline too, for -seg models (default detect)")
    ds.set_defaults(fn=_cmd_detection_set)
    for add in commands:
        add(sub)
    so = sub.add_parser("studio", help='open the studio in the browser (needs pip install "osp[studio]")')
    so.add_argument("--port", type=int, default=None, help="default: Streamlit's, 8501")
    so.add_argument("--address", default=None, help="default localhost; any other address shares the studio "
                                                    "read-only with a room (the presenter token unlocks it)")
    so.add_argument("--runs-dir", default=None, help="the runs folder (default runs/ or $OSP_RUNS_DIR)")
    so.set_defaults(fn=cmd_studio)
    return p


def main(argv: list[str] | None = None, commands: tuple = ()) -> int:
    try:
        args = build_parser(commands).parse_args(argv)
        return args.fn(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DiskFull as e:                          # `export --out` on a full disk (a run records its own)
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:                        # `... | head` closed the pipe: not an error
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def console(commands: tuple = ()) -> None:
    """The `osp` command (pyproject.toml) and `python -m osp_engine`: main(), then exit without the
    interpreter's teardown of torch (about 2 s of module garbage collection on 2 cores); every file is
    closed and every save atomic by then."""
    import os

    code = main(None, commands)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
