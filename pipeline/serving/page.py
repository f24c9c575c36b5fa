"""The one page of pipeline.serve: pickers, temperature, seed and the grid, with the style and script
inline and no outside resource, so it works on a machine without internet.

The first grid is in the markup, so the page shows faces before its script runs; the script only
rewrites the picture's address (and the download link's, the same one) when a control changes.
The markup, style and script are templates/page.html, page.css and page.js beside this module.
"""

from __future__ import annotations

import math
from html import escape
from urllib.parse import urlencode

from pipeline.data.labels import ANY
from pipeline.rendering.templating import BASE_STYLE, fill, page_template, read_template
from pipeline.serving.faces import DEFAULT_SEED, DEFAULT_TEMPERATURE, MAX_FACES, MAX_SEED, FaceServer

FACE_COUNTS = tuple(k * k for k in range(2, math.isqrt(MAX_FACES) + 1))  # square grids, 4 to MAX_FACES
DEFAULT_FACES = 16
TEMPERATURE_RANGE = (0.1, 2.0, 0.05)  # slider min, max, step

PAGE = page_template("pipeline.serving", "page.html")
STYLE = read_template("pipeline.serving", "page.css")  # after the shared BASE_STYLE
SCRIPT = read_template("pipeline.serving", "page.js")


def picker(index: int, group: str, tags: tuple[str, ...]) -> str:
    options = "".join(f'<option value="{escape(value)}">{escape(value)}</option>' for value in (ANY, *tags))
    return (f'<div><label for="pick-{index}">{escape(group)}</label>'
            f'<select id="pick-{index}" class="tag-picker" data-group="{escape(group)}">'
            f'{options}</select></div>')


def page_html(faces: FaceServer) -> str:
    """The whole page; the same generator gives the same page."""
    groups = faces.groups
    first = urlencode({"n": DEFAULT_FACES, "seed": DEFAULT_SEED, "temperature": f"{DEFAULT_TEMPERATURE:g}",
                       **{group: ANY for group, _ in groups}})
    pickers = ""
    if groups:
        pickers = ("<fieldset><legend>Tags</legend>"
                   + "".join(picker(i, group, tags) for i, (group, tags) in enumerate(groups))
                   + "</fieldset>")
    conditioning = (f"conditioned on {', '.join(group for group, _ in groups)}" if groups
                    else "unconditional")
    counts = "".join(f'<option value="{k}"{" selected" if k == DEFAULT_FACES else ""}>{k}</option>'
                     for k in FACE_COUNTS)
    low, high, step = TEMPERATURE_RANGE
    alt = f"{DEFAULT_FACES} generated faces, seed {DEFAULT_SEED}, temperature {DEFAULT_TEMPERATURE:.2f}"
    markup = {"base_style": BASE_STYLE, "style": STYLE, "script": SCRIPT, "pickers": pickers,
              "counts": counts}
    return fill(PAGE, markup, description=faces.description, conditioning=conditioning, file=faces.file,
                temperature_shown=f"{DEFAULT_TEMPERATURE:.2f}", temperature_min=low, temperature_max=high,
                temperature_step=step, temperature=DEFAULT_TEMPERATURE, max_seed=MAX_SEED, seed=DEFAULT_SEED,
                first=first, alt=alt)
