"""reports/index.html: one page with everything a run produced, for someone new to the project.

The pictures are embedded as data URIs and the style is inline, so the single file opens offline,
mails and archives whole. The rendered pictures are required; the other inputs (data stats,
training summary, evaluation) are optional and show a note when absent, so the report renders at
any point of the pipeline's life. Nothing in it depends on the clock: same inputs, same bytes.
The markup and style are templates/report.html and report.css beside this module, after the
templates/base.css it shares with pipeline.serve's page.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.files import write_text
from pipeline.core.params import PipelineError
from pipeline.models.networks import describe_generator
from pipeline.rendering.templating import BASE_STYLE, fill, page_template, read_template

log = logging.getLogger("pipeline.rendering.report")

MIME_TYPES = {".png": "image/png", ".gif": "image/gif"}
DATA_STATS = (  # (title, file under the data folder)
    ("Last scrape", "raw/scrape_stats.json"),
    ("Face detection", "crop_stats.json"),
    ("Manifest", "manifest_stats.json"),
)
HEADLINE_NUMBERS = (  # (label, data stats file, key path): the few numbers a newcomer asks first
    ("images in the collection", "crop_stats.json", ("images",)),
    ("faces found", "crop_stats.json", ("faces",)),
    ("duplicates dropped", "manifest_stats.json", ("duplicates_dropped",)),
    ("near duplicates dropped", "manifest_stats.json", ("near_duplicates_dropped",)),
    ("training faces", "manifest_stats.json", ("split", "train")),
    ("validation faces", "manifest_stats.json", ("split", "val")),
)
TAG_COUNTS = "tag_counts.json"  # under the data folder: tag -> faces, shown as bars
SHOWN_TAGS = 25
EVAL_NOTES = {  # eval.json keys (and eval_details.json's words and reference) a newcomer may not know
    "selected_by": "the score that chose models/best.pt among the snapshots: fid where reliable, else kid, "
                   "else coverage",
    "memorisation": "what the two copying measures below say together",
    "fid_status": "whether FID can be trusted: it needs more reference faces than its 2048 features",
    "fid": "Fréchet Inception distance to the train faces; lower is better",
    "fid_reliable": "true when there are enough faces for FID (see fid_status); else compare KID",
    "kid_mean": "kernel Inception distance to the train faces (unbiased at any size); lower is better",
    "kid_std": "spread of the KID over subsets",
    "coverage": "share of train faces with a generated face nearby in a random network's embedding; one "
                "repeated face or speckle scores near 0; higher is better; ranks the snapshots offline",
    "precision": "share of generated faces that fall among train faces in that embedding (fidelity); "
                 "higher is better",
    "recall": "share of train faces that fall among generated faces in that embedding (diversity); "
              "higher is better",
    "density": "how many train-face neighbourhoods a generated face falls in, per neighbour; about 1 is "
               "as dense as the data, far below 1 is off the data",
    "variety": "mean distance of blurred 12x12 thumbnails of samples over that of train faces; about 1 is as "
               "varied as the data, near 0 is one face repeated; higher (up to about 1) is better",
    "near_identical": "share of samples nearly identical to another sample (closer than almost any two "
                      "train faces); lower is better",
    "high_frequency": "high-frequency energy of samples over that of train faces; about 1 is as sharp as "
                      "the data, above 1 is speckle or checkerboards",
    "inception_precision": "precision in Inception's features (null without its weights); higher is better",
    "inception_recall": "recall in Inception's features (null without its weights); higher is better",
    "inception_density": "density in Inception's features (null without its weights); about 1 is best",
    "inception_coverage": "coverage in Inception's features (null without its weights); higher is better",
    "face_rate": "share of generated faces in which the cascade finds a face; higher is better, but one "
                 "repeated face or speckled faces still pass",
    "face_rate_real": "the same share for real val faces: the best face_rate can hope for",
    "near_copies_samples": "share of generated faces whose perceptual hash is a near copy of a train face",
    "near_copies_val": "the same for real val faces, which were never trained on",
    "copies_train_faces": "true when samples are near copies clearly more often than val faces: memorised",
    "nn_distance_samples": "mean pixel distance of generated faces to their nearest train face",
    "nn_distance_val": "the same for real val faces; blurry samples sit close too, so read it with the above",
    "best_epoch": "the epoch of the snapshot kept as models/best.pt",
    "samples": "generated faces the scores above rest on",
    "reference_images": "train faces the samples are compared with",
    "val_faces": "real val faces (never trained on) the real face rate and copy check rest on",
    "snapshots_scored": "snapshots compared to choose models/best.pt",
    "snapshots_damaged": "snapshots that could not be read and were skipped",
}
CONDITION_NOTES = {  # eval.json's cond_<group>_<suffix>, one set per tag group
    "accuracy": "share of faces asked for a value of this group that the judge sees it in (mean over "
                "values); higher is better",
    "ceiling": "the judge's accuracy on held-out faces: the best the accuracy can hope for",
    "of_ceiling": "accuracy over ceiling; about 100% is as good as the judge can tell",
    "min_variety": "the lowest variety of this group's values against their own train faces; near 0 is "
                   "a value that collapsed to one face",
}
NN_NOTE = ("each generated face beside its nearest training faces (pixel distance): a sharp face "
           "identical to its neighbour was memorised; blurry or grey samples all sit near the same "
           "average-looking faces, which is not memorisation")

PAGE = page_template("pipeline.rendering", "report.html")
STYLE = read_template("pipeline.rendering", "report.css")  # after the shared BASE_STYLE


@dataclass(frozen=True)
class ReportSources:
    """Where the report reads from; every path but `pictures` may be missing."""

    params: Path  # params.yaml, shown whole
    pictures: Path  # the render stage's output folder
    data: Path  # holds raw/scrape_stats.json, crop_stats.json, manifest_stats.json
    training: Path  # DVCLive's metrics.json
    evaluation: Path  # the evaluate stage's folder: eval.json, eval_details.json, nearest_neighbours.png

    @property
    def scores(self) -> Path:
        return self.evaluation / "eval.json"

    @property
    def details(self) -> Path:
        return self.evaluation / "eval_details.json"

    @property
    def nearest(self) -> Path:
        return self.evaluation / "nearest_neighbours.png"


@dataclass(frozen=True)
class ReportInputs:
    """The parsed text inputs (None: absent), read before the stage writes anything."""

    sources: ReportSources
    params: Any | None
    stats: dict[str, Any | None]  # data stats file (as in DATA_STATS) -> its contents
    training: Any | None
    scores: Any | None
    details: Any | None
    tags: Any | None


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it does not exist; a damaged one is an error worth fixing."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PipelineError(f"{path}: not valid JSON; rerun the stage that writes it") from None


def read_params(path: Path) -> Any | None:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None


def read_inputs(sources: ReportSources) -> ReportInputs:
    return ReportInputs(
        sources=sources,
        params=read_params(sources.params),
        stats={name: read_json(sources.data / name) for _, name in DATA_STATS},
        training=read_json(sources.training),
        scores=read_json(sources.scores),
        details=read_json(sources.details),
        tags=read_json(sources.data / TAG_COUNTS),
    )


def data_uri(path: Path) -> str:
    payload = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{MIME_TYPES[path.suffix]};base64,{payload}"


def missing(text: str) -> str:
    return f'<p class="missing">{escape(text)}</p>'


def source_note(path: Path) -> str:
    return f'<p class="source">from <code>{escape(str(path))}</code></p>'


def figure(path: Path, ident: str, caption: str) -> str:
    return (f'<figure><img id="{ident}" src="{data_uri(path)}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def value_html(value: Any, none: str = "none") -> str:
    """Any JSON/YAML value, so new keys in the stats files show up without code changes."""
    if value is None or value == "" or value == [] or value == {}:
        return f'<span class="na">{escape(none)}</span>'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return table(value)
    if isinstance(value, list):
        return f'<ul class="values">{"".join(f"<li>{value_html(item)}</li>" for item in value)}</ul>'
    return escape(str(value))


def table(rows: Mapping[str, Any], notes: Mapping[str, str] | None = None, none: str = "none") -> str:
    """Key/value rows; `notes` adds a column explaining the keys it knows; `none` stands for null."""
    cells = []
    for key, value in rows.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        kind = ' class="number"' if number else ""
        row = f"<th>{escape(str(key))}</th><td{kind}>{value_html(value, none)}</td>"
        if notes is not None:
            row += f'<td class="source">{escape(notes.get(key, ""))}</td>'
        cells.append(f"<tr>{row}</tr>")
    return f"<table>{''.join(cells)}</table>"


def dig(stats: Any, keys: tuple[str, ...]) -> Any | None:
    for key in keys:
        if not isinstance(stats, Mapping) or key not in stats:
            return None
        stats = stats[key]
    return stats


def tag_bars(counts: Mapping[str, int]) -> str:
    """Per-tag face counts as bars: the shape of the dataset at a glance."""
    largest = max(counts.values(), default=0) or 1
    rows = "".join(
        f'<tr><th>{escape(tag)}</th><td class="number">{count}</td>'
        f'<td><span class="bar" style="width: {round(240 * count / largest)}px"></span></td></tr>'
        for tag, count in counts.items()
    )
    return f"<table>{rows}</table>"


def section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{escape(title)}</h2>{body}</section>'


def samples_section(pictures: Path) -> str:
    caption = ("render.grid × render.grid faces from fixed noise (render.seed, scaled by "
               "render.temperature; see Params): the same params always draw the same faces")
    return section("samples", "Samples", figure(pictures / "samples.png", "samples", caption))


def interpolation_section(pictures: Path) -> str:
    strip = figure(pictures / "interpolation.png", "interpolation",
                   "each row walks the latent sphere (slerp) from one random point to another: smooth "
                   "changes mean the generator learned a continuous face space")
    animation = figure(pictures / "interpolation.gif", "interpolation-gif",
                       "the same walks as an animation, every row side by side")
    return section("interpolation", "Latent interpolation", strip + animation)


def training_section(pictures: Path, path: Path, summary: Any | None, generator: Mapping[str, Any]) -> str:
    curves = figure(pictures / "losses.png", "losses",
                    "losses per epoch, and D's mean output on real (D(x)) and generated (D(G(z))) faces: "
                    "when both stay apart from 0 and 1, neither network is winning outright")
    timelapse = figure(pictures / "timelapse.gif", "timelapse",
                       "the fixed-noise sample grid logged during training, one frame per logged epoch")
    metrics = (table(summary) + source_note(path) if isinstance(summary, Mapping)
               else missing(f"training summary not available ({path} not found)"))
    body = f"{curves}{timelapse}<h3>Last epoch</h3>{metrics}<h3>Generator</h3>{table(generator)}"
    return section("training", "Training", body)


SHARES = frozenset({"accuracy", "ceiling", "of_ceiling", "coverage", "precision", "recall",
                    "near_identical", "face_rate", "near_copies"})  # shown as percents
RATIOS = frozenset({"variety", "high_frequency", "density"})  # to the train faces': plain numbers
GENERATOR_ROWS = (  # (eval.json key, when it is good): what a person sees in a sample grid, as numbers
    ("coverage", "higher"), ("precision", "higher"), ("recall", "higher"), ("density", "about 1"),
    ("variety", "about 1; near 0 is one face repeated"), ("near_identical", "lower"),
    ("high_frequency", "about 1; above is speckle"), ("face_rate", "near face_rate_real"),
)
GENERATOR_NOTE = ("EMA generator: the one scored below and kept as models/best.pt; raw generator: the "
                  "same snapshot's weights before averaging. Each with its 95% interval where the evaluate "
                  "stage gives one (shares: Wilson; variety on few faces: bootstrap). Every row is explained "
                  "in the table of every score below.")
SNAPSHOT_COLUMNS = ("coverage", "precision", "recall", "variety", "near_identical", "high_frequency",
                    "face_rate", "fid", "kid_mean")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def measure(value: Any, key: str) -> str:
    """A share as a percent, a ratio to the train faces' as a plain number (0.83), anything else (counts,
    distances, null) as value_html shows it."""
    if is_number(value) and key in SHARES:
        return f"{value:.1%}"
    if is_number(value) and key in RATIOS:
        return f"{value:.2f}"
    return value_html(value, "not measured")


def bounds(interval: Any) -> tuple[float, float] | None:
    """(low, high) of a 95% interval as the evaluate stage writes it ([low, high]), or None."""
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(map(is_number, interval)):
        return float(interval[0]), float(interval[1])
    return None


def interval_text(interval: Any, key: str) -> str:
    """"95.1-98.2%" for a share, "0.71-0.95" for a ratio; empty when there is no interval."""
    found = bounds(interval)
    if found is None:
        return ""
    low, high = found
    if key in RATIOS:
        return f"{low:.2f}-{high:.2f}"
    return f"{low * 100:.1f}-{high:.1%}" if key in SHARES else f"{low:.4g}-{high:.4g}"


def measure_with_interval(value: Any, key: str, interval: Any) -> str:
    """The measure with its 95% interval in brackets when there is one: "97.0% (95.1-98.2%)"."""
    shown = measure(value, key)
    spread = interval_text(interval, key) if is_number(value) else ""
    return f"{shown} ({spread})" if spread else shown


def headings(titles: Iterable[str]) -> str:
    """A header row whose titles may wrap, so a wide table of numbers fits the page."""
    return "<tr>" + "".join(f'<th class="heading">{escape(title)}</th>' for title in titles) + "</tr>"


def generator_table(scores: Mapping[str, Any], intervals: Any | None) -> str:
    """The EMA generator beside the raw one, each with its interval: averaging that hides a collapse or
    speckle of the raw weights (or causes one) shows as a gap between the columns."""
    ema = dig(intervals, ("ema",))
    raw = dig(intervals, ("raw",))
    header = headings(("", "EMA generator", "95% interval", "raw generator", "95% interval", "good when"))
    rows = "".join(
        f"<tr><th>{escape(key)}</th>"
        f'<td class="number">{measure(scores.get(key), key)}</td>'
        f'<td class="number">{interval_text(dig(ema, (f"{key}_95",)), key)}</td>'
        f'<td class="number">{measure(scores.get(f"raw_{key}"), key)}</td>'
        f'<td class="number">{interval_text(dig(raw, (f"{key}_95",)), key)}</td>'
        f'<td class="source">{escape(good)}</td></tr>'
        for key, good in GENERATOR_ROWS)
    note = GENERATOR_NOTE
    if all(scores.get(f"raw_{key}") is None for key, _ in GENERATOR_ROWS):
        note += " The raw column is not measured: the snapshot kept no raw weights, or eval.json predates it."
    return f'<table>{header}{rows}</table><p class="source">{escape(note)}</p>'


def snapshots_table(sources: ReportSources, scores: Mapping[str, Any], details: Any | None) -> str:
    """The scores of every snapshot over training, the one kept as models/best.pt marked: how the
    choice was made, and whether a later epoch collapsed or speckled."""
    rows = dig(details, ("snapshots",))
    if details is None:
        return missing(f"snapshot scores not available ({sources.details} not found)")
    if not isinstance(rows, list) or not rows:
        return missing("snapshot scores not available (eval_details.json predates them; rerun evaluate)")
    best = scores.get("best_epoch")
    selected = scores.get("selected_by") or dig(details, ("selected_by",))
    header = headings(("epoch", *SNAPSHOT_COLUMNS, "kept"))
    cells = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        kept = is_number(best) and row.get("epoch") == best
        marked = ' class="best"' if kept else ""
        cells.append(
            f'<tr{marked}><th>{value_html(row.get("epoch"), "not measured")}</th>'
            + "".join(f'<td class="number">{measure(row.get(key), key)}</td>' for key in SNAPSHOT_COLUMNS)
            + f"<td>{'best.pt' if kept else ''}</td></tr>")
    note = (f"models/best.pt is the snapshot with the best {selected} (lowest fid or kid, highest "
            f"coverage), marked best.pt")
    if selected is None:
        note = "models/best.pt is the snapshot marked best.pt"
    return f'<table>{header}{"".join(cells)}</table><p class="source">{escape(note)}</p>'


def eval_notes(keys: Iterable[str], groups: Iterable[str]) -> dict[str, str]:
    """EVAL_NOTES, and notes for the raw_<name> keys and each tag group's cond_<group>_<suffix> keys."""
    notes = dict(EVAL_NOTES)
    for key in keys:
        name = key.removeprefix("raw_")
        if key.startswith("raw_") and name in EVAL_NOTES:
            notes[key] = f"the same as {name}, for the raw (non-EMA) weights of the same snapshot; null " \
                         "when it has none"
    for group in groups:
        notes |= {f"cond_{group}_{suffix}": note for suffix, note in CONDITION_NOTES.items()}
    return notes


def tag_groups(details: Mapping[str, Any]) -> list[str]:
    """The tag groups eval_details.json measured (its "conditions" also holds the judge's description)."""
    measured = details.get("conditions")
    if not isinstance(measured, Mapping):
        return []
    return [group for group, values in measured.items() if isinstance(values, Mapping)]


def evaluation_section(sources: ReportSources, scores: Any | None, details: Any | None) -> str:
    if isinstance(scores, Mapping):
        known = details if isinstance(details, Mapping) else {}
        words = {key: value for key, value in known.items() if isinstance(value, str)}
        reference = known.get("reference")
        rows = words | dict(scores) | (dict(reference) if isinstance(reference, Mapping) else {})
        every = table(rows, eval_notes(rows, tag_groups(known)), none="not available")
        body = ("<h3>What the generator draws</h3>" + generator_table(scores, known.get("intervals"))
                + "<h3>Snapshots</h3>" + snapshots_table(sources, scores, details)
                + "<h3>Every score</h3>" + every + source_note(sources.scores))
    else:
        body = missing(f"not evaluated: {sources.scores} not found (the evaluate stage writes it)")
    body += "<h3>Nearest neighbours</h3>"
    if sources.nearest.is_file():
        body += figure(sources.nearest, "nearest-neighbours", NN_NOTE)
    else:
        body += missing(f"nearest-neighbour sheet not available ({sources.nearest} not found)")
    return section("evaluation", "Evaluation", body)


CONDITIONS_NOTE = ("one row per value of each tag group (train.conditions), the other groups at "
                   "\"any\"; the same noise down each column, so a column is one face asked for "
                   "each value in turn")
VALUE_COLUMNS = (("accuracy", "drawn as asked"), ("face_rate", "face rate"),
                 ("near_copies", "near copies of train faces"), ("variety", "variety"),
                 ("near_identical", "near identical"), ("high_frequency", "high frequency"),
                 ("coverage", "coverage"), ("train_faces", "labelled train faces"))
VARIETY_NOTE = ("variety: how much the faces asked for a value differ from one another (blurred "
                "thumbnails), over how much the value's own train faces differ; about 1 is as varied as "
                "its faces, near 0 is one face for every noise. near identical: share of those faces nearly "
                "identical to another. high frequency: their high-frequency energy over that of the value's "
                "train faces; above 1 is speckle or checkerboards. coverage: share of the value's train "
                "faces with a generated face nearby. Intervals in brackets are 95%.")


def condition_summary(group: str, measured: Mapping[str, Any], judge: Any) -> str:
    """A group's verdict in one line: how often the asked-for value shows, to a judge trained on what,
    and how that compares with the judge's own accuracy on held-out faces (the ceiling)."""
    faces = measured.get("ceiling_faces", measured.get("labelled_val_faces"))  # the latter: older files
    samples = measured.get("samples")
    asked = f"of the {samples} faces" if is_number(samples) else "of the faces"
    return (f"<p><b>{escape(group)}</b>: "
            f"{measure_with_interval(measured.get('accuracy'), 'accuracy', measured.get('accuracy_95'))} "
            f"{asked} asked for a value show it, to a judge of D's shape trained on "
            f"{value_html(judge, 'not recorded')}, whose accuracy on "
            f"{value_html(faces, 'not recorded')} held-out faces is "
            f"{measure_with_interval(measured.get('ceiling'), 'ceiling', measured.get('ceiling_95'))} "
            f"(the ceiling): {measure(measured.get('of_ceiling'), 'of_ceiling')} of the ceiling.</p>")


def value_cell(values: Mapping[str, Any], key: str) -> str:
    return f'<td class="number">{measure_with_interval(values.get(key), key, values.get(f"{key}_95"))}</td>'


def condition_table(group: str, measured: Mapping[str, Any], judge: Any = None) -> str:
    """A group's summary line, then one row per value: a value with few train faces that collapsed (low
    variety, many near identical), speckles (high frequency) or copies its faces (near copies) stands out."""
    header = headings(("value", *(title for _, title in VALUE_COLUMNS)))
    rows = "".join(
        f"<tr><th>{escape(tag)}</th>" + "".join(value_cell(values, key) for key, _ in VALUE_COLUMNS) + "</tr>"
        for tag, values in (measured.get("values") or {}).items() if isinstance(values, Mapping))
    return (f"{condition_summary(group, measured, judge)}<table>{header}{rows}</table>"
            f'<p class="source">{escape(VARIETY_NOTE)}</p>')


def conditions_section(pictures: Path, details: Any | None, conditional: bool) -> str:
    grid = figure(pictures / "conditions.png", "conditions", CONDITIONS_NOTE)
    measured = dig(details, ("conditions",))
    if not conditional:
        body = "<p>An unconditional generator (train.conditions is empty): no tag to ask for.</p>"
    elif isinstance(measured, Mapping) and measured:
        judge = measured.get("judge")
        body = "".join(condition_table(group, values, judge) for group, values in measured.items()
                       if isinstance(values, Mapping))
    else:
        body = missing("conditional accuracy not available (the evaluate stage measures it)")
    return section("conditions", "Conditions", grid + body)


def headline_cards(stats: Mapping[str, Any | None]) -> str:
    cards = "".join(
        f'<div class="card"><b>{value_html(dig(stats[name], keys))}</b>{escape(label)}</div>'
        for label, name, keys in HEADLINE_NUMBERS if dig(stats[name], keys) is not None
    )
    return f'<div class="cards">{cards}</div>' if cards else ""


def most_common_tags(counts: Any | None) -> Mapping[str, int] | None:
    if isinstance(counts, Mapping) and counts and all(isinstance(n, int) for n in counts.values()):
        return dict(sorted(counts.items(), key=lambda item: -item[1])[:SHOWN_TAGS])
    return None


def data_section(folder: Path, stats: Mapping[str, Any | None], tags: Any | None) -> str:
    counts = most_common_tags(tags)
    tables = []
    for title, name in DATA_STATS:
        path, values = folder / name, stats[name]
        if isinstance(values, Mapping):
            content = table(values) + source_note(path)
        else:
            content = missing(f"not available ({path} not found)")
        tables.append(f"<div><h3>{escape(title)}</h3>{content}</div>")
    body = f'{headline_cards(stats)}<div class="columns">{"".join(tables)}</div>'
    if counts:
        body += "<h3>Faces per tag (most common)</h3>" + tag_bars(counts)
    return section("data", "Data", body)


def params_section(path: Path, params: Any | None) -> str:
    if not isinstance(params, Mapping):
        return section("params", "Params", missing(f"params not available ({path} not found or empty)"))
    sections = {key: value for key, value in params.items() if isinstance(value, Mapping)}
    loose = {key: value for key, value in params.items() if not isinstance(value, Mapping)}
    body = "".join(f"<div><h3>{escape(str(name))}</h3>{table(values)}</div>"
                   for name, values in sections.items())
    if loose:
        body += f"<div><h3>other</h3>{table(loose)}</div>"
    return section("params", "Params", f'<div class="columns">{body}</div>{source_note(path)}')


def generator_summary(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What shaped and produced the generator file, without its weights."""
    return {"epoch": payload["epoch"], "EMA weights": payload["ema"], **payload["config"]}


def render_report(inputs: ReportInputs, payload: Mapping[str, Any]) -> str:
    """The whole page as one string; the pictures are read now, so render them first."""
    sources = inputs.sources
    sections = [
        samples_section(sources.pictures),
        conditions_section(sources.pictures, inputs.details, bool(payload["config"].get("conditions"))),
        training_section(sources.pictures, sources.training, inputs.training, generator_summary(payload)),
        interpolation_section(sources.pictures),
        evaluation_section(sources, inputs.scores, inputs.details),
        data_section(sources.data, inputs.stats, inputs.tags),
        params_section(sources.params, inputs.params),
    ]
    links = "".join(f'<a href="#{ident}">{title}</a>' for ident, title in (
        ("samples", "Samples"), ("conditions", "Conditions"), ("training", "Training"),
        ("interpolation", "Interpolation"), ("evaluation", "Evaluation"), ("data", "Data"),
        ("params", "Params")))
    markup = {"base_style": BASE_STYLE, "style": STYLE, "links": links, "sections": "".join(sections)}
    return fill(PAGE, markup, generator=describe_generator(payload))


def write_report(inputs: ReportInputs, payload: Mapping[str, Any], path: Path) -> None:
    """Write index.html; `payload` is the generator file's (epoch, EMA, config)."""
    html = render_report(inputs, payload)
    write_text(path, html)
    log.info("wrote %s (%.1f MB)", path, len(html) / 1e6)
