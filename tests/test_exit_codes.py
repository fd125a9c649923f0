"""Every console script turns each error class into its documented exit code, with one line on stderr."""

from __future__ import annotations

import re

import pytest

from totalspineseg import errors
from totalspineseg.bids_app import app as bids_main
from totalspineseg.cli import label, levels, phantom, segment, train
from totalspineseg.cli import weights as weights_cli

# script: (main, argv that parses, the module attribute holding the body, its name)
SCRIPTS = {
    "totalspineseg": (segment.main, ["in.nii.gz", "out"], segment, "process_all"),
    "totalspineseg-label": (label.main, ["step1", "raw.nii.gz", "out.nii.gz"], label, "run"),
    "totalspineseg-levels": (levels.main, ["seg.nii.gz", "out.nii.gz"], levels, "run"),
    "totalspineseg-weights": (weights_cli.main, ["list"], weights_cli, "_list"),
    "totalspineseg-train": (train.main, ["prepare", "bids", "raw"], train.COMMANDS, "prepare"),
    "totalspineseg-phantom": (phantom.main, ["out"], phantom, "_write"),
    "run.py": (bids_main.main, ["bids", "out", "participant"], bids_main, "_run"),
}


def _raise(exc):
    def body(*_args, **_kwargs):
        raise exc
    return body


def _instance(cls):
    return cls("some/file.nii.gz", "the problem") if cls is errors.InputError else cls("some/file.nii.gz: the problem")


def _documented(main, capsys) -> dict[int, str]:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    section = text.split("exit codes:", 1)[1]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\s+(\d+)\s+(.+)$", section, re.M)}


def _patch(monkeypatch, owner, name, body):
    if isinstance(owner, dict):
        monkeypatch.setitem(owner, name, body)
    else:
        monkeypatch.setattr(owner, name, body)


CASES = [(script, cls) for script in SCRIPTS for cls in errors.ERROR_CLASSES
         if script != "totalspineseg-phantom" or cls in phantom.ERRORS]


@pytest.mark.parametrize(("script", "cls"), CASES, ids=lambda v: getattr(v, "__name__", v))
def test_each_error_class_gives_its_documented_code(script, cls, monkeypatch, capsys):
    main, argv, owner, name = SCRIPTS[script]
    assert cls.meaning in _documented(main, capsys).get(cls.exit_code, ""), f"{script}: {cls.__name__} undocumented"
    _patch(monkeypatch, owner, name, _raise(_instance(cls)))
    assert main(argv) == cls.exit_code
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"{script}: error: some/file.nii.gz: the problem"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_unexpected_exception_is_one_line_and_code_70(script, monkeypatch, capsys):
    main, argv, owner, name = SCRIPTS[script]
    _patch(monkeypatch, owner, name, _raise(RuntimeError("something broke\nsecond line")))
    assert main(argv) == errors.InternalError.exit_code == 70
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"{script}: internal error: RuntimeError: something broke "
                                        "(run with -v for the traceback)"]
    assert "Traceback" not in err


def test_with_verbose_an_unexpected_exception_shows_its_traceback(monkeypatch, capsys):
    monkeypatch.setattr(label, "run", _raise(RuntimeError("boom")))
    assert label.main(["step1", "raw.nii.gz", "out.nii.gz", "-v"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("internal error: RuntimeError: boom")


@pytest.mark.parametrize("script", SCRIPTS)
def test_interrupt_is_130_and_usage_errors_are_64(script, monkeypatch, capsys):
    main, argv, owner, name = SCRIPTS[script]
    assert main(["--no-such-option"]) == errors.UsageError.exit_code == 64
    assert "error:" in capsys.readouterr().err
    _patch(monkeypatch, owner, name, _raise(KeyboardInterrupt()))
    assert main(argv) == errors.INTERRUPTED == 130


def test_every_class_is_in_the_table_with_a_distinct_meaning_per_code():
    table = errors.exit_code_table()
    for cls in errors.ERROR_CLASSES:
        assert issubclass(cls, errors.TotalSpineSegError)
        assert cls.meaning in table[cls.exit_code]
    assert table[0] == "success" and table[130].startswith("interrupted")
