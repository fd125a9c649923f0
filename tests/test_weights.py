"""Weights registry, resolution and installer, against a local HTTP server (no internet)."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from totalspineseg import weights
from totalspineseg.cli.weights import main
from totalspineseg.errors import WeightsError
from totalspineseg.weights import locate

RELEASE = "rtest"
MODEL = "nnUNetTrainerDAExtGPU__nnUNetPlans__3d_fullres"
DATASETS = weights.STEP_DATASETS


# --- fixtures: fake models, zips, a local server -------------------------------------------------


def make_dataset(
    parent: Path, dataset: str, model: str = MODEL, checkpoint: str = "checkpoint_final.pth", payload: bytes = b""
) -> Path:
    folder = parent / dataset / model
    (folder / "fold_0").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"name": dataset}))
    (folder / "plans.json").write_text(json.dumps({"plans_name": "nnUNetPlans"}))
    (folder / "fold_0" / checkpoint).write_bytes(payload or dataset.encode() * 4000)
    return folder


def make_models(parent: Path, **kwargs) -> Path:
    for dataset in DATASETS.values():
        make_dataset(parent, dataset, **kwargs)
    return parent


def zip_dataset(source_parent: Path, dataset: str, out: Path) -> Path:
    """A zip holding the top-level dataset folder, like upstream's release zips."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted((source_parent / dataset).rglob("*")):
            zf.write(f, f.relative_to(source_parent).as_posix())
    return out


@pytest.fixture
def release_zips(tmp_path) -> dict[str, bytes]:
    tree = make_models(tmp_path / "zip-tree")
    zips = {}
    for dataset in DATASETS.values():
        name = f"{dataset}_{RELEASE}.zip"
        zips[name] = zip_dataset(tree, dataset, tmp_path / name).read_bytes()
    return zips


class Server:
    """Serves a dict of files with HTTP Range support, records requests, and can fail on purpose."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: int | None = None  # one-shot: close the connection after this many body bytes
        self.ignore_range = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.handle(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        range_header = req.headers.get("Range")
        self.requests.append((req.path, range_header))
        data = self.files.get(req.path.lstrip("/"))
        if data is None:
            req.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and not self.ignore_range:
            start = int(match.group(1))
            req.send_response(206)
            req.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            req.send_response(200)
        body = data[start:]
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if self.cut_after is not None:
            body, self.cut_after = body[: self.cut_after], None
            req.close_connection = True
        req.wfile.write(body)

    def ranges(self) -> list[str]:
        return [r for _, r in self.requests if r]


@pytest.fixture
def server(release_zips):
    srv = Server({f"{RELEASE}/{name}": data for name, data in release_zips.items()})
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real cache, env var or package weights; a registry entry for the local server."""
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(locate, "PACKAGE_DATA", tmp_path / "package-data")


@pytest.fixture
def registered(server, monkeypatch):
    release = weights.Release(RELEASE, weights.release_artifacts(RELEASE, f"{server.url}/{RELEASE}"))
    monkeypatch.setitem(weights.RELEASES, RELEASE, release)
    return release


def installed_dirs(root: Path) -> list[str]:
    results = root / "nnUNet" / "results"
    return sorted(p.name for p in results.iterdir()) if results.is_dir() else []


# --- install over HTTP ----------------------------------------------------------------------------


def test_install_from_registry_url_then_second_install_does_nothing(tmp_path, server, registered):
    root = tmp_path / "data"
    models = weights.install(None, root, RELEASE, quiet=True)

    release_dir = root / "nnUNet" / "results" / RELEASE
    assert models.step1 == release_dir / DATASETS["step1"] / MODEL
    assert models.step2_checkpoint == release_dir / DATASETS["step2"] / MODEL / "fold_0" / "checkpoint_final.pth"
    assert models.release == RELEASE and models.fold("step1") == 0
    manifest = json.loads((release_dir / weights.MANIFEST_NAME).read_text())
    zip_bytes = server.files[f"{RELEASE}/{DATASETS['step1']}_{RELEASE}.zip"]
    assert manifest["datasets"]["step1"]["zip_sha256"] == hashlib.sha256(zip_bytes).hexdigest()
    checkpoint = f"{DATASETS['step1']}/{MODEL}/fold_0/checkpoint_final.pth"
    assert models.sha256["step1"] == manifest["files"][checkpoint]["sha256"]
    assert (root / "nnUNet" / "exports" / f"{DATASETS['step1']}_{RELEASE}.zip").is_file()
    assert installed_dirs(root) == [f".{RELEASE}.lock", RELEASE]  # no staging left behind

    count = len(server.requests)
    again = weights.install(None, root, RELEASE, quiet=True)
    assert again == models and len(server.requests) == count


def test_install_from_base_url_and_known_sha256(tmp_path, server, registered, monkeypatch):
    def digest(artifact):
        return hashlib.sha256(server.files[f"{RELEASE}/{artifact.zip_name}"]).hexdigest()

    good = tuple(weights.Artifact(a.step, a.dataset, a.url, a.zip_name, digest(a)) for a in registered.artifacts)
    monkeypatch.setitem(weights.RELEASES, RELEASE, weights.Release(RELEASE, good))
    weights.install(None, tmp_path / "a", RELEASE, quiet=True, keep_zips=False)
    assert not list((tmp_path / "a" / "nnUNet" / "exports").iterdir())

    bad = tuple(weights.Artifact(a.step, a.dataset, a.url, a.zip_name, "0" * 64) for a in registered.artifacts)
    monkeypatch.setitem(weights.RELEASES, RELEASE, weights.Release(RELEASE, bad))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        weights.install(None, tmp_path / "b", RELEASE, quiet=True)
    assert RELEASE not in installed_dirs(tmp_path / "b")

    monkeypatch.delitem(weights.RELEASES, RELEASE)  # a mirror folder for a release not in the registry
    models = weights.install(f"{server.url}/{RELEASE}/", tmp_path / "c", RELEASE, quiet=True)
    assert models.step1.parent.parent.name == RELEASE


def test_interrupted_download_leaves_nothing_installed_and_resumes(tmp_path, server, registered):
    root = tmp_path / "data"
    server.cut_after = 3000
    with pytest.raises(WeightsError, match="interrupted.*again to resume"):
        weights.install(None, root, RELEASE, quiet=True)
    assert installed_dirs(root) == [f".{RELEASE}.lock"]
    part = root / "nnUNet" / "exports" / f"{DATASETS['step1']}_{RELEASE}.zip.part"
    assert part.stat().st_size == 3000

    models = weights.install(None, root, RELEASE, quiet=True)
    assert server.ranges() == ["bytes=3000-"]
    assert not part.exists() and models.step1.is_dir()
    assert weights.verify(root, RELEASE) == []


def test_server_ignoring_range_restarts_the_download(tmp_path, server, registered):
    root = tmp_path / "data"
    server.cut_after = 3000
    with pytest.raises(WeightsError):
        weights.install(None, root, RELEASE, quiet=True)
    server.ignore_range = True
    weights.install(None, root, RELEASE, quiet=True)
    assert weights.verify(root, RELEASE) == []


def test_corrupt_download_is_rejected_and_removed(tmp_path, server, registered):
    root = tmp_path / "data"
    name = f"{RELEASE}/{DATASETS['step2']}_{RELEASE}.zip"
    server.files[name] = b"this is not a zip" * 100
    with pytest.raises(WeightsError, match=r": corrupt zip \("):
        weights.install(None, root, RELEASE, quiet=True)
    assert RELEASE not in installed_dirs(root)
    assert not list((root / "nnUNet" / "exports").glob("*.part"))


def test_bad_crc_is_a_corrupt_zip(tmp_path, release_zips):
    name = f"{DATASETS['step1']}_{RELEASE}.zip"
    data = bytearray(release_zips[name])
    offset = bytes(data).index(DATASETS["step1"].encode() * 10)  # inside the stored checkpoint body
    data[offset] ^= 0xFF
    bad = tmp_path / name
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt zip"):
        weights.install([str(bad)], tmp_path / "data", RELEASE)
    assert RELEASE not in installed_dirs(tmp_path / "data")


@pytest.mark.parametrize("entry", ["../evil", "/abs/evil", "symlink"])
def test_unsafe_zip_entries_are_rejected(tmp_path, entry):
    tree = make_models(tmp_path / "tree")
    archive = tmp_path / "both.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(tree.rglob("*")):
            zf.write(f, f.relative_to(tree).as_posix())
        if entry == "symlink":
            info = zipfile.ZipInfo(f"{DATASETS['step1']}/link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(entry, "boom")
    with pytest.raises(WeightsError, match="unsafe zip entry"):
        weights.install([str(archive)], tmp_path / "data", RELEASE)
    assert not (tmp_path / "evil").exists()
    assert RELEASE not in installed_dirs(tmp_path / "data")


# --- install from local files ---------------------------------------------------------------------


def test_install_from_local_zips_and_force(tmp_path, release_zips):
    paths = []
    for name, data in release_zips.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    root = tmp_path / "data"
    models = weights.install(paths, root, RELEASE)
    assert models.step2.parent.name == DATASETS["step2"]
    manifest = json.loads((models.step1.parents[1] / weights.MANIFEST_NAME).read_text())
    assert manifest["datasets"]["step1"]["zip"] == paths[0].name

    with pytest.raises(WeightsError, match=r"no Dataset102_\* model"):
        weights.install([paths[0]], tmp_path / "other", RELEASE)
    weights.install([paths[0]], root, RELEASE)  # already installed: the missing step2 zip is not needed
    (models.step1_checkpoint).write_bytes(b"tampered")
    weights.install(paths, root, RELEASE, force=True)
    assert weights.verify(root, RELEASE) == []


def test_install_from_directory_of_models_and_of_zips(tmp_path, release_zips):
    tree = make_models(tmp_path / "tree")
    models = weights.install(tree, tmp_path / "a", RELEASE)
    assert models.step1 == tmp_path / "a" / "nnUNet" / "results" / RELEASE / DATASETS["step1"] / MODEL
    assert weights.verify(tmp_path / "a", RELEASE) == []

    zips = tmp_path / "zips"
    zips.mkdir()
    for name, data in release_zips.items():
        (zips / name).write_bytes(data)
    assert weights.install(zips, tmp_path / "b", RELEASE).step2.is_dir()


def test_demo_is_not_installable_and_missing_demo_is_clear(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="bundled"):
        weights.install(None, tmp_path, "demo")
    monkeypatch.setitem(weights.RELEASES, "demo", weights.Release("demo", bundled=tmp_path / "nodemo"))
    with pytest.raises(WeightsError, match="demo model is not bundled"):
        weights.resolve_model("demo")
    monkeypatch.setitem(weights.RELEASES, "demo", weights.Release("demo", bundled=make_models(tmp_path / "demo")))
    assert weights.resolve_model("demo").release == "demo"


# --- resolution -----------------------------------------------------------------------------------


def release_layout(root: Path, release: str = weights.DEFAULT_RELEASE) -> Path:
    make_models(root / "nnUNet" / "results" / release)
    return root


def test_resolution_order_data_dir_then_env_then_cache(tmp_path, monkeypatch):
    explicit, env = release_layout(tmp_path / "explicit"), release_layout(tmp_path / "env")
    cache = release_layout(tmp_path / "xdg" / "totalspineseg")
    monkeypatch.setenv(weights.ENV_VAR, str(env))
    assert weights.resolve_model(data_dir=explicit).root == explicit
    assert weights.resolve_model().root == env
    monkeypatch.delenv(weights.ENV_VAR)
    assert weights.resolve_model().root == cache


def test_cache_is_skipped_without_home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("HOME", raising=False)
    assert weights.user_cache_dir() is None
    with pytest.raises(WeightsError, match="--data-dir"):
        weights.install_root()
    assert weights.install_root(tmp_path) == tmp_path


def test_custom_layout_beats_release_unless_release_is_asked(tmp_path):
    root = release_layout(tmp_path / "root")
    make_models(root / "nnUNet" / "results")
    assert weights.resolve_model(data_dir=root).release == "custom"
    assert weights.resolve_model(data_dir=root, release=weights.DEFAULT_RELEASE).release == weights.DEFAULT_RELEASE
    assert weights.resolve_model(weights.DEFAULT_RELEASE, data_dir=root).release == weights.DEFAULT_RELEASE


def test_weights_path_layouts(tmp_path):
    direct = make_models(tmp_path / "direct")
    assert weights.resolve_model(direct).step1 == direct / DATASETS["step1"] / MODEL
    assert weights.resolve_model(release_layout(tmp_path / "root")).release == weights.DEFAULT_RELEASE

    pair = tmp_path / "pair"
    for step in DATASETS:
        make_dataset(pair, step, model="")  # pair/step1/{dataset.json,plans.json,fold_0}
    assert weights.resolve_model(pair).step2 == pair / "step2"
    with pytest.raises(WeightsError, match="no such folder"):
        weights.resolve_model(tmp_path / "nowhere")


def test_model_folder_and_checkpoint_choice(tmp_path):
    tree = make_models(tmp_path / "tree", model="aTrainer__Plans__3d_fullres")
    for dataset in DATASETS.values():
        make_dataset(tree, dataset, checkpoint="checkpoint_best.pth")
        (tree / dataset / MODEL / "fold_0" / "checkpoint_final.pth").write_bytes(b"final")
    models = weights.resolve_model(tree)
    assert models.step1 == tree / DATASETS["step1"] / MODEL
    assert models.step1_checkpoint.name == "checkpoint_best.pth"

    only_other = make_models(tmp_path / "other", model="zTrainer__Plans__3d_fullres")
    make_dataset(only_other, DATASETS["step1"], model="bTrainer__Plans__3d_fullres")
    assert weights.resolve_model(only_other).step1.name == "bTrainer__Plans__3d_fullres"


def test_incomplete_model_is_reported(tmp_path):
    tree = make_models(tmp_path / "tree")
    (tree / DATASETS["step2"] / MODEL / "plans.json").unlink()
    with pytest.raises(WeightsError, match="missing plans.json"):
        weights.resolve_model(tree)


def test_missing_weights_message_gives_the_install_command(tmp_path):
    with pytest.raises(WeightsError) as err:
        weights.resolve_model()
    message = str(err.value)
    assert f"(release {weights.DEFAULT_RELEASE})" in message
    assert message.count("\n") == 0
    assert "install them with: totalspineseg-weights install (offline: add --from ZIP|DIR)" in message
    with pytest.raises(WeightsError, match=r"totalspineseg-weights install --release r20251124 --data-dir \S*/d"):
        weights.resolve_model(data_dir=tmp_path / "d", release="r20251124")


def test_resolve_downloads_only_when_asked(tmp_path, server, registered):
    with pytest.raises(WeightsError, match="totalspineseg-weights install --release rtest"):
        weights.resolve_model(release=RELEASE)
    assert server.requests == []
    models = weights.resolve_model(release=RELEASE, download=True, quiet=True)
    assert models.root == tmp_path / "xdg" / "totalspineseg"


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_install_list_path_verify(tmp_path, server, registered, capsys):
    data = str(tmp_path / "data")
    assert main(["install", "--release", RELEASE, "--data-dir", data, "-q"]) == 0
    assert main(["install", "--release", RELEASE, "--data-dir", data, "-q"]) == 0
    assert "already installed" in capsys.readouterr().out

    assert main(["list", "--data-dir", data]) == 0
    listing = capsys.readouterr().out
    assert re.search(rf"^{RELEASE}\s+installed: .*{RELEASE}$", listing, re.M)
    assert re.search(rf"^{weights.DEFAULT_RELEASE}\s+not installed", listing, re.M)

    assert main(["path", "--release", RELEASE, "--data-dir", data]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("step1\t") and lines[0].endswith(f"{DATASETS['step1']}/{MODEL}")

    assert main(["verify", "--release", RELEASE, "--data-dir", data]) == 0
    checkpoint = Path(lines[1].split("\t")[1]) / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-1] + b"X")
    assert main(["verify", "--release", RELEASE, "--data-dir", data]) == 1
    assert "sha256 differs" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["path", "--data-dir", str(tmp_path)]) == 78
    err = capsys.readouterr().err
    assert err.startswith("totalspineseg-weights: error: no TotalSpineSeg weights") and err.count("\n") == 1
    assert main(["verify", "--data-dir", str(tmp_path)]) == 1
