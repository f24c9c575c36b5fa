"""The report: one self-contained page with every picture, each optional input or a note saying it
is missing, and a real headless Chromium that shows it (skipped with a reason where none is installed).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_render import render, write_models, write_params

from pipeline.core.params import PipelineError

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
WINDOW = (1280, 2400)
PICTURES = {  # img id -> file under the reports folder
    "samples": "samples.png",
    "conditions": "conditions.png",
    "losses": "losses.png",
    "timelapse": "timelapse.gif",
    "interpolation": "interpolation.png",
    "interpolation-gif": "interpolation.gif",
}
SCORES = {"fid": 41.25, "kid_mean": 0.031, "kid_std": 0.002, "face_rate": 0.62, "face_rate_real": 0.93,
          "nn_distance_mean": None}
STATS = {
    "raw/scrape_stats.json": {"downloaded": 16, "failed": 1, "failures": ["post 7: HTTP 404"]},
    "crop_stats.json": {"images": 16, "faces": 23, "images_with_faces": 14, "unreadable": 0},
    "manifest_stats.json": {"faces": 21, "duplicates_dropped": 2, "split": {"train": 19, "val": 2}},
    "tag_counts.json": {"solo": 12, "blue_hair": 5, "<b>odd</b>": 1},
}
DETAILS = {"fid_status": "ok", "selected_by": "fid", "memorisation": "no copying: 0.0% of samples",
           "damaged_snapshots": []}
TRAINING = {"train": {"loss_d": 0.95, "loss_g": 1.9}, "step": 2, "images_per_second": 123.4}
PROBE = """<script>
addEventListener("load", () => {
  const shown = {};
  for (const image of document.images) {
    const box = image.getBoundingClientRect();  // the border box; client* is inside the border
    if (image.complete && image.naturalWidth > 0 && image.clientWidth > 0) {
      shown[image.id] = [box.left + scrollX + image.clientLeft, box.top + scrollY + image.clientTop,
                         image.clientWidth, image.clientHeight];
    }
  }
  document.body.dataset.shown = JSON.stringify(shown);
});
</script>"""


class Elements(HTMLParser):
    """Every start tag with its attributes, in order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def images(self) -> dict[str, str]:
        return {attrs["id"] or "": attrs["src"] or "" for tag, attrs in self.tags if tag == "img"}

    def find(self, tag: str, **wanted: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags
                if name == tag and all(attrs.get(key) == value for key, value in wanted.items())]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A render with every optional input present: data stats, training summary, evaluation."""
    root = tmp_path_factory.mktemp("run")
    models = write_models(root / "models", 48)
    (models / "dvclive/metrics.json").write_text(json.dumps(TRAINING))
    for name, stats in STATS.items():
        (root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "data" / name).write_text(json.dumps(stats))
    (root / "metrics").mkdir()
    (root / "metrics/eval.json").write_text(json.dumps(SCORES))
    (root / "metrics/eval_details.json").write_text(json.dumps(DETAILS))
    Image.new("RGB", (200, 100), (40, 90, 160)).save(root / "metrics/nearest_neighbours.png")
    render(write_params(root / "params.yaml"), models, root / "reports")
    return root


def page(root: Path) -> str:
    return (root / "reports/index.html").read_text()


def test_every_picture_is_embedded_byte_for_byte(full_run: Path) -> None:
    images = Elements(page(full_run)).images()
    expected = {ident: full_run / "reports" / name for ident, name in PICTURES.items()}
    expected["nearest-neighbours"] = full_run / "metrics/nearest_neighbours.png"
    assert set(images) == set(expected)
    for ident, path in expected.items():
        mime, payload = re.fullmatch(r"data:(image/\w+);base64,(.+)", images[ident]).groups()
        assert mime == f"image/{path.suffix[1:]}"
        assert base64.b64decode(payload) == path.read_bytes()


def test_page_needs_nothing_beside_it(full_run: Path) -> None:
    html = page(full_run)
    for tag, attrs in Elements(html).tags:
        assert tag not in ("script", "link", "iframe", "object")
        assert (attrs.get("src") or "data:").startswith("data:")
        assert (attrs.get("href") or "#").startswith("#")
    assert "@import" not in html and "url(" not in html


def test_page_shows_params_data_training_and_scores(full_run: Path) -> None:
    html = page(full_run)
    for section in ("train", "render"):  # every section of params.yaml as a table
        assert f"<h3>{section}</h3>" in html
    assert "<th>interpolation_steps</th><td class=\"number\">4</td>" in html
    assert "<th>fid</th><td class=\"number\">41.25</td>" in html
    assert re.search(r"<th>nn_distance_mean</th><td><span class=\"na\">not available</span>", html)
    assert "Fréchet Inception distance" in html
    assert "<b>23</b>faces found" in html and "<b>2</b>duplicates dropped" in html
    assert "post 7: HTTP 404" in html
    assert "&lt;b&gt;odd&lt;/b&gt;" in html and "<b>odd</b>" not in html  # tags are escaped
    assert html.count('class="bar"') == 3
    assert "<th>images_per_second</th><td class=\"number\">123.4</td>" in html
    assert "EMA generator after epoch 1, 48 px faces" in html
    assert 'class="missing"' not in html  # every optional input was found


def test_missing_optional_inputs_are_noted_not_fatal(tmp_path: Path) -> None:
    models = write_models(tmp_path / "models", 48)
    render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")
    html = page(tmp_path)
    assert "not evaluated: " in html and "eval.json not found" in html
    assert "nearest-neighbour sheet not available" in html
    assert "training summary not available" in html
    for name in STATS:
        if name != "tag_counts.json":  # a data description, shown as bars when present
            assert f"not available ({tmp_path / 'data' / name} not found)" in html
    assert "Faces per tag" not in html
    assert set(Elements(html).images()) == set(PICTURES)


def test_damaged_scores_are_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    models = write_models(tmp_path / "models", 48)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/eval.json").write_text('{"fid": ')
    with pytest.raises(PipelineError, match=r"eval\.json: not valid JSON") as error:
        render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "reports").exists()


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium, offline, with a fresh profile: nothing outside the test changes what it shows."""
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
               f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def shown_images(index: Path, tmp_path: Path) -> dict[str, list[float]]:
    """Decoded, laid-out images and their boxes, read by a probe script in a copy of the page."""
    probe = tmp_path / "probe.html"
    probe.write_text(index.read_text().replace("</body>", f"{PROBE}</body>"))
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(),
                   profile=tmp_path / "probe-profile").stdout
    found = re.search(r'data-shown="([^"]*)"', dom)
    assert found, "the probe never ran: the page did not finish loading"
    return json.loads(unescape(found.group(1)))


def screenshot_region(screenshot: np.ndarray, box: list[float], picture: Path) -> float:
    """Mean difference between a picture and where the page shows it at its natural size."""
    left, top = round(box[0]), round(box[1])
    with Image.open(picture) as image:
        expected = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert (round(box[2]), round(box[3])) == (expected.shape[1], expected.shape[0])
    shown = screenshot[top:top + expected.shape[0], left:left + expected.shape[1]]
    return float(np.abs(shown - expected).mean())


def test_chromium_shows_the_grid_and_the_curves(full_run: Path, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"{CHROMIUM} is missing; .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium): no browser to check the report in")
    index = full_run / "reports/index.html"
    shown = shown_images(index, tmp_path)
    assert set(shown) == set(PICTURES) | {"nearest-neighbours"}  # every picture decoded and laid out

    screenshot_path = tmp_path / "report.png"
    chromium(f"--screenshot={screenshot_path}", index.as_uri(), profile=tmp_path / "profile")
    print(f"report screenshot: {screenshot_path}")
    with Image.open(screenshot_path) as image:
        assert image.size == WINDOW
        screenshot = np.asarray(image.convert("RGB"), dtype=np.int16)
    for ident in ("samples", "losses"):  # both in the first screen, pixel for pixel
        box = shown[ident]
        assert box[1] + box[3] <= WINDOW[1], f"{ident} is below the first {WINDOW[1]} px"
        assert screenshot_region(screenshot, box, full_run / "reports" / PICTURES[ident]) < 2
