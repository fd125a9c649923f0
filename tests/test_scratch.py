"""Scratch space: every library's temporary files and caches go to a writable place, in a locked-down run too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from totalspineseg import scratch
from totalspineseg.errors import CannotCreate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_tempdir():
    saved = tempfile.tempdir
    yield
    tempfile.tempdir = saved


def test_the_first_writable_candidate_is_used_in_order(tmp_path, restore_tempdir):
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    env = {"TMPDIR": str(blocked / "tmp")}  # cannot be created: below a plain file
    out = tmp_path / "out"
    places = scratch.candidates(None, out, env)
    assert places[0] == blocked / "tmp" / f"totalspineseg-{os.getuid()}" and places[-1] == out / ".work"
    chosen = scratch.prepare_scratch(environ=env, places=[blocked / "w", blocked / "t", out / ".work"])
    assert chosen == out / ".work"
    assert env["TMPDIR"] == str(chosen / "tmp") and tempfile.gettempdir() == str(chosen / "tmp")
    for variable in scratch.CACHE_VARIABLES:
        assert Path(env[variable]).is_relative_to(chosen), variable


def test_repeated_calls_reuse_the_folder_and_never_nest(tmp_path, restore_tempdir):
    env = {"TMPDIR": str(tmp_path)}
    first = scratch.prepare_scratch(environ=env)
    for _ in range(3):  # an embedding program (or a test session) calls main() many times
        assert scratch.prepare_scratch(environ=env) == first
    assert env["TMPDIR"] == str(first / "tmp") and first == tmp_path / f"totalspineseg-{os.getuid()}"


def test_usable_cache_settings_are_kept(tmp_path, restore_tempdir):
    env = {"MPLCONFIGDIR": str(tmp_path / "mine")}
    scratch.prepare_scratch(environ=env, places=[tmp_path / "s"])
    assert env["MPLCONFIGDIR"] == str(tmp_path / "mine")


def test_no_writable_place_is_one_clear_error(tmp_path):
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    with pytest.raises(CannotCreate, match="no writable scratch folder"):
        scratch.prepare_scratch(environ={}, places=[blocked / "x", blocked / "y"])


def _can_lock_down() -> str | None:
    if os.geteuid() != 0:
        return "a read-only /tmp needs root (a private mount namespace)"
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -o bind /tmp /tmp && mount -o remount,bind,ro /tmp"],
                           capture_output=True, check=False)
    return None if probe.returncode == 0 else "mount namespaces are not available here"


@pytest.mark.slow
def test_a_real_model_runs_with_every_temporary_place_read_only(tmp_path):
    """The container's failure: read-only root, no /tmp, no HOME; only the output folder is writable.

    /tmp and /var/tmp are made read-only in a private mount namespace, and the working directory is /tmp, so
    `tempfile` (which torch's inductor asks at import time) has nowhere left unless the tool points it.
    """
    reason = _can_lock_down()
    if reason:
        pytest.skip(reason)
    from totalspineseg.synth import phantom
    from totalspineseg.volume import save_nifti

    ph = phantom.make_phantom(seed=3, fov="lumbar", voxel=(1.5, 1.5, 3.0))
    image = save_nifti(tmp_path / "in" / "sub-01_T2w.nii.gz", ph.image, ph.affine)
    out = tmp_path / "out"  # tmp_path lies under /tmp: bind it writable again inside the read-only /tmp
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "HOME")}
    env.update(HOME="/nonexistent", PYTHONDONTWRITEBYTECODE="1")
    script = (f"mount -o bind /tmp /tmp && mount -o remount,bind,ro /tmp && "
              f"mount -o bind {out} {out} && mount -o remount,bind,rw {out} && "
              f"(mount -o bind /var/tmp /var/tmp && mount -o remount,bind,ro /var/tmp || true) && "
              f"cd /tmp && exec {sys.executable} -m totalspineseg.cli.segment {image} {out} --weights demo --step1 -q")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env,
                          cwd="/", timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (out / "step1_output" / "sub-01_T2w.nii.gz").is_file()
    assert (out / ".work").is_dir()  # the only writable place was used
