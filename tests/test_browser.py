"""A real browser (Playwright driving Debian's chromium) against `streamlit run app.py`.

Start a demo run from the Runs page, watch the Stability chart gain epochs, press Prune now, see the
phase turn to pruned, and open every page without an exception.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
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
    port = _free_port()
    env = {**os.environ, "OSP_RUNS_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
        for label, value in (("Regulariser start (sl_start)", "25"), ("Forced prune after (sl_end)", "36")):
            box = page.get_by_label(label)
            box.fill(value)
            box.press("Tab")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Start", exact=True).click()
        page.get_by_text("Open", exact=True).first.wait_for(timeout=60000)
        page.get_by_role("link", name="Stability").click()
        page.get_by_text("PSI smoothed").first.wait_for(timeout=60000)
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
            page.wait_for_timeout(2500)
            assert page.locator('[data-testid="stException"]').count() == 0, name
            assert name in page.inner_text("h1") or name == "Runs"
        browser.close()
