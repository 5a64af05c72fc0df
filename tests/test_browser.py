"""A real browser (Playwright driving Debian's chromium) against `streamlit run app.py`.

Start a demo run from the Runs page, watch the Stability chart gain epochs, press Prune now, see the
phase turn to pruned, and open every page without an exception.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import ROOT
from osp_engine.storage.reader import RunReader

CHROMIUM = "/usr/bin/chromium"
# the server, a command-line run and chromium share two cores: one PyTorch thread per run keeps two
# runs from fighting over them (README, "several runs at once on one CPU")
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
PICKER = '[data-testid="stSidebar"] [data-testid="stSelectbox"]'
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update"]

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError("Debian's chromium is missing: .ci/run installs it with apt")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    yield from _serve(tmp_path, {})


@pytest.fixture()
def shared_server(tmp_path):
    """Shared by its address alone, set by environment, started from another folder: OSP_SHARE=0 too."""
    yield from _serve(tmp_path, {"STREAMLIT_SERVER_ADDRESS": "0.0.0.0", "OSP_SHARE": "0",
                                 "OSP_PRESENTER_TOKEN": "room-42-token"}, cwd=tmp_path)


def _serve(tmp_path, extra_env: dict, cwd=ROOT):
    port = _free_port()
    env = {**ONE_THREAD, "OSP_RUNS_DIR": str(tmp_path / "runs"), **extra_env}
    log = open(tmp_path / "server.log", "wb")          # a file: a pipe nobody reads would block a chatty server
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port",
                             str(port), "--server.headless", "true"], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()


def _epochs_shown(page) -> int:
    m = re.search(r"· (\d+) epochs", page.inner_text("body"))
    return int(m.group(1)) if m else 0


def test_demo_in_a_real_browser(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        page.get_by_text("Start a run from a preset").click()
        # a late regulariser keeps the indicator below its threshold long enough to prune by hand
        for label, value in (("Epochs", "80"), ("Regulariser start (sl_start)", "60"),
                             ("Forced prune after (sl_end)", "70")):
            box = page.get_by_label(label)
            box.fill(value)
            box.press("Tab")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Start", exact=True).click()
        page.get_by_text("Shown in the pages", exact=True).first.wait_for(timeout=60000)
        page.get_by_role("link", name="Stability").click()
        page.get_by_text("PSI (smoothed").first.wait_for(timeout=60000)
        first = _epochs_shown(page)
        deadline = time.time() + 60
        while _epochs_shown(page) < max(first + 2, 4) and time.time() < deadline:
            page.wait_for_timeout(500)
        assert _epochs_shown(page) >= max(first + 2, 4), "the chart did not gain epochs"
        page.get_by_role("button", name="Prune now").click()
        page.get_by_text("(manual)").first.wait_for(timeout=60000)
        assert "phase pruned" in page.inner_text("body")
        for name in ["Channels", "Trade-off", "Compare", "Runs", "Stability"]:
            page.get_by_role("link", name=name).click()
            _page_shown(page, name)
            _healthy(page, name)
        browser.close()


def _page_shown(page, name: str) -> None:
    """Wait until the page `name` of the navigation is drawn: its title in the heading."""
    page.locator("h1").get_by_text(name, exact=True).first.wait_for(timeout=60000)


def _healthy(page, where: str) -> None:
    body = page.inner_text("body")
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, f"{where}: {errors.first.inner_text()[:600] if errors.count() else ''}"
    assert "database is locked" not in body and "Traceback" not in body, where


def test_two_tabs_and_a_command_line_run_at_once(server, tmp_path):
    runs = tmp_path / "runs"                              # the server's runs folder (the fixture's OSP_RUNS_DIR)
    cli = subprocess.Popen([sys.executable, "-m", "osp_engine", "run", "--preset", "demo", "--runs-dir", str(runs),
                            "--set", "epochs=200", "--set", "sl_end=20"], cwd=ROOT, env=ONE_THREAD,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        cli_run = re.match(r"run (\S+) -> ", cli.stdout.readline()).group(1)     # its first line, once it started
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            first = context.new_page()
            first.goto(server)
            first.get_by_text("Start a run from a preset").click()
            box = first.get_by_label("Epochs")                # long enough to stay live while the tabs watch
            box.fill("400")
            box.press("Tab")
            first.wait_for_timeout(500)
            first.get_by_role("button", name="Start", exact=True).click()
            # the app's own run is picked (in the URL) once it started; the CLI's card alone is not enough
            first.wait_for_function("cli => (new URLSearchParams(location.search).get('run') || cli) !== cli",
                                    arg=cli_run, timeout=60000)
            app_run = re.search(r"run=([A-Za-z0-9._-]+)", first.url).group(1)
            first.locator(f".st-key-open_{app_run} button[disabled]").first.wait_for(timeout=30000)   # its card, picked
            first.get_by_role("link", name="Stability").click()
            first.get_by_text("PSI (smoothed").first.wait_for(timeout=60000)
            assert f"run={app_run}" in first.url
            second = context.new_page()                     # a second tab on the same live run
            second.goto(f"{server}/stability?run={app_run}")
            second.get_by_text("PSI (smoothed").first.wait_for(timeout=60000)
            start = {id(pg): _epochs_shown(pg) for pg in (first, second)}
            assert RunReader(runs / cli_run).info()["status"] == "running"      # all three at once
            for name in ["Channels", "Trade-off", "Compare", "Stability"]:   # the second tab browses meanwhile
                second.get_by_role("link", name=name).click()
                _page_shown(second, name)
                _healthy(second, name)
                _healthy(first, "first tab, live Stability")
            deadline = time.time() + 240            # a loaded 2-core machine can take 30 s an epoch here
            while time.time() < deadline and not all(_epochs_shown(pg) >= start[id(pg)] + 3 for pg in (first, second)):
                first.wait_for_timeout(500)
            shown = [(start[id(pg)], _epochs_shown(pg)) for pg in (first, second)]
            stored = RunReader(runs / app_run).last_epoch() + 1
            assert all(now >= was + 3 for was, now in shown), f"a tab stopped updating: {shown}, {stored} stored"
            assert app_run in second.inner_text("body")
            first.get_by_role("link", name="Runs").click()
            first.locator(f".st-key-pause_{app_run} button").first.click()         # frees the cores for the CLI run
            first.locator(f".st-key-pause_{app_run} button", has_text="Resume").first.wait_for(timeout=20000)
            cli.send_signal(signal.SIGINT)                   # Ctrl-C: the command-line run ends, cancelled
            assert cli.wait(120) == 3
            first.get_by_text("cancelled", exact=True).first.wait_for(timeout=30000)   # its card's status follows
            listed = [d.name for d in runs.iterdir()]
            assert len(listed) == 2 and all(name in first.inner_text("body") for name in listed)
            _healthy(first, "Runs")
            assert sorted(listed) == sorted([app_run, cli_run])
            # Open moves the sidebar's pick, and the pick follows the user to the next page and the URL
            first.locator(f".st-key-open_{cli_run} button").first.click()      # Streamlit's class for key open_<id>
            first.wait_for_function(f"id => document.querySelector('{PICKER} input').value === id", arg=cli_run,
                                    timeout=20000)                   # the sidebar follows at once, on the Runs page
            first.get_by_role("link", name="Stability").click()
            first.get_by_text(cli_run).first.wait_for(timeout=20000)
            assert f"run={cli_run}" in first.url
            first.locator(PICKER).click()
            first.get_by_role("option", name=app_run).click()
            first.get_by_text(f"{app_run} ·").first.wait_for(timeout=20000)
            assert f"run={app_run}" in first.url
            _healthy(first, "picked back")
            browser.close()
    finally:
        if cli.poll() is None:
            cli.kill()
    assert "run cancelled: stopped by SIGINT" in cli.stdout.read()


def test_a_deep_link_is_the_first_visit_after_start(server, tmp_path, finished_run):
    """Before any session has run app.py: st.navigation must serve /stability with our navigation and
    run picker, the run from the URL (no legacy pages/ folder routes it elsewhere)."""
    shutil.copytree(finished_run.dir, tmp_path / "runs" / finished_run.run_id)
    shutil.copytree(finished_run.dir, tmp_path / "runs" / "zz-copy")          # listed first: the URL must win
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server}/stability?run={finished_run.run_id}")
        page.get_by_text("PSI (smoothed").first.wait_for(timeout=60000)
        nav = page.locator('[data-testid="stSidebar"]').inner_text()
        assert "Trade-off" in nav and "common" not in nav and "figures" not in nav, nav
        assert f"{finished_run.run_id} · finished" in page.inner_text("body")
        assert f"run={finished_run.run_id}" in page.url
        _healthy(page, "deep link")
        shutil.copytree(finished_run.dir, tmp_path / "runs" / "zz-later")     # appears while the page is open
        deadline = time.time() + 60                                           # the sidebar lists it within 2 s
        while True:                                                           # (open the picker until it does)
            page.locator(PICKER).click()
            listed = page.get_by_role("option", name="zz-later").count() > 0
            page.keyboard.press("Escape")
            if listed or time.time() > deadline:
                break
            page.wait_for_timeout(500)
        assert listed, "the run copied in was never listed in the picker"
        assert f"{finished_run.run_id} · finished" in page.inner_text("body")   # and the pick stays
        page.goto(f"{server}/runs?run={finished_run.run_id}")     # the Runs page's own deep link
        page.locator(f".st-key-open_{finished_run.run_id} button[disabled]").first.wait_for(timeout=60000)
        assert "Page not found" not in page.inner_text("body") and f"run={finished_run.run_id}" in page.url
        page.get_by_role("link", name="Compare").click()           # the pruned model, read when clicked
        with page.expect_download(timeout=30000) as download:
            page.get_by_role("button", name=re.compile(rf"pruned model of {finished_run.run_id} \(\d")).click()
        saved = tmp_path / "downloaded.pt"
        download.value.save_as(saved)
        assert saved.read_bytes() == (finished_run.dir / "model.pt").read_bytes()
        with page.expect_download(timeout=120000) as download:    # written and checked on ONNX Runtime when pressed
            page.get_by_role("button", name=f"pruned model of {finished_run.run_id} (ONNX)").click()
        download.value.save_as(tmp_path / "downloaded.onnx")
        import onnxruntime
        session = onnxruntime.InferenceSession(str(tmp_path / "downloaded.onnx"), providers=["CPUExecutionProvider"])
        assert [i.shape[0] for i in session.get_inputs()] == ["batch"]
        with page.expect_download(timeout=120000) as download:    # the HTML report, written when pressed
            page.get_by_role("button", name=f"report of {finished_run.run_id} (HTML)").click()
        download.value.save_as(tmp_path / "report.html")
        report = (tmp_path / "report.html").read_text()
        assert report.startswith("<!DOCTYPE html>") and f"<h1>{finished_run.run_id}</h1>" in report
        page.locator(".st-key-compare_runs").click()                # a second run: both downloads must work
        page.get_by_role("option", name="zz-copy").click()
        page.keyboard.press("Escape")
        for run_id in ("zz-copy", finished_run.run_id):
            button = page.get_by_role("button", name=re.compile(rf"pruned model of {run_id} \(\d"))
            button.wait_for(timeout=30000)
            with page.expect_download(timeout=30000) as download:
                button.click()
            saved = tmp_path / f"{run_id}.pt"
            download.value.save_as(saved)
            assert saved.read_bytes() == (tmp_path / "runs" / run_id / "model.pt").read_bytes(), run_id
        _healthy(page, "Compare with two runs")
        browser.close()


def _sweep_points(page) -> list:
    """The prune epochs of the Branches chart's first trace (final accuracy per branch), read from
    the plot Plotly drew (the empty one that loads the chart library is skipped); [] while there is none."""
    return page.evaluate("() => { const g = Array.from(document.querySelectorAll('.js-plotly-plot'))"
                         ".find(d => d.data && d.data.length); return g ? Array.from(g.data[0].x) : []; }")


def test_what_if_starts_a_linked_branch_and_the_sweep_plot_gains_its_point(server, tmp_path, finished_run):
    shutil.copytree(finished_run.dir, tmp_path / "runs" / finished_run.run_id)
    info = RunReader(finished_run.dir).info()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server}/branches?run={finished_run.run_id}")
        page.get_by_text("No branches yet").wait_for(timeout=60000)
        assert _sweep_points(page) == []
        page.get_by_role("link", name="Stability").click()
        page.get_by_text("What if I had pruned at another epoch?").wait_for(timeout=60000)
        slider = page.locator(f".st-key-whatif_epoch_{finished_run.run_id}").get_by_role("slider")
        shown = slider.get_attribute("aria-valuetext")
        deadline = time.time() + 60
        while slider.get_attribute("aria-valuetext") == shown and time.time() < deadline:
            slider.focus()                                          # again if a rerun replaced the slider and
            page.keyboard.press("ArrowLeft")                        # the press was lost: one kept epoch earlier
            for _ in range(25):                                     # the slider moves in the browser, at once
                if slider.get_attribute("aria-valuetext") != shown:
                    break
                page.wait_for_timeout(200)
        epoch = int(slider.get_attribute("aria-valuetext"))
        assert epoch == int(shown) - 1 and epoch < info["t_star"]
        page.get_by_role("button", name="What if I had pruned here?").click()
        page.get_by_text(re.compile(r"^Queued: \d")).wait_for(timeout=60000)    # not the button's tooltip
        page.get_by_role("link", name="Branches").click()
        deadline = time.time() + 120
        while _sweep_points(page) != [epoch] and time.time() < deadline:
            page.wait_for_timeout(500)
        assert _sweep_points(page) == [epoch], "the sweep plot did not gain the branch's point"
        assert f"{finished_run.run_id} · 1 branch" in page.inner_text("body")
        _healthy(page, "Branches")
        page.get_by_role("link", name="Runs").click()               # the branch's card names its parent
        page.get_by_text(f"branch of {finished_run.run_id}, pruned at epoch {epoch}").wait_for(timeout=60000)
        browser.close()


def test_a_shared_studio_shows_viewers_everything_live_and_only_the_presenter_steers(shared_server, tmp_path):
    runs = tmp_path / "runs"
    cli = subprocess.Popen([sys.executable, "-m", "osp_engine", "run", "--preset", "demo", "--runs-dir", str(runs),
                            "--set", "epochs=400", "--set", "sl_end=300"], cwd=ROOT, env=ONE_THREAD,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run_id = re.match(r"run (\S+) -> ", cli.stdout.readline()).group(1)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            viewer = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            viewer.goto(f"{shared_server}/stability?run={run_id}")
            viewer.get_by_text("PSI (smoothed").first.wait_for(timeout=60000)
            first = _epochs_shown(viewer)
            deadline = time.time() + 120
            while _epochs_shown(viewer) < first + 2 and time.time() < deadline:
                viewer.wait_for_timeout(500)
            assert _epochs_shown(viewer) >= first + 2, "the viewer's chart did not gain epochs"
            assert viewer.get_by_role("button", name="Prune now").count() == 0
            viewer.get_by_role("link", name="Runs").click()
            viewer.get_by_text(run_id).first.wait_for(timeout=60000)
            for name in ("Pause", "Cancel", "Delete", "▶ Start the demo run"):
                assert viewer.get_by_role("button", name=name, exact=True).count() == 0, name
            _healthy(viewer, "viewer")

            presenter = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            presenter.goto(f"{shared_server}/?run={run_id}")
            presenter.get_by_label("Presenter token").fill("room-42-token")
            presenter.get_by_role("button", name="Unlock controls").click()
            presenter.get_by_text("Presenter: this session controls the runs.").wait_for(timeout=60000)
            presenter.get_by_role("button", name="Pause", exact=True).first.click()
            deadline = time.time() + 60
            while not (RunReader(runs / run_id).controls() or {}).get("paused") and time.time() < deadline:
                presenter.wait_for_timeout(300)
            assert RunReader(runs / run_id).controls()["paused"] is True
            _healthy(presenter, "presenter")
            viewer.reload()
            viewer.get_by_text(run_id).first.wait_for(timeout=60000)
            assert viewer.get_by_role("button", name="Resume", exact=True).count() == 0
            browser.close()
    finally:
        cli.terminate()
        cli.wait(60)


def _lesson_step(page, title: str, path: str) -> None:
    """Wait until the lesson panel shows step `title` on the page at `path`, drawn without an exception."""
    panel = page.locator(".st-key-lesson-panel")
    try:
        panel.get_by_text(title).wait_for(timeout=120000)
    except sync_api.TimeoutError:                     # say what the page showed instead (a flake under load)
        raise AssertionError(f"{title}: not shown in the lesson panel at {page.url}; the page shows:\n"
                             f"{page.inner_text('body')[:1500]}") from None
    page.wait_for_url(re.compile(rf"/{path}(\?|$)"), timeout=60000)
    heading = {"stability": "Stability", "channels": "Channels", "tradeoff": "Trade-off", "branches": "Branches"}[path]
    try:
        page.locator("h1").get_by_text(heading).first.wait_for(timeout=60000)
    except sync_api.TimeoutError:
        shot = Path(os.environ.get("OSP_TEST_SHOTS", "/tmp")) / f"lesson-{heading}.png"
        page.screenshot(path=str(shot))
        raise AssertionError(f"{title}: no {heading} heading at {page.url} (screenshot {shot}); the page shows:\n"
                             f"{page.inner_text('body')[:1500]}") from None
    _healthy(page, title)


IN_VIEW_PX = 400            # a lesson step's chart starts above y = 400 of a 1280x720 projector: 320 px of it in view


def _chart_in_view(page, title: str) -> None:
    """The step's chart (the page's first) starts above y = IN_VIEW_PX, without scrolling."""
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.wait_for(timeout=60000)
    top = chart.bounding_box()["y"]
    assert top <= IN_VIEW_PX, f"{title}: the chart starts at y = {top:.0f} px of 720"


def _outside(url: str) -> bool:
    """Whether a request leaves the machine (data: and blob: URLs stay in the page)."""
    parts = urllib.parse.urlparse(url)
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in ("localhost", "127.0.0.1")


def test_the_guided_lesson_walks_from_the_first_click_to_the_branches(server, tmp_path):
    """The live lesson at 1280x720, then its replay; each paused step's chart in view, and no request
    leaves the machine (a classroom may be offline)."""
    from osp_engine.method.moments import moment_epochs

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        outside = []
        page.on("request", lambda request: outside.append(request.url) if _outside(request.url) else None)
        page.goto(server)
        page.get_by_role("link", name="Lesson").click()
        page.get_by_role("button", name="Start the lesson").click()
        panel = page.locator(".st-key-lesson-panel")
        # step 1 lasts while epoch 0 trains: a loaded machine may draw the page only once the run has paused
        # at step 2 (the replay below checks step 1 at its epoch, deterministically)
        panel.get_by_text("1 · Dense training").or_(panel.get_by_text("2 · The first candidate")).first.wait_for(
            timeout=120000)
        for title, path, key in (("2 · The first candidate", "channels", "n"),
                                 ("3 · The regulariser starts", "stability", None),
                                 ("4 · The candidate settles", "stability", "n"),
                                 ("5 · The prune", "tradeoff", None)):
            _lesson_step(page, title, path)
            panel.get_by_text("The run is paused here").wait_for(timeout=60000)
            _chart_in_view(page, title)
            if key:                                         # the keyboard, as a teacher at a projector would
                page.locator("body").press(key.upper())
            else:                                           # (the next step's title shows it was taken)
                panel.get_by_role("button", name="Continue").click()
        _lesson_step(page, "6 · Fine-tuning", "stability")
        _lesson_step(page, "7 · What if we had pruned elsewhere?", "branches")
        assert "Each branch prunes the same run at another epoch" in panel.inner_text()
        panel.get_by_role("button", name="End").click()
        # the same lesson on the run that ended, each step replayed at the epoch it happened
        run = RunReader(next((tmp_path / "runs").iterdir()))
        moments = moment_epochs(run.epochs(), run.info()["t_star"], run.info()["threshold"])
        page.get_by_role("link", name="Lesson").click()
        page.get_by_role("button", name=f"Walk through {run.run_id}").click()
        _lesson_step(page, "1 · Dense training", "stability")
        page.get_by_text(f"replay at epoch {moments['searched'] - 1} of finished").first.wait_for(timeout=60000)
        page.locator("body").press("N")
        _lesson_step(page, "2 · The first candidate", "channels")
        page.locator("body").press("N")
        _lesson_step(page, "3 · The regulariser starts", "stability")
        page.get_by_text(f"replay at epoch {moments['regularizer']} of finished").first.wait_for(timeout=60000)
        page.locator("body").press("B")
        _lesson_step(page, "2 · The first candidate", "channels")
        browser.close()
    assert outside == []
