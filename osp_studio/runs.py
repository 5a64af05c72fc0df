"""Runs: start a run from a preset, see every run's progress, and steer or delete them."""
import dataclasses

import pandas as pd

import streamlit as st

from osp_engine import ConfigError, get_preset
from osp_engine.interfaces.presets import DESCRIPTIONS, PRESETS
from osp_engine.method.config import COSTS, VARIANTS
from osp_engine.method.config import Config
from osp_engine.running.manager import Failure
from osp_engine.running.branch import branch_epochs, checkpoints_bytes, epoch_label
from osp_engine.storage.metric import summary_metric
from osp_engine.storage.reader import RunReader
from osp_engine.storage.writer_lock import describe
from osp_studio.control import manager, may_steer, send, steering
from osp_studio.layout import empty_state, header
from osp_studio.routing import refresh_picker, select_run, selected_run
from osp_studio.text import flops_ratio, fmt_pct, percent, plain, seconds_per_epoch


@steering
def start(cfg: Config) -> None:
    """Start `cfg` in the background and pick it; a bad config is shown, not raised.

    A button callback: Streamlit runs it before the next script run whatever page that run shows (an
    `if st.button(...)` body is skipped when the rerun lands on another page). Every st.* call in it,
    session state included, is a point where a rerun asked for meanwhile (a page link clicked right
    after the button) cuts it short without a word, so the run starts before the first such call.
    """
    try:
        run_id = manager().start(cfg)
    except ConfigError as e:                 # shown beside the form, which stays open with the values
        st.session_state["start_error"] = str(e)
        return
    st.session_state.pop("start_error", None)
    if run_id in [q[0] for q in manager().queued()]:
        st.toast(f"Queued {run_id}: it starts when the run training on its device ends")
        return
    select_run(run_id)
    st.toast(f"Started {run_id}")


KNOBS = ("target", "epochs", "threshold", "sl_start", "sl_end", "reg_delta", "data_root", "device", "variant", "cost",
         "distill")


@steering
def start_knobs(name: str) -> None:
    """The start form's callback: the preset `name` with the knobs as submitted."""
    k = {f: st.session_state[f"knob_{name}_{f}"] for f in KNOBS}
    start(dataclasses.replace(get_preset(name), target=float(k["target"]), epochs=int(k["epochs"]),
                              threshold=float(k["threshold"]), sl_start=int(k["sl_start"]), sl_end=int(k["sl_end"]),
                              reg_delta=float(k["reg_delta"]), data_root=k["data_root"], device=k["device"],
                              variant=k["variant"], cost=k["cost"], distill=float(k["distill"])))


def start_form() -> None:
    """The preset and its main knobs; the preset sits outside the form so the knobs show its values.

    The knobs' keys carry the preset's name: picking another preset draws fresh widgets at its values.
    """
    error = st.session_state.get("start_error")
    with st.expander("Start a run from a preset", expanded=error is not None):
        name = st.selectbox("Preset", list(PRESETS), format_func=lambda n: f"{n} — {DESCRIPTIONS.get(n, '')}",
                            key="start_preset")
        base = get_preset(name)
        key = {f: f"knob_{name}_{f}" for f in KNOBS}
        with st.form("start_form"):
            c1, c2, c3 = st.columns(3)
            c1.number_input("Reduction target (fraction)", 0.05, 0.95, float(base.target), 0.05, key=key["target"])
            c2.number_input("Epochs", 1, 1000, int(base.epochs), key=key["epochs"])
            c3.number_input("Stability threshold", 0.5, 1.0, float(base.threshold), 0.001, format="%.3f",
                            key=key["threshold"])
            c4, c5, c6 = st.columns(3)
            c4.number_input("Regulariser start (sl_start)", 0, 1000, int(base.sl_start), key=key["sl_start"])
            c5.number_input("Forced prune after (sl_end)", 0, 1000, int(base.sl_end), key=key["sl_end"])
            c6.number_input("Regulariser step (reg_delta)", 0.0, 1.0, float(base.reg_delta), format="%.5f",
                            key=key["reg_delta"])
            c7, c8, c9 = st.columns([2, 1, 1])
            c7.text_input("Dataset root (CIFAR / ImageNet)", base.data_root, key=key["data_root"])
            devices = ["auto", "cpu", "cuda"]
            c8.selectbox("Device", devices, index=devices.index(base.device), key=key["device"])
            c9.selectbox("Variant", VARIANTS, index=VARIANTS.index(base.variant), key=key["variant"],
                         help="official: the official code exactly, quirks included; corrected: the quirks fixed")
            c10, c11, _ = st.columns(3)
            c10.selectbox("The target removes", COSTS, index=COSTS.index(base.cost), key=key["cost"],
                          help="flops: the paper's; latency: the latency measured on ONNX Runtime when the run "
                               "starts (docs/method.md, 'Latency as the cost')")
            c11.number_input("Distillation after the prune (distill)", 0.0, 0.95, float(base.distill), 0.1,
                             key=key["distill"], help="0: off; alpha > 0: the dense network at the prune teaches "
                                                      "the fine-tuning (docs/method.md, 'Distillation')")
            st.form_submit_button("Start", on_click=start_knobs, args=(name,))
            if error:
                st.error(f"Could not start: {plain(error)}")


@steering
def ask_delete(run_id: str) -> None:
    st.session_state["confirm_delete"] = run_id


@steering
def delete(run_id: str) -> None:
    st.session_state.pop("confirm_delete", None)
    try:
        manager().delete(run_id)
    except ConfigError as e:                 # another process writes it (RunHeld)
        st.error(f"Could not delete: {plain(str(e))}")
        return
    if selected_run() == run_id:
        select_run(None)


@steering
def resume(run_id: str) -> None:
    """The Resume button's callback: the run continues in the background from its last epoch."""
    try:
        manager().resume(run_id)
    except ConfigError as e:
        st.error(f"Could not resume: {e}")
        return
    select_run(run_id)
    st.toast(f"Resumed {run_id}")


def keep() -> None:
    st.session_state.pop("confirm_delete", None)


def card_title(s: dict) -> str:
    """'digits-resnet8 · digits · target 50 % · official': what the run is, from its config."""
    target = "dense baseline" if s.get("baseline") else f"target {100 * (s['target_flops_reduction'] or 0):g} %"
    return " · ".join(plain(v) for v in (s["model"], s["dataset"], target, s["variant"]))


def progress_text(s: dict, per: float | None) -> str:
    """'12 of 24 epochs done · 0.41 s/epoch · about 5 s left · best accuracy 97.20 %' (the run's own
    metric: 'best mAP50-95 41.30 %' for a detector); per: s/epoch."""
    done, total = s["epochs"], s["total_epochs"] or 0
    parts = [f"{done} of {total} epochs done"]
    if per is not None:
        parts.append(f"{per:.2f} s/epoch")
        if s["status"] == "running" and total > done:
            parts.append(f"about {per * (total - done):.0f} s left")
    if s["best_acc"] is not None:
        metric = summary_metric(s)
        parts.append(f"best {metric.name} {metric.format(s['best_acc'])}")
    return " · ".join(parts)


def speed_line(speed: dict, s: dict) -> str:
    """'exported model: 1.05x the dense speed at batch 1, 1.10x its throughput at batch 256 (cpu, PyTorch); in
    ONNX Runtime 1.31x and 1.42x; FLOPs 2.04x fewer: speed efficiency 0.51-0.70' (s: the run's summary)."""
    text = (f"exported model: {speed['latency_speedup']:.2f}x the dense speed at batch 1, "
            f"{speed['throughput_speedup']:.2f}x its throughput at batch {speed['batch']} ({speed['device']}, PyTorch)")
    ort = speed.get("onnxruntime")
    ups = [speed["latency_speedup"], speed["throughput_speedup"]]
    if ort:
        text += f"; in ONNX Runtime {ort['latency_speedup']:.2f}x and {ort['throughput_speedup']:.2f}x"
        ups += [ort["latency_speedup"], ort["throughput_speedup"]]
    ratio = flops_ratio(s)
    if ratio:
        text += (f"; FLOPs {ratio:.2f}x fewer: speed efficiency {min(ups) / ratio:.2f}-{max(ups) / ratio:.2f}")
    return text


def details(r: RunReader, s: dict) -> str:
    """A branch's parent and prune epoch, the world size of a distributed run, the exported model's
    measured speed-up, its trackers, the kept checkpoints and their disk use (markdown lines); s: r.summary()."""
    cfg = r.info()["config"]
    lines = []
    if cfg.get("parent"):
        lines.append(f"branch of {plain(cfg['parent'])}, pruned at epoch {epoch_label(cfg['branch_epoch'])}")
    if cfg.get("sweep"):
        lines.append(f"target sweep {plain(cfg['sweep'])}")
    speed, world = s["speed"], s["world_size"]
    if world > 1:
        lines.append(f"trained by {world} processes (torchrun, world size {world})")
    if (s["round_to"] or 0) > 1:
        lines.append(f"every group keeps a multiple of {s['round_to']} channels (round_to={s['round_to']})")
    if s["target_miss"]:
        lines.append(plain(s["target_miss"]["message"]))
    if s["rewind"]:
        lines.append(f"resumed from the kept checkpoint of epoch {s['rewind']['epoch']} "
                     f"({plain(s['rewind']['reason'])})")
    if s["kept_whole"]:
        lines.append(f"{len(s['kept_whole'])} groups kept whole (never pruned: see Channels)")
    if speed:
        lines.append(speed_line(speed, s))
    if s["cost"] == "latency":                       # the table's prediction against the measurement
        lines.append(plain(s["latency"]["message"]) if s["latency"] else
                     f"target: {100 * s['target_flops_reduction']:.0f} % of the predicted latency on "
                     f"{plain(cfg.get('latency_runtime', 'onnxruntime'))} (cost=latency); measured when the run ends")
    if s["distill"]:                                 # the fine-tuning's teacher, once the prune made it
        lines.append(plain(s["teacher"]["message"]) if s["teacher"] else
                     f"fine-tunes with distillation from the dense network at the prune (distill={s['distill']:g})")
    if cfg.get("log_to"):                            # where each tracker logs, or why it stopped
        lines += [plain(message) for message in r.trackers().values()]
    kept = branch_epochs(r.dir)
    if kept:
        lines.append(f"{len(kept)} checkpoints kept for branches · {checkpoints_bytes(r.dir) / 1e6:.1f} MB")
    return "".join(f"  \n{line}" for line in lines)


@steering
def ask_cancel(run_id: str) -> None:
    st.session_state["confirm_cancel"] = run_id


@steering
def cancel(run_id: str) -> None:
    send(run_id, "cancel")
    st.session_state.pop("confirm_cancel", None)


def run_card(r: RunReader) -> None:
    """One run: what it is, where it stands, how it ended, and the buttons that apply to it now."""
    mgr = manager()
    s, info = r.summary(), r.info()
    s["baseline"] = info["config"].get("baseline", False)
    live = mgr.controls(r.run_id)
    holder = info["holder"]                                               # the process writing it, if any
    elsewhere = mgr.owned(r.run_id) is None and s["status"] == "running"   # written by another live process
    with st.container(border=True):
        top = st.columns([5, 2, 2, 2, 2])
        top[0].markdown(f"**{card_title(s)}**  \n{r.run_id}" + ("  \nrunning in another process" if elsewhere else "")
                        + details(r, s))
        top[1].metric("Status", s["status"])
        if live and live["paused"]:
            top[1].caption("paused")
        top[2].metric("Pruned after epoch", "–" if s["t_star"] is None else str(s["t_star"]),
                      help=None if s["prune_reason"] is None else f"why: {s['prune_reason']}")
        top[3].metric("FLOPs removed", fmt_pct(s["flops_reduction"]))
        metric = summary_metric(s)
        top[4].metric(f"Final {metric.name}", metric.format(s["final_acc"]))
        st.progress(min(s["epochs"] / max(s["total_epochs"] or 1, 1), 1.0), text=progress_text(s, seconds_per_epoch(r, s["epochs"])))
        if s["status"] == "failed":
            st.error(f"Failed: {plain(s['error'])}")
        if s["status"] == "stale":
            st.warning("No heartbeat for over a minute: the process writing this run has stopped. "
                       "Every completed epoch is still readable.")
        b = st.columns(5)                    # every button acts in its callback: see start()
        picked = selected_run() == r.run_id
        b[0].button("Shown in the pages" if picked else "Show in the pages", key=f"open_{r.run_id}", disabled=picked,
                    on_click=select_run, args=(r.run_id,), help="the Stability, Channels and other pages follow this run")
        if may_steer():
            steering_buttons(r, b, live, holder, elsewhere)


def steering_buttons(r: RunReader, b: list, live: dict | None, holder: dict | None, elsewhere: bool) -> None:
    """Pause or Resume, Cancel, Delete and their confirmations: what only the presenter of a shared studio sees."""
    if live:
        b[1].button("Resume" if live["paused"] else "Pause", key=f"pause_{r.run_id}",
                    on_click=send, args=(r.run_id, "resume" if live["paused"] else "pause"))
        b[2].button("Cancel", key=f"cancel_{r.run_id}", on_click=ask_cancel, args=(r.run_id,))
    elif holder is not None:
        b[1].button("Resume", key=f"resume_{r.run_id}", disabled=True,
                    help=f"{plain(describe(holder, r.run_id))}: it cannot be resumed while that process runs")
    elif manager().resumable(r.run_id):
        b[1].button("Resume", key=f"resume_{r.run_id}", on_click=resume, args=(r.run_id,),
                    help="continue after the last completed epoch, as if it had never stopped")
    b[4].button("Delete", key=f"delete_{r.run_id}", disabled=elsewhere, on_click=ask_delete, args=(r.run_id,),
                help="a run another process is writing can be deleted once it ends" if elsewhere else None)
    if live and st.session_state.get("confirm_cancel") == r.run_id:
        st.warning(f"Cancel {r.run_id}? It stops at the next batch; every completed epoch is kept and Resume "
                   f"continues it later.")
        y, n = st.columns(2)
        y.button("Yes, cancel", key=f"yes_cancel_{r.run_id}", type="primary", on_click=cancel, args=(r.run_id,))
        n.button("Keep running", key=f"no_cancel_{r.run_id}", on_click=st.session_state.pop,
                 args=("confirm_cancel", None))
    if st.session_state.get("confirm_delete") == r.run_id:
        st.warning(f"Delete {r.run_id} and all its files?")
        y, n = st.columns(2)
        y.button("Yes, delete", key=f"yes_{r.run_id}", type="primary", on_click=delete, args=(r.run_id,))
        n.button("Keep it", key=f"no_{r.run_id}", on_click=keep)


def unreadable_card(run_id: str, problem: str) -> None:
    """A run folder that cannot be read: its reason as plain text, and Delete where the name allows it."""
    with st.container(border=True):
        st.text(f"{run_id}\nunreadable: {problem}")
        if problem != "its folder name is not a run id" and may_steer():
            st.button("Delete", key=f"delete_{run_id}", on_click=ask_delete, args=(run_id,))
            if st.session_state.get("confirm_delete") == run_id:
                y, n = st.columns(2)
                y.button("Yes, delete", key=f"yes_{run_id}", type="primary", on_click=delete, args=(run_id,))
                n.button("Keep it", key=f"no_{run_id}", on_click=keep)


def queued_card(run_id: str, device: str, ahead: int) -> None:
    """A run waiting for its device: one at a time trains per device, the others wait here in order."""
    with st.container(border=True):
        st.text(f"{run_id}\nqueued for {device}: starts when " +
                ("the run training there ends" if ahead == 0 else f"{ahead + 1} runs ahead of it have ended"))
        if may_steer():
            st.button("Cancel", key=f"unqueue_{run_id}", on_click=steering(manager().cancel_queued), args=(run_id,))


def table_row(r: RunReader) -> dict:
    """One line of the compact view: what the run is and how it stands, in percent and seconds."""
    s = r.summary()
    per = seconds_per_epoch(r, s["epochs"])
    return {"run": r.run_id, "model": s["model"], "dataset": s["dataset"],
            "target (%)": percent(s["target_flops_reduction"]), "variant": s["variant"], "status": s["status"],
            "epochs": f"{s['epochs']}/{s['total_epochs']}", "t*": s["t_star"],
            "FLOPs removed (%)": percent(s["flops_reduction"]), "final": s["final_acc"],
            "metric": summary_metric(s).label(),
            "s/epoch": None if per is None else round(per, 2), "branch of": r.info()["config"].get("parent") or None}


def with_branches(readers: list[RunReader]) -> list[RunReader]:
    """Newest first, each run followed by its branches in prune-epoch order (a branch whose parent is
    gone keeps its own place)."""
    configs = {r.run_id: r.info()["config"] for r in readers}
    children: dict[str, list[RunReader]] = {}
    for r in readers:
        parent = configs[r.run_id].get("parent")
        if parent in configs:
            children.setdefault(parent, []).append(r)
    out = []
    for r in readers:
        if configs[r.run_id].get("parent") not in configs:
            out.append(r)
            out += sorted(children.get(r.run_id, []), key=lambda b: configs[b.run_id]["branch_epoch"])
    return out


def failure_card(failure: Failure) -> None:
    """A start, resume or branch that failed in the background before its run could record why."""
    what = {"start": "The start", "resume": "The resume", "branch": "The branch"}[failure.what]
    c1, c2 = st.columns([6, 1])
    c1.error(f"{what} of {plain(failure.run_id)} failed: {plain(failure.reason)}", icon="⚠️")
    if may_steer():
        c2.button("Dismiss", key=f"dismiss_{failure.run_id}_{failure.at}", on_click=steering(manager().dismiss),
                  args=(failure,))


@st.fragment(run_every=2)
def run_table() -> None:
    for failure in manager().failures():
        failure_card(failure)
    for run_id, device, ahead in manager().queued():
        queued_card(run_id, device, ahead)
    readable, unreadable = manager().runs()
    readable = with_branches(readable)
    for run_id, problem in unreadable:
        unreadable_card(run_id, problem)
    if st.session_state.get("runs_compact", len(readable) > 6):
        st.dataframe(pd.DataFrame([table_row(r) for r in readable]), hide_index=True, key="runs_compact_table")
        st.caption("Pick a run in the sidebar to open it; switch the table off for its buttons.")
    else:
        for r in readable:
            run_card(r)
    refresh_picker()                        # Open or Delete acted inside this fragment


def render() -> None:
    header("Runs", "Each run trains a network from scratch, searches its pruned sub-network every epoch and prunes "
           "it when the sub-network stops changing. Start the demo to watch the whole cycle on the bundled digits "
           "(4-11 s of training on 2 CPU cores); the other pages follow the run picked in the sidebar.")
    if may_steer():
        st.button("▶ Start the demo run", type="primary", key="start_demo", on_click=start, args=(get_preset("demo"),),
                  help="digits, 24 epochs, CPU: the whole one-cycle pruning in 4-11 s of training on 2 cores")
        start_form()
    readable = manager().runs()
    if manager().queued() == [] and readable == ([], []) and not manager().failures():
        empty_state("No runs yet. Press **Start the demo run** above: it needs no download and no GPU.")
        return
    st.toggle("Compact table", key="runs_compact", value=len(readable[0]) > 6,
              help="one line per run; on by default from seven runs")
    run_table()
