"""Participant and group HTML reports, including the group page in a real headless browser."""

import base64
import json
import re

import chromium
from PIL import Image

from totalspineseg.bids_app import report
from totalspineseg.bids_app.record import ImageRecord


def _record(i, flags=(), figure=None):
    return ImageRecord.from_json({
        "fingerprint": "f", "stats": f"sub-{i:02d}/anat/x.tsv", "source": f"sub-{i:02d}/anat/sub-{i:02d}_T2w.nii.gz",
        "id": f"sub-{i:02d}", "subject": f"{i:02d}",
            "session": None, "role": "main", "localizer": None, "figure": figure,
            "outputs": [f"sub-{i:02d}/anat/sub-{i:02d}_desc-spine_dseg.nii.gz"],
            "qc": {"n_vertebrae": 10 + i, "n_discs": 9 + i, "top": "T2", "bottom": "L1", "cord_mm3": 1000.0 * i,
                   "canal_mm3": 5000.0, "cord_in_canal": 0.99, "flags": [dict(f) for f in flags]},
            "levels": [{"level": 9, "name": "T2-T3", "voxel": [1, 2, 3], "world_mm": [0.5, 1.0, -2.0]}],
            "provenance": {"ModelRelease": "demo", "Device": "cpu"}, "seconds": 1.5, "finished": "2026-01-01"})


def _jpeg(path, size=(300, 600), colour=(200, 40, 40)):
    Image.new("RGB", size, colour).save(path, "JPEG")
    return path


def test_thumbnail_is_a_downscaled_jpeg_data_uri(tmp_path):
    uri = report.thumbnail_data_uri(_jpeg(tmp_path / "a.jpg", (400, 1000)), height=200)
    assert uri.startswith("data:image/jpeg;base64,")
    img = Image.open(__import__("io").BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.size == (80, 200)
    assert report.thumbnail_data_uri(tmp_path / "missing.jpg") is None
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    assert report.thumbnail_data_uri(tmp_path / "bad.jpg") is None


def test_participant_page_lists_images_flags_levels_and_errors():
    flag = {"code": "missing_level", "message": "missing: T4-T5"}
    page = report.participant_page("01", [_record(1, [flag], "sub-01/figures/x.jpg")], {"sub-01": [(1, 1234.0)]},
                                   [("crash-1-sub-01_T1w.txt", "reason: <broken> file")])
    assert '<section id="sub-01">' in page and 'src="sub-01/figures/x.jpg"' in page
    assert "missing_level" in page and "T2-T3" in page and "1,234" in page
    assert "Errors" in page and "&lt;broken&gt;" in page  # crash text is escaped
    assert "no QC flag" in report.participant_page("01", [_record(1)], {}, [])


def test_group_page_embeds_data_style_and_script():
    rows = [report.group_row(1, _record(1, [{"code": "order", "message": "</script><b>"}]), None)]
    page = report.group_page(rows, title="QC <test>")
    assert "<title>QC &lt;test&gt;</title>" in page
    data = re.search(r'<script type="application/json" id="qc-data">(.*?)</script>', page, re.DOTALL).group(1)
    assert json.loads(data)[0]["flags"][0]["message"] == "</script><b>"  # escaped, still valid JSON
    assert "$" not in re.sub(r"<script>.*?</script>", "", page, flags=re.DOTALL)  # every placeholder filled
    assert rows[0]["link"] == "sub-01.html#sub-01" and rows[0]["range"] == "T2\u2013L1"


def test_group_page_in_a_headless_browser(tmp_path):
    records = [_record(i, [{"code": "missing_level", "message": "m"}] * (i % 2), None) for i in range(1, 6)]
    rows = [report.group_row(i + 1, r, report.thumbnail_data_uri(_jpeg(tmp_path / f"{i}.jpg")))
            for i, r in enumerate(records)]
    page = tmp_path / "group_report.html"
    page.write_text(report.group_page(rows))
    driven = chromium.with_script(page, chromium.DRIVE_GROUP_REPORT, tmp_path / "driven.html")
    out = chromium.result_of(chromium.dump_dom(driven))
    assert out["rows"] == 5 and out["thumbs"] == 5
    assert out["ratings"] == ["", "Pass", "Artifact", "Artifact", ""]
    assert out["selected"] == 2
    assert out["sorted"][:2] == ["row-sub-01", "row-sub-03"]  # the flagged images first
    tsv = next(e for e in out["exports"] if e["name"] == "qc_ratings.tsv")["text"].splitlines()
    assert tsv[0] == "image_id\tsource\trating\tqc_flags" and tsv[2].split("\t")[2] == "Pass"
    ratings = json.loads(next(e for e in out["exports"] if e["name"] == "qc_ratings.json")["text"])["ratings"]
    assert [r["rating"] for r in ratings] == ["", "Pass", "Artifact", "Artifact", ""]
    shot = chromium.screenshot(page, tmp_path / "group_report.png")
    print(f"group report screenshot: {shot}")
