"""The command line: presets, a run, show --json, export, and one-line errors with exit 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from osp_engine.interfaces.cli import main

ROOT = Path(__file__).resolve().parents[1]


def here(capsys, *args) -> tuple[int, str, str]:
    """The command line called in this process (no interpreter start: about 3 s less a call): its exit
    code, stdout and stderr. The subprocess `cli` is for what needs a process of its own."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cli(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", "osp_engine", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, **(env or {})})


def test_presets_lists_every_recipe():
    out = cli("presets").stdout
    for name in ["demo", "cifar10-resnet56", "cifar10-resnet32", "cifar10-resnet110", "cifar10-vgg16",
                 "cifar100-vgg19", "cifar10-mobilenetv2", "imagenet-resnet18", "imagenet-resnet50"]:
        assert name in out


def test_run_show_list_export(tmp_path):
    runs = tmp_path / "runs"
    res = cli("run", "--preset", "demo", "--runs-dir", str(runs), "--set", "epochs=12", "--set", "sl_start=2",
              "--set", "sl_end=8", "--set", "reg=0.02", "--set", "reg_delta=0.02")
    assert res.returncode == 0, res.stderr
    lines = [l for l in res.stdout.splitlines() if l.startswith("epoch ")]
    assert [l.split(" of ")[0] for l in lines] == [f"epoch {e:>3}" for e in range(12)]     # from 0, as stored
    assert all(" of 0-11 " in l for l in lines) and "PSI" in res.stdout and "finished: t* =" in res.stdout
    (finished,) = [l for l in res.stdout.splitlines() if l.startswith("finished: t* =")]
    assert finished.endswith("variant official")
    (run_dir,) = runs.iterdir()
    shown = json.loads(cli("show", str(run_dir), "--json").stdout)
    for key in ["status", "t_star", "prune_reason", "target_flops_reduction", "flops_reduction", "params_reduction",
                "dense_acc_at_prune", "best_acc", "final_acc", "psi", "epochs", "wall_seconds"]:
        assert key in shown
    assert shown["status"] == "finished" and shown["epochs"] == 12 and len(shown["psi"]) == 12
    assert shown["variant"] == "official"
    assert shown["prune_reason"] in ("stable", "sl_end") and abs(shown["flops_reduction"] - 0.5) < 0.005
    assert run_dir.name in cli("list", "--runs-dir", str(runs)).stdout
    out = tmp_path / "pruned.pt"
    assert cli("export", str(run_dir), "--out", str(out)).returncode == 0 and out.stat().st_size > 0


BAD = [
    (["run", "--preset", "nope"], "unknown preset"),
    (["run", "--set", "model=resnet9000"], "unknown model"),
    (["run", "--set", "dataset=mnist"], "unknown dataset"),
    (["run", "--set", "target=0"], "target"),
    (["run", "--set", "target=0.96"], "target"),
    (["run", "--set", "threshold=1.5"], "threshold"),
    (["run", "--set", "eb_threshold=0"], "eb_threshold"),
    (["run", "--set", "epochs=0"], "epochs"),
    (["run", "--set", "epochs=-3"], "epochs"),
    (["run", "--set", "sl_start=10", "--set", "sl_end=5"], "before sl_start"),
    (["run", "--set", "batch_size=0"], "batch_size"),
    (["run", "--set", "epochs=18"], "set sl_end <= 15"),       # demo sl_end 16: the forced prune would end the run
    (["run", "--set", "epochs"], "malformed"),
    (["run", "--set", "epochs=ten"], "not a valid"),
    (["run", "--set", "colour=red"], "unknown setting"),
    (["run", "--set", "variant=paper"], "unknown variant 'paper'"),
    (["run", "--preset", "cifar10-resnet56"], "data_root"),
    (["run", "--preset", "cifar10-resnet56", "--set", "data_root=MISSING"], "missing cifar-10-batches-py"),
    (["run", "--preset", "imagenet-resnet18", "--set", "data_root=MISSING"], "train/ and val/"),
    (["show", "MISSING"], "not a run folder"),
]


@pytest.mark.parametrize("args,needle", BAD)
def test_bad_input_one_line_exit_2_no_folder(tmp_path, capsys, args, needle):
    runs = tmp_path / "runs"
    args = [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    if args[0] == "run":
        args = args + ["--runs-dir", str(runs)]
    code, _, err = here(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert not runs.exists() or not any(runs.iterdir())


def test_malformed_dataset_and_unusable_runs_folder(tmp_path, capsys):
    root = tmp_path / "cifar"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
              "batches.meta"]:
        (folder / f).write_bytes(b"not a pickle")
    runs = tmp_path / "runs"
    code, _, err = here(capsys, "run", "--preset", "cifar10-resnet56", "--set", f"data_root={root}", "--runs-dir", str(runs))
    assert code == 2 and "could not be read" in err and len(err.strip().splitlines()) == 1
    assert not any(runs.iterdir())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = here(capsys, "run", "--runs-dir", str(blocker / "runs"))
    assert code == 2 and "runs folder" in err


def test_the_studio_steers_a_command_line_run(tmp_path):
    """Prune now, sent by the studio's manager to a run another process writes, takes effect there."""
    import time

    from osp_engine.running.manager import RunManager
    from osp_engine.storage.reader import RunReader

    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "osp_engine", "run", "--runs-dir", str(runs), "--set", "epochs=14",
                             "--set", "sl_start=2", "--set", "sl_end=11"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    mgr = RunManager(runs)
    deadline = time.time() + 240
    while time.time() < deadline and not (mgr.list() and mgr.controls(mgr.list()[0].run_id)):
        time.sleep(0.2)                                    # wait for the run to publish its controls
    (reader,) = mgr.list()
    sent_after = reader.last_epoch()
    mgr.command(reader.run_id, "set_threshold", 0.95)
    mgr.command(reader.run_id, "prune_now")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    info = RunReader(reader.dir).info()
    assert info["prune_reason"] == "manual" and sent_after <= info["t_star"] <= 11 and info["threshold"] == 0.95
    kinds = [e["data"].get("command") for e in RunReader(reader.dir).events() if e["kind"] == "command"]
    assert kinds == ["threshold", "prune_now"]
    with pytest.raises(RuntimeError, match="is not running"):
        mgr.command(reader.run_id, "cancel")


def test_models_lists_every_torchvision_classifier_and_refusals_leave_no_folder(tmp_path, capsys):
    import torchvision

    _, out, _ = here(capsys, "models")
    for arch in torchvision.models.list_models(module=torchvision.models):
        assert f"tv-{arch} " in out
    assert "digits-resnet14" in out and "resnet56" in out
    runs = tmp_path / "runs"
    code, _, err = here(capsys, "run", "--runs-dir", str(runs), "--set", "model=tv-vit_b_16", "--set",
                        "dataset=synthetic-cifar10")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: tv-vit_b_16 on SYNTHETIC") and "vision transformers are not supported" in err
    code, _, err = here(capsys, "run", "--runs-dir", str(runs), "--set", "model=tv-resnet18")   # 3-channel net, 1-channel digits
    assert code == 2 and "tv-resnet18 takes 3-channel images and digits has one channel" in err
    code, _, err = here(capsys, "run", "--runs-dir", str(runs), "--set", "model=tv-alexnet", "--set",
                        "dataset=synthetic-cifar10")
    assert code == 2 and "cannot take 3x32x32 inputs" in err         # pooled down to nothing
    assert not runs.exists() or not any(runs.iterdir())
