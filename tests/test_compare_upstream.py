"""The pure parts of benchmarks/compare_upstream.py (the benchmark itself is not run in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare_upstream as cu  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="needs Linux /proc")


def test_the_tree_sampler_counts_a_child_and_its_grandchild(tmp_path):
    # a child that allocates 60 MB and starts a grandchild that allocates 120 MB; both hold it for a while
    grandchild = "b = bytearray(120_000_000); import time; time.sleep(1.5)"
    child = textwrap.dedent(f"""\
        import subprocess, sys, time
        a = bytearray(60_000_000)
        g = subprocess.Popen([sys.executable, "-c", {grandchild!r}])
        g.wait()
        time.sleep(0.3)
        """)
    run = cu.run_measured([sys.executable, "-c", child], tmp_path / "log.txt")
    assert run.returncode == 0, run.log.read_text()
    assert run.peak_bytes > 180e6  # both processes at once, not only the largest
    assert run.peak_bytes < 400e6
    assert 1.5 < run.seconds < 30


def test_a_run_past_its_timeout_is_killed_with_its_children(tmp_path):
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);" \
            " time.sleep(60)"
    run = cu.run_measured([sys.executable, "-c", child], tmp_path / "log.txt", timeout=1.5)
    assert run.returncode != 0 and run.seconds < 20


def test_tree_rss_of_this_process_is_its_own():
    assert cu.tree_rss(cu.os.getpid()) >= cu._rss_bytes(cu.os.getpid()) > 10e6
    assert cu.tree_rss(2 ** 22 + 12345) == 0  # no such process


def test_folder_names_get_the_plain_trainer():
    renamed = cu.renamed_folder("nnUNetTrainerDAExtGPU__nnUNetPlans__3d_fullres")
    assert renamed == "nnUNetTrainer__nnUNetPlans__3d_fullres"
    with pytest.raises(ValueError):
        cu.renamed_folder("fold_0")


def test_a_copy_of_a_model_folder_names_nnunettrainer(tmp_path):
    import torch

    source = tmp_path / "src" / "Dataset102_X" / "nnUNetTrainerDAExtGPU__nnUNetPlans__3d_fullres"
    (source / "fold_0").mkdir(parents=True)
    for name in ("dataset.json", "plans.json"):
        (source / name).write_text(json.dumps({"name": name}))
    weights = {"conv.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    checkpoint = source / "fold_0" / "checkpoint_final.pth"
    torch.save({"network_weights": weights, "trainer_name": "nnUNetTrainerDAExtGPU",
                "init_args": {"configuration": "3d_fullres"}}, checkpoint)

    dest = cu.copy_renamed(source, checkpoint, tmp_path / "dst" / "Dataset102_TotalSpineSeg_step2")
    assert dest.name == "nnUNetTrainer__nnUNetPlans__3d_fullres"
    copied = torch.load(dest / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert copied["trainer_name"] == "nnUNetTrainer"
    assert copied["init_args"] == {"configuration": "3d_fullres"}
    assert torch.equal(copied["network_weights"]["conv.weight"], weights["conv.weight"])
    assert json.loads((dest / "plans.json").read_text()) == {"name": "plans.json"}
    assert not list(dest.rglob("*.partial"))
    # the source is untouched, and a second call keeps the copy
    assert torch.load(checkpoint, weights_only=True)["trainer_name"] == "nnUNetTrainerDAExtGPU"
    before = (dest / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns
    assert cu.copy_renamed(source, checkpoint, tmp_path / "dst" / "Dataset102_TotalSpineSeg_step2") == dest
    assert (dest / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns == before


def test_the_upstream_recipe_leaves_out_the_bids_packages_and_keeps_torch_pinned():
    requirements = cu.upstream_requirements()
    assert "torch==2.13.0" in requirements
    assert not [r for r in requirements if r.startswith(("pybids", "bids-validator", "nnunetv2", "dynamic"))]
    assert "nnunetv2==2.8.1" in cu.NO_DEPS and cu.UPSTREAM in cu.NO_DEPS


def _result(key, up, me, agreement, note=""):
    return cu.Result(cu.ROWS[key], cu.Run(up[0], up[1], 0, Path("u")), cu.Run(me[0], me[1], 0, Path("p")),
                     agreement, note)


def test_the_table_has_ratios_and_agreement(tmp_path):
    from agreement import label_agreement

    ref = np.zeros((4, 4, 4), np.uint8)
    ref[:2] = 1
    ref[2:, :2] = 63
    new = ref.copy()
    new[3, 3, 3] = 63
    agreement = label_agreement(ref, new)
    assert agreement["same_numbering"] and agreement["worst_label"] == 63 and agreement["min_dice"] == 0.9697
    table = cu.format_table([_result("demo", (222.0, 1.27e9), (20.5, 1.64e9), agreement),
                             cu.Result(cu.ROWS["resencl-step1"], note="upstream exited 1")])
    lines = table.splitlines()
    assert lines[0].startswith("| weights | upstream | this project | speed-up | RAM ratio | agreement |")
    assert "| the demo model, both steps | 222.0 s, 1.27 GB | 20.5 s, 1.64 GB | 10.83x faster | 1.29x |" in lines[2]
    assert "same numbering; Dice min 0.970 (63), mean 0.985" in lines[2]
    assert lines[3].endswith("| - | - | - | - | - (upstream exited 1) |")
    bf16 = cu.format_table([cu.Result(cu.ROWS["demo"], cu.Run(222.0, 1.27e9, 0, Path("u")),
                                      cu.Run(11.1, 1.2e9, 0, Path("p")), agreement,
                                          precision="--precision bf16")])
    assert "| the demo model, both steps, this project `--precision bf16` | 222.0 s, 1.27 GB | 11.1 s, 1.20 GB | " \
           "20.00x faster |" in bf16
    numbering = label_agreement(ref, np.where(new == 63, 64, new).astype(np.uint8))
    assert cu.agreement_text(numbering).startswith("numbering differs")


def test_the_section_is_replaced_in_place(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other\n\ntext\n\n## Lite model, stage 1\n\nlite\n")
    cu.write_section(results, cu.section("| t |", "machine A"))
    first = results.read_text()
    assert first.index(cu.SECTION) < first.index("## Lite model") and "## Other\n\ntext\n" in first
    cu.write_section(results, cu.section("| t2 |", "machine B"))
    second = results.read_text()
    assert second.count(cu.SECTION) == 1 and "machine B" in second and "machine A" not in second
    assert second.endswith("## Lite model, stage 1\n\nlite\n")


def test_help_runs_without_building_anything():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_upstream.py"), "--help"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0 and "--small" in result.stdout and "--rows" in result.stdout


def test_a_row_runs_upstream_once_and_this_project_once_per_precision(tmp_path, monkeypatch):
    import argparse

    image = tmp_path / "phantom.nii.gz"
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:2] = 1
    commands = []

    def fake_run(command, log, env=None, timeout=None):
        commands.append(command)
        out = Path(command[2])
        (out / "step2_output").mkdir(parents=True)
        nib.save(nib.Nifti1Image(labels, np.eye(4)), out / "step2_output" / image.name)
        return cu.Run(10.0 if "--precision" in command else 100.0, 1, 0, log)

    nib = pytest.importorskip("nibabel")
    monkeypatch.setattr(cu, "prepare_weights", lambda row, work: tmp_path / "weights")
    monkeypatch.setattr(cu, "run_measured", fake_run)
    args = argparse.Namespace(work=tmp_path / "work", threads=2, precision=["auto", "bf16"], backend=["torch"],
                              timeout=60)
    results = cu.run_row(cu.ROWS["demo"], args, Path("upstream-totalspineseg"), image)
    assert [c[0] for c in commands].count("upstream-totalspineseg") == 1 and len(commands) == 3
    assert [c[c.index("--precision") + 1] for c in commands if "--precision" in c] == ["auto", "bf16"]
    assert [r.precision for r in results] == ["--precision auto --backend torch", "--precision bf16 --backend torch"]
    assert all(r.upstream is results[0].upstream for r in results)
    assert all(r.agreement["same_numbering"] and r.agreement["min_dice"] == 1.0 and not r.note for r in results)

    commands.clear()  # an OpenVINO run comes after an untimed one that fills its cache
    args.precision, args.backend = ["auto"], ["torch", "openvino"]
    results = cu.run_row(cu.ROWS["demo"], args, Path("upstream-totalspineseg"), image)
    assert [c[c.index("--backend") + 1] for c in commands if "--backend" in c] == ["torch", "openvino", "openvino"]
    assert len(results) == 2 and results[1].precision == "--precision auto --backend openvino"
