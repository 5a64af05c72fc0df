"""The run report (osp_engine/charts/report.py, `osp report`): one HTML file, opened from disk in
chromium with no server running and no network, its charts drawn and downloadable as PNG and SVG."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from osp_engine.interfaces.cli import main
from osp_engine.storage.reader import RunReader

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update"]


@pytest.fixture()
def report(filled_root, tmp_path, capsys):
    root, run_id = filled_root
    out = tmp_path / "out" / "run.html"
    out.parent.mkdir()
    assert main(["report", run_id, "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote the report of {run_id} to {out} (")
    return root / run_id, out


def test_the_report_is_one_file_with_the_card_and_three_charts(report):
    run_dir, out = report
    text = out.read_text()
    s = RunReader(run_dir).summary()
    assert text.startswith("<!DOCTYPE html>") and f"<h1>{run_dir.name}</h1>" in text
    assert f"<td>pruned</td><td>after epoch {s['t_star']} ({s['prune_reason']})</td>" in text
    assert [h for h in re.findall(r"<h2>(.*?)</h2>", text)] == ["Stability", "Channels", "Trade-off"]   # no branches
    markup = re.sub(r"<script.*?</script>", "", text, flags=re.S)        # plotly.js itself: the browser test below
    assert not re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", markup)          # no link, image or script
    assert text.count("<script") == 3 + 3 and "<script src" not in text   # plotly.js, ours, 3 charts, the summary
    data = json.loads(re.search(r'<script type="application/json" id="osp-summary">(.*?)</script>', text, re.S)[1])
    assert data["run_id"] == run_dir.name and data["summary"]["t_star"] == s["t_star"]
    assert not list(out.parent.glob("*.tmp"))


def test_a_run_with_branches_has_the_branches_chart(filled_root, tmp_path):
    root, run_id = filled_root
    epoch = RunReader(root / run_id).info()["t_star"] - 1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "osp_engine", "branch", run_id, "--epoch", str(epoch), "--runs-dir",
                          str(root)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = tmp_path / "branched.html"
    assert main(["report", run_id, "--out", str(out), "--runs-dir", str(root)]) == 0
    assert re.findall(r"<h2>(.*?)</h2>", out.read_text())[-1] == "Branches"


def test_a_report_inside_the_run_folder_or_of_no_run_is_refused(filled_root, capsys):
    root, run_id = filled_root
    assert main(["report", run_id, "--out", str(root / run_id / "r.html")]) == 2
    assert "is inside the run folder" in capsys.readouterr().err
    assert main(["report", "no-such-run", "--out", str(root / "r.html")]) == 2


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_the_report_opens_from_disk_offline_and_its_charts_download(report, tmp_path):
    from playwright.sync_api import sync_playwright

    _, out = report
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720}, accept_downloads=True)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(out.as_uri())
        for chart in ("stability", "channels", "tradeoff"):
            page.locator(f"#{chart} .main-svg").first.wait_for(timeout=60000)
        assert page.locator(".js-plotly-plot").count() == 3
        assert page.locator("#stability .scatterlayer .trace").count() >= 6      # the PSI, accuracy, EB, schedules
        for fmt, magic in (("svg", b"<svg"), ("png", b"\x89PNG")):
            with page.expect_download(timeout=60000) as download:
                page.locator("#section-stability .downloads button", has_text=fmt.upper()).click()
            saved = tmp_path / f"stability.{fmt}"
            download.value.save_as(saved)
            assert saved.read_bytes()[:4] == magic[:4], fmt
        browser.close()
    assert requests and all(u.split(":", 1)[0] in ("file", "data", "blob") for u in requests), requests
