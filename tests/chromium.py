"""Drive a headless Chromium for the HTML report tests: DOM dumps and screenshots, no extra dependency.

Debian's package is `chromium` (`apt-get install -y --no-install-recommends chromium`). Tests skip with a
reason when it is absent. Screenshots are also copied to $TOTALSPINESEG_TEST_ARTIFACTS when that is set.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-quic"]


def browser() -> str:
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        pytest.skip("headless browser test: chromium is not installed (apt-get install -y chromium)")
    return exe


def _run(args: list[str], timeout: float = 60) -> str:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([browser(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def dump_dom(page: Path, budget_ms: int = 5000) -> str:
    """The DOM after the page's scripts ran (promises included, within the virtual-time budget)."""
    return _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", page.resolve().as_uri()])


def screenshot(page: Path, out: Path, size=(1400, 900)) -> Path:
    _run([f"--window-size={size[0]},{size[1]}", f"--screenshot={out}", "--virtual-time-budget=3000",
          page.resolve().as_uri()])
    assert out.is_file() and out.stat().st_size > 10_000, "empty screenshot"
    keep = os.environ.get("TOTALSPINESEG_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(keep) / out.name)
    return out


def with_script(page: Path, script: str, out: Path) -> Path:
    """A copy of `page` with `script` appended: the test drives the page from inside, the product stays clean."""
    text = page.read_text(encoding="utf-8").replace("</body>", f"<script>{script}</script></body>")
    out.write_text(text, encoding="utf-8")
    return out


def result_of(dom: str, element_id: str = "test-result") -> dict:
    match = re.search(rf'<pre id="{element_id}">(.*?)</pre>', dom, re.DOTALL)
    assert match, f"no #{element_id} in the DOM: the page script did not finish"
    return json.loads(html.unescape(match.group(1)))


# Keyboard review, sorting and the two exports, driven from inside the page.
DRIVE_GROUP_REPORT = r"""
(async function () {
  const out = {};
  const rows = () => Array.from(document.querySelectorAll('#qc-body tr'));
  const key = k => document.dispatchEvent(new KeyboardEvent('keydown', {key: k, bubbles: true}));
  out.rows = rows().length;
  out.thumbs = document.querySelectorAll('#qc-body img.thumb').length;
  ['ArrowDown', 'p', 'j', 'f', 'j', 'a', 'k', ' '].forEach(key);
  out.ratings = rows().map(tr => tr.querySelector('td.rating').textContent);
  out.selected = +document.querySelector('#qc-body tr.selected').dataset.index;
  const th = Array.from(document.querySelectorAll('#qc-head th')).find(t => t.dataset.key === 'n_flags');
  th.click(); th.click();
  out.sorted = rows().map(tr => tr.id);
  out.links = rows().map(tr => tr.querySelector('td.id a').getAttribute('href'));
  const blobs = [];
  URL.createObjectURL = b => { blobs.push(b); return 'blob:test'; };
  HTMLAnchorElement.prototype.click = function () { blobs[blobs.length - 1].fileName = this.download; };
  document.getElementById('export-tsv').click();
  document.getElementById('export-json').click();
  out.exports = await Promise.all(blobs.map(async b => ({name: b.fileName, text: await b.text()})));
  const pre = document.createElement('pre');
  pre.id = 'test-result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
"""
