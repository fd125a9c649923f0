"""benchmarks/gpu_check.sh and its driver, as far as a machine without a GPU can check them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))


def run_script(*args, env=None, timeout=60):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0


def test_without_a_gpu_it_stops_at_once_with_a_clear_message(tmp_path):
    missing = run_script("--out", tmp_path, env={"NVIDIA_SMI": "nvidia-smi-that-is-not-there"})
    assert missing.returncode == 69, missing.stderr
    assert "no GPU" in missing.stderr and "nothing was run" in missing.stderr and "--dry-run" in missing.stderr
    no_device = run_script("--out", tmp_path, env={"NVIDIA_SMI": "false"})  # a driver that lists no GPU
    assert no_device.returncode == 69 and "lists no GPU" in no_device.stderr
    assert not (tmp_path / "venv").exists()  # stopped before installing anything


def test_usage_and_a_missing_wheel_folder(tmp_path):
    assert run_script("--bogus").returncode == 64
    assert run_script("--wheels").returncode == 64
    result = run_script("--dry-run", "--wheels", tmp_path / "no-such-folder", "--out", tmp_path / "out")
    assert result.returncode == 66 and "no such folder" in result.stderr
    help_text = run_script("--help")
    assert help_text.returncode == 0 and "pip download" in help_text.stdout and "set -" not in help_text.stdout


def test_the_driver_refuses_cuda_without_a_usable_device(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    import gpu_check

    assert gpu_check.main(["--out", str(tmp_path)]) == gpu_check.NO_GPU
    assert "no usable CUDA device" in capsys.readouterr().err


def test_the_demo_agreement_is_required_and_the_random_resencl_one_only_reported():
    import gpu_check

    demo = {"models": "demo", "repeat_identical": True, "agreement": {"passes": True}}
    resencl = {"models": "resencl", "repeat_identical": True, "agreement": {"passes": False}}
    assert gpu_check.required_ok([demo, resencl])
    assert not gpu_check.required_ok([{**demo, "agreement": {"passes": False}}, resencl])
    assert not gpu_check.required_ok([demo, {**resencl, "repeat_identical": False}])  # unstable crop box or labels
    assert not gpu_check.required_ok([demo, {"models": "resencl", "error": "RuntimeError: out of memory"}])
    assert gpu_check.required_ok([demo, {**resencl, "agreement": {"skipped": "10 s left"}}])


@pytest.mark.slow  # runs the demo model three times on a cervical phantom
def test_the_dry_run_is_the_same_driver_on_the_cpu(tmp_path):
    result = run_script("--dry-run", "--out", tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for text in ("model loading (apart)", "step 1 network", "step 2 network", "resampling to the native grid",
                 "writing NIfTI + previews", "agreement with cpu fp32", "Dice per structure", "PASSED"):
        assert text in result.stdout, text
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    (row,) = report["rows"]
    assert row["models"] == "demo" and row["repeat_identical"] is True
    assert row["agreement"]["passes"] and row["agreement"]["min_dice"] == 1.0  # CPU against CPU
    assert set(row["stages_s"]) >= {"load", "step1_forward", "step2_forward", "resample_back", "write", "total"}
    assert list((tmp_path / "demo_cpu_2" / "step2_output").glob("*.nii.gz"))
