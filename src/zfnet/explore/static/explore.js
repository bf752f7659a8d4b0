// zfnet explore: the little JavaScript there is. Sort a layer's maps; send an image to /api/analyze
// and show what comes back. No libraries, nothing fetched from elsewhere.
"use strict";

function sortMaps(button) {
  const grid = document.getElementById("maps");
  const key = button.dataset.sort;
  const maps = Array.from(grid.children);
  maps.sort((a, b) => key === "channel" ? a.dataset.channel - b.dataset.channel : b.dataset[key] - a.dataset[key]);
  maps.forEach(m => grid.appendChild(m));
  document.querySelectorAll("button.sort").forEach(b => b.classList.toggle("on", b === button));
}

function element(tag, attributes, children) {
  const node = document.createElement(tag);
  Object.entries(attributes || {}).forEach(([k, v]) => node.setAttribute(k, v));
  (children || []).forEach(c => node.append(c));
  return node;
}

function panel(url, caption) {
  return element("figure", {}, [element("img", {src: url, alt: caption, width: 224, height: 224}),
                                element("figcaption", {}, [caption])]);
}

function showAnalysis(result, box) {
  const o = result.occlusion, p = result.projection, top = result.predictions[0];
  const rows = result.predictions.map(r => element("tr", {}, [element("td", {}, [r.class]),
                                                              element("td", {}, [(100 * r.probability).toFixed(1) + "%"])]));
  const legend = element("p", {class: "note"}, ["(e) classes: "].concat(o.classes.flatMap(c => [
    element("span", {class: "swatch", style: "background:" + c.colour}), c.class])));
  box.replaceChildren(
    element("h3", {}, ["Predictions"]),
    element("table", {class: "predictions", id: "predictions"}, [element("tr", {}, [element("th", {}, ["class"]),
                                                                            element("th", {}, ["probability"])])].concat(rows)),
    element("div", {class: "panels"}, [
      panel(result.urls.image, "(a) the model's input"),
      panel(result.urls.feature, `(b) ${o.layer} map ${o.channel}: total activity`),
      panel(result.urls.occlusion_projection, `(c) projection of ${o.layer} map ${o.channel}`),
      panel(result.urls.probability, `(d) P(${top.class}), min ${o.min_probability.toFixed(2)}`),
      panel(result.urls.argmax, "(e) most probable class"),
      panel(result.urls.projection, `${p.layer} map ${p.channel}${p.strongest ? " (strongest)" : ""}: projection, activation ${p.activation.toPrecision(3)}`),
    ]),
    legend,
    element("p", {class: "note"}, [`Occluder ${o.patch}x${o.patch} px, stride ${o.stride}; analysed in ${result.seconds.toFixed(2)} s.`]));
  box.hidden = false;
}

async function analyze(event) {
  event.preventDefault();
  const form = event.target, status = document.getElementById("analyze-status"), box = document.getElementById("analysis");
  status.textContent = "analysing…";
  status.classList.remove("error");
  try {
    const response = await fetch(form.action, {method: "POST", body: new FormData(form)});
    const result = await response.json();
    if (!response.ok) {
      status.textContent = result.error;
      status.classList.add("error");
      return;
    }
    showAnalysis(result, box);
    status.textContent = "";
  } catch (err) {
    status.textContent = "the server did not answer (" + err.message + ")";
    status.classList.add("error");
  }
}

document.querySelectorAll("button.sort").forEach(b => b.addEventListener("click", () => sortMaps(b)));
const form = document.getElementById("analyze-form");
if (form) form.addEventListener("submit", analyze);
