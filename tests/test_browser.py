"""The built book as a reader sees it: every page in headless Chromium, with the network cut.

    make book && make browser        (CI: the `browser` stage of .ci/run)

The tests marked ``browser`` read ``_build/html`` (built by ``make book``; they do not build it) and
are deselected from ``make unit`` (``-m "not browser"``). ``make browser`` installs Debian's
``chromium`` when it is missing and runs this file with ``JEBM_REQUIRE_BROWSER=1``, which turns
every skip (no build, no Chromium, no Playwright) into a failure.

The book is served from 127.0.0.1 by a ``http.server`` thread. Chromium runs headless with background
networking off, every host name but localhost mapped to "not found" (``--host-resolver-rules``), and
every request that does not go to the local server aborted and recorded: a page that needs the
network (a CDN script, a web font) fails the test. On each page reached from the sidebar's table of
contents it checks that the page loads (HTTP 200, a heading), that MathJax typeset every math
element (``mjx-container``, no TeX error, no undefined macro shown in red), that every image loaded
(``naturalWidth > 0``), that no request failed, and that the console shows no error. The table of
contents must link every page listed in ``_toc.yml``.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import re
import shutil
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from conftest import load_yaml, toc_files

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
REQUIRED = os.environ.get("JEBM_REQUIRE_BROWSER", "") not in ("", "0")
INSTALL_HINT = (
    "install Chromium with `sudo apt-get install -y chromium` (Debian/Ubuntu), or run `make browser`, "
    "which installs it and runs this test"
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    # The network cut: no host name but localhost resolves (the book is served from 127.0.0.1).
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
PAGE_TIMEOUT_MS = 60_000


def _load_fetch_mathjax():
    """tools/fetch_mathjax.py as a module (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("fetch_mathjax", ROOT / "tools" / "fetch_mathjax.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _skip_or_fail(reason: str):
    if REQUIRED:
        pytest.fail(reason + " (JEBM_REQUIRE_BROWSER=1: this must run here)")
    pytest.skip(reason)


def toc_pages() -> list[str]:
    """The HTML pages (relative to _build/html) of every file listed in ``_toc.yml``."""
    found = toc_files(load_yaml(ROOT / "_toc.yml"))
    return [re.sub(r"\.(md|ipynb|rst)$", "", f) + ".html" for f in found]


def require_build() -> Path:
    if not (HTML / "index.html").is_file():
        _skip_or_fail(f"no built book at {HTML}: run `make book` first")
    return HTML


# ----------------------------------------------------------------------------------------------
# Offline reading, statically: no page loads anything from another host
# ----------------------------------------------------------------------------------------------

# <link rel=...> values that make the browser fetch the target.
_LOADING_RELS = {
    "stylesheet",
    "icon",
    "shortcut",
    "apple-touch-icon",
    "preload",
    "modulepreload",
    "prefetch",
    "preconnect",
    "dns-prefetch",
    "manifest",
}
_EXTERNAL = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
_CSS_EXTERNAL = re.compile(r"(@import\s+(url\()?|url\()\s*['\"]?\s*(https?:)?//", re.IGNORECASE)


class _ResourceFinder(HTMLParser):
    """Collects (tag, attribute, url) of everything a page fetches by itself."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        urls: list[tuple[str, str]] = []
        if tag in ("script", "img", "iframe", "source", "audio", "video", "embed", "track", "input"):
            urls += [("src", a.get("src", ""))]
        if tag in ("img", "source"):
            urls += [("srcset", u.strip().split(" ")[0]) for u in a.get("srcset", "").split(",")]
        if tag == "object":
            urls += [("data", a.get("data", ""))]
        if tag == "video":
            urls += [("poster", a.get("poster", ""))]
        if tag == "link" and set(a.get("rel", "").lower().split()) & _LOADING_RELS:
            urls += [("href", a.get("href", ""))]
        if "style" in a and _CSS_EXTERNAL.search(a["style"]):
            urls += [("style", a["style"])]
        self.found += [(tag, attr, url) for attr, url in urls if url and _EXTERNAL.match(url)]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style and _CSS_EXTERNAL.search(data):
            self.found.append(("style", "(inline)", _CSS_EXTERNAL.search(data).group(0)))


def external_resources(html: str) -> list[tuple[str, str, str]]:
    finder = _ResourceFinder()
    finder.feed(html)
    return finder.found


def test_resource_finder_sees_cdn_loads_and_ignores_links():
    page = (
        '<script src="https://cdn.example.org/mathjax.js"></script>'
        '<script src="_static/local.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.org/css">'
        '<link rel="canonical" href="https://example.org/page.html">'
        '<img src="https://example.org/a.png"><img src="../_images/b.png">'
        '<a href="https://colab.research.google.com/x">Colab</a>'
        "<style>@import url('https://fonts.example.org/f.css');</style>"
    )
    found = external_resources(page)
    assert [(t, a) for t, a, _ in found] == [
        ("script", "src"),
        ("link", "href"),
        ("img", "src"),
        ("style", "(inline)"),
    ]


def test_config_serves_mathjax_locally():
    """``mathjax_path`` is a path under _static (no scheme): the fetched copy, not a CDN."""
    cfg = load_yaml(ROOT / "_config.yml")["sphinx"]["config"]
    path = cfg["mathjax_path"]
    assert not _EXTERNAL.match(path) and not path.startswith("/"), path
    assert path == "mathjax/" + _load_fetch_mathjax().ENTRY
    assert {"vz", "vx", "pa"} <= set(cfg["mathjax3_config"]["tex"]["macros"])


def test_fetch_mathjax_is_idempotent_and_checks_digests(tmp_path):
    fm = _load_fetch_mathjax()
    dest = tmp_path / "mathjax"
    with pytest.raises(fm.FetchError, match="SHA-256"):
        fm.install({fm.ENTRY: b"not mathjax"}, dest)
    with pytest.raises(fm.FetchError, match=f"no {fm.ENTRY}"):
        fm.install({"core.js": b""}, dest)
    assert not dest.exists() and not fm.is_present(dest)

    # A present, correct copy is kept as it is: fetch() does not call any source. The "correct" entry
    # file is a stand-in whose digest the module is told to expect (no fetched copy needed here).
    entry = b"/* a stand-in for tex-mml-chtml.js */"
    fm.ENTRY_SHA256 = fm.sha256(entry)
    fm.install({fm.ENTRY: entry, "input/tex/extensions/ams.js": b"x"}, dest)
    assert fm.is_present(dest)
    assert (dest / "input" / "tex" / "extensions" / "ams.js").read_bytes() == b"x"
    assert fm.fetch(dest, sources=()) == "present"
    (dest / ".version").write_text("3.0.0\n")
    with pytest.raises(fm.FetchError, match="could not fetch"):
        fm.fetch(dest, sources=())


@pytest.mark.browser
def test_built_html_loads_nothing_from_other_hosts():
    html_dir = require_build()
    pages = sorted(html_dir.glob("**/*.html"))
    assert pages
    found = {}
    for page in pages:
        hits = external_resources(page.read_text(encoding="utf-8", errors="replace"))
        if hits:
            found[str(page.relative_to(html_dir))] = hits
    for css in sorted((html_dir / "_static").glob("**/*.css")):
        text = css.read_text(encoding="utf-8", errors="replace")
        if _CSS_EXTERNAL.search(text):
            found[str(css.relative_to(html_dir))] = [("css", "url", _CSS_EXTERNAL.search(text).group(0))]
    assert not found, "the built book loads resources from other hosts (it must read offline):\n" + "\n".join(
        f"  {name}: {hits}" for name, hits in found.items()
    )
    # Each page loads MathJax once, through its single entry point (Jupyter Book adds every .js file
    # of a root _static/ folder to every page: the copy must not live there).
    mathjax_tags = {
        str(page.relative_to(html_dir)): re.findall(
            r"<script[^>]*src=\"[^\"]*_static/mathjax/[^\"]*\"", page.read_text(encoding="utf-8")
        )
        for page in pages
    }
    wrong = {name: tags for name, tags in mathjax_tags.items() if len(tags) > 1}
    assert not wrong, f"pages that load more than one MathJax script: {wrong}"
    assert any(mathjax_tags.values()), "no page loads _static/mathjax/ (is mathjax_path set?)"
    # The MathJax the pages point at is there.
    assert (html_dir / "_static" / "mathjax" / "tex-mml-chtml.js").is_file(), (
        "_static/mathjax/tex-mml-chtml.js is missing from the build: run `make book` (it fetches MathJax)"
    )


# ----------------------------------------------------------------------------------------------
# Every page in headless Chromium
# ----------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def book_url():
    html_dir = require_build()
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def chromium_path() -> str | None:
    explicit = os.environ.get("CHROMIUM")  # a path or a command name (as for `make CHROMIUM=...`)
    if explicit:
        return shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = chromium_path()
    if exe is None:
        _skip_or_fail(f"Chromium is not installed: {INSTALL_HINT}")
    if importlib.util.find_spec("playwright") is None:
        _skip_or_fail("the Python package playwright is missing: `pip install -r requirements.txt`")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=exe,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            service_workers="block",
        )
        try:
            yield context
        finally:
            context.close()


# Runs in the page once it has loaded: waits for MathJax's first typeset and for every image, then
# reports what a reader would see.
_INSPECT = """
async () => {
  const within = (p, ms) => Promise.race([p, new Promise(r => setTimeout(() => r("timeout"), ms))]);
  const out = {title: document.title, h1: document.querySelectorAll("h1").length};
  const maths = Array.from(document.querySelectorAll(".math"));
  out.math = maths.length;
  out.mathjax = typeof window.MathJax === "object" && !!window.MathJax.startup;
  out.mathjaxVersion = out.mathjax ? window.MathJax.version : null;
  if (out.mathjax && window.MathJax.startup.promise) {
    try {
      if (await within(window.MathJax.startup.promise.then(() => "ok"), 30000) === "timeout") {
        out.typesetError = "MathJax did not finish typesetting within 30 s";
      }
    } catch (e) { out.typesetError = String(e); }
  }
  out.typeset = maths.filter(m => m.querySelector("mjx-container")).length;
  out.containers = document.querySelectorAll("mjx-container").length;
  out.texErrors = Array.from(document.querySelectorAll("mjx-merror, [data-mjx-error]"))
    .map(e => e.getAttribute("data-mjx-error") || e.textContent).slice(0, 5);
  // An undefined macro (say, a missing mathjax3_config macro) is shown as red text.
  // Reported by the TeX source of the formula that shows it.
  const items = out.mathjax && MathJax.startup.document ? Array.from(MathJax.startup.document.math) : [];
  const red = Array.from(document.querySelectorAll("mjx-container [style*='color: red']"));
  out.undefinedMacros = Array.from(new Set(red.map(e => e.closest("mjx-container"))))
    .map(c => (items.find(i => i.typesetRoot === c) || {math: "?"}).math).slice(0, 5);
  const imgs = Array.from(document.images);
  imgs.forEach(i => { if (i.loading === "lazy") i.loading = "eager"; });
  await within(Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener("load", r, {once: true}); i.addEventListener("error", r, {once: true});
  }))), 30000);
  out.images = imgs.length;
  // Images shown at less than half their own width (tick labels become unreadable).
  out.shrunkImages = imgs.filter(i => i.naturalWidth > 0 && i.getBoundingClientRect().width > 0
      && i.getBoundingClientRect().width < 0.5 * i.naturalWidth)
    .map(i => `${i.getAttribute("src")} (${Math.round(i.getBoundingClientRect().width)} of ${i.naturalWidth} px)`)
    .slice(0, 10);
  // A figure drawn by a cell must be a numbered figure with a caption (the cell's mystnb.figure metadata).
  out.uncaptioned = Array.from(document.querySelectorAll(".cell_output img"))
    .filter(i => { const f = i.closest("figure"); return !(f && f.querySelector("figcaption .caption-number")); })
    .map(i => (i.getAttribute("src") || "").split("/").pop()).slice(0, 10);
  // A markdown table that was not turned into a <table> shows as text with a separator row: "| a | b |---|---|"
  // (Sphinx's smart quotes turn the dashes into em dashes). Code blocks and real tables are left out.
  const main = (document.querySelector("main") || document.body).cloneNode(true);
  main.querySelectorAll("pre, code, table, script, style").forEach(e => e.remove());
  out.rawTables = (main.textContent || "").split("\\n")
    .filter(l => /\\|\\s*(:?-{3,}:?|[\\u2014\\u2013]+)\\s*\\|/.test(l)).map(l => l.trim().slice(0, 120)).slice(0, 5);
  // A DataFrame shown with its default row numbers (0, 1, 2, ... in an unnamed index column) instead of an index
  // that says something: reported by its column headers.
  out.rowNumbers = Array.from(document.querySelectorAll(".cell_output table")).filter(t => {
    const first = Array.from(t.querySelectorAll("tbody tr")).map(r => r.querySelector("th"));
    if (first.length < 2 || first.some(h => !h || h.getAttribute("rowspan"))) return false;
    if (!first.every((h, i) => h.textContent.trim() === String(i))) return false;
    return Array.from(t.querySelectorAll("thead tr"))
      .every(r => { const h = r.querySelector("th"); return !h || h.textContent.trim() === ""; });
  }).map(t => Array.from(t.querySelectorAll("thead th")).map(h => h.textContent.trim()).filter(Boolean)
    .slice(0, 4).join(" | ")).slice(0, 5);
  // Tables not made by jebm_lite.experiments.tables (a pandas DataFrame's own HTML), and snake_case headers
  // ("pixel_var_frac"): a reader's table has human headers and formatted numbers.
  out.pandasTables = Array.from(document.querySelectorAll(".cell_output table"))
    .filter(t => !t.classList.contains("jebm-table")).length;
  out.snakeHeaders = Array.from(document.querySelectorAll(".cell_output table th"))
    .map(h => h.textContent.trim()).filter(t => /^[a-z]{2,}(_[a-z]{2,})+$/.test(t)).slice(0, 5);
  // Table cells that read "NaN" (a value that does not apply is shown as a dash: .astype(object).fillna("–")).
  out.nanCells = Array.from(document.querySelectorAll(".cell_output table td"))
    .filter(td => ["NaN", "nan", "<NA>", "None"].includes(td.textContent.trim())).length;
  // Commit hashes ("6a5f835", "6a5f835+dirty") in what a reader sees: provenance belongs in the result files
  // and in collapsed run cards (hide-cell), which innerText leaves out while they are closed.
  const seen = (document.querySelector("main") || document.body).innerText || "";
  const prose = (document.querySelector("main") || document.body).cloneNode(true);
  prose.querySelectorAll("pre, code, script, style, details, .cell_output").forEach(e => e.remove());
  out.text = prose.textContent || "";  // the reading text: prose and captions, no code or cell output
  out.commitHashes = Array.from(seen.matchAll(/(?:^|\\s)([0-9a-f]{7,12}(?:\\+dirty)?)(?=[\\s,;)]|$)/g))
    .map(m => m[1]).filter(t => /[a-f]/.test(t) && /[0-9]/.test(t)).slice(0, 5);
  out.brokenImages = imgs.filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.getAttribute("src")).slice(0, 10);
  out.chtmlFonts = document.fonts ? Array.from(document.fonts)
    .filter(f => f.family.includes("MJX") && f.status === "error").map(f => f.family) : [];
  // A display equation wider than its column (with its number) is cut off or drawn under the number.
  out.wideEquations = Array.from(document.querySelectorAll("div.math")).filter(d => {
    const m = d.querySelector("mjx-math"); if (!m) return false;
    const no = d.querySelector(".eqno");
    return m.getBoundingClientRect().width + (no ? no.getBoundingClientRect().width : 0)
      > d.getBoundingClientRect().width + 1;
  }).map(d => (d.id || "unlabelled") + " " + Math.round(d.querySelector("mjx-math").getBoundingClientRect().width)
    + " px in " + Math.round(d.getBoundingClientRect().width)).slice(0, 10);
  // A table wider than its column, with no box around it that scrolls: cut off.
  out.cutTables = Array.from(document.querySelectorAll("main table")).filter(t => {
    let e = t.parentElement;
    const w = t.getBoundingClientRect().width;
    for (let k = 0; e && k < 4; k++, e = e.parentElement) {
      const ox = getComputedStyle(e).overflowX;
      if ((ox === "auto" || ox === "scroll") && e.clientWidth < w + 1) return false;
    }
    const col = (document.querySelector("main article") || document.querySelector("main")).getBoundingClientRect();
    return t.getBoundingClientRect().right > col.right + 1;
  }).map(t => Array.from(t.querySelectorAll("th")).slice(0, 3).map(h => h.textContent.trim()).join(" | "))
    .slice(0, 5);
  // Images in cell outputs: source, natural and displayed width (the test checks their text size).
  out.outputImages = Array.from(document.querySelectorAll(".cell_output img"))
    .map(i => [i.getAttribute("src"), i.naturalWidth, i.getBoundingClientRect().width]);
  const nav = document.querySelector("nav.bd-docs-nav");
  out.toc = nav ? Array.from(nav.querySelectorAll("a.reference")).map(a => a.href) : null;
  return out;
}
"""


# Words of the workshop, not of the book: issue numbers, report sections, tool names, "this build".
# innerText leaves collapsed cells (run cards, hidden code) out.
FORBIDDEN = re.compile(
    r"\b(?:issue \d+|report §\s*\d*|reference report|report \d+\.\d+|this build|nbval|hre:\w+"
    r"|the preset's comment|while building the preset|the notes of issue)\b", re.IGNORECASE)

# Pages executed with the book's style (chapters join this list when they are executed again with it): figures
# from jebm_lite.analysis.viz's column-width style, whose smallest text renders at MIN_TEXT_PX or more, and
# every table made by jebm_lite.experiments.tables.
RESTYLED = ("notebooks/01_lebm.html", "notebooks/02_conditional_hierarchy.html", "notebooks/03_vlae.html",
            "notebooks/05_toy012.html", "notebooks/06_tab1_measured.html", "notebooks/08_robustness.html",
            "notebooks/09_langevin_ablations.html", "notebooks/10_follow_ups.html",
            "notebooks/90_reproduction_notes.html")
MIN_TEXT_PX = 9.0


def small_figure_text(page_url: str, images: list) -> list[str]:
    """Images whose smallest font (the style's MIN_FONT_PT at the PNG's dpi) shows below MIN_TEXT_PX."""
    from PIL import Image

    from jebm_lite.analysis.viz import MIN_FONT_PT

    out = []
    for src, natural, shown in images:
        path = (HTML / urlsplit(urljoin(page_url, src)).path.lstrip("/")).resolve()
        if not path.is_file() or not natural or not shown:
            continue
        dpi = Image.open(path).info.get("dpi", (72, 72))[0]
        px = MIN_FONT_PT * dpi / 72 * shown / natural
        if px < MIN_TEXT_PX:
            out.append(f"{path.name}: {px:.1f} px")
    return out


def _is_local(url: str, base: str) -> bool:
    parts, local = urlsplit(url), urlsplit(base)
    return parts.scheme in ("data", "blob", "about") or parts.netloc == local.netloc


# Console errors that are not the book's: pydata-sphinx-theme logs this on a reader's first visit
# (no theme mode stored yet) and then picks "auto", as it should.
_KNOWN_CONSOLE_ERRORS = [re.compile(r"^Got invalid theme mode: \. Resetting to auto\.$")]


def _console_problem(msg) -> str | None:
    if msg.type != "error" or any(p.search(msg.text) for p in _KNOWN_CONSOLE_ERRORS):
        return None
    return f"console {msg.type}: {msg.text}"


def _visit(
    context, url: str, base: str, shots: Path | None, lands_on: str | None = None
) -> tuple[dict, list[str]]:
    """Open one page (waiting until it has led to ``lands_on``, for a redirect); returns what
    _INSPECT saw and a list of problems."""
    page = context.new_page()
    problems: list[str] = []
    blocked: list[str] = []

    def route(r):
        if _is_local(r.request.url, base):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort("internetdisconnected")

    page.route("**/*", route)
    page.on("console", lambda m: problems.append(_console_problem(m)) if _console_problem(m) else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught exception: {e}"))
    page.on(
        "requestfailed",
        lambda r: None if r.url in blocked else problems.append(f"request failed: {r.url} ({r.failure})"),
    )
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    try:
        response = page.goto(url, wait_until="load", timeout=PAGE_TIMEOUT_MS)
        if response is None or response.status != 200:
            problems.append(f"page did not load: {None if response is None else response.status}")
        if lands_on is not None and page.url != lands_on:
            page.wait_for_url(lands_on, wait_until="load", timeout=PAGE_TIMEOUT_MS)
        info = page.evaluate(_INSPECT)
        if shots is not None:
            name = urlsplit(page.url).path.strip("/").replace("/", "__") or "index"
            page.screenshot(path=str(shots / f"{name}.png"), full_page=False)
        info["url"] = page.url
    finally:
        page.close()
    problems += [f"request to another host (the network is cut): {u}" for u in blocked]
    return info, problems


@pytest.mark.browser
def test_every_toc_page_renders_offline_in_chromium(browser, book_url):
    shots_env = os.environ.get("JEBM_BROWSER_SCREENSHOTS")
    shots = Path(shots_env) if shots_env else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)

    # The landing page redirects to the root page, whose sidebar is the book's table of contents.
    root_url = urljoin(book_url, toc_pages()[0])
    info, problems = _visit(browser, book_url, book_url, shots, lands_on=root_url)
    assert not problems, f"the landing page: {problems}"
    assert info["url"] == root_url, f"index.html should lead to the root page {root_url}, got {info['url']}"
    assert info["toc"], "the root page has no sidebar table of contents (nav.bd-docs-nav)"
    linked = {u.split("#")[0] for u in info["toc"]} | {root_url}
    expected = [urljoin(book_url, p) for p in toc_pages()]
    missing = [u for u in expected if u not in linked]
    assert not missing, f"the table of contents does not link these _toc.yml pages: {missing}"

    report, failures = [], {}
    total_math = 0
    for url in expected:
        info, problems = _visit(browser, url, book_url, shots)
        name = url[len(book_url) :]
        if not info["h1"]:
            problems.append("no <h1> heading")
        if info["math"]:
            total_math += info["math"]
            if not info["mathjax"]:
                problems.append("the page has math but MathJax did not start")
            if info["typeset"] != info["math"]:
                problems.append(
                    f"only {info['typeset']} of {info['math']} math elements typeset (mjx-container)"
                )
        if info.get("typesetError"):
            problems.append(f"MathJax failed: {info['typesetError']}")
        if info["texErrors"]:
            problems.append(f"TeX errors: {info['texErrors']}")
        if info["undefinedMacros"]:
            problems.append(f"undefined TeX macros shown in red: {info['undefinedMacros']}")
        if info["brokenImages"]:
            problems.append(f"images that did not load: {info['brokenImages']}")
        if info["uncaptioned"]:
            problems.append(f"figures without a numbered caption (add mystnb.figure to the cell): {info['uncaptioned']}")
        if info["commitHashes"]:
            problems.append(f"commit hashes in the reading text (keep them in result files / a hide-cell run card): "
                            f"{info['commitHashes']}")
        if info["rawTables"]:
            problems.append(f"markdown tables shown as text, not as tables: {info['rawTables']}")
        if info["rowNumbers"]:
            problems.append(f"tables showing pandas' row numbers (set_index to a column that names the row): "
                            f"{info['rowNumbers']}")
        if info["nanCells"]:
            problems.append(f"{info['nanCells']} table cells read NaN / None (show a dash where a value does not apply)")
        if info["shrunkImages"]:
            problems.append(f"images shown below half their width (draw them for the column): {info['shrunkImages']}")
        if info["wideEquations"]:
            problems.append(f"display equations wider than the column (split them): {info['wideEquations']}")
        if info["cutTables"]:
            problems.append(f"tables cut off at the column's edge: {info['cutTables']}")
        forbidden = [w for w in FORBIDDEN.findall(info["text"])]
        if forbidden:
            problems.append(f"lab words in the reading text: {sorted(set(forbidden))[:8]}")
        if any(name.endswith(page) for page in RESTYLED):
            small = small_figure_text(url, info["outputImages"])
            if small:
                problems.append(f"figure text below {MIN_TEXT_PX} CSS px: {small}")
            if info["pandasTables"] or info["snakeHeaders"]:
                problems.append(f"{info['pandasTables']} table(s) not made by experiments.tables (display_frame, "
                                f"frame_table); snake_case headers: {info['snakeHeaders']}")
        if info["chtmlFonts"]:
            problems.append(f"MathJax fonts that did not load: {info['chtmlFonts']}")
        sidebar = {u.split("#")[0] for u in info["toc"] or []}
        if not sidebar >= set(expected) - {url}:
            problems.append(f"its sidebar does not link {sorted(set(expected) - {url} - sidebar)}")
        report.append(
            f"{name}: {info['math']} math / {info['containers']} mjx-container, {info['images']} images, "
            f"MathJax {info['mathjaxVersion']}"
        )
        if problems:
            failures[name] = problems
    print("\n".join(report))
    assert not failures, "pages with problems in Chromium:\n" + "\n".join(
        f"  {name}:\n    - " + "\n    - ".join(msgs) for name, msgs in failures.items()
    )
    assert total_math > 0, "no page of the book has math: the typesetting check checked nothing"


PHONE = {"width": 390, "height": 900}

# Elements that stick out of a phone's page (a page that scrolls sideways as a whole); content that
# scrolls inside its own box (a code block, a wide equation or table) does not count.
_PHONE_OVERFLOW = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const W = document.documentElement.clientWidth;
  const out = [];
  for (const e of document.querySelectorAll(".bd-article *")) {
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.right <= W + 1) continue;
    let a = e.parentElement, boxed = false;
    while (a) {
      const ox = getComputedStyle(a).overflowX;
      if (ox !== "visible" && a.getBoundingClientRect().right <= W + 1) { boxed = true; break; }
      a = a.parentElement;
    }
    if (!boxed) out.push(`${e.tagName.toLowerCase()} "${(e.textContent || "").trim().slice(0, 40)}"`);
  }
  return {docWidth: document.documentElement.scrollWidth, width: W, out: out.slice(0, 4)};
}
"""


@pytest.mark.browser
def test_no_page_scrolls_sideways_on_a_phone(browser, book_url):
    """At 390 px every page fits its width: long inline code and headings break, wide blocks scroll
    inside their own boxes."""
    failures = {}
    for rel in toc_pages():
        page = browser.new_page()
        try:
            page.set_viewport_size(PHONE)
            page.goto(urljoin(book_url, rel), wait_until="load", timeout=PAGE_TIMEOUT_MS)
            info = page.evaluate(_PHONE_OVERFLOW)
        finally:
            page.close()
        if info["docWidth"] > info["width"] + 1 or info["out"]:
            failures[rel] = f"page {info['docWidth']} px wide at {info['width']} px: {info['out']}"
    assert not failures, "pages wider than a phone:\n" + "\n".join(f"  {k}: {v}" for k, v in failures.items())


def test_small_figure_text_flags_shrunk_low_dpi_figures(tmp_path, monkeypatch):
    """The figure-text check: the style's smallest font at the PNG's dpi, scaled to its displayed width."""
    from PIL import Image

    monkeypatch.setattr(sys.modules[__name__], "HTML", tmp_path)
    (tmp_path / "_images").mkdir()
    Image.new("RGB", (1000, 300)).save(tmp_path / "_images" / "old.png", dpi=(90, 90))  # an 11-inch figure
    Image.new("RGB", (910, 300)).save(tmp_path / "_images" / "new.png", dpi=(130, 130))  # a 7-inch figure
    page = "http://127.0.0.1:1/notebooks/ch.html"
    shown = [["../_images/old.png", 1000, 672], ["../_images/new.png", 910, 672]]
    small = small_figure_text(page, shown)
    assert len(small) == 1 and small[0].startswith("old.png")  # 8 pt at 90 dpi shown at 0.67x: 6.7 px
