"""``score --report DIR``: a self-contained HTML page (issue 26 item 4)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.eval.report import extremes, render_report


class _Page(HTMLParser):
    """Collects every element's resource attributes and the figure captions per section."""

    def __init__(self) -> None:
        super().__init__()
        self.resources: list[str] = []
        self.section = ""
        self.figures: dict[str, list[str]] = {}
        self._caption: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        self.resources += [attrs[k] for k in ("src", "href") if attrs.get(k)]
        if tag == "h2":
            self.section = attrs.get("id", "")
        if tag == "figcaption":
            self._caption = []

    def handle_endtag(self, tag) -> None:
        if tag == "figcaption" and self._caption is not None:
            self.figures.setdefault(self.section, []).append(" ".join(self._caption))
            self._caption = None

    def handle_data(self, data) -> None:
        if self._caption is not None:
            self._caption.append(data.strip())


def _png(colour: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (colour, 0, 0)).save(buf, "JPEG")
    return buf.getvalue()


def test_page_is_self_contained_and_shows_the_extremes() -> None:
    names = [f"img{i}.jpg" for i in range(20)]
    quality = np.linspace(5.0, 24.0, 20)[::-1].copy()  # img19 lowest, img0 highest
    quality_100 = np.clip(quality * 5, 0, 100)  # saturates at 100 from quality 20 up
    summary = {"images": 20, "unreadable": 0, "method": "norm", "mean_quality_100": 70.0,
               "median_quality_100": 72.0, "mean_quality": 14.5, "median_quality": 14.5, "seconds": 1.0,
               "calibration": {"low": 0.0, "high": 20.0, "source": "defaults"}}
    page = render_report(title="faces <test>", summary=summary, names=names, quality=quality,
                         quality_100=quality_100, histogram_png=b"\x89PNG fake",
                         load_image=lambda n: None if n == "img0.jpg" else _png(int(n[3:-4]) * 10))
    parser = _Page()
    parser.feed(page)
    assert parser.resources and all(r.startswith("data:image/png;base64,") for r in parser.resources)
    assert not re.search(r"https?://", page) and "faces &lt;test&gt;" in page
    low, high = parser.figures["lowest"], parser.figures["highest"]
    assert len(low) == len(high) == 8
    assert low[0].startswith("5 raw, 25 /100") and "img19.jpg" in low[0]
    # both saturate at 100 on the 0-100 scale; the raw value tells them apart
    assert high[0].startswith("24 raw, 100 /100") and high[1].startswith("23 raw, 100 /100")
    assert "(not readable)" in page  # img0 has no bytes: the page still renders
    assert page.count("<img") == 1 + 8 + 7


def test_extremes_on_tiny_sets() -> None:
    assert extremes(np.array([3.0]), 8) == ([0], [0])
    assert extremes(np.array([3.0, 1.0, 2.0]), 8) == ([1], [0])
    assert extremes(np.array([]), 8) == ([], [])


@pytest.fixture(scope="module")
def scored_report(tmp_path_factory, make_image) -> Path:
    from fqtool.models import create_model
    from fqtool.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("report")
    for n in range(6):
        (root / "faces").mkdir(exist_ok=True)
        (root / "faces" / f"{n}.jpg").write_bytes(make_image((40 * n, 90, 120)))
    weights = save_checkpoint(create_model("iresnet_tiny"), root / "tiny.safetensors")
    result = CliRunner().invoke(app, ["score", str(root / "faces"), "-w", str(weights), "--device", "cpu",
                                      "--workers", "0", "-q", "-o", str(root / "s.csv"),
                                      "--report", str(root / "rep")])
    assert result.exit_code == 0, result.output
    return root / "rep" / "index.html"


def test_score_report_cli_writes_the_page(scored_report) -> None:
    parser = _Page()
    parser.feed(scored_report.read_text(encoding="utf-8"))
    assert len(parser.figures["lowest"]) == len(parser.figures["highest"]) == 3
    assert len(parser.resources) == 7
    assert all(r.startswith("data:image/png;base64,") for r in parser.resources)
    assert (scored_report.parent / "histogram.png").read_bytes()[:4] == b"\x89PNG"


def _browser() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.skipif(_browser() is None, reason="no headless browser (chromium) installed on this machine")
def test_report_renders_in_headless_chromium(scored_report, tmp_path) -> None:
    """The page loads in a real browser with no network: the DOM it builds has every thumbnail."""
    browser = _browser()
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", scored_report.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("<figure>") == 6 and 'id="lowest"' in done.stdout
