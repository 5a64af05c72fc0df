"""`python -m osp_engine` and the installed `osp` command: the command line of interfaces/cli.py with the
commands that live in later layers (`osp yolo`, integrations/yolo_command.py; Ultralytics is imported
only when it runs)."""
from .integrations.yolo_command import add_parser as _yolo
from .interfaces.cli import console as _console
from .interfaces.cli import main as _main

COMMANDS = (_yolo,)


def main(argv: list[str] | None = None) -> int:
    """The whole command line, as `osp` runs it; returns the exit code."""
    return _main(argv, COMMANDS)


def run() -> None:
    """The `osp` command (pyproject.toml): main(), then exit without the interpreter's teardown."""
    _console(COMMANDS)


if __name__ == "__main__":
    run()
