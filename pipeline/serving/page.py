"""The one page of pipeline.serve: pickers, temperature, seed and the grid, with the style and script
inline and no outside resource, so it works on a machine without internet.

The first grid is in the markup, so the page shows faces before its script runs; the script only
rewrites the picture's address (and the download link's, the same one) when a control changes.
"""

from __future__ import annotations

import math
from html import escape
from urllib.parse import urlencode

from pipeline.data.labels import ANY
from pipeline.rendering.report import BASE_STYLE
from pipeline.serving.faces import DEFAULT_SEED, DEFAULT_TEMPERATURE, MAX_FACES, MAX_SEED, FaceServer

FACE_COUNTS = tuple(k * k for k in range(2, math.isqrt(MAX_FACES) + 1))  # square grids, 4 to MAX_FACES
DEFAULT_FACES = 16
TEMPERATURE_RANGE = (0.1, 2.0, 0.05)  # slider min, max, step

STYLE = BASE_STYLE + """
* { box-sizing: border-box; }
main { display: grid; grid-template-columns: 19rem 1fr; gap: 1.5rem; align-items: start;
       max-width: 1200px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
@media (max-width: 760px) { main { grid-template-columns: 1fr; padding: 1rem; } }
form, figure { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; margin: 0; }
form { padding: 1rem 1.2rem; display: flex; flex-direction: column; gap: .9rem; }
fieldset { border: 0; margin: 0; padding: 0; display: flex; flex-direction: column; gap: .9rem; }
legend { font-weight: 600; margin-bottom: .4rem; padding: 0; }
label { display: block; font-weight: 600; margin-bottom: .25rem; }
.heading { display: flex; justify-content: space-between; align-items: baseline; }
.heading output { font-variant-numeric: tabular-nums; color: #57606a; }
select, input[type=number] { width: 100%; font: inherit; padding: .35rem .5rem; border: 1px solid #d0d7de;
                             border-radius: 6px; background: #fff; }
input[type=range] { width: 100%; accent-color: #0969da; }
.actions { display: flex; gap: .6rem; align-items: center; flex-wrap: wrap; }
button, a.button { font: inherit; font-weight: 600; padding: .45rem .9rem; border-radius: 6px;
                   cursor: pointer; text-decoration: none; border: 1px solid #d0d7de; }
button { background: #0969da; border-color: #0969da; color: #fff; }
button:hover { background: #0860c7; }
a.button { background: #f6f8fa; color: #1d2125; }
a.button:hover { background: #eaeef2; }
.failed a.button { opacity: .5; pointer-events: none; }
:focus-visible { outline: 3px solid #54aeff; outline-offset: 2px; }
figure { padding: 1rem; text-align: center; }
figure img { max-width: 100%; height: auto; image-rendering: pixelated; background: #000; }
figure img[aria-busy=true] { opacity: .6; transition: opacity .2s; }
figcaption { color: #57606a; font-size: .9rem; margin-top: .5rem; }
.failed figcaption { color: #cf222e; font-weight: 600; }
.failed figure img { display: none; }
"""

SCRIPT = """
const form = document.getElementById("controls");
const image = document.getElementById("faces");
const link = document.getElementById("download");
const caption = document.getElementById("status");
const count = document.getElementById("count");
const seed = document.getElementById("seed");
const temperature = document.getElementById("temperature");
const temperatureShown = document.getElementById("temperature-value");
const pickers = [...document.querySelectorAll("select.tag-picker")];

function address() {
  const query = new URLSearchParams({n: count.value, seed: seed.value.trim(),
                                     temperature: temperature.value});
  for (const picker of pickers) query.set(picker.dataset.group, picker.value);
  return "faces.png?" + query.toString();
}

function describe() {
  const asked = pickers.filter((p) => p.value !== "any").map((p) => p.dataset.group + ": " + p.value);
  return [count.value + " generated faces", "seed " + seed.value.trim(),
          "temperature " + Number(temperature.value).toFixed(2), ...asked].join(", ");
}

function redraw() {
  const url = address();
  if (image.getAttribute("src") === url) return;
  image.setAttribute("aria-busy", "true");
  caption.textContent = "drawing\u2026";
  image.alt = describe();
  image.src = url;
  link.href = url;
  link.download = "faces-seed-" + seed.value.trim() + ".png";
}

image.addEventListener("load", () => {
  image.removeAttribute("aria-busy");
  document.body.classList.remove("failed");
  caption.textContent = image.alt;
});
image.addEventListener("error", async () => {
  const url = image.src;
  let reason = "the faces could not be drawn";
  try {
    const response = await fetch(url);
    reason = (await response.text()).trim() || reason;
  } catch (error) {
    reason = "the server does not answer: is pipeline.serve still running?";
  }
  if (image.src !== url) return;  // a newer picture was asked for meanwhile
  image.removeAttribute("aria-busy");
  document.body.classList.add("failed");
  caption.textContent = reason;
});

for (const control of [count, seed, temperature, ...pickers]) control.addEventListener("change", redraw);
temperature.addEventListener("input", () => {
  temperatureShown.value = Number(temperature.value).toFixed(2);
});
document.getElementById("new-faces").addEventListener("click", () => {
  seed.value = String(Math.floor(Math.random() * (Number(seed.max) + 1)));
  redraw();
});
form.addEventListener("submit", (event) => {
  event.preventDefault();
  redraw();
});
"""


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
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>anime-face DCGAN: faces</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style>
</head>
<body>
<header><h1>anime-face DCGAN: faces</h1>
<p id="generator">{escape(faces.description)}, {escape(conditioning)} · {escape(faces.file)}</p></header>
<main>
<form id="controls" aria-label="What to draw">
{pickers}
<div><label for="count">faces</label><select id="count">{counts}</select></div>
<div><div class="heading"><label for="temperature">temperature</label>
<output id="temperature-value" for="temperature">{DEFAULT_TEMPERATURE:.2f}</output></div>
<input type="range" id="temperature" min="{low}" max="{high}" step="{step}" \
value="{DEFAULT_TEMPERATURE}"></div>
<div><label for="seed">seed</label>
<input type="number" id="seed" min="0" max="{MAX_SEED}" step="1" value="{DEFAULT_SEED}" \
inputmode="numeric"></div>
<div class="actions"><button type="button" id="new-faces">new faces</button>
<a id="download" class="button" href="faces.png?{escape(first)}" download="faces-seed-{DEFAULT_SEED}.png">\
download PNG</a></div>
</form>
<figure>
<img id="faces" src="faces.png?{escape(first)}" alt="{alt}">
<figcaption id="status" role="status" aria-live="polite">{alt}</figcaption>
</figure>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""
