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
  caption.textContent = "drawing…";
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
