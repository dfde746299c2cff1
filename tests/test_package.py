import importlib
import re
import subprocess
import sys

import pytest

import skrnafm
from conftest import PROJECT_ROOT


def test_version_is_pep440_string():
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", skrnafm.__version__)


def test_import_does_not_load_torch():
    code = "import sys, skrnafm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", [n for n in skrnafm.__all__ if n != "__version__"])
def test_public_name_resolves(name):
    assert getattr(skrnafm, name) is not None


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        skrnafm.nope


@pytest.mark.parametrize(
    "subpackage",
    ["slide", "features", "flow", "nn", "estimators", "metrics", "pathways", "datasets"],
)
def test_subpackage_all_names_exist(subpackage):
    module = importlib.import_module(f"skrnafm.{subpackage}")
    for name in module.__all__:
        assert hasattr(module, name), f"skrnafm.{subpackage}.__all__ names missing {name!r}"


def test_repository_has_no_absolute_machine_paths():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    pattern = re.compile(r"(/work/|/home/\w+|/root/|/tmp/bash_jobs|C:\\\\Users)")
    offenders = []
    for rel in tracked:
        path = PROJECT_ROOT / rel
        if rel == "tests/test_package.py" or not path.is_file():
            continue
        if path.suffix in {".gz", ".png", ".npz", ".svs", ".tif", ".pth"}:
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        if pattern.search(text):
            offenders.append(rel)
    assert offenders == []
