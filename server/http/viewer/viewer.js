/* viewer.js: fractald's map viewer: Leaflet over the XYZ tiles of /v1/tiles, with the view in the
 * URL's hash, a Mandelbrot-to-Julia picker, downloads at any size through the REST jobs, and the
 * devices' load. The map always shows a "base view" (a square of the complex plane, tile 0/0/0);
 * deep zooms move the base view to where the map is and start again at zoom 0, so the numbers in
 * every tile URL stay exact in doubles however deep the view goes (down to fp64's limit). */
"use strict";

const TILE = 256;
/* Past this zoom the base view moves to the map's centre (and below 0, out): tile coordinates
 * then stay small, so no precision is lost in the tile's centre. */
const REANCHOR_ZOOM = 10;

const state = {
  fractal: "julia", c_re: -0.8, c_im: 0.156, palette: "inferno", max_iter: null,
  base: { re: 0, im: 0, w: 4 },   /* the square that tile 0/0/0 covers */
};

/* ---- the view in the URL ---- */

function readHash() {
  const q = new URLSearchParams(location.hash.replace(/^#/, ""));
  const num = (v, d) => (v !== null && v !== "" && isFinite(Number(v)) ? Number(v) : d);
  if (q.get("fractal") === "mandelbrot" || q.get("fractal") === "julia") state.fractal = q.get("fractal");
  if (q.get("c")) {
    const [re, im] = q.get("c").split(",");
    state.c_re = num(re, state.c_re);
    state.c_im = num(im, state.c_im);
  }
  if (q.get("center")) {
    const [re, im] = q.get("center").split(",");
    state.base.re = num(re, 0);
    state.base.im = num(im, 0);
  } else if (state.fractal === "mandelbrot") {
    state.base.re = -0.5;
  }
  const w = num(q.get("w"), 4);
  state.base.w = w > 0 ? w : 4;
  if (q.get("palette")) state.palette = q.get("palette");
  state.max_iter = q.get("iter") ? num(q.get("iter"), null) : null;
}

/* The view now: the map's centre in the complex plane, and the width one tile spans at the
 * current zoom. */
function currentView() {
  const z = map.getZoom();
  const c = map.getCenter();
  const w = state.base.w / Math.pow(2, z);
  return {
    re: state.base.re + (c.lng / TILE - 0.5) * state.base.w,
    im: state.base.im + (c.lat / TILE + 0.5) * state.base.w,
    w: w,
    zoom: z,
  };
}

function writeHash() {
  const v = currentView();
  const q = new URLSearchParams();
  q.set("fractal", state.fractal);
  if (state.fractal === "julia") q.set("c", state.c_re + "," + state.c_im);
  q.set("center", v.re + "," + v.im);
  q.set("w", String(v.w));
  q.set("palette", state.palette);
  if (state.max_iter) q.set("iter", String(state.max_iter));
  history.replaceState(null, "", "#" + q.toString());
  document.getElementById("status").textContent =
    "centre " + v.re.toPrecision(15) + (v.im < 0 ? " - " : " + ") + Math.abs(v.im).toPrecision(15) + "i\n" +
    "tile width " + v.w.toExponential(3) + "\nmax_iter " + iterFor(v.w);
}

/* max_iter rises with depth unless it was set: deeper views need more iterations to show their
 * boundary. */
function iterFor(tileWidth) {
  if (state.max_iter) return state.max_iter;
  const depth = Math.max(0, Math.log2(4 / tileWidth));
  return Math.min(50000, Math.round(150 + 90 * depth));
}

/* ---- tiles ---- */

function tileUrl(coords) {
  const tileWidth = state.base.w / Math.pow(2, coords.z);
  const q = new URLSearchParams();
  q.set("fractal", state.fractal);
  if (state.fractal === "julia") {
    q.set("c_re", String(state.c_re));
    q.set("c_im", String(state.c_im));
  }
  q.set("center_re", String(state.base.re));
  q.set("center_im", String(state.base.im));
  q.set("width", String(state.base.w));
  q.set("max_iter", String(iterFor(tileWidth)));
  q.set("palette", state.palette);
  return "v1/tiles/" + coords.z + "/" + coords.x + "/" + coords.y + ".png?" + q.toString();
}

function token() {
  return document.getElementById("token").value.trim();
}

function authHeaders() {
  return token() ? { Authorization: "Bearer " + token() } : {};
}

/* Tiles are fetched (not <img src>) so they can carry a bearer token, and so a tile the map no
 * longer needs is aborted: the server then cancels its render. */
const FractalLayer = L.GridLayer.extend({
  createTile(coords, done) {
    const img = document.createElement("img");
    const ctrl = new AbortController();
    img._ctrl = ctrl;
    img.alt = "";
    const url = tileUrl(coords);
    fetch(url, { headers: authHeaders(), signal: ctrl.signal })
      .then((r) => (r.ok ? r.blob() : r.json().then((e) => Promise.reject(new Error(e.code + ": " + e.message)))))
      .then((blob) => {
        img.onload = () => { URL.revokeObjectURL(img.src); loadedUrls.push(url); done(null, img); };
        img.src = URL.createObjectURL(blob);
      })
      .catch((e) => { if (e.name !== "AbortError") { showError(e.message); done(e, img); } });
    return img;
  },
});

let map, layer;
const loadedUrls = [];   /* every tile shown, in order: for tests and the console */

function showError(text) {
  const s = document.getElementById("status");
  s.className = "err";
  s.textContent = text;
  setTimeout(() => { s.className = ""; writeHash(); }, 4000);
}

function redraw() {
  if (layer) map.removeLayer(layer);
  layer = new FractalLayer({ tileSize: TILE, minNativeZoom: 0, maxNativeZoom: REANCHOR_ZOOM + 2, noWrap: true });
  layer.on("tileunload", (e) => e.tile._ctrl && e.tile._ctrl.abort());
  layer.addTo(map);
  writeHash();
}

/* Moves the base view to the map's centre at its zoom, and the map back to zoom 0. */
function reanchor() {
  const v = currentView();
  state.base = { re: v.re, im: v.im, w: v.w };
  map.setView([-TILE / 2, TILE / 2], 0, { animate: false });
  redraw();
}

function syncControls() {
  document.getElementById("fractal").value = state.fractal;
  document.getElementById("c_re").value = state.c_re;
  document.getElementById("c_im").value = state.c_im;
  document.getElementById("palette").value = state.palette;
  document.getElementById("max_iter").value = state.max_iter || "";
  document.getElementById("c_re").disabled = document.getElementById("c_im").disabled = state.fractal !== "julia";
}

function onControl() {
  const f = document.getElementById("fractal").value;
  const re = Number(document.getElementById("c_re").value), im = Number(document.getElementById("c_im").value);
  const it = Number(document.getElementById("max_iter").value);
  if (f !== state.fractal) {
    /* A new set starts at its overview. */
    state.fractal = f;
    state.base = { re: f === "mandelbrot" ? -0.5 : 0, im: 0, w: 4 };
    map.setView([-TILE / 2, TILE / 2], 0, { animate: false });
  }
  if (isFinite(re) && isFinite(im)) { state.c_re = re; state.c_im = im; }
  state.max_iter = it > 0 ? Math.round(it) : null;
  state.palette = document.getElementById("palette").value;
  syncControls();
  redraw();
}

/* ---- the picker: a click on the Mandelbrot set shows the Julia set of that c ---- */

function pick(e) {
  if (state.fractal !== "mandelbrot") return;
  const re = state.base.re + (e.latlng.lng / TILE - 0.5) * state.base.w;
  const im = state.base.im + (e.latlng.lat / TILE + 0.5) * state.base.w;
  const img = document.getElementById("pick_img");
  fetch("v1/tiles/0/0/0.png?fractal=julia&c_re=" + re + "&c_im=" + im + "&max_iter=300&palette=" + state.palette,
        { headers: authHeaders() })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error("picker tile: " + r.status))))
    .then((b) => { img.src = URL.createObjectURL(b); img.hidden = false; })
    .catch((err) => showError(err.message));
  document.getElementById("pick_c").textContent = "c = " + re.toPrecision(8) + (im < 0 ? " - " : " + ") +
    Math.abs(im).toPrecision(8) + "i";
  document.getElementById("pick_hint").hidden = true;
  const go = document.getElementById("pick_go");
  go.hidden = false;
  go.onclick = () => {
    state.fractal = "julia";
    state.c_re = re;
    state.c_im = im;
    state.base = { re: 0, im: 0, w: 4 };
    map.setView([-TILE / 2, TILE / 2], 0, { animate: false });
    syncControls();
    redraw();
  };
}

/* ---- download at size, as a job ---- */

function download() {
  const v = currentView();
  const size = map.getSize();
  const w = Math.max(1, Math.round(Number(document.getElementById("dl_w").value)));
  const hgt = Math.max(1, Math.round(Number(document.getElementById("dl_h").value)));
  /* The same part of the plane as the map shows, across the image's width. */
  const req = {
    view: { center: { re: v.re, im: v.im }, width: v.w * size.x / TILE },
    width: w, height: hgt, maxIter: iterFor(v.w), coloring: { palette: state.palette },
  };
  if (state.fractal === "julia") req.julia = { c: { re: state.c_re, im: state.c_im } };
  else req.mandelbrot = {};
  const status = document.getElementById("dl_status"), bar = document.getElementById("dl_progress");
  status.textContent = "submitting...";
  fetch("v1/jobs", { method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
                     body: JSON.stringify(req) })
    .then((r) => r.json().then((j) => (r.ok ? j : Promise.reject(new Error(j.code + ": " + j.message)))))
    .then((job) => poll(job.id))
    .catch((e) => { status.textContent = e.message; status.className = "err"; });

  function poll(id) {
    fetch("v1/jobs/" + id, { headers: authHeaders() }).then((r) => r.json()).then((job) => {
      const p = job.progress || {};
      bar.hidden = false;
      bar.value = p.rowsTotal ? p.rowsDone / p.rowsTotal : 0;
      status.className = "";
      status.textContent = job.state.replace("JOB_STATE_", "") + (p.rowsTotal ? " " + p.rowsDone + "/" + p.rowsTotal + " rows" : "");
      if (job.state === "JOB_STATE_SUCCEEDED") {
        fetch("v1/jobs/" + id + "/result", { headers: authHeaders() }).then((r) => r.blob()).then((b) => {
          const a = document.createElement("a");
          a.href = URL.createObjectURL(b);
          a.download = "fractal-" + w + "x" + hgt + ".png";
          a.textContent = "save " + a.download + " (" + Math.round(b.size / 1024) + " KiB)";
          a.id = "dl_link";
          status.textContent = "";
          status.appendChild(a);
        });
      } else if (job.state === "JOB_STATE_QUEUED" || job.state === "JOB_STATE_RUNNING") {
        setTimeout(() => poll(id), 300);
      } else {
        status.className = "err";
        status.textContent = job.state + ": " + (job.errorMessage || "");
      }
    });
  }
}

/* ---- devices and their load ---- */

let lastBusy = {}, lastT = 0;

function refreshDevices() {
  Promise.all([fetch("v1/devices", { headers: authHeaders() }).then((r) => r.json()),
               fetch("v1/stats", { headers: authHeaders() }).then((r) => r.json())])
    .then(([d, s]) => {
      const now = performance.now(), out = document.getElementById("devices");
      const busy = {};
      (s.devices || []).forEach((x) => { busy[x.id] = x.busyMs || 0; });
      out.textContent = "";
      (d.devices || []).forEach((dev) => {
        const load = lastT && dev.id in lastBusy ? (busy[dev.id] - lastBusy[dev.id]) / (now - lastT) : 0;
        const div = document.createElement("div");
        div.textContent = dev.id + (dev.enabled ? "" : " (unused)") + "  " + (dev.giterPerS || 0).toFixed(2) +
          " Giter/s  load " + Math.round(100 * Math.min(1, Math.max(0, load))) + "%";
        out.appendChild(div);
      });
      const q = document.createElement("div");
      q.textContent = "queue " + (s.queueDepth || 0) + ", running " + (s.running || 0) + ", cache hits " + (s.imageCacheHits || 0);
      out.appendChild(q);
      lastBusy = busy;
      lastT = now;
    })
    .catch(() => {});
}

/* ---- start ---- */

readHash();
/* No fade: a tile is shown at once in its exact colours (a fading tile over the black map is
 * darker than its neighbours for a moment). */
map = L.map("map", { crs: L.CRS.Simple, minZoom: -3, maxZoom: REANCHOR_ZOOM + 2, zoomSnap: 1,
                     attributionControl: false, keyboard: true, fadeAnimation: false });
map.setView([-TILE / 2, TILE / 2], 0, { animate: false });
map.on("moveend", writeHash);
map.on("zoomend", () => {
  if (map.getZoom() >= REANCHOR_ZOOM || map.getZoom() < 0) reanchor();
});
map.on("click", pick);
["fractal", "c_re", "c_im", "max_iter", "palette"].forEach((id) => document.getElementById(id).addEventListener("change", onControl));
document.getElementById("dl_go").addEventListener("click", download);
document.getElementById("token").addEventListener("change", redraw);
syncControls();
redraw();
refreshDevices();
setInterval(refreshDevices, 2000);
window.addEventListener("hashchange", () => { readHash(); syncControls(); map.setView([-TILE / 2, TILE / 2], 0, { animate: false }); redraw(); });
/* For tests and the console. */
window.fractalViewer = { state, currentView, map: () => map, loadedUrls,
  tilesLoaded: () => document.querySelectorAll("#map img.leaflet-tile-loaded").length };
