"""The layering rule of docs/architecture.md, checked on the source: who may import whom.

    core (load, predict, label, write)  <-  bids_app  <-  cli
    core  <-  synth, training (tooling)            nothing at inference time imports tooling
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "totalspineseg"
TOOLING = ("synth", "training")
LAYERS = ("bids_app", "cli", *TOOLING)

# layer of a module -> layers it must not import
FORBIDDEN = {
    "core": set(LAYERS),
    "bids_app": {"cli", *TOOLING},
    "synth": {"cli", "training"},
    "training": {"cli"},
    "cli": set(),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def _imports(path: Path) -> set[str]:
    """Every totalspineseg module `path` imports, at the top or inside functions, relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # `from . import x` imports module x
    return {name for name in found if name.split(".")[0] == "totalspineseg"}


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_it(path):
    layer = _layer(_module_name(path))
    bad = sorted(name for name in _imports(path) if _layer(name) in FORBIDDEN[layer])
    assert not bad, f"{path.relative_to(PACKAGE)} ({layer}) imports {bad}"


def test_the_rule_catches_a_violation(tmp_path, monkeypatch):
    fake = tmp_path / "totalspineseg"
    (fake / "bids_app").mkdir(parents=True)
    (fake / "volume.py").write_text("from .bids_app import report\n\ndef f():\n    from .training import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    imported = _imports(fake / "volume.py")
    assert {"totalspineseg.bids_app.report", "totalspineseg.training.x"} <= imported
    assert {_layer(n) for n in imported} >= {"bids_app", "training"}


def test_inference_loads_no_tooling():
    code = ("import sys; import totalspineseg.cli.segment, totalspineseg.bids_app.app, totalspineseg.pipeline, "
            "totalspineseg.predictor, totalspineseg.weights; "
            "print(sorted(m for m in sys.modules if m.split('.')[:2][-1] in ('synth', 'training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
