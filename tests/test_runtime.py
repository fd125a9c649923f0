"""totalspineseg.runtime: the CPU threads a job may use, and nnU-Net's prints kept off stdout but not lost."""

from __future__ import annotations

import logging
import os

import pytest

from totalspineseg import runtime

AFFINITY = len(os.sched_getaffinity(0))


# --- nnU-Net's output ----------------------------------------------------------------------------------------------


def _nnunet_fails():
    print("nnU-Net: fold_0 has no checkpoint_final.pth")
    raise RuntimeError("nnU-Net gave up")


def test_nnunet_output_reaches_the_error_log_when_the_call_fails(caplog, capsys):
    with caplog.at_level(logging.DEBUG, logger="totalspineseg"), pytest.raises(RuntimeError, match="gave up"):
        with runtime.nnunet_output("nnU-Net planning"):
            _nnunet_fails()
    assert capsys.readouterr().out == ""
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "nnU-Net planning printed before failing" in errors[0].getMessage()
    assert "fold_0 has no checkpoint_final.pth" in errors[0].getMessage()


def test_nnunet_output_goes_to_the_debug_log_when_the_call_succeeds(caplog, capsys):
    with caplog.at_level(logging.DEBUG, logger="totalspineseg"), runtime.nnunet_output():
        print("using the default label manager")
    assert capsys.readouterr().out == ""
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "nnU-Net: using the default label manager")
    ]


# --- threads -------------------------------------------------------------------------------------------------------


def test_slurm_sets_the_allowed_cpus(tmp_path):
    assert runtime.resolve_threads(environ={"SLURM_CPUS_PER_TASK": "3"}, cgroup_root=tmp_path) == 3
    assert runtime.resolve_threads(environ={"SLURM_CPUS_PER_TASK": "junk"}, cgroup_root=tmp_path) == AFFINITY
    assert runtime.resolve_threads(environ={}, cgroup_root=tmp_path) == AFFINITY


def test_omp_num_threads_is_the_default_within_the_allowed_cpus(tmp_path):
    environ = {"SLURM_CPUS_PER_TASK": "8", "OMP_NUM_THREADS": "5"}
    assert runtime.resolve_threads(environ=environ, cgroup_root=tmp_path) == 5
    environ["OMP_NUM_THREADS"] = "16"
    assert runtime.resolve_threads(environ=environ, cgroup_root=tmp_path) == 8
    environ["OMP_NUM_THREADS"] = "junk"
    assert runtime.resolve_threads(environ=environ, cgroup_root=tmp_path) == 8


def test_an_explicit_request_wins_but_is_capped_at_the_allowed_cpus(tmp_path):
    environ = {"SLURM_CPUS_PER_TASK": "6", "OMP_NUM_THREADS": "5"}
    assert runtime.resolve_threads(2, environ=environ, cgroup_root=tmp_path) == 2
    assert runtime.resolve_threads(7, environ=environ, cgroup_root=tmp_path) == 6
    assert runtime.resolve_threads(7, jobs=3, environ=environ, cgroup_root=tmp_path) == 2  # shared among jobs
    for bad in (0, -1):
        with pytest.raises(ValueError, match="positive integer"):
            runtime.resolve_threads(bad, environ=environ, cgroup_root=tmp_path)


@pytest.mark.parametrize(
    "cpu_max, quota",
    [("100000 100000", 1), ("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)],
)
def test_cgroup_v2_quota_caps_the_affinity(tmp_path, cpu_max, quota):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert runtime.cgroup_cpu_limit(tmp_path) == quota
    expected = min(AFFINITY, quota) if quota else AFFINITY
    assert runtime.resolve_threads(environ={}, cgroup_root=tmp_path) == expected
    assert runtime.resolve_threads(64, environ={"OMP_NUM_THREADS": "64"}, cgroup_root=tmp_path) == expected


def test_cgroup_v1_quota_caps_the_affinity(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert runtime.resolve_threads(environ={}, cgroup_root=tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert runtime.resolve_threads(environ={}, cgroup_root=tmp_path) == AFFINITY


# --- precision ---------------------------------------------------------------------------------------

AMX_CPU = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
OLD_CPU = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n"


def test_native_bf16_is_read_from_the_cpu_flags():
    assert runtime.cpu_has_native_bf16(AMX_CPU) is True
    assert runtime.cpu_has_native_bf16(OLD_CPU) is False
    assert runtime.cpu_has_native_bf16("processor : 0\nflags : avx512_bf16\n") is True


def test_auto_precision_is_fp32_on_any_cpu_and_fp16_on_cuda():
    # bf16 failed the agreement bars on an AMX CPU (RESULTS.md, "Precision"), so auto keeps fp32 even where
    # bf16 is native; detection still decides the warning of an explicit bf16 (below)
    assert runtime.resolve_precision("auto", "cpu", native_bf16=True) == "fp32"
    assert runtime.resolve_precision("auto", "cpu", native_bf16=False) == "fp32"
    assert runtime.resolve_precision("auto", "cuda") == "fp16"


def test_explicit_precision_is_kept_with_a_warning_where_it_is_slow(caplog):
    assert runtime.resolve_precision("fp32", "cpu", native_bf16=True) == "fp32"
    with caplog.at_level(logging.WARNING):
        assert runtime.resolve_precision("bf16", "cpu", native_bf16=True) == "bf16"
    assert not caplog.text
    with caplog.at_level(logging.WARNING):
        assert runtime.resolve_precision("bf16", "cpu", native_bf16=False) == "bf16"
    assert "emulated" in caplog.text
    with pytest.raises(ValueError, match="precision must be one of"):
        runtime.resolve_precision("int8", "cpu")
