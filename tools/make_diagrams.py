"""Write the book's three concept diagrams as hand-built SVG text (``book/figures/*.svg``).

    python tools/make_diagrams.py           # (re)write the SVGs
    python tools/make_diagrams.py --check   # exit 1 if a committed SVG is not the script's output

* ``priors.svg``: the three priors as graphical models, (a) a conditional Gaussian hierarchy (LVAE, BIVA),
  (b) VLAE's independent N(0, I) codes, (c) the joint EBM prior of Cui, Wu & Han (ICCV 2023, Eq. 3).
* ``ladder.svg``: the ``mnist_small`` networks of ``jebm_lite.models.hierarchical`` (VLAE-small layout):
  the ladder inference network (Eq. 8) and the generator (Eq. 5) with VLAE's gated-add merge.
* ``train_step.svg``: one iteration of ``HierarchicalLearner.train_step`` as an algorithm box.

Standard library only; the output is a pure function of this file (fixed coordinates, no dates), so
``tests/test_diagrams.py`` can check that the committed files are current. Book notation: ``z_1`` is the
bottom layer (next to the image), ``z_L`` the top; bold upright x and z and bold italic epsilon and mu as
the book's ``\\vx``, ``\\vz``, ``\\veps``, ``\\vmu``; other symbols in a serif italic.

Text markup of :func:`text` (one line): ``$...$`` is math; inside it ``_a`` / ``_{...}`` is a subscript,
``^a`` / ``^{...}`` a superscript, ``\\z`` ``\\x`` ``\\h`` (x-hat) are bold upright, ``\\e`` ``\\m`` bold
italic epsilon / mu, ``\\r{...}`` upright serif (function names), ``\\t{...}`` sans text, ``\\,`` a thin and ``\\;``
an em space (SVG collapses runs of ordinary spaces); letters are italic, digits and operators upright.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "book" / "figures"

# One colour per role, the same in every diagram: (stroke, fill); text colours are darker for contrast.
CODE = ("#2b6cb0", "#e3eefb")  # latent codes z (blue)
NET = ("#4a5568", "#eef1f5")  # networks and their features (grey)
EBM = ("#c05621", "#fdebd3")  # the energy f_alpha and its sampler (orange)
DATA = ("#2f855a", "#e1f4e8")  # images x (green)
INK = "#1a202c"
MUTED = "#4a5568"
CODE_INK = "#22558c"
EBM_INK = "#9c4221"
DATA_INK = "#276749"
RULE = "#cbd5e0"

SERIF = '"Times New Roman",Times,"Liberation Serif","DejaVu Serif",serif'
STYLE = (
    'text{font-family:"Helvetica Neue",Helvetica,Arial,"Liberation Sans","DejaVu Sans",sans-serif}'
    f".m{{font-family:{SERIF};font-style:italic}}"
    f".r{{font-family:{SERIF};font-style:normal}}"
    f".v{{font-family:{SERIF};font-style:normal;font-weight:bold}}"
    f".vi{{font-family:{SERIF};font-style:italic;font-weight:bold}}"
    '.c{font-family:"DejaVu Sans Mono",Menlo,Consolas,"Liberation Mono",monospace}'
)

SUB_MIN = 12  # smallest font size used anywhere (sub- and superscripts)


# ----------------------------------------------------------------------------------------------
# Rich text: a one-line markup to <tspan>s
# ----------------------------------------------------------------------------------------------

_MACROS = {"z": ("z", "v"), "x": ("x", "v"), "h": ("x\u0302", "v"), "e": ("\u03b5", "vi"), "m": ("\u03bc", "vi")}


def _num(v: float) -> str:
    """A coordinate as short, stable text."""
    r = round(v, 2)
    return str(int(r)) if r == int(r) else f"{r:g}"


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _group(s: str, i: int) -> tuple[str, int]:
    """The ``{...}`` group, macro or single character at ``s[i]``, and the index after it."""
    if s[i] == "{":
        depth, j = 1, i + 1
        while depth:
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            j += 1
        return s[i + 1 : j - 1], j
    if s[i] == "\\":
        m = re.match(r"\\[A-Za-z]+", s[i:])
        assert m, s
        return m.group(0), i + len(m.group(0))
    return s[i], i + 1


def _math(s: str, level: int) -> list[tuple[str, str, int]]:
    runs: list[tuple[str, str, int]] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c in "_^":
            g, i = _group(s, i + 1)
            runs += _math(g, level + (1 if c == "^" else -1))
        elif s.startswith("\\,", i) or s.startswith("\\;", i):  # thin space, em space (not collapsed)
            runs.append(("\u2009" if s[i + 1] == "," else "\u2003", "r", level))
            i += 2
        elif c == "\\":
            m = re.match(r"\\([A-Za-z]+)", s[i:])
            assert m, s
            name = m.group(1)
            i += len(m.group(0))
            if name in ("r", "t"):
                g, i = _group(s, i)
                runs.append((g, "r" if name == "r" else "", level))
            else:
                runs.append((*_MACROS[name], level))
        else:
            runs.append((c, "m" if c.isalpha() else "r", level))
            i += 1
    return runs


def _runs(s: str) -> list[tuple[str, str, int]]:
    """``(text, css class, level)`` runs of the markup; level -1 subscript, 1 superscript."""
    runs: list[tuple[str, str, int]] = []
    parts = s.split("$")
    assert len(parts) % 2 == 1, f"unbalanced $ in {s!r}"
    for k, part in enumerate(parts):
        if part:
            runs += _math(part, 0) if k % 2 else [(part, "", 0)]
    merged: list[tuple[str, str, int]] = []
    for t, c, lev in runs:
        assert -1 <= lev <= 1, f"nested scripts in {s!r}"
        if merged and merged[-1][1:] == (c, lev):
            merged[-1] = (merged[-1][0] + t, c, lev)
        else:
            merged.append((t, c, lev))
    return merged


def _tspans(s: str, size: float) -> str:
    out = []
    off = 0.0
    small = max(SUB_MIN, round(size * 0.75))
    for t, c, lev in _runs(s):
        target = {0: 0.0, -1: 0.3 * size, 1: -0.42 * size}[lev]
        attrs = []
        if c:
            attrs.append(f'class="{c}"')
        if lev:
            attrs.append(f'font-size="{small}"')
        if target != off:
            attrs.append(f'dy="{_num(target - off)}"')
            off = target
        out.append(f"<tspan {' '.join(attrs)}>{_esc(t)}</tspan>" if attrs else _esc(t))
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# A tiny SVG builder
# ----------------------------------------------------------------------------------------------


class Svg:
    def __init__(self, width: int, height: int, title: str, desc: str) -> None:
        self.width, self.height = width, height
        self.title, self.desc = title, desc
        self.parts: list[str] = [f'<rect width="{width}" height="{height}" fill="#ffffff"/>']

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(self, x: float, y: float, s: str, size: float = 15, anchor: str = "start", fill: str = INK,
             bold: bool = False, cls: str = "") -> None:
        a = f'<text x="{_num(x)}" y="{_num(y)}" font-size="{_num(size)}"'
        if anchor != "start":
            a += f' text-anchor="{anchor}"'
        if bold:
            a += ' font-weight="bold"'
        if cls:
            a += f' class="{cls}"'
        self.add(f'{a} fill="{fill}">{_tspans(s, size)}</text>')

    def lines(self, x: float, y: float, rows: list[str], step: float, **kw) -> None:
        for k, s in enumerate(rows):
            self.text(x, y + k * step, s, **kw)

    def rect(self, x: float, y: float, w: float, h: float, colours: tuple[str, str], rx: float = 6,
             width: float = 1.6, dash: str = "") -> None:
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" rx="{_num(rx)}" '
                 f'fill="{colours[1]}" stroke="{colours[0]}" stroke-width="{_num(width)}"{d}/>')

    def circle(self, x: float, y: float, r: float, colours: tuple[str, str], width: float = 1.8) -> None:
        self.add(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{_num(r)}" fill="{colours[1]}" '
                 f'stroke="{colours[0]}" stroke-width="{_num(width)}"/>')

    def line(self, pts: list[tuple[float, float]], colour: str = NET[0], width: float = 1.6) -> None:
        d = " ".join(f"{_num(x)},{_num(y)}" for x, y in pts)
        self.add(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="{_num(width)}" '
                 f'stroke-linejoin="round"/>')

    def arrow(self, pts: list[tuple[float, float]], colour: str = NET[0], width: float = 1.6,
              head: float = 9) -> None:
        """A polyline whose last point is the tip of a filled arrowhead (axis-aligned or not)."""
        (x0, y0), (x1, y1) = pts[-2], pts[-1]
        dx, dy = x1 - x0, y1 - y0
        n = (dx * dx + dy * dy) ** 0.5
        ux, uy = dx / n, dy / n
        bx, by = x1 - ux * head, y1 - uy * head  # base of the head
        self.line([*pts[:-1], (x1 - ux * head * 0.6, y1 - uy * head * 0.6)], colour, width)
        w = head * 0.42
        tri = [(x1, y1), (bx - uy * w, by + ux * w), (bx + uy * w, by - ux * w)]
        d = " ".join(f"{_num(x)},{_num(y)}" for x, y in tri)
        self.add(f'<polygon points="{d}" fill="{colour}"/>')

    def node(self, x: float, y: float, label: str, colours: tuple[str, str], r: float = 20,
             size: float = 17) -> None:
        """A circle with a math label centred in it."""
        self.circle(x, y, r, colours)
        self.text(x, y + size * 0.33, label, size=size, anchor="middle")

    def box(self, x: float, y: float, w: float, h: float, rows: list[str], colours: tuple[str, str] = NET,
            size: float = 15, first: str | None = None) -> None:
        """A rounded box centred at (x, y) with centred text rows; ``first`` is a smaller name row."""
        self.rect(x - w / 2, y - h / 2, w, h, colours)
        rows_ = ([first] if first else []) + rows
        step = size + 4
        y0 = y - (len(rows_) - 1) * step / 2 + size * 0.35
        for k, s in enumerate(rows_):
            named = first is not None and k == 0
            self.text(x, y0 + k * step, s, size=14 if named else size, anchor="middle",
                      fill=MUTED if named else INK)

    def render(self) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} {self.height}" '
            f'width="{self.width}" height="{self.height}" role="img" aria-labelledby="title desc">\n'
            f'<title id="title">{_esc(self.title)}</title>\n<desc id="desc">{_esc(self.desc)}</desc>\n'
            f"<style>{STYLE}</style>\n"
        )
        return head + "\n".join(self.parts) + "\n</svg>\n"


def _plus(s: Svg, x: float, y: float, r: float, mark: str) -> None:
    """A merge circle: '+' (add) or 'x' (multiply), the sign drawn as two strokes."""
    s.circle(x, y, r, ("#2d3748", "#ffffff"), width=1.8)
    a = r * 0.55
    if mark == "+":
        s.line([(x - a, y), (x + a, y)], "#2d3748", 2)
        s.line([(x, y - a), (x, y + a)], "#2d3748", 2)
    else:
        b = a * 0.75
        s.line([(x - b, y - b), (x + b, y + b)], "#2d3748", 2)
        s.line([(x - b, y + b), (x + b, y - b)], "#2d3748", 2)


# ----------------------------------------------------------------------------------------------
# 1. The three priors
# ----------------------------------------------------------------------------------------------


def priors() -> str:
    W, H = 700, 452
    s = Svg(
        W, H,
        "Three priors for a three-layer latent code",
        "Three graphical models side by side. (a) A conditional Gaussian hierarchy as in LVAE and BIVA: "
        "z3 has a standard normal prior and points to z2, z2 to z1, z1 to the image x; each arrow is a "
        "Gaussian conditional, and only z1 reaches x. (b) VLAE: three independent standard-normal codes "
        "z1, z2, z3; each enters a generator column h3, h2, h1 at its own depth (z3 into h3 at the top, z1 "
        "into h1 next to the image), and h1 gives x. (c) The joint EBM prior: the same generator, but one "
        "energy f-alpha, drawn as an orange box around all three codes, acts on their concatenation, times "
        "the N(0, I) base distribution.",
    )
    cxs = (117, 350, 583)
    rows = (104, 178, 252)  # z_3 / h_3, z_2 / h_2, z_1 / h_1
    yx = 326  # the image
    r = 20
    for x in (233.5, 466.5):
        s.line([(x, 14), (x, H - 14)], RULE, 1.2)
    titles = ("(a) Gaussian hierarchy", "(b) VLAE", "(c) Joint EBM prior")
    for cx, t in zip(cxs, titles):
        s.text(cx, 32, t, size=16, anchor="middle", bold=True)

    # (a) z_3 -> z_2 -> z_1 -> x, every arrow a Gaussian conditional
    ax = cxs[0] - 38
    for k, y in enumerate(rows):
        s.node(ax, y, f"$\\z_{3 - k}$", CODE, r)
    s.node(ax, yx, "$\\x$", DATA, r)
    for y0, y1 in zip((*rows,), (*rows[1:], yx)):
        s.arrow([(ax, y0 + r), (ax, y1 - r)], CODE[0] if y1 != yx else NET[0])
    lx = ax + 34
    s.text(lx, rows[0] + 5, "$N(0, I)$", size=16, fill=CODE_INK)
    s.text(lx, (rows[0] + rows[1]) / 2 + 5, "$p(\\z_2 | \\z_3)$", size=16, fill=CODE_INK)
    s.text(lx, (rows[1] + rows[2]) / 2 + 5, "$p(\\z_1 | \\z_2)$", size=16, fill=CODE_INK)
    s.text(lx, (rows[2] + yx) / 2 + 5, "$p(\\x | \\z_1)$", size=16, fill=MUTED)

    def vlae(cx: float, ebm: bool) -> None:
        zx, hx = cx - 44, cx + 50
        if ebm:
            s.rect(zx - 34, rows[0] - 58, 68, rows[2] - rows[0] + 92, EBM, rx=10, width=2)
            s.text(zx, rows[0] - 33, "$f_\u03b1$", size=18, anchor="middle", fill=EBM_INK)
        for k, y in enumerate(rows):
            i = 3 - k
            s.node(zx, y, f"$\\z_{i}$", CODE, r)
            s.rect(hx - 21, y - 17, 42, 34, NET, rx=7)
            s.text(hx, y + 5.5, f"$h_{i}$", size=17, anchor="middle")
            s.arrow([(zx + r, y), (hx - 21, y)])
        for y0, y1 in zip(rows, rows[1:]):
            s.arrow([(hx, y0 + 17), (hx, y1 - 17)])
        s.node(hx, yx, "$\\x$", DATA, r)
        s.arrow([(hx, rows[2] + 17), (hx, yx - r)])
        if ebm:
            s.text(zx, yx + 6, "$\u00d7 N(0, I)$", size=16, anchor="middle", fill=CODE_INK)
        else:
            s.text(zx, yx - 4, "each", size=14, anchor="middle", fill=CODE_INK)
            s.text(zx, yx + 15, "$N(0, I)$", size=16, anchor="middle", fill=CODE_INK)

    vlae(cxs[1], ebm=False)
    vlae(cxs[2], ebm=True)

    captions = (
        ("Each arrow is a Gaussian", "conditional $p(\\z_i | \\z_{i+1})$;", "only $\\z_1$ reaches the",
         "image (LVAE, BIVA)."),
        ("Independent $N(0, I)$ codes;", "$\\z_i$ enters the generator at", "its own depth: the hierarchy",
         "is in the network."),
        ("The same generator; one", "energy $f_\u03b1$ on $[\\z_1, \\z_2, \\z_3]$",
         "times $N(0, I)$ couples the", "layers (paper Eq. 3)."),
    )
    for cx, cap in zip(cxs, captions):
        s.lines(cx, 376, list(cap), 20, size=14, anchor="middle", fill=MUTED)
    return s.render()


# ----------------------------------------------------------------------------------------------
# 2. The mnist_small generator and ladder inference network
# ----------------------------------------------------------------------------------------------


def ladder() -> str:
    W, H = 770, 762
    s = Svg(
        W, H,
        "The mnist_small networks: ladder inference (left) and hierarchical generator (right)",
        "Left, the inference network q-phi of paper Eq. 8, drawn bottom-up: the image x (1 by 28 by 28) "
        "feeds head 1 (convolutions with 16 and 32 channels), which outputs mu1 and log sigma1 squared for "
        "the bottom code z1; trunk 1 (convolutions 16, 32 and a fully connected layer of 400) gives r1, read "
        "by head 2 (two fully connected layers of 400) for z2; trunk 2 (three fully connected layers of 400) "
        "gives r2, read by head 3 for the top code z3, so the top code comes from the deepest features. "
        "Each code is drawn by reparameterisation. Right, the generator of paper Eq. 5, top-down: z3 goes "
        "through g3 (three fully connected layers of 400) to h3; z2 passes a linear map W2 and a leaky ReLU, "
        "is multiplied by a learned per-unit gate gamma2 (initialised to 0.1) and added to h3; g2 (three "
        "fully connected layers of 400) gives h2; z1 is merged into h2 the same way, and g1 (a fully "
        "connected layer to 32 by 7 by 7, two transposed convolutions to 16 and 1 channels and tanh) gives "
        "the mean image x-hat = h1.",
    )
    AX, BX, ZX, WX, GTX, GX = 92, 262, 436, 526, 604, 670
    R3, R2, R1 = 112, 252, 392
    G2 = (R2 + R1) / 2  # the g_2 box
    g1 = R1 + 86  # the g_1 box
    RX = g1 + 43 + 60  # x and x_hat
    rows = {3: R3, 2: R2, 1: R1}
    r = 21

    s.text(20, 36, "Inference $q_\u03c6(\\z | \\x)$ (paper Eq. 8)", size=16, bold=True)
    s.text(W - 20, 36, "Generator $g_\u03b2(\\z)$ (paper Eq. 5)", size=16, bold=True, anchor="end")
    s.text(ZX, 64, "codes", size=14, anchor="middle", fill=CODE_INK)

    # --- inference: x -> r_0 -> trunk_1 -> r_1 -> trunk_2 -> r_2, heads to the right -------------
    s.node(AX, RX, "$\\x$", DATA, 22, size=18)
    s.text(AX, RX + 44, "1\u00d728\u00d728", size=14, anchor="middle", fill=MUTED)
    s.line([(AX, RX - 22), (AX, R1)])
    t1 = (R1 + R2) / 2
    s.arrow([(AX, R1), (AX, t1 + 34)])
    s.box(AX, t1, 150, 68, ["conv 16, 32", "fc 400"], first="$\\r{trunk}_1$")
    s.line([(AX, t1 - 34), (AX, R2)])
    t2 = (R2 + R3) / 2
    s.arrow([(AX, R2), (AX, t2 + 25)])
    s.box(AX, t2, 150, 50, ["fc 400 \u00d73"], first="$\\r{trunk}_2$")
    s.line([(AX, t2 - 25), (AX, R3)])
    for i, y in rows.items():
        s.add(f'<circle cx="{AX}" cy="{y}" r="4" fill="{NET[0]}"/>')
        s.text(AX - 10, y - 8, "$r_0 = \\x$" if i == 1 else f"$r_{i - 1}$", size=15, anchor="end")
        s.arrow([(AX, y), (BX - 60, y)])
        s.box(BX, y, 120, 50, ["conv 16, 32" if i == 1 else "fc 400 \u00d72"], first=f"$\\r{{head}}_{i}$")
        s.arrow([(BX + 60, y), (ZX - r, y)])
        s.text((BX + 60 + ZX - r) / 2, y - 9, f"$\\m_{i}, \\r{{log}}\\,\u03c3_{i}^2$", size=15,
               anchor="middle")
        s.node(ZX, y, f"$\\z_{i}$", CODE, r)
    s.text(ZX, R1 + 46, "$\\z_i = \\m_i + \u03c3_i \u2299 \\e_i$", size=15, anchor="middle", fill=CODE_INK)
    s.text(ZX, R1 + 68, "each $\\z_i \\r{\u2208 \u211d}^2$", size=15, anchor="middle", fill=CODE_INK)

    # --- generator: z_3 -> g_3 -> h_3 -> (+ gated z_2) -> g_2 -> h_2 -> (+ gated z_1) -> g_1 -> x_hat --
    gw = 150
    s.arrow([(ZX + r, R3), (GX - gw / 2, R3)])
    s.box(GX, R3, gw, 50, ["fc 400 \u00d73"], first="$g_3$")
    pr = 13
    for i, hi in ((2, "h_3"), (1, "h_2")):
        y = rows[i]
        above = R3 + 25 if i == 2 else G2 + 25
        s.arrow([(GX, above), (GX, y - pr)])
        s.text(GX + 10, (above + y - pr) / 2 + 6, f"${hi}$", size=16)
        s.arrow([(ZX + r, y), (WX - 42, y)])
        s.box(WX, y, 84, 34, [f"$W_{i}$, LReLU"], size=14)
        s.arrow([(WX + 42, y), (GTX - 11, y)])
        _plus(s, GTX, y, 11, "x")
        s.text(GTX, y - 19, f"$\u03b3_{i}$", size=17, anchor="middle")
        s.arrow([(GTX + 11, y), (GX - pr, y)])
        _plus(s, GX, y, pr, "+")
    s.arrow([(GX, R2 + pr), (GX, G2 - 25)])
    s.box(GX, G2, gw, 50, ["fc 400 \u00d73"], first="$g_2$")
    s.arrow([(GX, R1 + pr), (GX, g1 - 43)])
    s.box(GX, g1, gw + 14, 86, ["fc 32\u00d77\u00d77", "convT 16, 1", "tanh"], first="$g_1$")
    s.arrow([(GX, g1 + 43), (GX, RX - 22)])
    s.node(GX, RX, "$\\h$", DATA, 22, size=18)
    s.text(GX, RX + 44, "$\\h = h_1$, 1\u00d728\u00d728", size=14, anchor="middle", fill=MUTED)

    # --- key ---------------------------------------------------------------------------------------
    yk = RX + 66
    s.line([(20, yk), (W - 20, yk)], RULE, 1.2)
    s.text(20, yk + 24, "$h_3 = g_3(\\z_3)$,  $h_i = g_i(h_{i+1} + \u03b3_i \u2299 \\r{LReLU}(W_i\\z_i))$;  "
           "gate $\u03b3_i$: learned, one per unit, starts at 0.1", size=15)
    s.lines(20, yk + 48, ["conv, convT $c$: 4\u00d74, stride 2, $c$ channels;  fc $n$: linear + LReLU, "
                          "width $n$.",
                          "Each head ends in two linear maps, to $\\m_i$ and to $\\r{log}\\,\u03c3_i^2$ "
                          "(clamped to [\u221210, 5]).",
                          "model.norm=layer (chapter 4's reference recipe): a per-sample norm after each hidden "
                          "layer"], 21, size=14, fill=MUTED)
    return s.render()


# ----------------------------------------------------------------------------------------------
# 3. One training iteration
# ----------------------------------------------------------------------------------------------


def train_step() -> str:
    steps: list[tuple[tuple[str, str], str, list[str]]] = [
        (DATA, "", ["Draw a batch of $B$ images $\\x$, pixels in [\u22121, 1]."]),
        (CODE, "paper Eq. 8",
         ["Infer $\\z^{+} \u223c q_\u03c6(\\z | \\x)$ by reparameterisation, one Gaussian per layer:",
          "$\\z_i^{+} = \\m_i(\\x) + \u03c3_i(\\x) \u2299 \\e_i,\\;\\e_i \u223c N(0, I),\\;"
          "i = 1, \u2026, L$"]),
        (NET, "paper Eqs. 11\u201312",
         ["Generator + inference step (Adam on $\u03b2, \u03c6$; $\u03b1$ fixed) on the batch mean of",
          "$\u2016\\x \u2212 g_\u03b2(\\z^{+})\u2016^2 / 2\u03c3^2 + \u03a3_i \\r{KL}(q_\u03c6(\\z_i | \\x) "
          "\u2016 N(0, I)) \u2212 f_\u03b1(\\z^{+})$"]),
        (EBM, "paper Eqs. 13\u201314",
         ["Prior samples: $\\z^{\u2212} \u223c N(0, I)$, then $K = 60$ Langevin steps",
          "$\\z^{\u2212} \u2190 \\z^{\u2212} + (s^2/2)(\u2207_{\\z} f_\u03b1(\\z^{\u2212}) \u2212 \\z^{\u2212}) "
          "+ s\\,\\e,\\;\\e \u223c N(0, I)$ new at every step"]),
        (EBM, "paper Eq. 10",
         ["EBM step (Adam on $\u03b1$; $\\z^{+}$ and $\\z^{\u2212}$ detached) on",
          "$\\r{mean} f_\u03b1(\\z^{\u2212}) \u2212 \\r{mean} f_\u03b1(\\z^{+})$"]),
    ]
    line_h, gap, y_first = 26, 20, 130
    ys = [y_first]
    for _, _, rows in steps:
        ys.append(ys[-1] + line_h * len(rows) + gap)
    y_rule = ys[-1] - 16
    W, H = 780, y_rule + 70
    s = Svg(
        W, H,
        "One training iteration of the joint EBM prior model (HierarchicalLearner.train_step)",
        "An algorithm box with five steps. 1: draw a batch of images x. 2: infer z-plus from q-phi of z "
        "given x by reparameterisation, z_i = mu_i(x) + sigma_i(x) times epsilon_i (paper Eq. 8). 3: one "
        "Adam step on the generator and the inference network, minimising the reconstruction error "
        "divided by 2 sigma squared, plus the sum over layers of the KL divergence of q-phi(z_i given x) from "
        "N(0, I), minus f-alpha(z-plus) (paper Eqs. 11-12). 4: prior samples z-minus by 60 Langevin steps "
        "from N(0, I), z <- z + s squared over 2 times (grad f-alpha(z) - z) + s epsilon, with s = 0.4 "
        "(paper Eqs. 13-14). 5: one Adam step on the EBM, minimising the mean of f-alpha over the prior "
        "samples minus its mean over the posterior samples (paper Eq. 10). VLAE is the same iteration "
        "with f-alpha = 0 and no steps 4 and 5.",
    )
    s.add(f'<path d="M12,56 V20 a8,8 0 0 1 8,-8 H{W - 20} a8,8 0 0 1 8,8 V56 Z" fill="{NET[1]}"/>')
    s.line([(12, 56), (W - 12, 56)], NET[0], 1.2)
    s.rect(12, 12, W - 24, H - 24, (NET[0], "none"), rx=8, width=1.6)
    s.text(28, 40, "Algorithm: one training iteration", size=17, bold=True)
    s.text(W - 28, 40, "HierarchicalLearner.train_step", size=14, anchor="end", cls="c", fill=MUTED)
    s.text(28, 88, "Given: networks $g_\u03b2$, $q_\u03c6$ and EBM $f_\u03b1$; $K = 60$ Langevin steps "
           "of size $s = 0.4$; $\u03c3 = 0.3$ (MNIST)", size=15)
    for k, ((colours, tag, rows), y) in enumerate(zip(steps, ys), start=1):
        s.rect(44, y - 19, 5, line_h * (len(rows) - 1) + 28, (colours[0], colours[0]), rx=2.5, width=0)
        s.text(34, y, f"{k}:", size=15, anchor="end", bold=True)
        for j, row in enumerate(rows):
            s.text(62, y + j * line_h, row, size=15 if j == 0 else 16, fill=INK)
        if tag:
            s.text(W - 28, y, tag, size=14, anchor="end", fill=MUTED)
    s.line([(28, y_rule), (W - 28, y_rule)], RULE, 1.2)
    s.text(28, y_rule + 22, "VLAE (chapter 3) is the same iteration with $f_\u03b1 \u2261 0$: no $f_\u03b1$ "
           "term in step 3, no steps 4\u20135.", size=14, fill=MUTED)
    s.text(28, y_rule + 44, "Each KL term is the one-sample estimate $\\r{log}\\,q_\u03c6(\\z_i^{+} | \\x) "
           "\u2212 \\r{log}\\,N(\\z_i^{+}; 0, I)$ (objectives.kl_mc).", size=14, fill=MUTED)
    return s.render()


DIAGRAMS: dict[str, Callable[[], str]] = {"priors.svg": priors, "ladder.svg": ladder, "train_step.svg": train_step}


def render_all() -> dict[str, str]:
    """``{file name: SVG text}`` of every diagram."""
    return {name: make() for name, make in DIAGRAMS.items()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    stale = []
    for name, text in render_all().items():
        path = OUT_DIR / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)} ({len(text.encode()):,} bytes)")
    if stale:
        print(f"stale: {', '.join(stale)}; run python tools/make_diagrams.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
