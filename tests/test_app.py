"""The studio in AppTest: every page against a store filled by a real tiny run, and the empty state."""
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT

PAGES = ["pages/runs.py", "pages/stability.py", "pages/channels.py", "pages/tradeoff.py", "pages/compare.py"]


@pytest.fixture()
def filled_root(finished_run, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(finished_run.dir, root / finished_run.run_id)
    monkeypatch.setenv("OSP_RUNS_DIR", str(root))
    monkeypatch.chdir(ROOT)
    return root, finished_run.run_id


def _page(path, run_id=None):
    at = AppTest.from_file(str(ROOT / path), default_timeout=60)
    if run_id:
        at.session_state["run_id"] = run_id
    return at.run()


def _figures(at):
    return [c.proto.spec for c in at.get("plotly_chart")]


def test_empty_state_on_every_page(tmp_path, monkeypatch):
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path / "none"))
    monkeypatch.chdir(ROOT)
    for path in PAGES:
        at = _page(path)
        assert not at.exception, path
        assert at.info, f"{path} shows no empty-state message"
    assert any("Start the demo" in b.label for b in _page("pages/runs.py").button)


def test_app_entry_renders_navigation_and_picker(filled_root):
    root, run_id = filled_root
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.sidebar.selectbox[0].value == run_id
    assert at.session_state["run_id"] == run_id


def test_runs_page_lists_the_run(filled_root):
    root, run_id = filled_root
    at = _page("pages/runs.py", run_id)
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert run_id in text
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "finished" and metrics["Phase"] == "pruned"
    assert metrics["FLOPs reduction"].endswith("%") and 49.0 <= float(metrics["FLOPs reduction"].split()[0]) <= 51.0
    assert any(b.label == "Delete" for b in at.button)
    delete = next(b for b in at.button if b.label == "Delete")
    at = delete.click().run()
    assert any("Delete" in w.value for w in at.warning)
    at = next(b for b in at.button if b.label == "Yes, delete").click().run()
    assert not (root / run_id).exists()


def test_stability_page_plots_psi_threshold_and_markers(filled_root):
    root, run_id = filled_root
    at = _page("pages/stability.py", run_id)
    assert not at.exception
    specs = _figures(at)
    assert len(specs) == 2                                    # the stability chart and the similarity matrix
    import json
    fig = json.loads(specs[0])
    names = [t.get("name") for t in fig["data"]]
    assert names[:2] == ["PSI raw", "PSI smoothed"] and "Early-Bird distance" in names and "regulariser" in names
    assert len(fig["data"][1]["x"]["bdata"] if isinstance(fig["data"][1]["x"], dict) else fig["data"][1]["x"]) > 0
    annotations = " ".join(a.get("text", "") for a in fig["layout"]["annotations"])
    assert "threshold 0.999" in annotations and "t* =" in annotations and "t_sl_start =" in annotations
    sim = json.loads(specs[1])
    assert sim["data"][0]["type"] == "heatmap"
    assert not any(b.label.startswith("✂") for b in at.button)   # the run is finished: no prune button


def test_channels_page(filled_root):
    root, run_id = filled_root
    at = _page("pages/channels.py", run_id)
    assert not at.exception
    import json
    specs = [json.loads(s) for s in _figures(at)]
    assert len(specs) == 4
    heat = specs[0]
    assert heat["data"][0]["type"] == "heatmap" and len(heat["data"][0]["y"]) >= 8
    hist_names = [t["name"] for t in specs[2]["data"]]
    assert hist_names == ["kept", "marked for pruning"]
    at.selectbox(key="drill_group").set_value(3).run()
    assert not at.exception


def test_tradeoff_and_compare_pages(filled_root):
    root, run_id = filled_root
    at = _page("pages/tradeoff.py", run_id)
    assert not at.exception
    import json
    names = [t["name"] for t in json.loads(_figures(at)[0])["data"]]
    assert any(n.endswith("pruned") for n in names) and any(n.endswith("dense") for n in names)
    at = _page("pages/compare.py", run_id)
    assert not at.exception
    df = at.dataframe[0].value
    assert list(df["run"]) == [run_id] and df["status"][0] == "finished"
    assert abs(df["flops_reduction"][0] - 0.5) < 0.005
    assert len(at.get("download_button")) == 2


def test_bad_run_id_never_reaches_the_file_system(filled_root):
    root, run_id = filled_root
    at = _page("pages/stability.py", "../../etc")
    assert not at.exception and at.info                       # treated as no run selected
