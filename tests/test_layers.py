"""The engine's layers (docs/engine.md): a module imports only from its own layer or earlier ones."""
import re

from conftest import ROOT

ORDER = {"method": 0, "models": 0, "storage": 1, "tracking": 2, "running": 3, "charts": 4, "interfaces": 5,
         "integrations": 6}


def _imports(path):
    """The engine packages a module imports from, relative or absolute."""
    text = path.read_text()
    return set(re.findall(r"^\s*from \.\.(\w+)", text, re.M)) | \
        set(re.findall(r"^\s*(?:from|import) osp_engine\.(\w+)", text, re.M))


def test_no_module_imports_from_a_later_layer():
    engine = ROOT / "osp_engine"
    upward = []
    for path in engine.rglob("*.py"):
        layer = path.relative_to(engine).parts[0]
        if layer not in ORDER:
            continue                                  # __init__.py and __main__.py: the package's doors
        upward += [f"{path.relative_to(ROOT)} -> {t}" for t in _imports(path) if ORDER.get(t, -1) > ORDER[layer]]
    assert upward == []
    assert {p.name for p in engine.iterdir() if p.suffix == ".py"} == {"__init__.py", "__main__.py"}


def test_the_engine_imports_nothing_of_the_studio():
    """osp report and the installed osp need no studio: the charts are the engine's (charts/)."""
    engine = ROOT / "osp_engine"
    found = [str(p.relative_to(ROOT)) for p in engine.rglob("*.py")
             if re.search(r"^\s*(?:from|import) (?:osp_studio|pages)\b", p.read_text(), re.M)]
    assert found == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from ..running.run import Run\nimport osp_engine.interfaces.cli\n")
    assert _imports(module) == {"running", "interfaces"}
