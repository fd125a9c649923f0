"""`totalspineseg` end to end with real nnU-Net model folders of both kinds (random weights).

The networks are untrained, so the labels are meaningless; what is checked is the plumbing: model folders in
upstream's layout load (ResEnc-L planner with the uninstalled trainer name `nnUNetTrainerDAExtGPU`, and a plain
`nnUNetTrainer` folder), the two steps run, and every output sits on its input's grid in upstream's folders.
"""

import nibabel as nib
import numpy as np
import pytest
from model_factory import make_model_folder

from totalspineseg.cli import segment as cli
from totalspineseg.synth import phantom
from totalspineseg.volume import save_nifti

pytestmark = pytest.mark.slow  # real networks end to end (about 4 minutes in all)

KINDS = {
    "resenc_daext": dict(planner="ResEncL", trainer_name="nnUNetTrainerDAExtGPU"),
    "plain": dict(planner="default", trainer_name="nnUNetTrainer"),
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def weights_root(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"weights_{request.param}")
    results = root / "nnUNet" / "results"
    kw = KINDS[request.param]
    make_model_folder(results, 101, 1, dataset_name="TotalSpineSeg_step1", **kw)
    make_model_folder(results, 102, 2, dataset_name="TotalSpineSeg_step2", **kw)
    return root


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantoms")
    # Small fields of view: random-weight networks cost as much per voxel as trained ones.
    for name, fov, orient, voxel in (("a_T2w", "cervical", "LPS", (1.2, 1.2, 3.0)),):
        ph = phantom.make_phantom(seed=4, fov=fov, orientation=orient, voxel=voxel)
        save_nifti(folder / f"{name}.nii.gz", ph.image, ph.affine)
    return folder


def _check_layout(out, images):
    for img_path in images:
        name = cli.image_name(img_path)
        src = nib.load(img_path)
        for sub in cli.DELIVERABLES:
            res = nib.load(out / sub / f"{name}.nii.gz")
            assert res.shape == src.shape[:3], sub
            assert np.allclose(res.affine, src.affine, atol=1e-5), sub
            # the input's transforms and codes, so that the output overlays it in any viewer
            assert np.allclose(res.get_qform(), src.get_qform(), atol=1e-4), sub
            assert np.allclose(res.get_sform(), src.get_sform(), atol=1e-4), sub
            assert (int(res.header["qform_code"]), int(res.header["sform_code"])) == (
                int(src.header["qform_code"]), int(src.header["sform_code"])), sub
        assert (out / "preview" / f"{name}_step2_output.jpg").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(list(cli.DELIVERABLES) + ["preview", "logs"])


def test_phantom_folder(tmp_path, weights_root, phantom_folder):
    out = tmp_path / "out"
    assert cli.main([str(phantom_folder), str(out), "--weights", str(weights_root), "-q", "--max-workers", "2"]) == 0
    _check_layout(out, sorted(phantom_folder.glob("*.nii.gz")))


def test_real_scan(tmp_path, weights_root, real_data):
    scan = real_data / "sct_testing_data" / "t2" / "t2.nii.gz"
    if not scan.is_file():
        pytest.skip(f"{scan} is absent")
    out = tmp_path / "out"
    assert cli.main([str(scan), str(out), "--weights", str(weights_root), "-q"]) == 0
    _check_layout(out, [scan])
