"""`osp studio`: the studio of an installed osp, started on this machine's loopback address.

The studio is the osp_studio package (installed with `pip install "osp[studio]"`); this module only
locates its entry script and hands it to Streamlit, without importing it: the engine imports nothing of
the studio. Streamlit's settings come as flags, not from a config file, so they hold whatever folder the
command runs in and whatever Streamlit version is installed; they are the checkout's
.streamlit/config.toml (tests/test_package.py keeps the two equal)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from ..method.config import ConfigError

# The checkout's .streamlit/config.toml, section.option -> value.
STREAMLIT_OPTIONS = {
    "server.address": "localhost",              # loopback alone: the studio allows control (osp_studio/control.py)
    "server.headless": True,
    "browser.gatherUsageStats": False,
    "theme.base": "light",
    "theme.primaryColor": "#2b6cb0",
    "runner.postScriptGC": False,
    "client.toolbarMode": "viewer",
}


def _flag(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def studio_argv(port: int | None, address: str | None) -> list[str]:
    """The command that serves the installed studio: `python -m streamlit run <osp_studio/app.py> --flags`.
    address None: loopback alone; any other address serves a room in shared mode."""
    spec = importlib.util.find_spec("osp_studio")
    if spec is None or spec.origin is None or importlib.util.find_spec("streamlit") is None:
        raise ConfigError('the studio is not installed: pip install "osp[studio]"')
    options = {**STREAMLIT_OPTIONS, **({"server.address": address} if address else {}),
               **({"server.port": port} if port else {})}
    script = Path(spec.origin).with_name("app.py")
    return [sys.executable, "-m", "streamlit", "run", str(script),
            *[arg for k, v in options.items() for arg in (f"--{k}", _flag(v))]]


def cmd_studio(args) -> int:
    """Replace this process with Streamlit's server (Ctrl-C stops it); runs go to --runs-dir or runs/."""
    argv = studio_argv(args.port, args.address)
    if args.runs_dir:
        os.environ["OSP_RUNS_DIR"] = str(Path(args.runs_dir).resolve())
    print(f"osp studio: runs in {os.environ.get('OSP_RUNS_DIR', 'runs/ of this folder')}", flush=True)
    os.execv(argv[0], argv)
    return 0                                         # not reached: execv does not return
