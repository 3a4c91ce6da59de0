"""The book tools' pure parts: no browser, no book build, no network (tools/check_book.py,
tools/record_runtimes.py, tools/lab_walkthrough.py, tools/vendor_js.py). ``tests/conftest.py`` puts tools/ on the path."""
from __future__ import annotations

import json
import pickle
import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import check_book as cb  # noqa: E402
import lab_walkthrough as lw  # noqa: E402
import record_runtimes as rr  # noqa: E402
import vendor_js as vj  # noqa: E402

BASE = "http://127.0.0.1:8000/"

# ------------------------------------------------------------------ record_runtimes

# What MyST-NB keeps in env.nb_metadata (the shape of a real _build/.doctrees/environment.pickle).
NB_METADATA = {
    "intro": {},
    "notebooks/00_worlds_and_tokens": {"exec_data": {"mtime": 1796050161.4, "runtime": 23.098, "method": "force",
                                                     "succeeded": True, "error": None, "traceback": None},
                                       "js_files": {}},
    "notebooks/01_clip": {"exec_data": {"mtime": 1796050180.5, "runtime": 18.972, "method": "force",
                                        "succeeded": True, "error": None, "traceback": None}},
    "notebooks/02_contrastive_training": {"exec_data": {"mtime": 1796050362.3, "runtime": 181.79, "method": "force",
                                                        "succeeded": False, "error": "CellExecutionError",
                                                        "traceback": "..."}},
    "notebooks/03_clip_guided_generation": {"js_files": {}},
    "appendix/notes": {"exec_data": {"mtime": 1.0, "runtime": 5.0, "succeeded": True}},
}


def test_runtimes_from_metadata_keeps_successful_chapters():
    chapters, last_run, skipped = rr.runtimes_from_metadata(NB_METADATA)
    assert chapters == {"00_worlds_and_tokens": 23.1, "01_clip": 19.0}
    assert last_run == pytest.approx(1796050180.5)
    assert any(s.startswith("02_contrastive_training: its execution failed") for s in skipped)
    assert any(s.startswith("03_clip_guided_generation: no execution data") for s in skipped)


def _book(tmp_path: Path, chapters: list[str]) -> Path:
    (tmp_path / "notebooks").mkdir()
    for name in chapters:
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text("{}")
    return tmp_path


def _built_book(tmp_path):
    """A book of chapters 00 and 01 whose build left its environment pickle; and where to write the record."""
    root = _book(tmp_path, ["00_worlds_and_tokens", "01_clip"])
    doctrees = root / "_build" / ".doctrees"
    doctrees.mkdir(parents=True)
    # the real pickle holds a sphinx BuildEnvironment; the reader only needs its nb_metadata
    (doctrees / "environment.pickle").write_bytes(pickle.dumps(SimpleNamespace(nb_metadata=NB_METADATA)))
    return root, tmp_path / "runtimes.json"


def test_manifest_from_environment_pickle_matches_chapter_runtime(tmp_path, monkeypatch, capsys):
    root, out = _built_book(tmp_path)
    assert rr.main(["--root", str(root), "--output", str(out), "--hardware", "a 2-core AMD EPYC (AVX2, fp32)"]) == 0
    record = json.loads(out.read_text())
    assert record["chapters"] == {"00_worlds_and_tokens": 23.1, "01_clip": 19.0}
    assert record["total"] == pytest.approx(42.1)
    assert record["profile"] in ("quick", "smoke", "full")
    assert record["hardware"] == "a 2-core AMD EPYC (AVX2, fp32)"
    assert len(record["date"]) == 10 and record["date"].startswith("2026-")

    # the reader in unclip_lite.profiles gets its line from exactly these keys
    from unclip_lite import profiles

    real_read_text, text = Path.read_text, out.read_text()
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text if self.name == "runtimes.json"
                        else real_read_text(self, *a, **k))
    line = profiles.chapter_runtime("00_worlds_and_tokens")
    assert line.startswith("run time under the quick profile: 0 min 23 s on a 2-core AMD EPYC (AVX2, fp32)")
    assert record["date"] in line


def test_partial_build_is_refused_unless_allowed(tmp_path):
    root = _book(tmp_path, ["00_worlds_and_tokens", "01_clip", "09_manipulations"])
    doctrees = root / "_build" / ".doctrees"
    doctrees.mkdir(parents=True)
    (doctrees / "environment.pickle").write_bytes(pickle.dumps(SimpleNamespace(nb_metadata=NB_METADATA)))
    out = tmp_path / "runtimes.json"
    args = ["--root", str(root), "--output", str(out), "--hardware", "x"]
    assert rr.main(args) == 1 and not out.exists()
    assert rr.main(args + ["--allow-missing"]) == 0 and out.exists()
    assert rr.main(["--root", str(tmp_path / "nowhere"), "--hardware", "x"]) == 2


def test_manifest_from_jupyter_cache_database(tmp_path):
    root = _book(tmp_path, ["a_first", "b_second"])
    cache = root / "_build" / ".jupyter_cache"
    cache.mkdir(parents=True)
    with sqlite3.connect(cache / "global.db") as db:
        db.execute("CREATE TABLE nbcache (pk INTEGER PRIMARY KEY, hashkey TEXT, uri TEXT, description TEXT,"
                   " data JSON, created DATETIME, accessed DATETIME)")
        rows = [(f"{root}/notebooks/a_first.ipynb", '{"execution_seconds": 5.348}', "2026-12-01 05:07:58.839253"),
                (f"{root}/notebooks/a_first.ipynb", '{"execution_seconds": 9.0}', "2026-11-01 05:07:58.000000"),
                (f"{root}/notebooks/b_second.ipynb", '{"execution_seconds": 12.104}', "2026-12-01 05:08:11.463733"),
                ("/elsewhere/notebooks/c.ipynb", '{"execution_seconds": 1}', "2026-12-01 05:08:11")]
        db.executemany("INSERT INTO nbcache (uri, data, created) VALUES (?, ?, ?)", rows)
    chapters, last_run, skipped, source = rr.build_runtimes(root / "_build", root)
    assert chapters == {"a_first": 5.3, "b_second": 12.1}  # the newest record of a_first wins
    assert source.endswith("global.db") and not skipped


def test_hardware_description():
    assert rr.short_cpu_name("Intel(R) Xeon(R) Platinum 8488C CPU @ 2.40GHz") == "Intel Xeon Platinum 8488C"
    assert rr.short_cpu_name("AMD EPYC 7B13 64-Core Processor") == "AMD EPYC 7B13"
    assert rr.describe_hardware(2, "AMD EPYC", "AVX2", "fp32") == "a 2-core AMD EPYC (AVX2, fp32)"
    assert rr.describe_hardware(16, "AMD EPYC", "AVX512", "bf16", gpu="NVIDIA H100") \
        == "an NVIDIA H100 (CUDA, bf16) with a 16-core AMD EPYC (AVX512)"
    assert rr.manifest({"a": 1.0, "b": 2.25}, date="2026-01-02", hardware="h") == {
        "date": "2026-01-02", "hardware": "h", "profile": "quick", "chapters": {"a": 1.0, "b": 2.25}, "total": 3.2}


# ------------------------------------------------------------------ check_book: which cells draw

@pytest.mark.parametrize("source, expected", [
    ("show_images(x, titles);", ["show_images"]),
    ("fig, axes = plt.subplots(1, 4)\nfor ax in axes:\n    ax.imshow(d)", ["plt.subplots", "ax.imshow"]),
    ("viz.show_rows(rows, labels, cols)", ["viz.show_rows"]),
    ("import matplotlib.pyplot as plt\nfrom unclip_lite.viz import show_images, show_matrix", []),
    ("print('hello')\nx = 1 + 2", []),
    ("plt.rcParams['figure.dpi'] = 80\nplt.close('all')", []),
    ("fig, ax = plt.subplots()\nax.plot(x)\nplt.close(fig)", []),  # closed on purpose: no figure shown
    # a def that draws counts only when the cell calls it (directly or through interact)
    ("def draw(r=32):\n    plt.imshow(img)\n    plt.show()\n\nwidgets.interact(draw, r=(8, 64))",
     ["widgets.interact"]),
    ("def draw():\n    plt.imshow(img)\n", []),
    ("def draw():\n    plt.imshow(img)\n\ndraw()", ["draw"]),
    ("%matplotlib inline\nshow_matrix(m, rows, cols)", ["show_matrix"]),
    ("x = (\n  show_images(", ["show_images"]),  # does not parse: text search
])
def test_figure_calls(source, expected):
    assert cb.figure_calls(source) == expected


# ------------------------------------------------------------------ check_book: cells in HTML

def _cell(source: str, output: str | None, classes: str = "cell docutils container") -> str:
    out = "" if output is None else f'<div class="cell_output docutils container">{output}</div>'
    return (f'<div class="{classes}"><div class="cell_input docutils container"><div class="highlight-ipython3">'
            f'<div class="highlight"><pre><span></span>{source}</pre></div></div></div>{out}</div>')


WIDGET_VIEW = ('<script type="application/vnd.jupyter.widget-view+json">'
               '{"version_major": 2, "version_minor": 0, "model_id": "73fc"}</script>')
FIGURE = ('<img alt="_images/abc.png" src="../_images/abc.png" />')
PAGE = "<html><body><section>" + "".join([
    _cell("print(&quot;profile: smoke&quot;)", '<div class="output stream highlight-myst-ansi"><pre>profile: smoke</pre></div>'),
    _cell("show_images(images, texts, ncols=8);", f'<div class="output text_plain">{FIGURE}</div>'),
    _cell("widgets.interact(draw, resolution=widgets.IntSlider(value=32))", WIDGET_VIEW),
    _cell("show_rows(rows, labels, cols)", '<div class="output text_plain"><pre>&lt;Figure size 640x480 with 4 Axes&gt;</pre></div>'),
    _cell("x = 1", None),
    _cell("fig, ax = plt.subplots()", None),
    _cell("show_images(x)", "", classes="cell tag_remove-output docutils container"),
    _cell("display(widgets.VBox([slider, picture]))", WIDGET_VIEW + "<style>.x{}</style>"),
]) + "</section></body></html>"


def test_cells_from_html_reads_sources_and_outputs():
    cells = cb.cells_from_html(PAGE)
    assert len(cells) == 8
    assert cells[0]["source"] == 'print("profile: smoke")' and cells[0]["output_text"] == "profile: smoke"
    assert cells[1]["pictures"] == 1 and cells[1]["has_output"]
    assert cells[2]["widget_views"] == 1 and cells[2]["output_text"] == ""  # the script's JSON is not text
    assert not cells[4]["has_output"]
    assert cells[7]["output_text"] == ""  # nor is a style


def test_cell_problems_classify_each_cell():
    kinds = {c["index"]: [p["kind"] for p in cb.cell_problems(c)] for c in cb.cells_from_html(PAGE)}
    assert kinds == {0: [], 1: [], 2: ["missing-figure"], 3: ["missing-figure"], 4: [], 5: ["missing-figure"],
                     6: [], 7: ["empty-output"]}
    messages = [p["message"] for c in cb.cells_from_html(PAGE) for p in cb.cell_problems(c)]
    assert "ipywidgets view(s) that did not render" in messages[0]
    assert "shows only text: '<Figure size 640x480 with 4 Axes>'" in messages[1]
    assert "has no output at all" in messages[2]


def test_a_rendered_widget_is_not_empty():
    cell = {"index": 3, "source": "widgets.interact(draw)", "has_output": True, "output_text": "",
            "pictures": 1, "widget_views": 0, "rendered_widgets": 4}
    assert cb.cell_problems(cell) == []


# ------------------------------------------------------------------ check_book: page records

def test_page_problems_from_a_browser_record():
    record = {
        "cells": [],
        "images": [
            {"src": BASE + "_images/ok.png", "complete": True, "natural_width": 320},
            {"src": BASE + "_images/gone.png", "complete": True, "natural_width": 0},
            {"src": BASE + "_images/corrupt.png", "complete": True, "natural_width": 0},
            {"src": BASE + "_static/logo.svg", "complete": True, "natural_width": 0},  # SVGs may have no size
            {"src": "https://example.org/badge.png", "complete": True, "natural_width": 0},  # blocked: external
        ],
        "responses": [{"url": BASE + "_images/gone.png", "status": 404}, {"url": BASE + "x.css", "status": 200},
                      {"url": BASE + "_static/missing.js", "status": 500}],
        "failed": [{"url": "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js", "error": "blocked"},
                   {"url": BASE + "_static/reset.js", "error": "net::ERR_CONNECTION_RESET"}],
        "console_errors": [{"text": "Failed to load resource: the server responded with a status of 404", "url": ""},
                           {"text": "TypeError: x is undefined", "url": BASE + "_static/app.js"}],
        "page_errors": ["Identifier 'THEBE_JS_URL' has already been declared"],
        "external": ["https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"],
        "math": {"total": 7, "unrendered": 7},
    }
    problems, external = cb.page_problems(record, BASE)
    messages = {(p["kind"], p["message"]) for p in problems}
    assert ("http-error", "HTTP 404 for _images/gone.png") in messages
    assert ("http-error", "HTTP 500 for _static/missing.js") in messages
    assert any(k == "http-error" and "ERR_CONNECTION_RESET" in m for k, m in messages)
    assert ("broken-image", "image _images/gone.png answered HTTP 404") in messages
    assert ("broken-image", "image _images/corrupt.png did not load (naturalWidth 0)") in messages
    assert not any("logo.svg" in m or "badge.png" in m for _, m in messages)
    assert any(k == "js-error" and "TypeError: x is undefined" in m for k, m in messages)
    assert not any("Failed to load resource" in m for _, m in messages)
    assert ("unrendered-math", "7 of 7 formulas left as raw TeX (MathJax did not run)") in messages
    assert external == ["https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"]

    real, known = cb.split_known(problems)
    assert [k["message"] for k in known] == ["uncaught: Identifier 'THEBE_JS_URL' has already been declared"]
    assert "sphinx-thebe" in known[0]["why"] and all(p["kind"] != "js-error" or "THEBE" not in p["message"] for p in real)
    result = cb.page_result("notebooks/x.html", record, BASE, strict=True)
    assert len(result["problems"]) == len(problems) and result["known"] == []


def test_a_clean_page_has_no_problems():
    record = {"cells": cb.cells_from_html(_cell("show_images(x)", FIGURE)),
              "images": [{"src": BASE + "_images/abc.png", "complete": True, "natural_width": 640}],
              "responses": [{"url": BASE + "notebooks/x.html", "status": 200}], "math": {"total": 2, "unrendered": 0}}
    assert cb.page_problems(record, BASE) == ([], [])


def test_static_record_checks_images_on_disk(tmp_path):
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "abc.png").write_bytes(b"png")
    html = ('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
            + _cell("show_images(x)", FIGURE) + '<img src="../_images/lost.png"><img src="data:image/png;base64,AA==">')
    record = cb.static_record(html, BASE + "notebooks/page.html", tmp_path, BASE)
    problems, external = cb.page_problems(record, BASE)
    assert [p["message"] for p in problems] == ["image _images/lost.png is not in the build"]
    assert external == ["https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"]


def test_pages_screenshots_and_report(tmp_path):
    for rel in ["index.html", "intro.html", "notebooks/00_a.html", "_static/x.html", "_sources/y.html"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("<html></html>")
    assert cb.book_pages(tmp_path) == ["index.html", "intro.html", "notebooks/00_a.html"]
    assert cb.book_pages(tmp_path, ["notebooks/*.html"]) == ["notebooks/00_a.html"]
    assert cb.screenshot_name("notebooks/00_a.html") == "notebooks__00_a.png"
    results = [{"page": "intro.html", "problems": [], "known": [], "external": ["https://cdn.example/m.js"]},
               {"page": "notebooks/00_a.html", "external": ["https://cdn.example/m.js"], "known": [],
                "problems": [{"kind": "missing-figure", "message": "cell 9 ('import ipywidgets'): draws a figure"}]}]
    text = cb.report(results)
    assert "ok   intro.html" in text and "FAIL notebooks/00_a.html  (1 problems)" in text
    assert "[missing-figure] cell 9" in text and "https://cdn.example/m.js  (2 pages)" in text
    assert text.rstrip().endswith("2 pages checked, 1 with problems, 1 problems in all")


def test_is_local():
    assert cb.is_local(BASE + "a.png", BASE) and cb.is_local("data:image/png;base64,AA", BASE)
    assert not cb.is_local("http://127.0.0.1:9999/a.png", BASE)
    assert not cb.is_local("https://cdn.jsdelivr.net/x.js", BASE)


# ------------------------------------------------------------------ lab_walkthrough

def test_run_state_reads_prompts():
    assert lw.run_state(["[1]:", "[2]:", "[*]:", "[*]:", "[ ]:"]) == (2, 2, 1)
    assert lw.run_state(["[12]:", "[13]:"]) == (2, 0, 0)
    assert lw.run_state(["[ ]:", ""]) == (0, 0, 2)


def test_lab_environment_is_a_learners(tmp_path, monkeypatch):
    monkeypatch.setenv("UNCLIP_LITE_SOLUTIONS", "1")
    env = lw.lab_environment(tmp_path, solutions=False)
    assert env["UNCLIP_LITE_PROFILE"] == "smoke" and "UNCLIP_LITE_SOLUTIONS" not in env
    assert env["JUPYTERLAB_SETTINGS_DIR"].startswith(str(tmp_path))
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    assert json.loads(settings.read_text()) == {"windowingMode": "none"}
    assert lw.lab_environment(tmp_path, solutions=True)["UNCLIP_LITE_SOLUTIONS"] == "1"


# ------------------------------------------------------------------ vendor_js (no npm, no network)

def _fake_package(tmp_path: Path) -> tuple[vj.Package, Path]:
    """A tarball shaped like an npm one in a cache folder, and its Package (integrity pinned)."""
    import io
    import tarfile

    cache = tmp_path / "cache"
    cache.mkdir()
    tarball = cache / "scope-lib-1.2.3.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in {"package/es5/tex.js": b"tex", "package/es5/ui/menu.js": b"menu",
                           "package/es5/unused.js": b"x", "package/dist/a1.woff2": b"w",
                           "package/dist/b.map": b"m", "package/README.md": b"r"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    package = vj.Package("@scope/lib", "1.2.3", vj.integrity_of(tarball),
                         {"package/es5/": "lib/", "package/dist/*.woff2": "fonts/"},
                         frozenset({"package/es5/unused.js"}))
    assert package.tarball == tarball.name and package.spec == "@scope/lib@1.2.3"
    return package, cache


def test_vendor_js_copies_from_the_cache_and_then_does_nothing(tmp_path, monkeypatch):
    package, cache = _fake_package(tmp_path)
    own = tmp_path / "book_static"
    own.mkdir()
    (own / "shim.js").write_text("/* shim */")

    def no_npm(*args, **kwargs):
        raise AssertionError("npm must not run when the cache holds the pinned tarball")

    monkeypatch.setattr(vj.subprocess, "run", no_npm)
    assert vj.vendor(cache, packages=(package,), book_static=own) is True
    static = cache / "static" / vj.SUBDIR
    assert sorted(f.relative_to(static).as_posix() for f in static.rglob("*") if f.is_file()) == [
        "fonts/a1.woff2", "lib/tex.js", "lib/ui/menu.js", "shim.js"]
    assert vj.up_to_date(cache, (package,), own)
    assert vj.vendor(cache, packages=(package,), book_static=own) is False  # nothing to do
    (own / "shim.js").write_text("/* shim, changed */")
    assert not vj.up_to_date(cache, (package,), own)
    assert vj.vendor(cache, packages=(package,), book_static=own) is True
    assert (static / "shim.js").read_text() == "/* shim, changed */"
    (static / "lib" / "tex.js").unlink()
    assert not vj.up_to_date(cache, (package,), own)  # a lost file is noticed


def test_vendor_js_refuses_a_tarball_that_is_not_the_pinned_one(tmp_path, monkeypatch):
    package, cache = _fake_package(tmp_path)
    (cache / package.tarball).write_bytes(b"not the pinned tarball")
    monkeypatch.setattr(vj.shutil, "which", lambda name: None)  # and no npm to fetch it again
    with pytest.raises(RuntimeError, match="npm is missing"):
        vj.fetch(package, cache)
    assert not (cache / package.tarball).exists()


def test_book_config_loads_only_the_vendored_scripts():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((vj.ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert config["html_static_path"] == [(vj.DEFAULT_CACHE / "static").relative_to(vj.ROOT).as_posix()]
    served = {f"{vj.SUBDIR}/{dest}" for p in vj.PACKAGES for dest in p.copy.values() if not dest.endswith("/")}
    served |= {f"{vj.SUBDIR}/{f.name}" for f in vj.own_files()}
    assert config["mathjax_path"] == f"{vj.SUBDIR}/mathjax/tex-mml-chtml.js"  # in the copied es5/ folder
    widgets = list(config["nb_ipywidgets_js"])
    assert all("://" not in url and url in served for url in widgets), widgets
    names = [url.rsplit("/", 1)[-1] for url in widgets]
    # the shim before the embed manager; require.js, then its config, then the embed manager
    assert names.index("mathjax-hub-shim.js") < names.index("embed-amd.js")
    assert names.index("require.js") < names.index("widgets-require-config.js") < names.index("embed-amd.js")


def test_a_build_on_another_cpu_keeps_the_first_machines_times(tmp_path):
    """CPUs differ several-fold (native bf16 or not): re-recording on one machine keeps the other's record."""
    root, out = _built_book(tmp_path)
    assert rr.main(["--root", str(root), "--output", str(out), "--hardware", "machine A"]) == 0
    assert "also_measured" not in json.loads(out.read_text())
    assert rr.main(["--root", str(root), "--output", str(out), "--hardware", "machine B"]) == 0
    record = json.loads(out.read_text())
    assert record["hardware"] == "machine B"
    assert [o["hardware"] for o in record["also_measured"]] == ["machine A"]
    assert record["also_measured"][0]["chapters"] == record["chapters"]
    assert rr.main(["--root", str(root), "--output", str(out), "--hardware", "machine B"]) == 0
    assert [o["hardware"] for o in json.loads(out.read_text())["also_measured"]] == ["machine A"]  # not doubled
