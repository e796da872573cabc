"""``score --report DIR``: one self-contained HTML page about a scored image set.

The page has the summary, the 0-100 histogram and thumbnails of the lowest- and highest-scored images
with their raw and 0-100 quality. Everything is inlined (images as base64 ``data:`` URIs, CSS in a
``<style>`` element): the page opens offline, from an e-mail or a CI artefact, and loads nothing.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fqtool.fsutil import atomic_write_text, ensure_dir

THUMBNAIL = 112
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}
.strip{display:flex;flex-wrap:wrap;gap:.6em}figure{margin:0;width:8.5em;font-size:.8em}
figure img{width:100%;image-rendering:auto;border:1px solid #ccc}figcaption{overflow-wrap:anywhere}
"""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail_png(encoded: bytes, size: int = THUMBNAIL) -> bytes | None:
    """A PNG thumbnail of an encoded image (None when it cannot be decoded: the page still renders)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buf = io.BytesIO()
            image.save(buf, "PNG")
            return buf.getvalue()
    except Exception:  # a damaged image only loses its thumbnail
        return None


def extremes(quality: np.ndarray, count: int) -> tuple[list[int], list[int]]:
    """Row indices of the ``count`` lowest and highest raw qualities (ties in input order)."""
    order = np.argsort(np.asarray(quality, dtype=np.float64), kind="stable")
    count = max(0, min(count, len(order) // 2 if len(order) > 1 else len(order)))
    return order[:count].tolist(), order[::-1][:count].tolist()


def _figure(name: str, raw: float, q100: float, image: bytes | None) -> str:
    img = (f'<img alt="{html.escape(name)}" src="{data_uri(image, "image/png")}">' if image
           else "<div>(not readable)</div>")
    return (f"<figure>{img}<figcaption><b>{raw:.4g}</b> raw, <b>{q100:.0f}</b>/100<br>"
            f"{html.escape(name)}</figcaption></figure>")


def _summary_rows(summary: dict) -> str:
    cal = summary.get("calibration") or {}
    rows = [
        ("images scored", f"{summary['images']:,}"),
        ("unreadable (skipped)", f"{summary['unreadable']:,}"),
        ("quality method", summary["method"]),
        ("mean / median quality 0-100",
         f"{summary['mean_quality_100']:.1f} / {summary['median_quality_100']:.1f}"),
        ("mean / median raw quality", f"{summary['mean_quality']:.4g} / {summary['median_quality']:.4g}"),
        ("0-100 scale", f"[{cal.get('low', float('nan')):g}, {cal.get('high', float('nan')):g}] from "
                        f"{cal.get('source', '?')}"),
        ("time", f"{summary['seconds']:.1f} s"),
    ]
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)


def render_report(
    *,
    title: str,
    summary: dict,
    names: list[str],
    quality: np.ndarray,
    quality_100: np.ndarray,
    histogram_png: bytes | None,
    load_image: Callable[[str], bytes | None],
    count: int = 8,
) -> str:
    """The page as text. ``load_image(name)`` returns the encoded image of a row (or None)."""
    low, high = extremes(quality, count)

    def strip(rows: list[int]) -> str:
        figures = []
        for i in rows:
            encoded = load_image(names[i])
            figures.append(_figure(names[i], float(quality[i]), float(quality_100[i]),
                                   thumbnail_png(encoded) if encoded else None))
        return f'<div class="strip">{"".join(figures)}</div>'

    hist = (f'<img alt="histogram of the 0-100 quality" src="{data_uri(histogram_png, "image/png")}">'
            if histogram_png else "")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<table class="summary">{_summary_rows(summary)}</table>',
        f"<h2>Histogram</h2>{hist}",
        f'<h2 id="lowest">Lowest {len(low)}</h2>{strip(low)}',
        f'<h2 id="highest">Highest {len(high)}</h2>{strip(high)}',
        "<p>Raw: the quality as the method gives it (it keeps ranking where the 0-100 scale saturates); "
        "0-100: the calibrated scale of the CSV's quality_100 column.</p>",
        "</body></html>",
    ])


def write_score_report(result, out_dir: str | Path, load_image: Callable[[str], bytes | None], *,
                       title: str, count: int = 8) -> Path:
    """Histogram (``out_dir/histogram.png``, also inlined) and ``out_dir/index.html`` for a
    :class:`~fqtool.eval.scoring.ScoreResult`."""
    from fqtool.eval.scoring import plot_histogram

    out_dir = ensure_dir(Path(out_dir))
    histogram = plot_histogram(result, out_dir / "histogram.png", title=title)
    page = render_report(title=title, summary=result.summary(), names=result.names, quality=result.quality,
                         quality_100=result.quality_100, histogram_png=histogram.read_bytes(),
                         load_image=load_image, count=count)
    return write_report(out_dir, page)


def write_report(out_dir: str | Path, page: str) -> Path:
    """``out_dir/index.html``, written atomically."""
    path = ensure_dir(Path(out_dir)) / "index.html"
    atomic_write_text(path, page)
    return path
