"""Screenshots of every studio page for the README, from a real demo run trained here.

Runs the demo preset (and a second seed, so Compare has two runs; four branches of the newest for the
Branches page), starts `streamlit run app.py` on
that runs folder and photographs each page with Debian's chromium at 1400x1000 and at a 1280x720
projector size (teaching mode on) into assets/.

    python scripts/screenshots.py
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update"]
PAGES = {"runs": "Runs", "stability": "Stability", "channels": "Channels", "tradeoff": "Trade-off",
         "compare": "Compare", "branches": "Branches"}


def main() -> None:
    from playwright.sync_api import sync_playwright

    runs = Path(tempfile.mkdtemp()) / "runs"
    for seed in (1, 0):
        subprocess.run([sys.executable, "-m", "osp_engine", "run", "--preset", "demo", "--runs-dir", str(runs),
                        "--set", f"seed={seed}"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    newest = sorted(p.name for p in runs.iterdir())[-1]
    subprocess.run([sys.executable, "-m", "osp_engine", "sweep", newest, "--runs-dir", str(runs), "--epochs",
                    "4,6,8,10"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)      # the Branches page's points
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.headless", "true"], cwd=ROOT, env={**os.environ, "OSP_RUNS_DIR": str(runs)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            for size, suffix in (((1400, 1000), ""), ((1280, 720), "-720p")):
                page = browser.new_page(viewport={"width": size[0], "height": size[1]})
                for path, title in PAGES.items():
                    deadline = time.time() + 60
                    while True:
                        try:
                            page.goto(f"http://localhost:{port}/{'' if path == 'runs' else path}?run={newest}")
                            break
                        except Exception:
                            if time.time() > deadline:
                                raise
                            time.sleep(0.5)
                    page.get_by_role("heading", name=title).first.wait_for(timeout=60000)
                    switch = page.get_by_role("switch", name="Teaching mode")
                    if suffix and not switch.is_checked():
                        page.get_by_text("Teaching mode").click()
                        page.wait_for_timeout(1500)
                    if path != "runs":
                        page.locator('[data-testid="stPlotlyChart"]:visible').first.wait_for(timeout=60000)
                    page.wait_for_timeout(2500)                        # charts finish drawing
                    name = title.lower()
                    page.screenshot(path=str(ROOT / "assets" / f"page-{name}{suffix}.png"))
                    print(f"assets/page-{name}{suffix}.png")
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
