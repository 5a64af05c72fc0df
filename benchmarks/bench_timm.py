"""Every timm convolutional classifier through osp, and through Torch-Pruning's plain MagnitudePruner.

For each model (built by name, pretrained=False, 10 classes, 1x3xSxS inputs, one thread):
- osp: tests/anycnn.check_end_to_end, the check the tests run (prepared or refused in one line; if
  prepared, FLOPs and params from counts equal the counter on a randomly pruned copy, a 0.5 selection
  within 0.5 pp by the counter, the pruned model reloads by name with equal outputs). Verdict: exact,
  exact with k groups kept whole, refused (the one line), or failed (a defect: the assertion).
- Torch-Pruning alone: MagnitudePruner (L2), pruning ratio 0.5, the classifier ignored, one step, then a
  forward pass: "prunes" if both run, else the error. This is the criterion of Torch-Pruning's own timm
  example (the pruned model runs), not a check of exactness.

    python benchmarks/bench_timm.py [--models a,b,...] [--size 64] [--jobs 2] [--limit-s 60] [--out scan.tsv]

Models run smallest first, each in a fresh worker process, `--jobs` at once (a model that exhausts memory
is recorded as failed and takes no other with it); each model has `--limit-s` CPU seconds (a timer
in the one-thread worker; on an idle machine CPU and wall time agree, and `osp_s` / `tp_s` are CPU
seconds). Rows are appended to --out as they finish (a rerun skips the models already there), and the
summary counts are printed at the end; `--markdown` prints a finished scan as docs/models.md's table.
"""
from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
COLUMNS = ["model", "family", "params_m", "osp", "groups", "kept_whole", "osp_s", "why", "torch_pruning", "tp_s"]


class OutOfTime(BaseException):          # not an Exception: the engine must not turn it into a refusal
    pass


def _osp(name: str, size: int) -> tuple[str, str, str, str]:
    """(verdict, prunable groups, groups kept whole, why) of osp on `name`."""
    import torch
    from anycnn import check_end_to_end

    from osp_engine.method.groups import UnsupportedModel
    from osp_engine.models import build_model

    def build():
        return build_model(name, 10, size, 3)

    refusals: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            net = check_end_to_end(build, torch.randn(1, 3, size, size), 10, Path(tmp), arch=name, refusals=refusals)
    except UnsupportedModel as e:                     # only check_end_to_end's own refusal is allowed through
        return "failed", "", "", f"UnsupportedModel outside the refusal: {e}"
    except AssertionError as e:
        return "failed", "", "", f"AssertionError: {str(e).splitlines()[0] if str(e) else ''}"
    if net is None:
        return "refused", "", "", refusals[0]
    whole = net.whole
    return ("exact" if not whole else "exact, kept whole"), str(len(net.groups)), str(len(whole)), \
        (whole[0].reason if whole else "")


def _torch_pruning(name: str, size: int) -> str:
    """'prunes' if Torch-Pruning's MagnitudePruner at 0.5 prunes `name` and the result runs, else the error."""
    import torch

    from osp_engine.method.groups import find_classifier
    from osp_engine.models import build_model
    from osp_engine.method.tp import tp

    model = build_model(name, 10, size, 3).eval()
    x = torch.randn(1, 3, size, size)
    try:
        pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                           pruning_ratio=0.5, ignored_layers=[find_classifier(model, 10)])
        pruner.step()
        with torch.no_grad():
            out = model(x)
        return "prunes" if tuple(out.shape) == (1, 10) else f"wrong output shape {tuple(out.shape)}"
    except OutOfTime:
        raise
    except Exception as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def _timed(fn, limit_s: int):
    """(fn(), CPU seconds) or (None, CPU seconds) past `limit_s` CPU seconds.

    CPU time, not wall time: the worker has one thread, so the two agree on an idle machine, and a scan
    sharing its cores with other work (run under `nice`) does not turn slow models into "not finished".
    """
    def alarm(*_):
        raise OutOfTime()
    signal.signal(signal.SIGPROF, alarm)
    signal.setitimer(signal.ITIMER_PROF, limit_s)
    t0 = time.process_time()
    try:
        return fn(), time.process_time() - t0
    except OutOfTime:
        return None, time.process_time() - t0
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


def worker(names: list[str], size: int, limit_s: int, out: Path) -> None:
    import torch

    from osp_engine.models.timm_zoo import timm_classifiers, timm_parameters

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    family = dict(timm_classifiers())
    for name in names:
        params = timm_parameters(name)
        osp, osp_s = _timed(lambda: _osp(name, size), limit_s)
        osp = osp or ("not finished", "", "", f"over {limit_s} s")
        tp_result, tp_s = _timed(lambda: _torch_pruning(name, size), limit_s)
        row = [name, family[name], f"{params / 1e6:.1f}", osp[0], osp[1], osp[2], f"{osp_s:.1f}",
               osp[3].replace("\t", " ").replace("\n", " ")[:300], tp_result or f"over {limit_s} s", f"{tp_s:.1f}"]
        with out.open("a", newline="") as f:
            csv.writer(f, delimiter="\t").writerow(row)


def summary(out: Path) -> None:
    rows = list(csv.DictReader(out.open(), delimiter="\t"))
    count = lambda key, value: sum(1 for r in rows if r[key] == value)   # noqa: E731
    print(f"{len(rows)} timm convolutional classifiers scanned")
    print(f"osp: {count('osp', 'exact')} exact, {count('osp', 'exact, kept whole')} exact with groups kept whole, "
          f"{count('osp', 'refused')} refused in one line, {count('osp', 'failed')} failed, "
          f"{count('osp', 'not finished')} not finished")
    print(f"Torch-Pruning's MagnitudePruner at 0.5: {count('torch_pruning', 'prunes')} prune and run, "
          f"{len(rows) - count('torch_pruning', 'prunes')} do not")
    both = sum(1 for r in rows if r["osp"].startswith("exact") and r["torch_pruning"] == "prunes")
    print(f"both: {both}; osp only: {sum(1 for r in rows if r['osp'].startswith('exact')) - both}; "
          f"Torch-Pruning only: {count('torch_pruning', 'prunes') - both}")


def markdown(out: Path) -> None:
    """The scan as docs/models.md's table, by family then name, then the classifiers it has not reached."""
    from osp_engine.models.timm_zoo import timm_classifiers

    rows = sorted(csv.DictReader(out.open(), delimiter="\t"), key=lambda r: (r["family"], r["model"]))
    scanned = {r["model"] for r in rows}
    pending = [n for n, _ in timm_classifiers() if n not in scanned]
    print("| model | family | M params | osp | kept whole | why (first group kept whole, or the refusal) | "
          "Torch-Pruning's MagnitudePruner at 0.5 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        why = r["why"].replace("|", "\\|").replace("`", "'")
        tp_result = "prunes and runs" if r["torch_pruning"] == "prunes" else r["torch_pruning"].replace("|", "\\|")
        print(f"| `{r['model']}` | {r['family']} | {r['params_m']} | {r['osp']} | {r['kept_whole'] or ''} | {why} | "
              f"{tp_result} |")
    if pending:
        print(f"\nNot scanned yet ({len(pending)}, the largest): " + ", ".join(f"`{n}`" for n in pending) + ".")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit-s", type=int, default=60)
    ap.add_argument("--out", default="timm_scan.tsv")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="print --out as docs/models.md's table and stop")
    args = ap.parse_args()
    out = Path(args.out)
    if args.markdown:
        markdown(out)
        return
    if args.worker:
        worker(args.models.split(","), args.size, args.limit_s, out)
        return
    from osp_engine.models.timm_zoo import timm_classifiers, timm_parameters

    names = args.models.split(",") if args.models else [n for n, _ in timm_classifiers()]
    _merge_parts(out)                                                # rows of an interrupted scan count
    done = {r["model"] for r in csv.DictReader(out.open(), delimiter="\t")}
    names = [n for n in names if n not in done]
    names.sort(key=timm_parameters)                                      # smallest first
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: dict[str, tuple[subprocess.Popen, Path]] = {}
    t0, pending, finished = time.time(), list(names), 0
    while pending or running:
        while pending and len(running) < args.jobs:                  # one fresh process per model: a model
            name = pending.pop(0)                                    # that exhausts memory takes none with it
            part = Path(f"{out}.part-{name}")
            running[name] = (subprocess.Popen([sys.executable, __file__, "--worker", "--models", name, "--size",
                                               str(args.size), "--limit-s", str(args.limit_s), "--out", str(part)],
                                              env=env), part)
        time.sleep(1.0)
        for name, (proc, part) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            finished += 1
            if proc.returncode != 0 and not part.exists():            # killed (the kernel's OOM killer, a crash)
                why = "out of memory (killed by the system)" if proc.returncode == -9 else f"exit code {proc.returncode}"
                with part.open("w", newline="") as f:
                    csv.writer(f, delimiter="\t").writerow([name, dict(timm_classifiers())[name],
                                                            f"{timm_parameters(name) / 1e6:.1f}", "failed", "", "", "",
                                                            f"the worker died: {why}", "", ""])
            print(f"{finished}/{len(names)} models ({time.time() - t0:.0f} s)", flush=True)
    _merge_parts(out)
    summary(out)


def _merge_parts(out: Path) -> None:
    """Append the workers' rows (`<out>.partN`) to `out`, creating it with its header if needed."""
    if not out.exists():
        out.write_text("\t".join(COLUMNS) + "\n")
    for part in sorted(out.parent.glob(f"{out.name}.part*")):     # .partN (older scans) and .part-<model>
        with out.open("a") as f:
            f.write(part.read_text())
        part.unlink()


if __name__ == "__main__":
    main()
