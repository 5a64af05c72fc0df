"""A studio shared with a room (OSP_SHARE=1, or a server beyond loopback), in AppTest: viewers see the
pages live and no control, forged callbacks change nothing, the presenter's session controls the runs;
shared mode fails closed (an unset address, OSP_SHARE=0)."""

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from osp_engine import get_preset
from osp_engine.method.config import apply_overrides

TOKEN = "room-42-token"
CONTROLS = {"Start the demo run", "Pause", "Resume", "Cancel", "Delete", "Unlock controls"}


@pytest.fixture()
def shared_root(filled_root, monkeypatch):
    monkeypatch.setenv("OSP_SHARE", "1")
    monkeypatch.setenv("OSP_PRESENTER_TOKEN", TOKEN)
    return filled_root


def _labels(at) -> set[str]:
    """Every button's label (form buttons included), the demo's arrow dropped."""
    return {b.label.lstrip("▶ ") for b in at.button} | {b.label for b in at.get("form_submit_button")}


def _app(run_id=None):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    if run_id:
        at.session_state["run_id"] = run_id
    return at


def _live_run():
    """A demo run trained by the studio's own manager, slow enough to be live while the test acts."""
    from osp_studio.control import manager
    cfg = apply_overrides(get_preset("demo"), ["epochs=400", "threads=1"])
    return manager(), manager().start(cfg)


def test_a_viewer_sees_the_pages_and_no_control(shared_root):
    root, run_id = shared_root
    at = _app().run()
    assert not at.exception
    assert _labels(at) & CONTROLS == {"Unlock controls"}                     # the presenter's form only
    assert [t.label for t in at.sidebar.text_input] == ["Presenter token"]
    for page in ("stability", "channels", "tradeoff", "compare", "branches"):
        view = AppTest.from_string(f"from osp_studio.{page} import render\nrender()\n", default_timeout=60)
        view.session_state["run_id"] = run_id
        view.run()
        assert not view.exception, page
        assert view.get("plotly_chart") or page == "branches", f"{page} draws no chart for a viewer"  # no branches yet
        labels = {b.label for b in view.button}
        assert not labels & {"✂ Prune now", "What if I had pruned here?"}, page
        assert not [e for e in view.get("form_submit_button") if e.label == "Start the sweep"], page


@pytest.fixture()
def server_address():
    """Set the address this process's Streamlit server would listen on (AppTest reads the same option)."""
    before = config.get_option("server.address")
    yield lambda address: config.set_option("server.address", address)
    config.set_option("server.address", before)


@pytest.mark.parametrize("address, share", [(None, ""), ("0.0.0.0", "0"), ("192.168.1.20", ""), ("::", "0")])
def test_a_studio_beyond_loopback_is_shared_whatever_osp_share_says(filled_root, monkeypatch, server_address,
                                                                     address, share):
    """None: no address set anywhere (Streamlit listens on every interface, as an old Streamlit started
    from another folder does); OSP_SHARE=0 cannot turn control on."""
    monkeypatch.setenv("OSP_SHARE", share)
    monkeypatch.setenv("OSP_PRESENTER_TOKEN", TOKEN)
    server_address(address)
    at = _app().run()
    assert not at.exception
    assert _labels(at) & CONTROLS == {"Unlock controls"}


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1", "::1", "[::1]"])
def test_a_studio_on_loopback_alone_is_local(filled_root, monkeypatch, server_address, address):
    monkeypatch.setenv("OSP_SHARE", "0")
    server_address(address)
    at = _app().run()
    assert not at.exception
    assert "Start the demo run" in _labels(at) and "Unlock controls" not in _labels(at)


def test_forged_callbacks_change_nothing_for_a_viewer(shared_root):
    root, run_id = shared_root
    mgr, live = _live_run()
    try:
        forged = AppTest.from_string(
            "from osp_engine import get_preset\nfrom osp_studio import runs, stability, whatif\n"
            f"runs.delete({run_id!r})\nruns.start(get_preset('demo'))\nruns.cancel({live!r})\n"
            f"stability.prune_now({live!r})\nwhatif.start_branches({run_id!r}, [2])\n"
            "import streamlit as st\nst.write(st.session_state.get('refused'))\n", default_timeout=60).run()
        assert not forged.exception
        assert (root / run_id).is_dir()                                         # not deleted
        assert sorted(p.name for p in root.iterdir()) == sorted([run_id, live])  # nothing started or branched
        assert mgr.controls(live) == dict(paused=False, threshold=0.999, auto_prune=True, prune_requested=False)
        assert mgr.owned(live) is not None and not mgr.owned(live).commands.cancelled
        assert "shared read-only" in forged.markdown[0].value
    finally:
        mgr.delete(live)


def test_the_presenter_unlocks_the_controls_and_steers_the_run(shared_root):
    root, run_id = shared_root
    mgr, live = _live_run()
    try:
        at = _app(live).run()
        at.sidebar.text_input[0].input("not-the-token")
        at.get("form_submit_button")[0].click().run()
        assert at.sidebar.error[0].value == "That is not the presenter token." and "Pause" not in _labels(at)
        at.sidebar.text_input[0].input(TOKEN)
        at.get("form_submit_button")[0].click().run()
        assert not at.exception and at.session_state["presenter"] is True
        assert {"Start the demo run", "Pause", "Cancel", "Delete"} <= _labels(at)
        assert at.sidebar.text_input == [] or at.sidebar.text_input[0].value in ("", None)   # the typed token is gone
        next(b for b in at.button if b.label == "Pause" and b.key == f"pause_{live}").click().run()
        assert mgr.controls(live)["paused"] is True
        other = _app(live).run()                                                # another session: still a viewer
        assert "Pause" not in _labels(other) and "Resume" not in _labels(other)
    finally:
        mgr.delete(live)


def test_a_viewer_downloads_a_report_or_onnx_model_only_once_built(shared_root):
    """Building costs the training cores: a viewer's Compare page offers the report and the ONNX model only
    after a session that may steer built them for the run as it is now."""
    from osp_engine.storage.reader import RunReader
    from osp_studio.builds import building
    root, run_id = shared_root
    page = "from osp_studio.compare import render\nrender()\n"

    def viewer():
        at = AppTest.from_string(page, default_timeout=60)
        at.session_state["run_id"] = run_id
        return at.run()

    at = viewer()
    assert not at.exception
    labels = [b.proto.label for b in at.get("download_button")]
    assert f"report of {run_id} (HTML)" not in labels and f"pruned model of {run_id} (ONNX)" not in labels
    assert any("built when the presenter downloads it" in c.value for c in at.caption)
    version = ("finished", len(RunReader(root / run_id).epochs()))
    assert building("report", run_id, version, lambda: b"<html>report</html>")() == b"<html>report</html>"
    labels = [b.proto.label for b in viewer().get("download_button")]
    assert f"report of {run_id} (HTML)" in labels and f"pruned model of {run_id} (ONNX)" not in labels
    assert building("report", run_id, version, lambda: b"never made again")() == b"<html>report</html>"
