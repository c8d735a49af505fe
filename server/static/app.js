// artlens web page: plain JS, no build step. Talks to the same API a mobile app uses.
"use strict";

const MAX_SIDE = 1024;  // resize on the device before upload: ~10x fewer bytes, same answer
const MAX_FRAMES = 5;
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function setStatus(text, isError = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

// A random id kept per browser: visitors sharing one address (a museum's Wi-Fi) are rate-limited each on their own.
const DEVICE_ID = (() => {
  try {
    let id = localStorage.getItem("artlens-device-id");
    if (!id) {
      id = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
      localStorage.setItem("artlens-device-id", id);
    }
    return id;
  } catch (err) {
    return null;  // storage disabled: the server counts this browser with the address's anonymous requests
  }
})();

async function api(path, options = {}) {
  const headers = DEVICE_ID ? { ...options.headers, "X-Device-Id": DEVICE_ID } : options.headers;
  const resp = await fetch(path, { ...options, headers });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(body && body.message ? `${body.message} (${body.code})` : `HTTP ${resp.status}`);
  return body;
}

// Decode and downscale a photo in the browser (EXIF orientation is applied by createImageBitmap/img).
// Formats the browser cannot decode (HEIC outside Safari) are sent as they are: the server decodes them.
async function prepareFrame(file) {
  try {
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((ok) => canvas.toBlob(ok, "image/jpeg", 0.9));
    return { blob, bitmap: canvas, name: "frame.jpg" };
  } catch (err) {
    return { blob: file, bitmap: null, name: file.name || "photo" };
  }
}

function drawPhoto(bitmap, outlines) {
  const canvas = $("#photo-canvas");
  if (!bitmap) { canvas.hidden = true; return; }
  canvas.hidden = false;
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  ctx.lineWidth = Math.max(3, canvas.width / 200);
  outlines.forEach((quad, i) => {
    ctx.strokeStyle = i === 0 ? "#14a44d" : "#0a6cff";
    ctx.shadowColor = ctx.strokeStyle;
    ctx.shadowBlur = 12;
    ctx.beginPath();
    quad.forEach(([x, y], j) => (j ? ctx.lineTo : ctx.moveTo).call(ctx, x * canvas.width, y * canvas.height));
    ctx.closePath();
    ctx.stroke();
  });
  canvas.dataset.outlines = String(outlines.length);
}

function metadataList(metadata) {
  const dl = el("dl");
  for (const [k, v] of Object.entries(metadata)) dl.append(el("dt", {}, k), el("dd", {}, v));
  return dl;
}

function matchCard(m, rejected) {
  let ref = el("img", { src: `${m.image_url}?size=256`, alt: `reference image of ${m.object_id}`, class: "reference" });
  if (m.segment) {  // the photo shows a detail: glow that segment on the reference; tap it for similar details
    const svg = svgOverlay(m.reference_size, [{ id: m.segment.id, rings: m.segment.polygon }], "segment matched");
    activateSegments(svg, () => showArtwork(m.object_id, m.segment.id));
    ref = withOverlay(ref, svg);
  }
  const card = el("article", { class: "match" + (rejected ? " rejected" : ""),
    dataset: { objectId: m.object_id, segmentId: m.segment ? m.segment.id : "" } },
    ref,
    el("div", {},
      el("h3", {}, m.metadata.title || m.object_id),
      el("p", {}, el("span", { class: "confidence" }, `${(m.confidence * 100).toFixed(1)} %`),
        rejected ? " — not confident enough (no match)" : ` — ${m.inliers} matching points`,
        m.support > 1 ? `, seen in ${m.support} frames` : ""),
      metadataList({ id: m.object_id, ...m.metadata }),
      el("button", { class: "button", type: "button", onclick: () => showArtwork(m.object_id) }, "Similar artworks")));
  return card;
}

// -- segments (bundles built with --segments): polygons over a reference image, glow on hover, similar ones on click
function svgOverlay(size, polygons, cls) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${size[0]} ${size[1]}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "segments");
  for (const { id, rings } of polygons) {
    const g = document.createElementNS(ns, "g");
    g.setAttribute("class", cls);
    g.dataset.segmentId = id;
    for (const flat of rings) {
      const poly = document.createElementNS(ns, "polygon");
      const pts = [];
      for (let i = 0; i + 1 < flat.length; i += 2) pts.push(`${flat[i]},${flat[i + 1]}`);
      poly.setAttribute("points", pts.join(" "));
      g.append(poly);
    }
    svg.append(g);
  }
  return svg;
}

// Segments react to a click, a tap, and Enter/Space when focused (keyboard users tab through them).
function activateSegments(svg, onPick) {
  svg.querySelectorAll("g.segment").forEach((g, i) => {
    g.setAttribute("tabindex", "0");
    g.setAttribute("role", "button");
    g.setAttribute("aria-label", `detail ${i + 1}: find similar details`);
    g.addEventListener("click", () => onPick(g.dataset.segmentId));
    g.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onPick(g.dataset.segmentId); }
    });
  });
}

function withOverlay(img, svg) {
  const wrap = el("div", { class: "overlay-wrap" }, img);
  wrap.append(svg);
  return wrap;
}

// ``selected``: a segment to select at once (a similar detail or a matched segment that was tapped).
async function showSegments(art, selected) {
  const id = encodeURIComponent(art.object_id);
  const hint = $("#segment-hint");
  let list;
  try { list = await api(`/v1/artworks/${id}/segments`); } catch (err) { return; }  // an index without segments
  if ($("#detail").dataset.objectId !== art.object_id) return;  // another artwork was opened meanwhile
  hint.hidden = false;
  $("#detail-body").dataset.segments = String(list.segments.length);
  if (!list.segments.length) {  // e.g. added through the admin API after the index was built: not segmented
    hint.textContent = "This artwork has no segments (it was added after the index was built).";
    return;
  }
  hint.textContent = "Tap a glowing region of the artwork to find similar details in the collection.";
  const img = $("#detail-body img");
  const svg = svgOverlay([art.width, art.height], list.segments.map((s) => ({ id: s.id, rings: s.polygon || [] })),
    "segment");
  img.replaceWith(withOverlay(img.cloneNode(), svg));
  activateSegments(svg, similarSegments);
  if (selected && list.segments.some((s) => s.id === selected)) await similarSegments(selected);
}

async function similarSegments(segmentId) {
  const box = $("#segment-similar");
  try {
    const res = await api(`/v1/segments/${encodeURIComponent(segmentId)}/similar?k=6`);
    document.querySelectorAll("g.segment.selected").forEach((g) => g.classList.remove("selected"));
    document.querySelectorAll(`g.segment[data-segment-id="${CSS.escape(segmentId)}"]`).forEach((g) => g.classList.add("selected"));
    $("#segment-title").hidden = false;
    $("#segment-method").textContent = res.space === "local" ? "(by local features; the model is not pretrained)" : "(by DINOv2)";
    box.replaceChildren(...res.results.map((hit) => {
      const img = el("img", { src: `/v1/artworks/${encodeURIComponent(hit.object_id)}/image?size=256`, alt: hit.object_id });
      const svg = svgOverlay(hit.reference_size, [{ id: hit.id, rings: hit.polygon || [] }], "segment hit");
      return el("button", { class: "tile", type: "button", dataset: { segmentId: hit.id, objectId: hit.object_id },
        onclick: () => showArtwork(hit.object_id, hit.id) }, withOverlay(img, svg),
      el("span", {}, hit.metadata.title || hit.object_id), el("span", {}, hit.score.toFixed(3)));
    }));
  } catch (err) { setStatus(err.message, true); }
}

async function recognise(files) {
  const frames = await Promise.all([...files].slice(0, MAX_FRAMES).map(prepareFrame));
  const form = new FormData();
  frames.forEach((f) => form.append("image", f.blob, f.name));
  setStatus(`Looking (${frames.length} frame${frames.length > 1 ? "s" : ""})…`);
  const started = performance.now();
  let result;
  try {
    result = await api("/v1/recognize", { method: "POST", body: form });
  } catch (err) {
    setStatus(err.message, true);
    return;
  }
  const ms = Math.round(performance.now() - started);
  const section = $("#result");
  section.hidden = false;
  const box = $("#matches");
  box.replaceChildren();
  const shown = result.matches.filter((m) => m.frame === 0 && m.outline).map((m) => m.outline);
  drawPhoto(frames[0].bitmap, shown);
  if (result.status === "match") {
    setStatus(`Found ${result.matches.length} artwork${result.matches.length > 1 ? "s" : ""} in ${ms} ms.`);
    result.matches.forEach((m) => box.append(matchCard(m, false)));
  } else {
    setStatus(`No artwork recognised (${ms} ms). Try again closer, facing the painting.`);
    box.append(el("p", { class: "no-match" }, "No match."));
    if (result.best_rejected) box.append(matchCard(result.best_rejected, true));
  }
  section.dataset.status = result.status;
}

function tile(art, extra) {
  return el("button", { class: "tile", type: "button", dataset: { objectId: art.object_id },
    onclick: () => showArtwork(art.object_id) },
  el("img", { src: `${art.image_url}?size=256`, alt: art.metadata.title || art.object_id, loading: "lazy" }),
  el("span", {}, art.metadata.title || art.object_id), extra ? el("span", {}, extra) : "");
}

async function browseRandom() {
  try {
    const list = await api("/v1/artworks?random=12");
    $("#grid").replaceChildren(...list.artworks.map((a) => tile(a)));
  } catch (err) { setStatus(err.message, true); }
}

async function showArtwork(objectId, segmentId = null) {
  const id = encodeURIComponent(objectId);
  try {
    const [art, similar] = await Promise.all([api(`/v1/artworks/${id}`), api(`/v1/artworks/${id}/similar?k=8`)]);
    $("#detail").hidden = false;
    $("#detail").dataset.objectId = objectId;
    $("#detail-body").replaceChildren(
      el("img", { src: `${art.image_url}?size=512`, alt: art.metadata.title || art.object_id }),
      el("div", {}, el("h3", {}, art.metadata.title || art.object_id), metadataList({ id: art.object_id, ...art.metadata })));
    $("#similar-method").textContent = similar.method === "vlad"
      ? "(by local features — VLAD; the model is not pretrained)" : "(by DINOv2 embedding)";
    $("#similar").replaceChildren(...similar.results.map((r) => tile(r.artwork, r.score.toFixed(3))));
    $("#segment-title").hidden = true;
    $("#segment-hint").hidden = true;
    $("#segment-similar").replaceChildren();
    $("#detail").scrollIntoView({ behavior: "smooth" });
    await showSegments(art, segmentId);
  } catch (err) { setStatus(err.message, true); }
}

async function showModel() {
  try {
    const ready = await api("/ready");
    if (!ready.model.pretrained) {
      const b = $("#model-banner");
      b.hidden = false;
      b.textContent = "Demo model: random-init DINOv2 (pretrained: false) — recognition relies on local features.";
    }
  } catch (err) { /* the page still works without it */ }
}

$("#photo").addEventListener("change", (e) => { if (e.target.files.length) recognise(e.target.files); });
$("#random").addEventListener("click", browseRandom);
showModel();
browseRandom();
