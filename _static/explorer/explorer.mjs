// Chapter 5's explorer: the toy hierarchy's two 2-D layers, live in the page, offline.
//
// For each model of ./toy012/manifest.json (written by `python -m jebm_lite.analysis.export`) the panel
// shows a pad per layer (z2 top, z1 bottom; drag the point, or focus a pad and use the arrow keys), the
// decoded digit, and under each pad the prior's density over that plane with the other layer held at
// its current value. The graphs run with ONNX Runtime Web (its wasm build, vendored into
// _static/onnxruntime-web/ by tools/fetch_onnxruntime_web.py): no server code, no network.
//
//   joint: <name>_decoder.onnx  z (B, 4) -> image (B, 1, 28, 28) in [-1, 1]
//          <name>_prior.onnx    z (B, 4) -> f (B), log_p = f - |z|^2/2 (B), grad_log_p (B, 4)
//   vlae:  the decoder only; its prior N(0, I) is computed here: log_p = -|z|^2/2.
//
// "Sample from the prior" runs the library's prior Langevin chain (jebm_lite.sampling.sample_prior,
// paper Eqs. 13-14): z0 ~ N(0, I), then z <- z + (s^2/2) grad log p(z) + s * eps for the manifest's
// steps and s. For VLAE the library draws exactly from N(0, I) (no chain), and so does the panel.
//
// The container element gets `el.explorer` (ready, set, get, sample, timings) for scripted checks.

const HERE = new URL("./", import.meta.url);
const MANIFEST_URL = new URL("toy012/manifest.json", HERE);
const ORT_DIR = new URL("../onnxruntime-web/", HERE);
const GRID = 40; // heat-map cells per side
const PAD_PX = 156; // CSS size of a pad
const DIGIT_PX = 112; // CSS size of the decoded digit
const STEP_MS = 40; // pause between drawn Langevin steps
const TITLES = {
  joint: ["Joint EBM prior", "exp(f\u03b1([z\u2081, z\u2082])) N(0, I)"],
  vlae: ["VLAE", "N(0, I) prior"],
};
const LAYER_NAMES = ["bottom layer z\u2081", "top layer z\u2082"];
const PRIOR_RGB = [1, 115, 178]; // viz.PRIOR_COLOR (#0173B2)
const POSTERIOR = "#DE8F05"; // viz.POSTERIOR_COLOR

const CSS = `
.jebm-explorer{font-size:14px;line-height:1.4;margin:1em 0 1.5em;}
.jebm-explorer .jx-models{display:flex;flex-wrap:wrap;gap:18px 20px;justify-content:center;}
.jebm-explorer .jx-model{flex:0 1 328px;min-width:0;}
.jebm-explorer .jx-model h4{font-size:15px;margin:0 0 2px;}
.jebm-explorer .jx-sub{font-size:13px;color:#555;margin:0 0 6px;}
.jebm-explorer .jx-grid{display:grid;grid-template-columns:${PAD_PX}px auto;gap:8px 12px;align-items:start;}
.jebm-explorer .jx-pad canvas{width:${PAD_PX}px;height:${PAD_PX}px;touch-action:none;cursor:crosshair;
  border:1px solid #999;border-radius:3px;display:block;}
.jebm-explorer .jx-pad canvas:focus-visible{outline:2px solid ${POSTERIOR};outline-offset:1px;}
.jebm-explorer .jx-label{font-size:13px;margin:0 0 2px;color:#222;}
.jebm-explorer .jx-digit canvas{width:${DIGIT_PX}px;height:${DIGIT_PX}px;image-rendering:pixelated;
  border:1px solid #999;display:block;background:#000;}
.jebm-explorer .jx-code{font-family:var(--pst-font-family-monospace,monospace);font-size:12.5px;
  white-space:pre;margin:6px 0;color:#222;}
.jebm-explorer button{font-size:13px;line-height:1.3;white-space:nowrap;padding:3px 6px;margin:2px 4px 2px 0;cursor:pointer;border:1px solid #888;
  border-radius:4px;background:#f6f6f6;color:#111;}
.jebm-explorer button:disabled{opacity:.55;cursor:default;}
.jebm-explorer .jx-note{font-size:12.5px;color:#555;margin:4px 0 2px;}
.jebm-explorer .jx-starts{margin-top:8px;white-space:nowrap;}
.jebm-explorer .jx-status{font-size:13px;color:#555;}
html[data-theme="dark"] .jebm-explorer .jx-sub,html[data-theme="dark"] .jebm-explorer .jx-note,
html[data-theme="dark"] .jebm-explorer .jx-status{color:#bbb;}
html[data-theme="dark"] .jebm-explorer .jx-label,html[data-theme="dark"] .jebm-explorer .jx-code{color:#ddd;}
`;

function el(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function gauss() {
  // Box-Muller; 1 - U keeps the logarithm finite
  const u = 1 - Math.random();
  const v = Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

const fmt = (x) => (x >= 0 ? " " : "") + x.toFixed(2);

class Model {
  constructor(ort, name, spec, sessions, root) {
    this.ort = ort;
    this.name = name;
    this.spec = spec;
    this.decoder = sessions.decoder;
    this.prior = sessions.prior; // null for VLAE
    this.d = spec.z_dims.reduce((a, b) => a + b, 0);
    this.dims = spec.z_dims;
    this.lims = spec.pad_lims;
    this.shape = spec.image_shape; // [C, H, W]
    this.z = new Float32Array(this.d);
    this.maps = [null, null]; // per layer: {key, values}
    this.trail = null;
    this.busy = Promise.resolve();
    this.pending = false;
    this.lastMs = [];
    this.build(root);
  }

  offset(layer) {
    return this.dims.slice(0, layer).reduce((a, b) => a + b, 0);
  }

  build(root) {
    const [title, sub] = TITLES[this.name] || [this.name, ""];
    this.pads = [];
    const padBox = (layer) => {
      const c = el("canvas", {
        tabindex: "0",
        "aria-label": `${this.name}: ${LAYER_NAMES[layer]} (arrow keys move the point)`,
        "data-layer": String(layer),
      });
      const dpr = Math.min(2, window.devicePixelRatio || 1);
      c.width = Math.round(PAD_PX * dpr);
      c.height = Math.round(PAD_PX * dpr);
      this.pads[layer] = c;
      return el("div", { class: "jx-pad" }, [
        el("p", { class: "jx-label", text: LAYER_NAMES[layer] }),
        c,
      ]);
    };
    this.digit = el("canvas", { class: "jx-digit-canvas", "aria-label": `${this.name}: decoded image` });
    this.digit.width = this.shape[2];
    this.digit.height = this.shape[1];
    this.code = el("div", { class: "jx-code" });
    this.sampleBtn = el("button", { type: "button", text: "Sample from the prior" });
    const starts = el("div", { class: "jx-starts" }, [el("p", { class: "jx-note", text: "Start at a held-out digit:" })]);
    this.startBtns = [];
    for (const c of this.classes()) {
      const b = el("button", { type: "button", text: String(c), "aria-label": `code of a held-out ${c}` });
      b.addEventListener("click", () => {
        this.trail = null;
        this.set(this.heldOut(c));
      });
      this.startBtns.push(b);
      starts.append(b);
    }
    const note = this.prior
      ? `Langevin: ${this.spec.prior_langevin.steps} steps, s = ${this.spec.prior_langevin.step_size}, from N(0, I)`
      : "an exact draw from N(0, I), as the library samples VLAE";
    const side = el("div", {}, [
      el("div", { class: "jx-digit" }, [el("p", { class: "jx-label", text: "decoded image" }), this.digit]),
      this.code,
    ]);
    const controls = el("div", {}, [this.sampleBtn, el("p", { class: "jx-note", text: note }), starts]);
    root.append(
      el("div", { class: "jx-model", "data-model": this.name }, [
        el("h4", { text: title }),
        el("p", { class: "jx-sub", text: sub }),
        el("div", { class: "jx-grid" }, [padBox(1), side, padBox(0), controls]),
      ]),
    );
    this.sampleBtn.addEventListener("click", () => this.sample());
    for (const layer of [0, 1]) this.bindPad(layer);
  }

  classes() {
    const labels = this.spec.codes ? this.spec.codes.labels : [];
    return Array.from(new Set(labels)).sort();
  }

  heldOut(c) {
    const i = this.spec.codes.labels.indexOf(c);
    return Float32Array.from(this.spec.codes.z[i]);
  }

  bindPad(layer) {
    const c = this.pads[layer];
    const lim = this.lims[layer];
    const at = (ev) => {
      const r = c.getBoundingClientRect();
      const u = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
      const v = Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height));
      return [(2 * u - 1) * lim, (1 - 2 * v) * lim];
    };
    const move = (ev) => {
      const [a, b] = at(ev);
      const z = Float32Array.from(this.z);
      const o = this.offset(layer);
      z[o] = a;
      z[o + 1] = b;
      this.trail = null;
      this.set(z);
    };
    c.addEventListener("pointerdown", (ev) => {
      if (this.chain) return;
      c.setPointerCapture(ev.pointerId);
      c.focus({ preventScroll: true });
      move(ev);
      ev.preventDefault();
    });
    c.addEventListener("pointermove", (ev) => {
      if (!this.chain && c.hasPointerCapture(ev.pointerId)) move(ev);
    });
    c.addEventListener("keydown", (ev) => {
      const step = (ev.shiftKey ? 0.25 : 0.05) * lim;
      const d = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] }[ev.key];
      if (!d || this.chain) return;
      ev.preventDefault();
      const z = Float32Array.from(this.z);
      const o = this.offset(layer);
      z[o] = Math.max(-lim, Math.min(lim, z[o] + d[0]));
      z[o + 1] = Math.max(-lim, Math.min(lim, z[o + 1] + d[1]));
      this.trail = null;
      this.set(z);
    });
  }

  // -- computing -----------------------------------------------------------------------------

  tensor(data, b) {
    return new this.ort.Tensor("float32", data, [b, this.d]);
  }

  async decode(z) {
    const out = await this.decoder.run({ z: this.tensor(Float32Array.from(z), 1) });
    return out.image.data;
  }

  async logp(batch, b) {
    if (!this.prior) {
      const lp = new Float32Array(b);
      for (let i = 0; i < b; i++) {
        let s = 0;
        for (let j = 0; j < this.d; j++) s += batch[i * this.d + j] ** 2;
        lp[i] = -0.5 * s;
      }
      return lp;
    }
    const out = await this.prior.run({ z: this.tensor(batch, b) });
    return out.log_p.data;
  }

  async grad(z) {
    if (!this.prior) return z.map((v) => -v);
    const out = await this.prior.run({ z: this.tensor(Float32Array.from(z), 1) });
    return out.grad_log_p.data;
  }

  // log p over the plane of `layer`, the other layer held at its value in z: (GRID * GRID)
  async map(layer, z) {
    const lim = this.lims[layer];
    const o = this.offset(layer);
    const n = GRID * GRID;
    const batch = new Float32Array(n * this.d);
    for (let r = 0; r < GRID; r++) {
      for (let c = 0; c < GRID; c++) {
        const i = r * GRID + c;
        batch.set(z, i * this.d);
        batch[i * this.d + o] = ((c + 0.5) / GRID * 2 - 1) * lim;
        batch[i * this.d + o + 1] = (1 - (r + 0.5) / GRID * 2) * lim;
      }
    }
    return this.logp(batch, n);
  }

  otherKey(layer, z) {
    const o = this.offset(1 - layer);
    return `${z[o]},${z[o + 1]}`;
  }

  // Set the code and redraw: coalesces moves that arrive while a redraw runs (the last one wins).
  set(z) {
    this.z = Float32Array.from(z);
    if (this.pending) return this.busy;
    this.pending = true;
    this.busy = this.busy
      .then(async () => {
        this.pending = false;
        await this.render(this.z);
      })
      .catch((err) => console.error("explorer:", err));
    return this.busy;
  }

  async render(z) {
    const t0 = performance.now();
    // one run at a time per session (ONNX Runtime Web does not run a session concurrently)
    const img = await this.decode(z);
    for (const layer of [0, 1]) {
      const key = this.otherKey(layer, z);
      if (!this.maps[layer] || this.maps[layer].key !== key) this.maps[layer] = { key, values: await this.map(layer, z) };
    }
    this.drawDigit(img);
    for (const layer of [0, 1]) this.drawPad(layer, z);
    this.drawCode(z);
    const ms = performance.now() - t0;
    this.lastMs.push(ms);
    if (this.lastMs.length > 200) this.lastMs.shift();
    this.image = img;
    return ms;
  }

  async sample() {
    if (this.chain) return this.busy;
    this.chain = true;
    this.sampleBtn.disabled = true;
    this.startBtns.forEach((b) => (b.disabled = true));
    try {
      await this.busy;
      const lc = this.spec.prior_langevin;
      let z = Float32Array.from({ length: this.d }, gauss);
      this.trail = [Float32Array.from(z)];
      await this.set(z);
      if (this.prior) {
        const s = lc.step_size;
        const half = 0.5 * s * s;
        for (let t = 0; t < lc.steps; t++) {
          const g = await this.grad(z);
          z = z.map((v, j) => v + half * g[j] + (lc.noise ? s * gauss() : 0));
          this.trail.push(Float32Array.from(z));
          await this.set(z);
          await new Promise((r) => setTimeout(r, STEP_MS));
        }
      }
      return Array.from(z);
    } finally {
      this.chain = false;
      this.sampleBtn.disabled = false;
      this.startBtns.forEach((b) => (b.disabled = false));
    }
  }

  // -- drawing -------------------------------------------------------------------------------

  drawDigit(img) {
    const [, h, w] = this.shape;
    const ctx = this.digit.getContext("2d");
    const data = ctx.createImageData(w, h);
    for (let i = 0; i < w * h; i++) {
      const g = Math.round(Math.min(1, Math.max(0, (img[i] + 1) / 2)) * 255);
      data.data[4 * i] = data.data[4 * i + 1] = data.data[4 * i + 2] = g;
      data.data[4 * i + 3] = 255;
    }
    ctx.putImageData(data, 0, 0);
  }

  drawPad(layer, z) {
    const c = this.pads[layer];
    const ctx = c.getContext("2d");
    const W = c.width;
    const lim = this.lims[layer];
    const o = this.offset(layer);
    const px = (a) => ((a / lim + 1) / 2) * W;
    const py = (b) => ((1 - b / lim) / 2) * W;
    // the heat map: p(z) relative to its largest value on the pad, white (low) to the prior's blue (high)
    const lp = this.maps[layer].values;
    let mx = -Infinity;
    for (const v of lp) if (Number.isFinite(v) && v > mx) mx = v;
    const small = this.heat || (this.heat = document.createElement("canvas"));
    small.width = GRID;
    small.height = GRID;
    const sctx = small.getContext("2d");
    const im = sctx.createImageData(GRID, GRID);
    for (let i = 0; i < GRID * GRID; i++) {
      const q = Math.sqrt(Math.exp(Math.max(-60, lp[i] - mx))); // sqrt: the tails stay visible
      for (let k = 0; k < 3; k++) im.data[4 * i + k] = Math.round(255 + (PRIOR_RGB[k] - 255) * q);
      im.data[4 * i + 3] = 255;
    }
    sctx.putImageData(im, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(small, 0, 0, W, W);
    // axes through 0
    const s = W / PAD_PX;
    ctx.strokeStyle = "rgba(0,0,0,0.25)";
    ctx.lineWidth = s;
    ctx.beginPath();
    ctx.moveTo(px(0), 0);
    ctx.lineTo(px(0), W);
    ctx.moveTo(0, py(0));
    ctx.lineTo(W, py(0));
    ctx.stroke();
    // the data: posterior means of held-out digits
    const sums = {};
    if (this.spec.codes) {
      const { z: codes, labels } = this.spec.codes;
      ctx.fillStyle = "rgba(222,143,5,0.55)";
      codes.forEach((q, i) => {
        ctx.beginPath();
        ctx.arc(px(q[o]), py(q[o + 1]), 1.6 * s, 0, 2 * Math.PI);
        ctx.fill();
        const m = (sums[labels[i]] = sums[labels[i]] || [0, 0, 0]);
        m[0] += q[o];
        m[1] += q[o + 1];
        m[2] += 1;
      });
    }
    // each class's label at the centre of its codes
    {
      ctx.font = `bold ${13 * s}px sans-serif`;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      for (const [lab, m] of Object.entries(sums)) {
        const x = px(m[0] / m[2]);
        const y = py(m[1] / m[2]);
        ctx.lineWidth = 3 * s;
        ctx.strokeStyle = "white";
        ctx.strokeText(lab, x, y);
        ctx.fillStyle = "#7a4a00";
        ctx.fillText(lab, x, y);
      }
    }
    // the Langevin chain so far
    if (this.trail && this.trail.length > 1) {
      ctx.strokeStyle = "rgba(20,20,20,0.7)";
      ctx.lineWidth = 1.2 * s;
      ctx.beginPath();
      this.trail.forEach((q, i) => (i ? ctx.lineTo(px(q[o]), py(q[o + 1])) : ctx.moveTo(px(q[o]), py(q[o + 1]))));
      ctx.stroke();
    }
    // the current point
    ctx.beginPath();
    ctx.arc(px(Math.max(-lim, Math.min(lim, z[o]))), py(Math.max(-lim, Math.min(lim, z[o + 1]))), 5 * s, 0, 2 * Math.PI);
    ctx.fillStyle = "#111";
    ctx.fill();
    ctx.lineWidth = 2 * s;
    ctx.strokeStyle = "white";
    ctx.stroke();
    // the range, in the corners
    ctx.font = `${12 * s}px sans-serif`;
    ctx.fillStyle = "#333";
    ctx.textBaseline = "bottom";
    ctx.textAlign = "left";
    ctx.fillText(`\u2212${lim}`, 3 * s, W - 2 * s);
    ctx.textAlign = "right";
    ctx.fillText(`${lim}`, W - 3 * s, W - 2 * s);
  }

  drawCode(z) {
    this.code.textContent = `z\u2082 = (${fmt(z[2])}, ${fmt(z[3])})\nz\u2081 = (${fmt(z[0])}, ${fmt(z[1])})`;
  }
}

async function start(root) {
  const status = root.querySelector(".jx-status") || root.appendChild(el("p", { class: "jx-status" }));
  status.textContent = "Loading the two models (about 15 MB, once)\u2026";
  const ort = await import(new URL("ort.wasm.min.mjs", ORT_DIR).href);
  ort.env.wasm.wasmPaths = ORT_DIR.href;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = "error";
  const manifest = await (await fetch(MANIFEST_URL)).json();
  const base = new URL("./", MANIFEST_URL);
  const opts = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  const box = el("div", { class: "jx-models" });
  const models = {};
  for (const [name, spec] of Object.entries(manifest.models)) {
    const sessions = { decoder: null, prior: null };
    for (const kind of ["decoder", "prior"]) {
      const g = spec.graphs[kind];
      if (g) sessions[kind] = await ort.InferenceSession.create(new URL(g.file, base).href, opts);
    }
    models[name] = new Model(ort, name, spec, sessions, box);
  }
  status.replaceWith(box);
  for (const m of Object.values(models)) {
    const c = m.classes();
    await m.set(c.length ? m.heldOut(c[c.length - 1]) : new Float32Array(m.d));
  }
  return models;
}

function main() {
  const style = document.createElement("style");
  style.textContent = CSS;
  document.head.append(style);
  for (const root of document.querySelectorAll(".jebm-explorer")) {
    let resolveReady;
    const ready = new Promise((r) => (resolveReady = r));
    let models = null;
    root.explorer = {
      ready,
      models: () => models,
      set: (name, z) => models[name].set(Float32Array.from(z)),
      get: (name) => Array.from(models[name].z),
      sample: (name) => models[name].sample(),
      image: (name) => Array.from(models[name].image),
      timings: (name) => models[name].lastMs.slice(),
    };
    const go = () =>
      start(root).then(
        (m) => {
          models = m;
          root.dataset.state = "ready";
          resolveReady(true);
        },
        (err) => {
          root.dataset.state = "failed";
          const msg = root.querySelector(".jx-status") || root.appendChild(el("p", { class: "jx-status" }));
          msg.textContent = "The live panel could not start in this browser; the figure below shows the same plane as a grid.";
          console.warn("explorer:", err);
          resolveReady(false);
        },
      );
    // Load the runtime and the models when the panel comes near the screen, not with the page.
    if ("IntersectionObserver" in window) {
      const seen = new IntersectionObserver(
        (entries) => {
          if (entries.some((e) => e.isIntersecting)) {
            seen.disconnect();
            go();
          }
        },
        { rootMargin: "800px 0px" },
      );
      seen.observe(root);
    } else {
      go();
    }
  }
}

main();
