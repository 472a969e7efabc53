"""Chapter 5's explorer panel in headless Chromium, with the network cut.

    make book && make browser        (CI: the `browser` stage of .ci/run)

Marked ``browser`` like tests/test_browser.py: it reads ``_build/html`` (built by ``make book``), is
deselected from ``make unit`` and turns every skip into a failure under ``JEBM_REQUIRE_BROWSER=1``.

The page is served from 127.0.0.1; Chromium resolves no other host and every request elsewhere is
aborted and reported. The test waits for the panel (ONNX Runtime Web from ``_static/onnxruntime-web/``,
the graphs from ``_static/explorer/toy012/``), sets both models to the fixed codes whose PyTorch decodes
the export stored in its manifest and compares the drawn pixels with them (within 2/255), drags a pad
with the mouse and checks that the digit changes, runs "Sample from the prior" and checks that the point
travels and stays finite, times the updates (< 50 ms each, the median), checks that the panel's text is at
least 12 px and that it fits a 390 px phone, and fails on any console error. With
``JEBM_BROWSER_SCREENSHOTS=DIR`` it saves the panel at 1280 and 390 px.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import platform
import shutil
import statistics
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
PAGE = "notebooks/05_toy012.html"
MANIFEST = HTML / "_static" / "explorer" / "toy012" / "manifest.json"
REQUIRED = os.environ.get("JEBM_REQUIRE_BROWSER", "") not in ("", "0")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    # the network cut: no host name but localhost resolves
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
# pydata-sphinx-theme logs this on a first visit (no stored theme mode) and picks "auto", as it should
KNOWN_CONSOLE_ERRORS = ("Got invalid theme mode: . Resetting to auto.",)
TIMEOUT_MS = 90_000
PIXEL_TOL = 2  # of 255


def _skip_or_fail(reason: str):
    if REQUIRED:
        pytest.fail(reason + " (JEBM_REQUIRE_BROWSER=1: this must run here)")
    pytest.skip(reason)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def base_url():
    if not (HTML / PAGE).is_file():
        _skip_or_fail(f"no built chapter 5 at {HTML / PAGE}: run `make book` first")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def chromium():
    exe = os.environ.get("CHROMIUM")
    exe = shutil.which(exe) if exe else next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        _skip_or_fail("Chromium is not installed: run `make browser` (it installs Debian's chromium)")
    if importlib.util.find_spec("playwright") is None:
        _skip_or_fail("the Python package playwright is missing: `pip install -r requirements.txt`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page with the network cut and every console error, page error and failed request recorded."""

    def __init__(self, browser, base: str, width: int, height: int):
        self.page = browser.new_page(viewport={"width": width, "height": height}, service_workers="block")
        self.problems: list[str] = []
        self.requests: list[str] = []
        netloc = urlsplit(base).netloc

        def route(r):
            url = r.request.url
            if urlsplit(url).netloc == netloc or urlsplit(url).scheme in ("data", "blob"):
                self.requests.append(url)
                r.continue_()
            else:
                self.problems.append(f"request to another host (the network is cut): {url}")
                r.abort("internetdisconnected")

        self.page.route("**/*", route)
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type == "error" and m.text not in KNOWN_CONSOLE_ERRORS else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"uncaught exception: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} ({r.failure})")
                     if urlsplit(r.url).netloc == netloc else None)
        self.page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def open(self, url: str) -> float:
        """Load the page, bring the panel into view and wait for it; returns seconds to a ready panel."""
        t0 = time.perf_counter()
        self.page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
        self.page.locator(".jebm-explorer").scroll_into_view_if_needed()
        ready = self.page.evaluate(
            """async () => {
                 const el = document.querySelector('.jebm-explorer');
                 for (let i = 0; i < 400 && !el.explorer; i++) await new Promise(r => setTimeout(r, 25));
                 return el.explorer ? await el.explorer.ready : 'no explorer';
               }""")
        assert ready is True, f"the panel did not start ({ready}): {self.problems}"
        return time.perf_counter() - t0


def _pixels(page, model: str) -> np.ndarray:
    """The decoded digit as drawn: the grey level of the 28 x 28 canvas, (28, 28) uint8."""
    data = page.evaluate(
        """(model) => {
             const c = document.querySelector(`.jx-model[data-model="${model}"] .jx-digit canvas`);
             return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
           }""", model)
    rgba = np.asarray(data, dtype=np.uint8).reshape(28, 28, 4)
    assert (rgba[..., 3] == 255).all() and (rgba[..., 0] == rgba[..., 1]).all()
    return rgba[..., 0]


def _expected(image: list) -> np.ndarray:
    x = np.asarray(image, dtype=np.float64).reshape(28, 28)
    return np.round(np.clip((x + 1) / 2, 0, 1) * 255).astype(np.int64)


@pytest.mark.browser
def test_explorer_runs_both_models_offline(chromium, base_url):
    manifest = json.loads(MANIFEST.read_text())
    w = Watched(chromium, base_url, 1280, 900)
    page = w.page
    load_s = w.open(base_url + PAGE)
    shots = os.environ.get("JEBM_BROWSER_SCREENSHOTS")

    # 1. the drawn digit is PyTorch's decode of the code, for each model and each reference code
    for name, spec in manifest["models"].items():
        ref = spec["reference"]
        for code, image in zip(ref["codes"], ref["image"]):
            page.evaluate("([m, z]) => document.querySelector('.jebm-explorer').explorer.set(m, z)", [name, code])
            got = _pixels(page, name).astype(np.int64)
            diff = np.abs(got - _expected(image)).max()
            assert diff <= PIXEL_TOL, f"{name} at {code}: drawn pixels differ from PyTorch's by {diff}/255"

    # 2. dragging the bottom pad with the mouse moves the code and redraws the digit
    for name in manifest["models"]:
        page.evaluate("(m) => document.querySelector('.jebm-explorer').explorer.set(m, [0, 0, 0, 0])", name)
        before_img, before_z = _pixels(page, name), page.evaluate(
            "(m) => document.querySelector('.jebm-explorer').explorer.get(m)", name)
        pad = page.locator(f'.jx-model[data-model="{name}"] canvas[data-layer="0"]')
        pad.scroll_into_view_if_needed()
        box = pad.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(box["x"] + box["width"] * (0.5 + 0.04 * k), box["y"] + box["height"] * (0.5 - 0.03 * k))
        page.mouse.up()
        page.evaluate("(m) => document.querySelector('.jebm-explorer').explorer.models()[m].busy", name)
        after_z = page.evaluate("(m) => document.querySelector('.jebm-explorer').explorer.get(m)", name)
        assert after_z[2:] == before_z[2:], "dragging the bottom pad must leave the top layer"
        assert after_z[0] > 0.3 * spec_lim(manifest, name, 0) and after_z[1] > 0.2 * spec_lim(manifest, name, 0), after_z
        changed = np.abs(_pixels(page, name).astype(int) - before_img.astype(int)).max()
        assert changed > 20, f"{name}: moving z1 did not change the digit ({changed}/255)"

    # 3. update time: the decoded digit and the heat maps (median over a sweep of the top layer)
    ms = page.evaluate(
        """async () => {
             const x = document.querySelector('.jebm-explorer').explorer, out = {};
             for (const m of ['joint', 'vlae']) {
               const t = [];
               for (let i = 0; i < 25; i++) {
                 const t0 = performance.now();
                 await x.set(m, [1, -1, 2 * Math.cos(i / 4), 2 * Math.sin(i / 4)]);
                 t.push(performance.now() - t0);
               }
               out[m] = t;
             }
             return out;
           }""")
    for name, t in ms.items():
        assert statistics.median(t) < 50, f"{name}: median update {statistics.median(t):.1f} ms"

    # 4. "Sample from the prior": the joint model's Langevin chain moves the point; every state is finite
    trace = page.evaluate(
        """async () => {
             const x = document.querySelector('.jebm-explorer').explorer;
             const states = [];
             const done = x.sample('joint');
             const poll = setInterval(() => states.push(x.get('joint')), 30);
             const last = await done;
             clearInterval(poll);
             const vlae = await x.sample('vlae');
             return {states, last, vlae, button: document.querySelector('.jx-model[data-model="joint"] button').disabled};
           }""")
    states = np.asarray(trace["states"] + [trace["last"]], dtype=np.float64)
    assert np.isfinite(states).all() and np.isfinite(trace["vlae"]).all()
    assert len({tuple(s) for s in states.round(4)}) > 10, "the chain's point did not travel"
    assert np.linalg.norm(states[-1] - states[0]) > 0.1
    assert not trace["button"], "the sample button stays disabled after the chain"
    assert np.ptp(_pixels(page, "joint")) > 100, "the sampled code does not decode to a digit"

    print(f"chapter 5: panel ready {load_s:.2f} s after navigation; median update "
          + ", ".join(f"{k} {statistics.median(v):.1f} ms" for k, v in ms.items()))
    record = os.environ.get("JEBM_EXPLORER_RECORD")  # the performance page's numbers: written on request
    if record:
        files = [HTML / urlsplit(u).path.lstrip("/") for u in set(w.requests)]
        sizes = [f.stat().st_size for f in files if f.is_file()]
        Path(record).write_text(json.dumps({
            "page": "notebooks/05_toy012.html", "html_bytes": (HTML / "notebooks" / "05_toy012.html").stat().st_size,
            "files_loaded": len(sizes), "bytes_loaded": sum(sizes), "panel_ready_s": round(load_s, 2),
            "median_update_ms": {k: round(statistics.median(v), 2) for k, v in ms.items()},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, headless Chromium, localhost",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=1) + "\n")
        r = json.loads(Path(record).read_text())  # and the table the performance page includes
        Path(record).with_suffix(".md").write_text(
            "| measured | value |\n|---|---|\n"
            f"| chapter 5's HTML | {r['html_bytes'] / 1024:.0f} KiB |\n"
            f"| files loaded with the panel | {r['files_loaded']} ({r['bytes_loaded'] / 2**20:.1f} MiB) |\n"
            f"| panel ready after opening the page | {r['panel_ready_s']:.1f} s |\n"
            f"| one update (median), joint / VLAE | {r['median_update_ms']['joint']:.1f} / "
            f"{r['median_update_ms']['vlae']:.1f} ms |\n"
            f"| where, when | {r['machine']}, {r['date']} |\n")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.locator(".jebm-explorer").screenshot(path=str(Path(shots) / "explorer-1280.png"))
    page.close()
    assert not w.problems, "\n".join(w.problems)


def spec_lim(manifest: dict, name: str, layer: int) -> float:
    return float(manifest["models"][name]["pad_lims"][layer])


@pytest.mark.browser
def test_explorer_fits_a_phone_and_is_readable(chromium, base_url):
    w = Watched(chromium, base_url, 390, 844)
    w.open(base_url + PAGE)
    page = w.page
    layout = page.evaluate(
        """() => {
             const root = document.querySelector('.jebm-explorer');
             const models = Array.from(root.querySelectorAll('.jx-model')).map(m => m.getBoundingClientRect());
             const small = Array.from(root.querySelectorAll('*')).filter(e => e.childNodes.length &&
                 Array.from(e.childNodes).some(n => n.nodeType === 3 && n.textContent.trim()) &&
                 parseFloat(getComputedStyle(e).fontSize) < 12).map(e => e.tagName + ': ' + e.textContent.slice(0, 30));
             return {models: models.map(r => [r.left, r.top, r.right, r.bottom]), small,
                     overflow: root.scrollWidth - root.clientWidth, vw: document.documentElement.clientWidth};
           }""")
    (l0, t0, r0, b0), (l1, t1, r1, b1) = layout["models"]
    assert t1 >= b0, "on a phone the two models stack vertically"
    assert max(r0, r1) <= layout["vw"] and min(l0, l1) >= 0, layout
    assert layout["overflow"] <= 0, f"the panel overflows its column by {layout['overflow']} px"
    assert not layout["small"], f"text under 12 px: {layout['small']}"
    shots = os.environ.get("JEBM_BROWSER_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 390, "height": 1800})  # the whole panel in one shot, same width
        page.locator(".jebm-explorer").screenshot(path=str(Path(shots) / "explorer-390.png"))
    page.close()
    assert not w.problems, "\n".join(w.problems)


@pytest.mark.browser
def test_chapter_page_weight(chromium, base_url):
    """What chapter 5 loads with the panel (reported; the runtime comes once, from _static/onnxruntime-web/)."""
    w = Watched(chromium, base_url, 1280, 900)
    load_s = w.open(base_url + PAGE)
    paths = [urlsplit(u).path.lstrip("/") for u in w.requests]
    sizes = {p: (HTML / p).stat().st_size for p in set(paths) if (HTML / p).is_file()}
    runtime = [p for p in paths if "onnxruntime-web/" in p]
    assert sorted(set(runtime)) == sorted(f"_static/onnxruntime-web/{f}" for f in
                                          ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"))
    assert len(runtime) == len(set(runtime)), f"the runtime was loaded more than once: {runtime}"
    total = sum(sizes.values())
    print(f"chapter 5 with the panel: {len(sizes)} files, {total / 2**20:.1f} MiB "
          f"(runtime {sum(v for k, v in sizes.items() if 'onnxruntime-web/' in k) / 2**20:.1f} MiB, "
          f"graphs {sum(v for k, v in sizes.items() if k.endswith('.onnx')) / 2**20:.1f} MiB); ready in {load_s:.2f} s")
    w.page.close()
    assert not w.problems, "\n".join(w.problems)
