"""Open every page of the built book in headless Chromium and fail on what a reader would see broken.

``make check-book`` runs it on ``_build/html`` (after ``make book``). It serves the folder on
127.0.0.1 (``http.server`` in a thread), opens each page with Playwright driving Debian's
Chromium, and reports per page:

- ``broken-image``: an ``<img>`` whose picture did not load (``naturalWidth`` 0, or an HTTP error);
- ``missing-figure``: a code cell whose source draws (``show_images``, ``show_rows``, ``plt.…``,
  ``ax.imshow``, ``interact`` …) but whose output holds no picture;
- ``empty-output``: a cell output container (MyST-NB's ``.cell_output``) with nothing visible in
  it, e.g. an ipywidgets view that never rendered;
- ``js-error``: an uncaught exception or a ``console.error`` on the page;
- ``http-error``: a 4xx/5xx answer, or a failed request, for one of the book's own files.

The course is read offline, so requests to any other host are blocked and listed apart
(``external``): they do not fail the check, but what depends on them (MathJax, the ipywidgets
embed manager) shows up as the problems above.

Writes a full-page screenshot of each page and ``summary.json`` to ``_build/check-book/``.
Exit status: 0 all pages clean, 1 problems found, 2 could not check (no build, no browser).

``--static`` checks the HTML without a browser (images on disk, empty outputs, missing figures):
what the tests exercise, and a fallback where Chromium is absent.

The classification is pure Python on plain records (:func:`cell_problems`,
:func:`page_problems`); the browser only collects the records (``COLLECT_JS``), and
:func:`cells_from_html` builds the same records from static HTML.
"""
from __future__ import annotations

import argparse
import ast
import functools
import http.server
import json
import os
import re
import shutil
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads"}

# Console errors that come from the Jupyter Book 1 toolchain itself, not from this course: they
# show on a stock two-notebook book too. Listed under "known" and left out of the exit status
# unless --strict; each says where it comes from.
KNOWN_JS_ERRORS = [
    (re.compile(r"Identifier 'THEBE_JS_URL' has already been declared"),
     "sphinx-thebe 0.3 puts its inline config script into every page twice under Jupyter Book 1.0.4 "
     "with Sphinx 7.4 (the second `const` throws; thebe is not used here)"),
    (re.compile(r"Got invalid theme mode: \. Resetting to auto"),
     "pydata-sphinx-theme logs this with console.error on a reader's first visit (empty localStorage), "
     "then stores the mode"),
]

# ------------------------------------------------------------------ does a cell draw a figure?

# The package's own picture helpers (unclip_lite.viz) and ipywidgets' interact, called by name or
# as an attribute (``viz.show_images``, ``widgets.interact``).
FIGURE_FUNCTIONS = frozenset({"show_images", "show_rows", "show_matrix", "show_grid", "interact",
                              "interactive", "interact_manual"})
# Methods of a matplotlib Axes (or pyplot functions) that draw.
DRAWING_METHODS = frozenset({"imshow", "matshow", "plot", "bar", "barh", "hist", "hist2d", "scatter",
                             "contour", "contourf", "pcolormesh", "pcolor", "semilogx", "semilogy",
                             "loglog", "errorbar", "fill_between", "step", "stem", "pie", "boxplot",
                             "violinplot", "quiver", "streamplot", "hexbin", "axhline", "axvline",
                             "heatmap"})
# pyplot calls that do not make a figure appear.
PYPLOT_QUIET = frozenset({"close", "rc", "rcdefaults", "rc_context", "style", "ioff", "ion",
                          "switch_backend", "get_cmap", "colormaps", "savefig", "get_fignums", "cm",
                          "Rectangle", "Circle", "Polygon", "Normalize"})
PYPLOT_NAMES = frozenset({"plt", "pyplot"})


def _call_name(node: ast.Call) -> tuple[str | None, str | None]:
    """``(owner, name)`` of a call: ``plt.subplots()`` → ("plt", "subplots"), ``f()`` → (None, "f")."""
    func = node.func
    if isinstance(func, ast.Name):
        return None, func.id
    if isinstance(func, ast.Attribute):
        owner = func.value.id if isinstance(func.value, ast.Name) else None
        return owner, func.attr
    return None, None


def _drawing_call(node: ast.Call, local_drawers: set[str]) -> str | None:
    owner, name = _call_name(node)
    if name is None:
        return None
    if owner in PYPLOT_NAMES:
        return None if name in PYPLOT_QUIET else f"{owner}.{name}"
    if name in FIGURE_FUNCTIONS or (owner is None and name in local_drawers):
        return f"{owner}.{name}" if owner else name
    if owner is not None and name in DRAWING_METHODS:
        return f"{owner}.{name}"
    return None


def _calls_in(nodes) -> list[ast.Call]:
    return [n for node in nodes for n in ast.walk(node) if isinstance(n, ast.Call)]


def _strip_magics(source: str) -> str:
    """Source with IPython magics and shell lines (``%…``, ``!…``) blanked, so ``ast`` can parse it."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def figure_calls(source: str) -> list[str]:
    """The calls in a cell's source that make a figure appear in its output (empty: none).

    Only calls that run when the cell runs count: a ``def`` whose body draws counts where the
    same cell calls it (``interact(draw)`` counts through ``interact``). Imports of the helpers
    do not count. Source that does not parse falls back to a plain text search.
    """
    try:
        tree = ast.parse(_strip_magics(source))
    except SyntaxError:
        pattern = (r"\b(?:%s)\s*\(|\b(?:plt|pyplot)\.(?!(?:%s)\b)\w+\s*\(|\.(?:%s)\s*\(" %
                   ("|".join(sorted(FIGURE_FUNCTIONS)), "|".join(sorted(PYPLOT_QUIET)),
                    "|".join(sorted(DRAWING_METHODS))))
        return [m.group(0).rstrip("( ") for m in re.finditer(pattern, source)]
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    local_drawers: set[str] = set()
    changed = True
    while changed:  # a def draws when its body draws or calls another local def that does
        changed = False
        for name, node in defs.items():
            if name not in local_drawers and any(_drawing_call(c, local_drawers) for c in _calls_in(node.body)):
                local_drawers.add(name)
                changed = True
    running = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found = [_drawing_call(c, local_drawers) for c in _calls_in(running)]
    if any(_call_name(c) == ("plt", "close") or _call_name(c) == ("pyplot", "close") for c in _calls_in(running)):
        return []  # a cell that closes its figure shows none on purpose
    return list(dict.fromkeys(f for f in found if f))


# ------------------------------------------------------------------ classification (pure)

def _problem(kind: str, message: str, **extra) -> dict:
    return {"kind": kind, "message": message, **extra}


def _short(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def cell_label(cell: dict) -> str:
    first = next((line for line in cell.get("source", "").splitlines() if line.strip()), "")
    return f"cell {cell.get('index', '?')} ({_short(first, 60)!r})"


def cell_problems(cell: dict) -> list[dict]:
    """What is wrong with one code cell, from its record.

    A record: ``index``, ``classes`` (the cell container's CSS classes), ``source``,
    ``has_output``, ``output_text`` (visible text, scripts and styles left out), ``pictures``
    (img/svg/canvas/video in the output), ``widget_views`` (ipywidgets view placeholders),
    ``rendered_widgets`` (widgets drawn by a widget manager).
    """
    if any("remove-output" in c for c in cell.get("classes", [])):
        return []  # MyST-NB drops the output on purpose
    problems = []
    label = cell_label(cell)
    pictures = cell.get("pictures", 0)
    rendered = cell.get("rendered_widgets", 0)
    text = cell.get("output_text", "").strip()
    views = cell.get("widget_views", 0)
    draws = figure_calls(cell.get("source", ""))
    empty = cell.get("has_output") and not text and not pictures and not rendered
    if empty:
        why = (f"it holds {views} ipywidgets view(s) that did not render (no widget manager loaded)"
               if views else "nothing in it")
    if draws and not pictures and not rendered:
        if not cell.get("has_output"):
            what = "has no output at all"
        elif empty:
            what = f"its output is empty: {why}"
        else:
            what = f"its output shows only text: {_short(text)!r}"
        problems.append(_problem("missing-figure", f"{label}: draws a figure ({', '.join(draws)}) but {what}",
                                 cell=cell.get("index")))
    elif empty:
        problems.append(_problem("empty-output", f"{label}: empty output: {why}", cell=cell.get("index")))
    return problems


def is_local(url: str, base: str) -> bool:
    """True for the book's own files (same host and port as ``base``) and inline data."""
    scheme = urlsplit(url).scheme
    if scheme in ("data", "blob", "about", "chrome-error"):
        return True
    return urlsplit(url).netloc == urlsplit(base).netloc


def page_problems(record: dict, base: str) -> tuple[list[dict], list[str]]:
    """``(problems, external_urls)`` of one page's record.

    The record: ``cells`` (see :func:`cell_problems`), ``images`` (``src``, ``complete``,
    ``natural_width``), ``responses`` (``url``, ``status``), ``failed`` (``url``, ``error``),
    ``console_errors`` (``text``, ``url``), ``page_errors`` (messages), ``external`` (URLs
    requested from other hosts).
    """
    problems: list[dict] = []
    bad_status = {r["url"]: r["status"] for r in record.get("responses", []) if r["status"] >= 400
                  and is_local(r["url"], base)}
    for url, status in bad_status.items():
        problems.append(_problem("http-error", f"HTTP {status} for {url[len(base):] if url.startswith(base) else url}",
                                 url=url))
    for f in record.get("failed", []):
        if is_local(f["url"], base) and f["url"] not in bad_status:
            problems.append(_problem("http-error", f"request failed ({f.get('error')}) for {f['url']}", url=f["url"]))
    for img in record.get("images", []):
        src = img.get("src") or ""
        if not src:
            problems.append(_problem("broken-image", "an <img> without a src"))
        elif not is_local(src, base):
            continue  # blocked on purpose: listed under external
        elif src in bad_status:
            problems.append(_problem("broken-image", f"image {_rel(src, base)} answered HTTP {bad_status[src]}", url=src))
        elif img.get("complete") and img.get("natural_width") == 0 and not _is_svg(src):
            problems.append(_problem("broken-image", f"image {_rel(src, base)} did not load (naturalWidth 0)", url=src))
        elif img.get("exists") is False:
            problems.append(_problem("broken-image", f"image {_rel(src, base)} is not in the build", url=src))
    for err in record.get("page_errors", []):
        problems.append(_problem("js-error", f"uncaught: {_short(err, 200)}"))
    for msg in record.get("console_errors", []):
        text, where = msg.get("text", ""), msg.get("url", "")
        if text.startswith("Failed to load resource"):
            continue  # the network listeners report it (local) or it was blocked on purpose (external)
        problems.append(_problem("js-error", f"console.error: {_short(text, 200)}" + (f" ({_rel(where, base)})" if where else "")))
    math = record.get("math")
    if math and math.get("total") and math.get("unrendered"):
        problems.append(_problem("unrendered-math", f"{math['unrendered']} of {math['total']} formulas left as raw "
                                                    "TeX (MathJax did not run)"))
    for cell in record.get("cells", []):
        problems.extend(cell_problems(cell))
    external = sorted(set(u for u in record.get("external", []) if not is_local(u, base)))
    return problems, external


def known_issue(problem: dict) -> str | None:
    """Why ``problem`` is a known toolchain quirk (see ``KNOWN_JS_ERRORS``), or None."""
    if problem["kind"] != "js-error":
        return None
    return next((why for pattern, why in KNOWN_JS_ERRORS if pattern.search(problem["message"])), None)


def split_known(problems: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(problems, known)``: known toolchain quirks moved apart, each with its ``why``."""
    real, known = [], []
    for p in problems:
        why = known_issue(p)
        (known.append({**p, "why": why}) if why else real.append(p))
    return real, known


def _rel(url: str, base: str) -> str:
    return url[len(base):] if url.startswith(base) else url


def _is_svg(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(".svg") or url.startswith("data:image/svg")


# ------------------------------------------------------------------ static HTML → records

class _CellParser(HTMLParser):
    """Collects MyST-NB cells (``div.cell`` > ``div.cell_input`` / ``div.cell_output``) and images."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.cells: list[dict] = []
        self.images: list[str] = []
        self.scripts: list[str] = []
        self.stack: list[tuple[str, str | None]] = []  # (tag, role) for open elements
        self.cell: dict | None = None
        self.hidden = 0  # inside <script>/<style>

    def _role(self) -> str | None:
        roles = [r for _, r in self.stack if r]
        return roles[-1] if roles else None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        role = None
        if tag == "div" and "cell" in classes and self.cell is None:
            self.cell = {"index": len(self.cells), "classes": classes, "source": "", "has_output": False,
                         "output_text": "", "pictures": 0, "widget_views": 0, "rendered_widgets": 0}
            role = "cell"
        elif tag == "div" and self.cell is not None and "cell_input" in classes:
            role = "input"
        elif tag == "div" and self.cell is not None and "cell_output" in classes:
            role = "output"
            self.cell["has_output"] = True
        where = role or self._role()
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        if where == "output":
            if tag in ("img", "svg", "canvas", "video"):
                self.cell["pictures"] += 1
            if tag == "script" and a.get("type") == "application/vnd.jupyter.widget-view+json":
                self.cell["widget_views"] += 1
            if {"widget-subarea", "jupyter-widgets"} & set(classes):
                self.cell["rendered_widgets"] += 1
        if tag in ("script", "style"):
            self.hidden += 1
        if tag not in self.VOID:
            self.stack.append((tag, role))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        # pop to the matching open tag (tolerates sloppy HTML)
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for t, role in self.stack[i:]:
                    if t in ("script", "style"):
                        self.hidden -= 1
                    if role == "cell" and self.cell is not None:
                        self.cells.append(self.cell)
                        self.cell = None
                del self.stack[i:]
                return

    def handle_data(self, data):
        if self.cell is None or self.hidden:
            return
        role = self._role()
        if role == "input":
            self.cell["source"] += data
        elif role == "output":
            self.cell["output_text"] += data


def cells_from_html(html: str) -> list[dict]:
    """The code cells of a page as records for :func:`cell_problems`, read from static HTML."""
    parser = _CellParser()
    parser.feed(html)
    parser.close()
    for cell in parser.cells:
        cell["source"] = cell["source"].strip("\n")
        cell["output_text"] = cell["output_text"].strip()
    return parser.cells


def static_record(html: str, page_url: str, html_root: Path, base: str) -> dict:
    """A page record from its HTML alone: cells, and each local image checked on disk."""
    parser = _CellParser()
    parser.feed(html)
    parser.close()
    images = []
    for src in parser.images:
        url = urljoin(page_url, src)
        exists = None
        if src and is_local(url, base) and not url.startswith("data:"):
            exists = (html_root / unquote(urlsplit(url).path).lstrip("/")).is_file()
        images.append({"src": url, "exists": exists})
    external = [urljoin(page_url, s) for s in parser.scripts if not is_local(urljoin(page_url, s), base)]
    return {"cells": cells_from_html(html), "images": images, "external": external}


# ------------------------------------------------------------------ the browser

# Runs in the page: the records page_problems reads. Images are made eager and waited for.
COLLECT_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await Promise.race([MathJax.startup.promise, new Promise(r => setTimeout(r, 15000))]);
  }
  // A widget manager (require.js + @jupyter-widgets/html-manager) renders the saved widget views
  // after load: when one is on the page, give each view up to 15 s to appear.
  const viewOutputs = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')]
    .map(s => s.parentElement);
  if (viewOutputs.length && (window.require || window.define)) {
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline &&
           !viewOutputs.every(o => o.querySelector('.widget-subarea, .jupyter-widgets'))) {
      await new Promise(r => setTimeout(r, 200));
    }
  }
  const imgs = [...document.querySelectorAll('img')];
  imgs.forEach(img => { if (img.loading === 'lazy') img.loading = 'eager'; });
  await Promise.all(imgs.map(img => img.complete ? null : new Promise(res => {
    img.addEventListener('load', res); img.addEventListener('error', res); setTimeout(res, 15000);
  })));
  const visibleText = el => {
    const copy = el.cloneNode(true);
    copy.querySelectorAll('script, style').forEach(s => s.remove());
    return copy.textContent.trim();
  };
  const cells = [...document.querySelectorAll('div.cell')].map((cell, index) => {
    const input = cell.querySelector('.cell_input pre') || cell.querySelector('.cell_input');
    const outs = [...cell.querySelectorAll('.cell_output')];
    const count = sel => outs.reduce((n, o) => n + o.querySelectorAll(sel).length, 0);
    return {
      index, classes: [...cell.classList], source: input ? input.textContent : '',
      has_output: outs.length > 0,
      output_text: outs.map(visibleText).join('\n'),
      pictures: count('img, svg, canvas, video'),
      widget_views: count('script[type="application/vnd.jupyter.widget-view+json"]'),
      rendered_widgets: count('.widget-subarea, .jupyter-widgets'),
    };
  });
  const maths = [...document.querySelectorAll('span.math, div.math')];
  return {
    cells,
    math: {total: maths.length, unrendered: maths.filter(m => !m.querySelector('mjx-container, .MathJax, .katex')).length},
    images: imgs.map(img => ({src: img.currentSrc || img.src, complete: img.complete,
                              natural_width: img.naturalWidth})),
  };
}
"""


def serve(html_root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``html_root`` on 127.0.0.1 (a free port) in a daemon thread; the base URL ends in '/'."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(html_root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def find_chromium(explicit: str | None = None) -> str | None:
    for candidate in (explicit, os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def launch(playwright, chromium: str):
    return playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)


def browse_page(context, url: str, base: str, screenshot: Path | None, timeout_ms: int) -> dict:
    """Open ``url`` in a fresh tab, block other hosts, and collect its record (and screenshot)."""
    record = {"responses": [], "failed": [], "console_errors": [], "page_errors": [], "external": []}
    page = context.new_page()

    def route(r):
        if is_local(r.request.url, base):
            r.continue_()
        else:
            record["external"].append(r.request.url)
            r.abort("blockedbyclient")

    page.route("**/*", route)
    page.on("response", lambda resp: record["responses"].append({"url": resp.url, "status": resp.status}))
    page.on("requestfailed", lambda req: record["failed"].append({"url": req.url, "error": req.failure}))
    page.on("console", lambda msg: msg.type == "error" and record["console_errors"].append(
        {"text": msg.text, "url": (msg.location or {}).get("url", "")}))
    page.on("pageerror", lambda err: record["page_errors"].append(str(err)))
    try:
        page.goto(url, wait_until="load", timeout=timeout_ms)
        try:
            page.wait_for_load_state("networkidle", timeout=min(timeout_ms, 10_000))
        except Exception:  # noqa: BLE001 - a page that keeps polling is still checked
            pass
        page.wait_for_timeout(500)  # let deferred scripts (widget managers, MathJax) run
        record.update(page.evaluate(COLLECT_JS))
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True, timeout=timeout_ms)
    except Exception as e:  # noqa: BLE001 - report and go on with the next page
        record["page_errors"].append(f"could not check the page: {type(e).__name__}: {e}")
    finally:
        page.close()
    return record


def book_pages(html_root: Path, only: list[str] | None = None) -> list[str]:
    """Every HTML page of the build (relative POSIX paths), theme and source folders left out."""
    pages = sorted(p.relative_to(html_root).as_posix() for p in html_root.rglob("*.html")
                   if not (SKIP_DIRS & set(p.relative_to(html_root).parts[:-1])))
    if only:
        pages = [p for p in pages if any(Path(p).match(pat) or p == pat for pat in only)]
    return pages


def screenshot_name(page: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", page.replace("/", "__")).removesuffix(".html") + ".png"


def page_result(page: str, record: dict, base: str, strict: bool = False, **extra) -> dict:
    """One page's entry in the summary: its problems, known toolchain quirks and external requests."""
    problems, external = page_problems(record, base)
    known: list[dict] = []
    if not strict:
        problems, known = split_known(problems)
    return {"page": page, "problems": problems, "known": known, "external": external, **extra}


def report(results: list[dict]) -> str:
    """The human report: one line per clean page, the problems of the others, then known quirks and
    external requests, each once with the pages it appears on."""
    lines = []
    for r in results:
        mark = "ok  " if not r["problems"] else "FAIL"
        lines.append(f"{mark} {r['page']}" + (f"  ({len(r['problems'])} problems)" if r["problems"] else ""))
        for p in r["problems"]:
            lines.append(f"       [{p['kind']}] {p['message']}")

    def pages_word(pages: list[str]) -> str:
        return f"({len(pages)} page{'s' if len(pages) != 1 else ''})"

    known: dict[str, tuple[str, list[str]]] = {}
    for r in results:
        for k in r.get("known", []):
            known.setdefault(k["message"], (k["why"], []))[1].append(r["page"])
    if known:
        lines.extend(["", "known toolchain quirks (not counted; --strict counts them):"])
        for message, (why, pages) in known.items():
            lines.append(f"       {message}  {pages_word(pages)}")
            lines.append(f"         why: {why}")
    external: dict[str, list[str]] = {}
    for r in results:
        for u in r["external"]:
            external.setdefault(u, []).append(r["page"])
    if external:
        lines.extend(["", "external requests (blocked: the course is read offline; not counted themselves):"])
        for u, pages in sorted(external.items()):
            lines.append(f"       {u}  {pages_word(pages)}")
    bad = sum(1 for r in results if r["problems"])
    lines.append("")
    lines.append(f"{len(results)} pages checked, {bad} with problems, "
                 f"{sum(len(r['problems']) for r in results)} problems in all")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="the built book")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "check-book",
                        help="where screenshots and summary.json go")
    parser.add_argument("--pages", nargs="*", help="only these pages (paths or globs relative to --html)")
    parser.add_argument("--static", action="store_true", help="check the HTML without a browser")
    parser.add_argument("--strict", action="store_true", help="count the known toolchain quirks as problems too")
    parser.add_argument("--chromium", help="the Chromium binary (default: /usr/bin/chromium or on PATH)")
    parser.add_argument("--no-screenshots", action="store_true")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per page")
    args = parser.parse_args(argv)

    html_root = args.html.resolve()
    if not any(html_root.glob("*.html")):
        print(f"check_book: no built book in {html_root}: run `make book` first", file=sys.stderr)
        return 2
    pages = book_pages(html_root, args.pages)
    if not pages:
        print("check_book: no pages to check", file=sys.stderr)
        return 2
    if not args.static:
        chromium = find_chromium(args.chromium)
        if chromium is None:
            print("check_book: no Chromium found; install Debian's: apt-get install -y chromium "
                  "(or pass --static to check without a browser)", file=sys.stderr)
            return 2
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            print("check_book: Playwright is missing: pip install -e '.[browser]' (make check-book does)",
                  file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.png"):
        old.unlink()  # screenshots of pages that no longer exist would mislead
    server, base = serve(html_root)
    results = []
    started = time.monotonic()
    try:
        if args.static:
            for page in pages:
                t0 = time.monotonic()
                record = static_record((html_root / page).read_text(encoding="utf-8", errors="replace"),
                                       base + page, html_root, base)
                results.append(page_result(page, record, base, args.strict, screenshot=None,
                                           seconds=round(time.monotonic() - t0, 2)))
        else:
            with sync_playwright() as pw:
                browser = launch(pw, chromium)
                context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
                for page in pages:
                    t0 = time.monotonic()
                    shot = None if args.no_screenshots else args.out / screenshot_name(page)
                    record = browse_page(context, base + page, base, shot, int(args.timeout * 1000))
                    result = page_result(page, record, base, args.strict,
                                         screenshot=str(shot) if shot and shot.exists() else None,
                                         seconds=round(time.monotonic() - t0, 2))
                    results.append(result)
                    print(f"  checked {page}: {len(result['problems'])} problems ({result['seconds']} s)", flush=True)
                browser.close()
    finally:
        server.shutdown()
    summary = {"html": str(html_root), "mode": "static" if args.static else "chromium", "strict": args.strict,
               "ok": not any(r["problems"] for r in results), "problem_counts": _counts(results),
               "seconds": round(time.monotonic() - started, 1),
               "external": sorted({u for r in results for u in r["external"]}), "pages": results}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(report(results))
    print(f"summary: {args.out / 'summary.json'}" + ("" if args.static or args.no_screenshots
                                                    else f"; screenshots in {args.out}/"))
    return 0 if summary["ok"] else 1


def _counts(results: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        for p in r["problems"]:
            counts[p["kind"]] = counts.get(p["kind"], 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
