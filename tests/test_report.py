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
from pathlib import Path
from string import Template

import numpy as np
import pytest
from helpers import Elements, page_text_in, render, shipped, template_lines_in, write_models, write_params
from PIL import Image

from pipeline.core.params import PipelineError
from pipeline.rendering.report import (
    ReportInputs,
    ReportSources,
    conditions_section,
    evaluation_section,
    render_report,
)
from pipeline.rendering.templating import fill

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
SCORES = {"fid": 41.25, "kid_mean": 0.031, "kid_std": 0.002, "coverage": 0.412,
          "precision": 0.655, "recall": 0.301, "density": 0.87, "variety": 0.83, "near_identical": 0.02,
          "high_frequency": 1.37, "face_rate": 0.62, "raw_coverage": 0.388,
          "raw_precision": 0.6, "raw_recall": 0.25, "raw_variety": 0.71, "raw_near_identical": 0.05,
          "raw_high_frequency": 1.52, "raw_face_rate": 0.58, "best_epoch": 3, "cond_hair_of_ceiling": 0.9375,
          "nn_distance_mean": None}
STATS = {
    "raw/scrape_stats.json": {"downloaded": 16, "failed": 1, "failures": ["post 7: HTTP 404"]},
    "crop_stats.json": {"images": 16, "faces": 23, "images_with_faces": 14, "unreadable": 0},
    "manifest_stats.json": {"faces": 21, "duplicates_dropped": 2, "split": {"train": 19, "val": 2}},
    "tag_counts.json": {"solo": 12, "blue_hair": 5, "<b>odd</b>": 1},
}
CURVE = [  # eval_details.json's snapshots: epoch 3 was kept (SCORES' best_epoch)
    {"epoch": 1, "coverage": 0.1, "precision": 0.2, "recall": 0.05, "variety": 0.31, "near_identical": 0.4,
     "high_frequency": 2.1, "face_rate": 0.3, "fid": "", "kid_mean": 0.09},
    {"epoch": 3, "coverage": 0.412, "precision": 0.655, "recall": 0.301, "variety": 0.83,
     "near_identical": 0.02, "high_frequency": 1.37, "face_rate": 0.62, "fid": "", "kid_mean": 0.031},
    {"epoch": 5, "coverage": 0.2, "precision": 0.7, "recall": 0.1, "variety": 0.12, "near_identical": 0.6,
     "high_frequency": 1.1, "face_rate": 0.8, "fid": "", "kid_mean": 0.05},
]
HAIR = {  # one tag group as eval_details.json's conditions holds it
    "accuracy": 0.9, "accuracy_95": [0.87, 0.925], "samples": 512, "ceiling": 0.96,
    "ceiling_95": [0.946, 0.971], "ceiling_faces": 1000, "of_ceiling": 0.9375, "labelled_train_faces": 180,
    "values": {
        "red": {"accuracy": 0.97, "accuracy_95": [0.951, 0.982], "face_rate": 0.5, "near_copies": 0.0,
                "train_faces": 12, "variety": 0.83, "variety_95": [0.61, 1.02], "near_identical": 0.1,
                "near_identical_95": [0.05, 0.19], "high_frequency": 1.12, "precision": 0.5, "recall": 0.4,
                "density": 0.7, "coverage": 0.35},
        "<i>blue</i>": {"accuracy": None, "face_rate": 0.4, "near_copies": 0.01, "train_faces": 1},
    },
}
DETAILS = {"fid_status": "ok", "selected_by": "kid", "memorisation": "no copying: 0.0% of samples",
           "damaged_snapshots": [],
           "reference": {"face_rate_real": 0.93, "samples": 5000, "reference_images": 19, "val_faces": 2},
           "intervals": {"ema": {"variety_95": None, "near_identical_95": [0.011, 0.034],
                                 "face_rate_95": [0.59, 0.65]},
                         "raw": {"variety_95": [0.64, 0.79], "near_identical_95": [0.03, 0.08],
                                 "face_rate_95": [0.55, 0.61]}},
           "snapshots": CURVE, "conditions": {"judge": "3000 freshly drawn demo faces", "hair": HAIR}}
OLD_SCORES = {"fid": 41.25, "kid_mean": 0.031, "face_rate": 0.62, "face_rate_real": 0.93, "best_epoch": 2}
OLD_DETAILS = {  # eval_details.json as the evaluate stage wrote it before variety and coverage
    "fid_status": "ok", "selected_by": "fid", "memorisation": "no copying", "damaged_snapshots": [],
    "conditions": {"hair": {"accuracy": 0.9, "ceiling": 0.95, "of_ceiling": 0.947, "labelled_val_faces": 40,
                            "values": {"red": {"accuracy": 0.9, "face_rate": 0.5, "near_copies": 0.0,
                                               "spread": 0.1, "spread_train": 0.2, "train_faces": 12}}}}}
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


def between(html: str, start: str, end: str) -> str:
    """The part of the page from `start` to `end`: one table, not its namesakes elsewhere."""
    return html[html.index(start):html.index(end, html.index(start))]


def row_cells(html: str, label: str) -> list[str]:
    """The text of each cell of the first row headed `label` (tags stripped)."""
    found = re.search(rf"<tr[^>]*><th>{re.escape(label)}</th>(.*?)</tr>", html)
    assert found, f"no row {label!r}"
    return [unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td[^>]*>(.*?)</td>", found[1])]


def pictures_folder(folder: Path) -> Path:
    """A folder holding the one picture the conditions section embeds."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 40, 40)).save(folder / "conditions.png")
    return folder


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


def test_page_is_the_shipped_template_and_style(full_run: Path) -> None:
    """The markup and style are package files, not code: report.html filled in, base.css then report.css."""
    html = page(full_run)
    style = re.search(r"<style>\n(.*?)</style>", html, re.S)[1]
    assert style == shipped("pipeline.rendering", "base.css") + shipped("pipeline.rendering", "report.css")
    assert "tr.best th" in style and "header h1" in style
    assert template_lines_in(html, shipped("pipeline.rendering", "report.html")) == []
    assert "$" not in html.replace(style, "")


def test_report_code_holds_no_markup_style_or_script() -> None:
    assert page_text_in("pipeline.rendering.report") == []


def test_template_values_are_escaped_and_markup_is_not() -> None:
    template = Template('<p title="$title">$body · $title</p>')
    filled = fill(template, {"body": "<b>kept</b>"}, title='a"<&>')
    assert filled == '<p title="a&quot;&lt;&amp;&gt;"><b>kept</b> · a&quot;&lt;&amp;&gt;</p>'
    for markup, text in (({}, {"title": "x"}),  # $body left unfilled
                         ({"body": ""}, {"title": "x", "tilte": "y"}),  # a name the template lacks
                         ({"body": "", "title": ""}, {"title": "x"})):  # filled twice
        with pytest.raises(ValueError, match="template wants"):
            fill(template, markup, **text)


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
    assert "<h3>What the generator draws</h3>" in html and "<h3>Snapshots</h3>" in html
    assert 'class="missing"' not in html  # every optional input was found


def test_generator_table_sets_ema_beside_raw_with_intervals(full_run: Path) -> None:
    drawn = between(page(full_run), "<h3>What the generator draws</h3>", "<h3>Snapshots</h3>")
    assert re.search(r'<th class="heading">EMA generator</th><th class="heading">95% interval</th>'
                     r'<th class="heading">raw generator</th><th class="heading">95% interval</th>', drawn)
    assert row_cells(drawn, "face_rate")[:4] == ["62.0%", "59.0-65.0%", "58.0%", "55.0-61.0%"]
    assert row_cells(drawn, "variety")[:4] == ["0.83", "", "0.71", "0.64-0.79"]  # a ratio, not a percent
    assert row_cells(drawn, "near_identical")[:4] == ["2.0%", "1.1-3.4%", "5.0%", "3.0-8.0%"]
    assert row_cells(drawn, "density")[:4] == ["0.87", "", "not measured", ""]  # no raw density is written
    assert [re.search(r"<tr><th>(\w+)</th><td", row)[1] for row in drawn.split("</tr>")[1:-1]] == [
        "coverage", "precision", "recall", "density", "variety", "near_identical", "high_frequency",
        "face_rate"]


def test_snapshot_table_marks_the_kept_epoch(full_run: Path) -> None:
    curve = between(page(full_run), "<h3>Snapshots</h3>", "<h3>Every score</h3>")
    assert curve.count('<tr class="best">') == 1
    assert '<tr class="best"><th>3</th>' in curve
    assert row_cells(curve, "3")[-1] == "best.pt"
    assert row_cells(curve, "1")[-1] == row_cells(curve, "5")[-1] == ""
    assert row_cells(curve, "5")[:4] == ["20.0%", "70.0%", "10.0%", "0.12"]
    assert row_cells(curve, "1")[-3] == "not measured"  # fid was "" (unreliable at this size)
    assert "the best kid" in curve


def test_every_new_score_has_a_note(full_run: Path) -> None:
    every = between(page(full_run), "<h3>Every score</h3>", "<h3>Nearest neighbours</h3>")
    for key in ("coverage", "variety", "high_frequency", "raw_coverage", "raw_face_rate",
                "cond_hair_of_ceiling", "face_rate_real", "samples"):
        assert row_cells(every, key)[1], f"{key} has no note"
    assert "one repeated face or speckle scores near 0" in row_cells(every, "coverage")[1]
    assert row_cells(every, "raw_variety")[1].startswith("the same as variety, for the raw (non-EMA) weights")


def test_conditions_name_the_judge_the_ceiling_and_intervals(tmp_path: Path) -> None:
    html = conditions_section(pictures_folder(tmp_path), DETAILS, conditional=True)
    summary = re.search(r"<p><b>hair</b>: (.*?)</p>", html)[1]
    assert "90.0% (87.0-92.5%) of the 512 faces asked for a value" in summary
    assert "trained on 3000 freshly drawn demo faces" in summary
    assert ("accuracy on 1000 held-out faces is 96.0% (94.6-97.1%) (the ceiling): 93.8% of the ceiling"
            in summary)
    assert "judge" not in re.findall(r"<p><b>(.*?)</b>", html)  # the judge's description is no group
    titles = re.findall(r'<th class="heading">(.*?)</th>', html)
    assert titles == ["value", "drawn as asked", "face rate", "near copies of train faces", "variety",
                      "near identical", "high frequency", "coverage", "labelled train faces"]
    assert row_cells(html, "red") == ["97.0% (95.1-98.2%)", "50.0%", "0.0%", "0.83 (0.61-1.02)",
                                      "10.0% (5.0-19.0%)", "1.12", "35.0%", "12"]
    assert row_cells(html, "&lt;i&gt;blue&lt;/i&gt;") == [
        "not measured", "40.0%", "1.0%", "not measured", "not measured", "not measured", "not measured", "1"]
    assert "spread" not in html and "high frequency: their high-frequency energy" in html


def test_older_evaluation_files_still_render(full_run: Path, tmp_path: Path) -> None:
    sources = ReportSources(params=full_run / "params.yaml", pictures=full_run / "reports",
                            data=full_run / "data", training=full_run / "models/dvclive/metrics.json",
                            evaluation=full_run / "metrics")
    payload = {"epoch": 2, "ema": True, "config": {"image_size": 48, "conditions": {"hair": ["red"]}}}
    inputs = ReportInputs(sources=sources, params=None, stats={name: None for name in STATS}, training=None,
                          scores=OLD_SCORES, details=OLD_DETAILS, tags=None)
    html = render_report(inputs, payload)
    drawn = between(html, "<h3>What the generator draws</h3>", "<h3>Snapshots</h3>")
    assert row_cells(drawn, "coverage")[:4] == ["not measured", "", "not measured", ""]
    assert row_cells(drawn, "face_rate")[:4] == ["62.0%", "", "not measured", ""]
    assert "raw column is not measured" in drawn
    assert "snapshot scores not available (eval_details.json predates them" in html
    assert "<th>fid</th><td class=\"number\">41.25</td>" in html
    summary = re.search(r"<p><b>hair</b>: (.*?)</p>", html)[1]
    assert "trained on <span class=\"na\">not recorded</span>" in summary
    assert "accuracy on 40 held-out faces is 95.0% (the ceiling)" in summary
    assert row_cells(html, "red")[3] == "not measured"  # variety: not in the older file
    without_details = evaluation_section(sources, OLD_SCORES, None)
    assert f"snapshot scores not available ({sources.details} not found)" in without_details
    damaged = evaluation_section(sources, SCORES, {"intervals": {"ema": "?", "raw": None}, "snapshots": [3]})
    assert row_cells(damaged, "coverage")[:4] == ["41.2%", "", "38.8%", ""]


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
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
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
