"""The demo's timings, side by side in one invocation:

1. the command line: the previous demo preset (digits-resnet14, 40 epochs) against today's demo
   (digits-resnet8, 24 epochs), wall seconds of the whole process and the run's own seconds;
2. the studio in a real browser (Debian's chromium driven by Playwright, the Stability page open while
   the run trains): seconds from the click on "Start the demo run" to the first chart and to "finished",
   and the run's own seconds against the command line's (the studio/CLI ratio).

    python benchmarks/bench_demo.py [--repeat 1]
    python benchmarks/bench_demo.py --baseline REV [--repeat 3]    # first chart: REV's studio against this one
    python benchmarks/bench_demo.py --timm [--repeat 3]            # the command line with timm and without

--timm runs the command-line demo as it is and with timm hidden (`sys.modules["timm"] = None`: an import
fails and `find_spec` finds nothing, as when it is not installed), alternated after one unmeasured run of
each, and prints both process times: the demo's start-up must not pay for an optional integration that is
installed.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from osp_engine.storage.reader import RunReader  # noqa: E402

PREVIOUS = ["model=digits-resnet14", "epochs=40", "sl_start=6", "sl_end=30"]     # the demo preset before this one
LOST_S = 30                     # no chart and no run this long after the click: the click was lost
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update"]


HIDE_TIMM = ["-c", "import runpy, sys; sys.modules['timm'] = None; sys.argv[0] = 'osp_engine'; "
                   "runpy.run_module('osp_engine', run_name='__main__', alter_sys=True)"]


def cli_demo(root: Path, settings: list[str], hide_timm: bool = False) -> tuple[float, dict]:
    """(process wall seconds, the run's summary) of one command-line demo run (timm hidden if asked)."""
    cmd = [sys.executable, *(HIDE_TIMM if hide_timm else ["-m", "osp_engine"]), "run", "--preset", "demo",
           "--runs-dir", str(root)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd + [a for s in settings for a in ("--set", s)], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    wall = time.perf_counter() - t0
    run_dir = re.match(r"run \S+ -> (.+)", out.splitlines()[0]).group(1)
    return wall, RunReader(run_dir).summary()


def _studio(root: Path, code: Path = ROOT):
    """(server process, browser page at its Runs page) inside a Playwright context the caller closes;
    code: the checkout whose app.py is served (another revision's worktree for --baseline)."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.headless", "true"], cwd=code, env={**os.environ, "OSP_RUNS_DIR": str(root)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p = sync_playwright().start()
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    deadline = time.time() + 60
    while True:
        try:
            page.goto(f"http://localhost:{port}")
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.3)
    page.get_by_role("button", name="Start the demo run").wait_for(timeout=60000)

    def close():
        browser.close()
        p.stop()
        server.terminate()
        server.wait(30)
    return page, port, close


def studio_demo(root: Path, code: Path = ROOT, read_s: float = 0.0) -> dict | None:
    """Click "Start the demo run" (read_s seconds after the Runs page is ready: a person reading it first),
    at once the Stability link, wait for the first chart and for "finished". None: the click was lost
    (no chart within LOST_S seconds and no run folder)."""
    page, _, close = _studio(root, code)
    try:
        page.wait_for_timeout(read_s * 1000)
        t_click = time.perf_counter()
        page.get_by_role("button", name="Start the demo run").click()
        page.get_by_role("link", name="Stability").click()
        try:
            page.locator('[data-testid="stPlotlyChart"]:visible').first.wait_for(timeout=LOST_S * 1000)
        except Exception:
            if not any(d.is_dir() for d in root.iterdir()):
                return None
            raise
        t_chart = time.perf_counter()
        page.get_by_text("· finished").first.wait_for(timeout=600000)
        t_done = time.perf_counter()
    finally:
        close()
    (run_dir,) = [d for d in root.iterdir() if d.is_dir()]
    return dict(first_chart=t_chart - t_click, finished=t_done - t_click, summary=RunReader(run_dir).summary())


def watched_cli_demo(root: Path) -> dict:
    """A command-line demo run with the studio's Stability page open on it from its first epoch: the
    browser's and the server's share of the cores, without training inside the server."""
    page, port, close = _studio(root)
    try:
        cli = subprocess.Popen([sys.executable, "-m", "osp_engine", "run", "--preset", "demo", "--runs-dir", str(root)],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
        run_id = re.match(r"run (\S+) -> ", cli.stdout.readline()).group(1)
        page.goto(f"http://localhost:{port}/stability?run={run_id}")
        cli.communicate()
    finally:
        close()
    return RunReader(root / run_id).summary()


@contextlib.contextmanager
def worktree(revision: str):
    """A detached git worktree of `revision` in a temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="osp-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(folder / "tree"), revision], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        yield folder / "tree"
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder / "tree")], cwd=ROOT, capture_output=True)


def first_chart_side_by_side(revision: str, repeat: int, read_s: float) -> None:
    """The studio's first chart after the click, `revision`'s app and this checkout's, alternated; the
    click comes read_s seconds after the Runs page is ready."""
    with worktree(revision) as base, tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            before = studio_demo(Path(tmp) / f"base{i}", base, read_s)
            after = studio_demo(Path(tmp) / f"now{i}", ROOT, read_s)
            print(f"first chart after a click {read_s:g} s after the page: {revision} {_chart(before)}, "
                  f"this checkout {_chart(after)}")


def _chart(result: dict | None) -> str:
    if result is None:
        return "click lost (no run)"
    return f"{result['first_chart']:.1f} s (finished {result['finished']:.1f} s)"


def line(label: str, wall: float, s: dict) -> str:
    return (f"{label:<34} {wall:6.1f} s process, {s['wall_seconds']:6.1f} s run · t* = {s['t_star']} "
            f"({s['prune_reason']}), FLOPs -{100 * s['flops_reduction']:.1f} %, final accuracy {s['final_acc']:.2f} %")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help="only the studio's first chart: git revision REV's app against this checkout's, alternated")
    ap.add_argument("--timm", action="store_true", help="only the command line, with timm and with it hidden")
    args = ap.parse_args()
    print(f"{len(os.sched_getaffinity(0))} cores")
    if args.timm:
        with tempfile.TemporaryDirectory() as tmp:
            cli_demo(Path(tmp) / "warm", [])                  # unmeasured: the first start reads every file cold
            cli_demo(Path(tmp) / "warm-hidden", [], hide_timm=True)
            for i in range(args.repeat):
                shown, _ = cli_demo(Path(tmp) / f"timm{i}", [])
                hidden, _ = cli_demo(Path(tmp) / f"none{i}", [], hide_timm=True)
                print(f"command-line demo: {shown:.2f} s with timm installed, {hidden:.2f} s with timm hidden "
                      f"({shown / hidden:.2f}x)")
        return
    if args.baseline:
        for read_s in (0.0, 5.0):
            first_chart_side_by_side(args.baseline, args.repeat, read_s)
        return
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            old_wall, old = cli_demo(Path(tmp) / "old", PREVIOUS)
            new_wall, new = cli_demo(Path(tmp) / "new", [])
            print(line("previous demo (digits-resnet14, 40)", old_wall, old))
            print(line("demo (digits-resnet8, 24)", new_wall, new))
            print(f"demo speed-up: {old_wall / new_wall:.2f}x (process), {old['wall_seconds'] / new['wall_seconds']:.2f}x (run)")
            if not args.no_browser:
                st = studio_demo(Path(tmp) / "studio")
                if st is None:
                    print("studio: the click on Start was lost (no run)")
                    continue
                watched = watched_cli_demo(Path(tmp) / "watched")
                print(f"studio: first chart {st['first_chart']:.1f} s after the click, finished {st['finished']:.1f} s "
                      f"after it; run {st['summary']['wall_seconds']:.1f} s, "
                      f"{st['summary']['wall_seconds'] / new['wall_seconds']:.2f}x the command line's run alone, "
                      f"{st['summary']['wall_seconds'] / watched['wall_seconds']:.2f}x the command line's run watched "
                      f"by the same page ({watched['wall_seconds']:.1f} s)")


if __name__ == "__main__":
    main()
