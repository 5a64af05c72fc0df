"""The studio in AppTest: every page against a store filled by a real tiny run, and the empty state."""
import base64
import json
import shutil
import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from osp_engine import get_preset
from osp_engine.method.analysis import kept_fraction
from osp_engine.storage.reader import RunReader

PAGES = ["runs", "stability", "channels", "tradeoff", "compare", "branches"]


def _page(name, run_id=None):
    """One page's render() with `run_id` picked, as app.py's navigation runs it."""
    at = AppTest.from_string(f"from osp_studio.{name} import render\nrender()\n", default_timeout=60)
    if run_id:
        at.session_state["run_id"] = run_id
    return at.run()


def _figures(at):
    return [c.proto.spec for c in at.get("plotly_chart")]


def test_empty_state_on_every_page(tmp_path, monkeypatch):
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path / "none"))
    monkeypatch.chdir(ROOT)
    for name in PAGES:
        at = _page(name)
        assert not at.exception, name
        assert at.info, f"{name} shows no empty-state message"
    assert any("Start the demo" in b.label for b in _page("runs").button)


def test_app_entry_renders_navigation_and_picker(filled_root):
    root, run_id = filled_root
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.sidebar.selectbox[0].value == run_id
    assert at.session_state["run_id"] == run_id
    # the chart library is loaded out of sight on a session's first page, once
    assert [c.proto.id.endswith("chart_warmup") for c in at.get("plotly_chart")] == [True]
    assert at.run().get("plotly_chart") == []


def test_runs_page_lists_the_run(filled_root):
    root, run_id = filled_root
    at = _page("runs", run_id)
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert run_id in text
    metrics = {m.label: m.value for m in at.metric}
    s = RunReader(root / run_id).summary()
    assert metrics["Status"] == "finished" and metrics["Pruned after epoch"] == str(s["t_star"])
    assert metrics["FLOPs removed"] == f"{100 * s['flops_reduction']:.1f} %"
    assert metrics["Final accuracy"] == f"{s['final_acc']:.2f} %"
    bar = at.get("progress")[0].proto.text
    assert bar.startswith("16 of 16 epochs done · ") and " s/epoch · best accuracy " in bar and "left" not in bar
    assert any(b.label == "Delete" for b in at.button)
    delete = next(b for b in at.button if b.label == "Delete")
    at = delete.click().run()
    assert any("Delete" in w.value for w in at.warning)
    at = next(b for b in at.button if b.label == "Yes, delete").click().run()
    assert not (root / run_id).exists()


def test_stability_page_plots_psi_threshold_and_markers(filled_root):
    root, run_id = filled_root
    at = _page("stability", run_id)
    assert not at.exception
    specs = _figures(at)
    assert len(specs) == 2                                    # the stability chart and the similarity matrix
    fig = json.loads(specs[0])
    info, rows = RunReader(root / run_id).info(), RunReader(root / run_id).epochs()
    names = [t.get("name") for t in fig["data"]]
    assert names[:7] == ["PSI (raw)", "PSI (smoothed, decides the prune)", "accuracy of the network as trained",
                         "accuracy if pruned now (candidate, before fine-tuning)", "Early-Bird distance",
                         "regulariser strength", "learning rate"]
    cand = _array(fig["data"][3]["y"])                        # the candidate's own accuracy, as stored
    assert cand[info["t_star"]] == pytest.approx(rows[info["t_star"]]["cand_acc"]) and np.isnan(cand[0])
    assert f"t* = {info['t_star']}: pruned: PSI reached the threshold" in names or info["prune_reason"] != "stable"
    assert "threshold 0.999" in names and f"regulariser starts: epoch {info['t_sl_start']}" in names
    assert {"dense training", "shrinking (regulariser on)", "pruned, fine-tuning"} <= set(names)   # phase legend
    smooth = _array(fig["data"][1]["y"])
    assert np.isnan(smooth[:3]).all()                         # epoch 0 unsearched, epochs 1-2: no PSI yet (a gap)
    assert smooth[3] == pytest.approx(rows[3]["psi_smoothed"])
    assert fig["data"][5]["line"]["shape"] == "hv"            # the regulariser is a step
    layout = fig["layout"]
    assert layout["yaxis"]["title"]["text"] == "PSI (Jaccard, 0-1)"
    assert layout["xaxis4"]["title"]["text"] == "epoch (counted from 0)"
    assert layout["yaxis2"]["title"]["text"] == "accuracy (%)"
    assert layout["font"]["size"] >= 16 and layout["height"] <= 660
    assert layout["xaxis"]["range"] == [0.5, info["t_star"] + 3.5]       # the search window: epoch 1 to t* + 3
    assert layout["legend"]["y"] < 0                          # under the x-axis title, never over a plot
    sim = json.loads(specs[1])
    assert sim["data"][0]["type"] == "heatmap" and (sim["data"][0]["zmin"], sim["data"][0]["zmax"]) == (0, 1)
    assert [sh["x0"] for sh in sim["layout"]["shapes"]][:1] == [info["t_star"]]       # t* on the matrix
    assert not any(b.label.startswith("✂") for b in at.button)   # the run is finished: no prune button
    at.toggle(key="psi_log").set_value(True).run()          # 1 - PSI on a log axis: 0.999 and 1 apart
    at.toggle(key="psi_whole").set_value(True).run()
    fig = json.loads(_figures(at)[0])
    assert fig["layout"]["yaxis"]["type"] == "log"
    assert fig["layout"]["yaxis"]["ticktext"] == ["0", "0.9", "0.99", "0.999", "0.9999", "1"]
    logged = _array(fig["data"][1]["y"])
    assert logged[3] == pytest.approx(max(1 - rows[3]["psi_smoothed"], 1e-5))
    assert fig["layout"]["xaxis"]["range"] == [-0.5, len(rows) - 0.5]


def test_a_manual_prune_is_drawn_apart_and_one_epoch_draws_a_chart():
    import pandas as pd
    from osp_engine.charts.stability import stability_figure

    one = pd.DataFrame([dict(epoch=0, psi_raw=None, psi_smoothed=None, eb_distance=None, reg=0.0, lr=0.1,
                             phase="dense")])
    info = dict(threshold=0.999, t_star=None, t_sl_start=None, prune_reason=None, config={})
    fig = stability_figure(one, info)
    assert fig.layout.xaxis.range == (-0.5, 0.5) and len(fig.data) >= 5
    manual = pd.DataFrame([dict(epoch=e, psi_raw=0.5, psi_smoothed=0.5, eb_distance=0.2, reg=0.01, lr=0.1,
                                phase="sparsity" if e < 6 else "pruned") for e in range(8)])
    fig = stability_figure(manual, dict(info, t_star=5, prune_reason="manual"))
    line = next(t for t in fig.data if t.name == "t* = 5: pruned by hand (Prune now)")
    assert line.line.dash == "dashdot" and line.line.color == "#805ad5"


def test_teaching_mode_explains_with_the_engines_numbers(filled_root):
    root, run_id = filled_root
    at = AppTest.from_string("import streamlit as st\nst.session_state['teaching'] = True\n"
                             "from osp_studio.stability import render\nrender()\n", default_timeout=60)
    at.session_state["run_id"] = run_id
    at.run()
    assert not at.exception
    example = " ".join(t.value for t in at.text)
    assert "PSI (mean over groups) = 0.667" in example and "Early-Bird distance = 0.333" in example
    assert json.loads(_figures(at)[0])["layout"]["font"]["size"] == 18
    for name, words in (("channels", "Reading the heatmaps"), ("tradeoff", "Reading the trade-off"),
                        ("compare", "Reading the overlay"), ("branches", "Reading the branches")):
        at = AppTest.from_string("import streamlit as st\nst.session_state['teaching'] = True\n"
                                 f"from osp_studio.{name} import render\nrender()\n", default_timeout=60)
        at.session_state["run_id"] = run_id
        at.run()
        assert not at.exception and any(words in i.value for i in at.info), name
        assert not any(words in i.value for i in _page(name, run_id).info), name      # only in teaching mode


def _array(value) -> np.ndarray:
    """A figure array from Plotly's JSON: a plain list, or typed {dtype, bdata, shape}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return flat.reshape([int(n) for n in str(shape).split(",")]) if shape else flat
    return np.array(value)


def test_channels_page(filled_root):
    root, run_id = filled_root
    at = _page("channels", run_id)
    assert not at.exception
    specs = [json.loads(s) for s in _figures(at)]
    assert len(specs) == 5
    r = RunReader(root / run_id)
    epochs, kept = r.mask_matrix()
    groups = r.groups()
    sizes = [g["size"] for g in groups]
    layer = specs[0]["data"][0]
    assert layer["type"] == "heatmap" and len(layer["y"]) == len(groups)
    assert np.allclose(_array(layer["z"]), kept_fraction(kept, sizes))
    overview = specs[1]["data"][0]                            # every channel: the same cells, reordered
    z = _array(overview["z"])
    assert overview["type"] == "heatmap" and z.shape == (kept.shape[1], len(epochs))
    assert sorted(map(tuple, z.tolist())) == sorted(map(tuple, kept.T.astype(int).tolist()))
    assert [t["name"] for t in specs[3]["data"]] == ["kept", "marked for pruning"]
    bars = specs[4]["data"][1]
    assert list(_array(bars["y"])) == [int(m.sum()) for m in r.masks(epochs[-1])]
    at.selectbox(key="drill_group").set_value(3).run()
    assert not at.exception
    drill = json.loads(_figures(at)[2])["data"][0]
    labels = sorted(int(y.split()[1]) for y in drill["y"])
    assert labels == list(range(sizes[3]))                   # every channel of group 3 once, by its original id


def test_tradeoff_and_compare_pages(filled_root):
    root, run_id = filled_root
    at = _page("tradeoff", run_id)
    assert not at.exception
    fig = json.loads(_figures(at)[0])
    s = RunReader(root / run_id).summary()
    (run,) = fig["data"]                                      # one run: its dense and its pruned model, measured
    assert run["name"].startswith(run_id[-9:]) and "target 50 %" in run["name"]
    assert list(_array(run["x"])) == pytest.approx([s["dense_flops"] / 1e6, s["final_flops"] / 1e6])
    assert list(_array(run["y"])) == pytest.approx([max(r["val_acc"] for r in RunReader(root / run_id).epochs()
                                                        if r["phase"] != "pruned"), s["final_acc"]])
    assert "No published points exist" in at.caption[-1].value          # digits: nothing was published for it
    at.radio(key="tradeoff_axis").set_value("measured latency").run()    # the same two models at their latency
    assert not at.exception
    (timed,) = json.loads(_figures(at)[0])["data"]
    ort = s["speed"]["onnxruntime"]["latency_ms"]                         # timed in ONNX Runtime when it ended
    assert list(_array(timed["x"])) == pytest.approx([ort["dense"], ort["pruned"]])
    assert list(_array(timed["y"])) == list(_array(run["y"])) and "ONNX Runtime" in timed["hovertemplate"]
    at = _page("compare", run_id)
    assert not at.exception
    df = at.dataframe[0].value
    assert list(df["run"]) == [run_id] and df["status"][0] == "finished"
    assert abs(df["FLOPs removed (%)"][0] - 50) < 2 and df["FLOPs target (%)"][0] == 50.0
    assert df["target of"][0] == "FLOPs" and df["latency at batch 1, measured (ms)"][0] == round(ort["pruned"], 3)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == [f"metrics of {run_id} (CSV)", labels[1], f"pruned model of {run_id} (ONNX)",
                      f"report of {run_id} (HTML)"]
    assert labels[1].startswith(f"pruned model of {run_id} (") and labels[1].endswith(" MB)")
    psi = json.loads(_figures(at)[0])
    assert [sh["x0"] for sh in psi["layout"]["shapes"]] == [s["t_star"], 0]      # t*, then the threshold line
    assert psi["layout"]["shapes"][1]["y0"] == 0.999


def test_bad_run_id_never_reaches_the_file_system(filled_root):
    root, run_id = filled_root
    at = _page("stability", "../../etc")
    assert not at.exception and at.info                       # treated as no run selected


def test_run_id_from_the_url_is_checked_against_the_listing(filled_root):
    root, run_id = filled_root
    shutil.copytree(root / run_id, root / "zz-copy")         # listed first (newest id first)
    (root.parent / "outside").mkdir()
    for wanted in ("../outside", "..", "/etc", run_id + "/../../outside"):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.query_params["run"] = wanted
        at.run()
        assert not at.exception, wanted
        assert at.session_state["run_id"] == "zz-copy"        # an unknown id falls back to the first listed run
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    assert at.sidebar.selectbox[0].value == run_id and at.session_state["run_id"] == run_id


def test_live_controls_reach_the_run_and_every_session_shows_them(tmp_path, monkeypatch):
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    at = _page("runs")
    at.button(key="start_demo").click().run()
    run_id = at.session_state["run_id"]
    from osp_studio.control import manager                             # the same cached manager the pages use
    mgr = manager()
    try:
        assert mgr.controls(run_id) == dict(paused=False, threshold=0.999, auto_prune=True, prune_requested=False)
        first = _page("stability", run_id)
        assert not first.exception
        first.toggle(key=f"auto_prune_{run_id}").set_value(False).run()
        first.number_input(key=f"threshold_{run_id}").set_value(0.95).run()
        assert mgr.controls(run_id)["auto_prune"] is False and mgr.controls(run_id)["threshold"] == 0.95
        second = _page("stability", run_id)                        # another tab: shows the live settings
        assert second.toggle(key=f"auto_prune_{run_id}").value is False
        assert second.number_input(key=f"threshold_{run_id}").value == 0.95
        second.run()                                               # and redrawing it sends nothing back
        assert mgr.controls(run_id)["auto_prune"] is False and mgr.controls(run_id)["threshold"] == 0.95
    finally:
        mgr.delete(run_id)
    assert not (tmp_path / "runs" / run_id).exists()


def test_the_start_form_shows_the_chosen_presets_knobs(tmp_path, monkeypatch):
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    at = _page("runs")
    knobs = {n.label: n.value for n in at.number_input}
    assert knobs["Epochs"] == 24 and knobs["Regulariser start (sl_start)"] == 4          # the demo's recipe
    at.selectbox(key="start_preset").set_value("cifar10-resnet56").run()
    knobs = {n.label: n.value for n in at.number_input}
    assert knobs["Epochs"] == 300 and knobs["Reduction target (fraction)"] == 0.5
    assert knobs["Regulariser step (reg_delta)"] == get_preset("cifar10-resnet56").reg_delta
    assert at.text_input[0].value == get_preset("cifar10-resnet56").data_root
    at.text_input(key="knob_cifar10-resnet56_data_root").set_value(str(tmp_path / "no-cifar"))
    next(b for b in at.button if b.label == "Start").click().run()          # no data there: said, no run made
    assert not at.exception and len(at.error) == 1
    assert at.error[0].value.startswith("Could not start: cifar10 not found under") and "no\\-cifar" in at.error[0].value
    form = at.expander[0]                                   # beside the form, which stays open with the values
    assert form.proto.expanded and [e.value for e in form.error] == [at.error[0].value]
    assert at.text_input(key="knob_cifar10-resnet56_data_root").value == str(tmp_path / "no-cifar")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_failed_stale_and_elsewhere_runs_on_the_runs_page(filled_root):
    from osp_engine.method.config import apply_overrides
    from osp_engine.running.run import Run
    from osp_engine.storage.store import RunStore

    root, run_id = filled_root
    failed = Run(apply_overrides(get_preset("demo"), ["epochs=4", "sl_start=1", "sl_end=1", "lr=1e30"]), root)
    assert failed.execute() == "failed"
    for name, beat in (("zz-stale", 0.0), ("zz-elsewhere", time.time())):  # as a crashed / a live CLI writer leaves it
        shutil.copytree(root / run_id, root / name)
        store = RunStore(root / name)
        store.update_run(status="running", heartbeat=beat, ended=None)
        store.close()
    at = _page("runs", run_id)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Failed: NonFiniteLoss")
    assert any("No heartbeat for over a minute" in w.value for w in at.warning)
    status = [m.value for m in at.metric if m.label == "Status"]
    assert sorted(status) == ["failed", "finished", "running", "stale"]
    assert at.button(key="delete_zz-elsewhere").disabled and not at.button(key="delete_zz-stale").disabled
    assert not any(b.key == "cancel_zz-stale" for b in at.button)       # nobody left to steer
    at.button(key="cancel_zz-elsewhere").click().run()                  # asks first
    store = RunStore(root / "zz-elsewhere")
    assert store.take_commands() == [] and any(w.value.startswith("Cancel zz-elsewhere?") for w in at.warning)
    store.close()
    at.button(key="yes_cancel_zz-elsewhere").click().run()              # steered through its run.db
    store = RunStore(root / "zz-elsewhere")
    assert store.take_commands() == [("cancel", [])] and store.take_commands() == []
    store.close()
    at = _page("stability", failed.run_id)                     # failed in its first epoch: nothing to plot
    assert not at.exception and f"{failed.run_id}** · failed" in at.markdown[0].value
    assert at.info[0].value == "The run ended (failed) before its first epoch."
    assert "searched no sub-network" in _page("channels", failed.run_id).info[0].value


def test_open_moves_the_sidebar_pick_and_the_url(filled_root):
    root, run_id = filled_root
    shutil.copytree(root / run_id, root / "zz-copy")         # listed first, so picked first
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert at.sidebar.selectbox[0].value == "zz-copy" and at.button(key="open_zz-copy").disabled
    at.button(key=f"open_{run_id}").click().run()
    assert at.sidebar.selectbox[0].value == run_id and at.session_state["run_id"] == run_id
    assert at.query_params["run"] == run_id
    assert at.button(key=f"open_{run_id}").disabled and not at.button(key="open_zz-copy").disabled
    at.sidebar.selectbox[0].set_value("zz-copy").run()        # and the picker moves it back
    assert at.session_state["run_id"] == "zz-copy" and at.button(key="open_zz-copy").disabled


MOVING = """import streamlit as st
from osp_studio import runs, stability
{"runs": runs, "stability": stability}[st.session_state.get("page", "runs")].render()
"""


def test_a_click_followed_at_once_by_a_page_change_still_acts(tmp_path, monkeypatch):
    """A user clicks, then a page link before Streamlit has rerun: the rerun lands on the other page.

    The start (demo button or form) and Prune now must still happen; `page` in session state stands
    for the page link, so the click's rerun draws the other page.
    """
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    from osp_studio.control import manager
    mgr = manager()
    at = AppTest.from_string(MOVING, default_timeout=60).run()
    at.button(key="start_demo").click()
    at.session_state["page"] = "stability"
    at.run()
    demo = at.session_state["run_id"]
    try:
        assert not at.exception and at.title[0].value == "Stability"
        assert [r.run_id for r in mgr.list()] == [demo]
        mgr.command(demo, "cancel")
        deadline = time.time() + 120                # one run trains per device: the next one waits for it
        while mgr.owned(demo) is not None and time.time() < deadline:
            time.sleep(0.05)
        at.session_state["page"] = "runs"
        at.run()
        at.number_input(key="knob_demo_sl_start").set_value(12)
        next(b for b in at.button if b.label == "Start").click()
        at.session_state["page"] = "stability"
        at.run()
        run_id = at.session_state["run_id"]
        assert run_id != demo and {r.run_id for r in mgr.list()} == {demo, run_id}
        assert mgr.reader(run_id).info()["config"]["sl_start"] == 12
        mgr.command(run_id, "pause")                               # stays unpruned however slow this machine is
        at.run()
        at.button(key="prune_now").click()
        at.session_state["page"] = "runs"
        at.run()
        assert not at.exception and mgr.controls(run_id)["prune_requested"] is True
    finally:
        for r in mgr.list():
            mgr.delete(r.run_id)


def test_every_page_says_which_variant_a_run_used(filled_root):
    """The run card, the Stability header and Compare name the variant; Compare keeps an official and a
    corrected run of the same seed apart (solid against dotted)."""
    from osp_engine.method.config import apply_overrides
    from osp_engine.running.run import Run

    root, run_id = filled_root
    corrected = Run(apply_overrides(get_preset("demo"), ["epochs=6", "sl_start=1", "sl_end=3", "variant=corrected"]),
                    root)
    assert corrected.execute() == "finished"
    at = _page("runs", run_id)
    cards = [m.value for m in at.markdown if "digits\\-resnet8" in m.value]     # escaped: plain text
    assert sorted(c.split("**")[1].split(" · ")[-1] for c in cards) == ["corrected", "official"]
    assert all(" · digits · target 50 % · " in c for c in cards)
    at = _page("stability", corrected.run_id)
    assert at.caption[1].value.startswith("variant **corrected** — fixes the official code's known quirks")
    at = _page("compare", run_id)
    at.multiselect(key="compare_runs").set_value([run_id, corrected.run_id]).run()
    assert not at.exception
    assert dict(zip(at.dataframe[0].value["run"], at.dataframe[0].value["variant"])) == {
        run_id: "official", corrected.run_id: "corrected"}
    psi = json.loads(_figures(at)[0])["data"]
    from osp_engine.charts.figures import RUN_COLOURS
    assert {t["name"]: (t["line"]["dash"], t["line"]["color"]) for t in psi} == {
        f"{run_id[-9:]} (official)": ("solid", RUN_COLOURS[0]),
        f"{corrected.run_id[-9:]} (corrected)": ("dot", RUN_COLOURS[1])}


def test_the_start_form_starts_the_chosen_variant(tmp_path, monkeypatch):
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    from osp_studio.control import manager
    mgr = manager()
    at = _page("runs")
    assert at.selectbox(key="knob_demo_variant").value == "official"          # every preset's default
    at.selectbox(key="knob_demo_variant").set_value("corrected")
    next(b for b in at.button if b.label == "Start").click().run()
    (run,) = mgr.list()
    try:
        assert not at.exception and not at.error and run.info()["config"]["variant"] == "corrected"
    finally:
        mgr.command(run.run_id, "cancel")
        for r in mgr.list():
            mgr.delete(r.run_id)


def test_damaged_run_folders_never_take_a_page_down(filled_root):
    """A corrupt, an empty and a row-less run.db, and a folder name no run id can have, beside a good run."""
    import sqlite3
    import subprocess
    import sys

    root, run_id = filled_root
    for name in ("zz-corrupt", "zz-empty", "zz-rowless", "bad name!"):
        shutil.copytree(root / run_id, root / name)
    (root / "zz-corrupt" / "run.db").write_bytes(b"this is not a database" * 100)
    (root / "zz-empty" / "run.db").write_bytes(b"")
    con = sqlite3.connect(root / "zz-rowless" / "run.db")
    con.execute("DELETE FROM run")
    con.commit()
    con.close()
    for name in PAGES:
        at = _page(name, run_id)
        assert not at.exception, name
    at = _page("runs", run_id)
    texts = [t.value for t in at.text]
    for name in ("zz-corrupt", "zz-empty", "zz-rowless", "bad name!"):
        assert any(t.startswith(f"{name}\nunreadable: ") for t in texts), name
    assert any("file is not a database" in t for t in texts)
    assert not any(b.key == "delete_bad name!" for b in at.button)      # no path can be built from that name
    env = {**__import__("os").environ, "OSP_RUNS_DIR": str(root)}
    out = subprocess.run([sys.executable, "-m", "osp_engine", "list"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0 and run_id in out.stdout and out.stdout.count("unreadable: ") == 4
    shown = subprocess.run([sys.executable, "-m", "osp_engine", "show", "zz-rowless"], capture_output=True, text=True,
                           env=env, cwd=ROOT)
    assert shown.returncode == 2 and shown.stderr.count("\n") == 1 and "unreadable: run.db is damaged" in shown.stderr
    by_id = subprocess.run([sys.executable, "-m", "osp_engine", "show", run_id, "--json"], capture_output=True,
                           text=True, env=env, cwd=ROOT)
    assert by_id.returncode == 0 and json.loads(by_id.stdout)["run_id"] == run_id


def test_resume_button_continues_a_cancelled_run_to_the_end(tmp_path, monkeypatch):
    from osp_engine.method.config import apply_overrides
    from osp_engine.running.manager import RunManager
    from osp_engine.running.run import Run

    root = tmp_path / "runs"
    run = Run(apply_overrides(get_preset("demo"), ["epochs=8", "sl_start=1", "sl_end=5"]), root)
    real, calls = run._between_batches, [0]

    def cancel_in_epoch_two(store):                      # 24 training batches per epoch, then evaluation
        calls[0] += 1
        if calls[0] == 2 * 30 + 3:
            run.commands.cancel()
        real(store)
    run._between_batches = cancel_in_epoch_two
    assert run.execute() == "cancelled" and RunReader(run.dir).last_epoch() == 1
    assert RunManager(root).resumable(run.run_id)
    monkeypatch.setenv("OSP_RUNS_DIR", str(root))
    monkeypatch.chdir(ROOT)
    at = _page("runs", run.run_id)
    at.button(key=f"resume_{run.run_id}").click().run()
    assert not at.exception
    reader = RunReader(run.dir)
    deadline = time.time() + 240
    while time.time() < deadline and reader.info()["status"] != "finished":
        time.sleep(0.3)
    s = reader.summary()
    assert s["status"] == "finished" and s["epochs"] == 8 and s["t_star"] is not None
    assert [e["kind"] for e in reader.events()].count("resume") == 1
    assert not RunManager(root).resumable(run.run_id)    # finished and exported: nothing left to resume


def test_text_from_a_run_db_is_shown_as_plain_text(filled_root):
    """A crafted run.db (a model name with an image and a link, an error with HTML) draws no link or image."""
    from osp_engine.storage.store import RunStore

    root, run_id = filled_root
    shutil.copytree(root / run_id, root / "zz-crafted")
    store = RunStore(root / "zz-crafted")
    cfg = RunReader(root / "zz-crafted").info()["config"]
    cfg["model"] = "![x](http://example.invalid/x.png) [click](http://example.invalid)"
    store.update_run(config=json.dumps(cfg), status="failed", error="<img src=http://example.invalid/y.png> boom",
                     phase="**bold**")
    store.con.execute("UPDATE groups SET name = '<a href=\"http://example.invalid\">x</a>' WHERE gid = 0")
    store.con.commit()                                   # a layer name with a link: drawn as text in charts
    store.close()
    at = _page("runs", "zz-crafted")
    assert not at.exception
    card = next(m.value for m in at.markdown if "  \nzz-crafted" in m.value)
    assert "\\!\\[x\\]\\(http\\:" in card and "](http" not in card
    assert any(e.value.startswith("Failed: \\<img src=http\\://") for e in at.error)
    at = _page("stability", "zz-crafted")
    assert not at.exception and "phase **\\*\\*bold\\*\\***" in at.markdown[0].value
    at = _page("channels", "zz-crafted")
    ticks = json.loads(_figures(at)[0])["data"][0]["y"]
    assert not at.exception and ticks[0].startswith('0 &lt;a href="http://example.invalid"&gt;x&lt;/a&gt; (')


def test_replay_moves_every_page_to_the_chosen_epoch(filled_root):
    """The sidebar's replay slider on a finished run: every page shows the run as it stood at epoch 5,
    before its prune (t* is later), and the slider's value is the epoch every page stops at."""
    root, run_id = filled_root
    t_star = RunReader(root / run_id).info()["t_star"]
    assert t_star > 5
    at = AppTest.from_string("from osp_studio.replay import sidebar_replay\nsidebar_replay()\n", default_timeout=60)
    at.session_state["run_id"] = run_id
    at.run()
    at.toggle(key="replay_on").set_value(True).run()
    at.slider(key=f"replay_{run_id}").set_value(5).run()
    assert at.session_state["replay"] == (run_id, 5)

    def page(name):
        at = AppTest.from_string(f"from osp_studio.{name} import render\nrender()\n", default_timeout=60)
        at.session_state["run_id"] = run_id
        at.session_state["replay"] = (run_id, 5)
        return at.run()

    stab = page("stability")
    fig = json.loads(_figures(stab)[0])
    assert not stab.exception and "replay at epoch 5 of finished" in stab.markdown[0].value
    assert _array(fig["data"][0]["x"]).max() == 5
    assert not any(str(t.get("name", "")).startswith("t* =") for t in fig["data"])      # not pruned yet at 5
    chan = page("channels")
    assert not chan.exception and _array(json.loads(_figures(chan)[0])["data"][0]["x"]).max() == 5
    trade = page("tradeoff")
    (run,) = [t for t in json.loads(_figures(trade)[0])["data"] if t["name"].startswith(run_id[-9:])]
    assert len(_array(run["x"])) == 1                          # the dense model only: the prune comes later
    comp = page("compare")
    assert not comp.exception and _array(json.loads(_figures(comp)[0])["data"][0]["x"]).max() == 5


def test_many_runs_fold_into_a_compact_table(filled_root):
    root, run_id = filled_root
    for i in range(6):
        shutil.copytree(root / run_id, root / f"{run_id[:-4]}c0p{i}")
    at = _page("runs", run_id)
    assert not at.exception and at.toggle(key="runs_compact").value is True        # seven runs: the table
    table = at.dataframe[0].value
    s = RunReader(root / run_id).summary()
    row = table[table["run"] == run_id].iloc[0]
    assert len(table) == 7 and row["t*"] == s["t_star"] and row["target (%)"] == 50.0
    assert row["FLOPs removed (%)"] == round(100 * s["flops_reduction"], 1) and row["epochs"] == "16/16"
    assert not any(b.label == "Delete" for b in at.button)
    at.toggle(key="runs_compact").set_value(False).run()
    assert sum(b.label == "Delete" for b in at.button) == 7


def test_a_start_that_fails_in_the_background_says_why_on_the_runs_page(tmp_path, monkeypatch):
    """A tracker that cannot start fails the run in its thread, after the click: the Runs page says why
    (not only the server's stderr), the half-begun folder is gone, and Dismiss clears the message."""
    from conftest import wait_until
    from osp_engine.method.config import apply_overrides
    from osp_studio.control import manager
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    (tmp_path / "not-a-folder").write_text("a file where TensorBoard's folder should go")
    cfg = apply_overrides(get_preset("demo"), ["log_to=tensorboard", f"log_dir={tmp_path / 'not-a-folder'}",
                                               "threads=1"])
    mgr = manager()
    run_id = mgr.start(cfg)
    wait_until(lambda: mgr.failures(), 120)
    at = _page("runs")
    assert not at.exception
    (message,) = [e.value for e in at.error]
    assert message.startswith("The start of ") and run_id.replace("-", "\\-") in message
    assert "log\\_to=tensorboard" in message and "the tracker could not start" in message
    assert not (tmp_path / "runs" / run_id).exists()
    at.button(key=next(b.key for b in at.button if b.key.startswith("dismiss_"))).click().run()
    assert not at.error and mgr.failures() == []
