"""The torch-free name catalog matches the registries that build things, and lets a bad run answer at once."""
import subprocess
import sys

import torchvision

from osp_engine.method.catalog import DATASET_NAMES, MODEL_NAMES, TORCHVISION_CLASSIFIERS
from osp_engine.running.data import DATASETS
from osp_engine.models import MODELS


def test_catalog_is_what_torchvision_lists():
    assert list(TORCHVISION_CLASSIFIERS) == list(torchvision.models.list_models(module=torchvision.models))


def test_registries_are_keyed_by_the_catalog():
    assert list(MODELS) == list(MODEL_NAMES)
    assert sorted(DATASETS) == sorted(DATASET_NAMES)


def test_a_bad_setting_is_refused_before_torch_loads(tmp_path):
    probe = ("import sys; from osp_engine.interfaces.cli import main; "
             f"rc = main(['run', '--preset', 'demo', '--runs-dir', {str(tmp_path)!r}, '--set', 'lr=nan']); "
             "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False"]
    assert "lr is nan" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_timm_module_is_classified_once():
    """An upgrade of timm that adds a model module fails here instead of hiding its models."""
    import importlib.util

    import pytest

    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed")
    from timm.models import _registry

    from osp_engine.method.catalog import TIMM_CNN_FAMILIES, TIMM_OTHER_FAMILIES

    assert not set(TIMM_CNN_FAMILIES) & set(TIMM_OTHER_FAMILIES)
    assert set(_registry._model_to_module.values()) == set(TIMM_CNN_FAMILIES) | set(TIMM_OTHER_FAMILIES)
