"""`pip install .`: osp_engine importable from anywhere and the `osp` command, in a fresh virtual
environment (one that sees this machine's installed packages, so nothing is downloaded)."""
import shutil
import subprocess
import sys

from conftest import ROOT


def test_pip_install_gives_the_package_and_the_osp_command(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "osp_engine", src / "osp_engine", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python, osp = venv / "bin" / "python", venv / "bin" / "osp"
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-build-isolation",
                          str(src)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = subprocess.run([str(osp), "presets"], cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.splitlines()[0].startswith("demo ")
    res = subprocess.run([str(python), "-c", "import osp_engine; print(osp_engine.__file__, osp_engine.Config().variant)"],
                         cwd=elsewhere, capture_output=True, text=True, timeout=120)
    path, variant = res.stdout.split()
    assert path.startswith(str(venv)) and variant == "official"               # the installed copy, not the checkout
    res = subprocess.run([str(osp), "run", "--set", "epochs=0"], cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: epochs must be a positive number")
    short = [a for s in ("epochs=5", "sl_start=1", "sl_end=2", "speed_budget_s=0") for a in ("--set", s)]
    res = subprocess.run([str(osp), "run", "--preset", "demo", *short], cwd=elsewhere, capture_output=True, text=True,
                         timeout=300, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
    assert res.returncode == 0 and any(line.startswith("finished: t* = ") for line in res.stdout.splitlines()), \
        res.stderr[-2000:]
    (run_dir,) = list((elsewhere / "runs").iterdir())                          # runs/ of the folder it ran in
    assert res.stdout.startswith(f"run {run_dir.name} -> ")
