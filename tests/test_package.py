"""`pip install ".[studio]"`: osp_engine and osp_studio importable from anywhere, and the `osp` command
(run, report, studio) from another folder, in a fresh virtual environment (one that sees this machine's
installed packages, so nothing is downloaded)."""
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request

from conftest import ROOT
from osp_engine.interfaces.studio import STREAMLIT_OPTIONS

APP_TEST = """import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=120).run()
assert not at.exception, at.exception
print(at.title[0].value if at.title else at.markdown[0].value)
"""


def test_pip_install_gives_the_package_and_the_osp_command(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for package in ("osp_engine", "osp_studio"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python, osp = venv / "bin" / "python", venv / "bin" / "osp"
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-build-isolation",
                          f"{src}[studio]"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = subprocess.run([str(osp), "presets"], cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.splitlines()[0].startswith("demo ")
    res = subprocess.run([str(python), "-c", "import osp_engine, osp_studio; "
                          "print(osp_engine.__file__, osp_studio.__file__, osp_engine.Config().variant)"],
                         cwd=elsewhere, capture_output=True, text=True, timeout=120)
    engine, studio, variant = res.stdout.split()
    assert engine.startswith(str(venv)) and studio.startswith(str(venv))   # the installed copies, not the checkout
    assert variant == "official"
    res = subprocess.run([str(osp), "run", "--set", "epochs=0"], cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: epochs must be a positive number")
    short = [a for s in ("epochs=5", "sl_start=1", "sl_end=2", "speed_budget_s=0") for a in ("--set", s)]
    res = subprocess.run([str(osp), "run", "--preset", "demo", *short], cwd=elsewhere, capture_output=True, text=True,
                         timeout=300, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
    assert res.returncode == 0 and any(line.startswith("finished: t* = ") for line in res.stdout.splitlines()), \
        res.stderr[-2000:]
    (run_dir,) = list((elsewhere / "runs").iterdir())                          # runs/ of the folder it ran in
    assert res.stdout.startswith(f"run {run_dir.name} -> ")
    res = subprocess.run([str(osp), "report", run_dir.name, "--out", "r.html"], cwd=elsewhere, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'id="osp-summary"' in (elsewhere / "r.html").read_text(encoding="utf-8")
    _studio_answers(venv, osp, elsewhere, run_dir)


def _studio_answers(venv, osp, elsewhere, run_dir):
    """`osp studio` serves the installed studio: its server answers, and its script, run in AppTest from
    the installed package, draws the Runs page without an error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(osp), "studio", "--port", str(port)], cwd=elsewhere, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline, answer = time.time() + 120, None
        while answer is None and time.time() < deadline and server.poll() is None:
            try:
                answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read()
            except OSError:
                time.sleep(0.3)
        assert answer == b"ok", server.stdout.read() if server.poll() is not None else "no answer in 120 s"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "<title>" in page
    finally:
        server.terminate()
        server.wait(30)
    app = next((venv / "lib").glob("python3*/site-packages/osp_studio/app.py"))
    res = subprocess.run([str(venv / "bin" / "python"), "-c", APP_TEST, str(app)], cwd=elsewhere, capture_output=True,
                         text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "OSP_WARM_UP": "0",
                                                      "HOME": str(elsewhere), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]


def test_osp_studio_has_the_settings_of_the_checkout():
    """`osp studio` passes Streamlit the checkout's .streamlit/config.toml as flags."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert STREAMLIT_OPTIONS == {f"{section}.{k}": v for section, table in config.items() for k, v in table.items()}
