"""Every script in examples/ runs to the end with quick settings.

Each example runs in its own process, as a user would run it, with
``SKRNAFM_QUICK=1`` and its outputs in a temporary folder.
"""

import os
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "examples"

# script -> files it must write into --out
EXPECTED_OUTPUTS = {
    "pipeline_vs_baselines.py": ["rnafm_pipeline.joblib"],
    "featurize_folder.py": ["cmu-1-small-region_tiling_qc.png"],
    "reference_csv_format.py": ["my_reference.csv"],
    "uncertainty_calibration.py": ["uncertainty_calibration.png"],
}


def test_every_example_is_listed():
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED_OUTPUTS)


@pytest.mark.parametrize("script", sorted(EXPECTED_OUTPUTS))
def test_example_runs_quick(script, data_dir, tmp_path):
    env = dict(os.environ, SKRNAFM_QUICK="1", SKRNAFM_DATA=str(data_dir), MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--out", str(tmp_path)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in EXPECTED_OUTPUTS[script]:
        assert (tmp_path / name).is_file(), f"{script} did not write {name}"
