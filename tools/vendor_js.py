"""Fetch the book's JavaScript (MathJax, require.js, the ipywidgets embed manager) so pages work offline.

The course is read offline, but Sphinx and MyST-NB load MathJax, require.js and
``@jupyter-widgets/html-manager`` from CDNs by default: without them math stays raw TeX and the
ipywidgets outputs (sliders) stay empty. ``make book`` runs this script first; it

1. fetches each pinned package with ``npm pack <name>@<version>`` into ``.cache/vendor/`` (once;
   the tarball is checked against the registry's sha512 integrity pinned below), then
2. copies the files the pages need into ``.cache/vendor/static/offline/``, which ``_config.yml``
   lists in ``html_static_path`` (so they end up in ``_build/html/_static/offline/``), together
   with the files of ``tools/book_static/``: ``mathjax-hub-shim.js`` (MathJax 2's
   ``MathJax.Hub.Queue``, which the widget manager calls, on top of MathJax 3) and
   ``widgets-require-config.js`` (tells require.js where the embed manager lives, so the fonts its
   CSS asks for load from ``_static/offline/html-manager/``); see those files.
   (``offline/``, not ``vendor/``: the theme has its own ``_static/vendor/``.)

When the cache already holds the pinned tarballs and an up-to-date copy it does nothing and needs
no network, so ``make book`` works offline after the first time. Nothing here is committed
(``/.cache/vendor/`` is in .gitignore). Why not a ``_static/`` folder at the repository root:
Jupyter Book 1 adds every ``.js`` file under ``_static/`` to every page as a ``<script>``, which
would load all of MathJax's components at once.

Usage: ``python tools/vendor_js.py [--cache DIR] [--force] [--check]``. Exit status 0: ready
(``--check``: already up to date), 1: ``--check`` found it missing or stale, 2: could not fetch.
"""
from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "vendor"
BOOK_STATIC = ROOT / "tools" / "book_static"  # the course's own small scripts, copied next to them
SUBDIR = "offline"  # the folder under _static/ the pages load them from
STAMP = "static.json"  # in the cache folder: what the static copy was made from


@dataclass(frozen=True)
class Package:
    """One npm package: which version, its tarball's integrity, and what to copy where.

    ``copy`` maps a path in the tarball (``package/…``) to a path under ``static/offline/``: a file
    to a file, a folder (ending in '/') to a folder with all it holds, a glob (``*``) to a folder
    (ending in '/') that gets the matching files by name. ``skip`` leaves out members (paths in
    the tarball) that a folder or glob would copy.
    """

    name: str
    version: str
    integrity: str  # `npm view <name>@<version> dist.integrity`
    copy: dict[str, str]
    skip: frozenset[str] = field(default_factory=frozenset)

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        """The file name ``npm pack`` gives it: '@scope/name' → 'scope-name-<version>.tgz'."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


# MathJax: the combined TeX+MathML→CommonHTML component Sphinx uses (mathjax@3), with the folders it
# loads from at run time (input/tex/extensions for autoloaded macros, output/chtml/fonts, ui/menu,
# a11y and sre for the menu's accessibility options). The other combined components are left out.
MATHJAX_UNUSED = frozenset(f"package/es5/{f}" for f in (
    "latest.js", "node-main.js", "mml-chtml.js", "mml-svg.js", "tex-chtml.js", "tex-chtml-full.js",
    "tex-chtml-full-speech.js", "tex-svg.js", "tex-svg-full.js", "tex-mml-svg.js"))

PACKAGES = (
    Package("mathjax", "3.2.2",
            "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
            {"package/es5/": "mathjax/", "package/LICENSE": "mathjax/LICENSE"}, MATHJAX_UNUSED),
    # 2.3.7: the CVE-2024-38999 fix; MyST-NB's default is 2.3.4 from cdnjs
    Package("requirejs", "2.3.7",
            "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
            {"package/require.js": "requirejs/require.js"}),
    # 1.0.x renders ipywidgets 8 (widget state 2.x, @jupyter-widgets/controls 5); 1.0.15 bundles
    # controls 5.0.13 (ipywidgets 8.1.x). embed-amd.js holds the manager and the core widgets.
    Package("@jupyter-widgets/html-manager", "1.0.15",
            "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
            # and the Font Awesome fonts its CSS loads (woff2/woff/ttf; .eot/.svg are for old browsers)
            {"package/dist/embed-amd.js": "html-manager/embed-amd.js",
             "package/dist/embed.js.LICENSE.txt": "html-manager/embed.js.LICENSE.txt",
             "package/dist/*.woff2": "html-manager/", "package/dist/*.woff": "html-manager/",
             "package/dist/*.ttf": "html-manager/"}),
)


def integrity_of(path: Path) -> str:
    """npm's Subresource Integrity string of a file: 'sha512-' + base64 of its SHA-512."""
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def own_files(book_static: Path = BOOK_STATIC) -> list[Path]:
    return sorted(f for f in book_static.iterdir() if f.is_file()) if book_static.is_dir() else []


def stamp_of(packages=PACKAGES, book_static: Path = BOOK_STATIC) -> dict:
    """What a static copy is made from: the pinned packages and the content of our own files."""
    return {"folder": SUBDIR,
            "packages": {p.name: {"version": p.version, "integrity": p.integrity} for p in packages},
            "own": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in own_files(book_static)}}


def members_to_copy(package: Package, names: list[str]) -> list[tuple[str, str]]:
    """``(member, destination)`` pairs for the regular-file members ``names`` of the tarball."""
    pairs = []
    for name in names:
        if name in package.skip:
            continue
        for source, dest in package.copy.items():
            if source.endswith("/") and name.startswith(source):
                rel = PurePosixPath(name[len(source):])
            elif "*" in source and fnmatch.fnmatchcase(name, source):
                rel = PurePosixPath(PurePosixPath(name).name)
            elif name == source:
                rel = PurePosixPath()
            else:
                continue
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"{package.tarball}: unsafe path {name!r}")
            pairs.append((name, str(PurePosixPath(dest) / rel) if rel.parts else dest))
            break
    return pairs


def fetch(package: Package, cache: Path) -> Path:
    """The package's tarball in ``cache``, fetched with ``npm pack`` when absent (or corrupt)."""
    path = cache / package.tarball
    if path.exists() and integrity_of(path) == package.integrity:
        return path
    path.unlink(missing_ok=True)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"{package.spec} is not in {cache} and npm is missing (install Node.js/npm, "
                           "or copy the tarball there)")
    print(f"vendor_js: npm pack {package.spec}", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "pack", package.spec, "--pack-destination", str(cache), "--silent"],
                          cwd=cache, capture_output=True, text=True)
    if done.returncode != 0 or not path.exists():
        raise RuntimeError(f"npm pack {package.spec} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
    got = integrity_of(path)
    if got != package.integrity:
        path.unlink()
        raise RuntimeError(f"{package.tarball}: integrity {got} is not the pinned {package.integrity}")
    return path


def unpack(package: Package, tarball: Path, vendor: Path) -> int:
    """Copy the package's files from its tarball under ``vendor``; returns how many."""
    with tarfile.open(tarball, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        pairs = members_to_copy(package, sorted(members))
        for name, dest in pairs:
            target = vendor / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(members[name]) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    missing = [s for s in package.copy if not s.endswith("/") and "*" not in s and s not in members]
    if missing:
        raise RuntimeError(f"{package.tarball} lacks {', '.join(missing)}")
    return len(pairs)


def up_to_date(cache: Path, packages=PACKAGES, book_static: Path = BOOK_STATIC) -> bool:
    """True when ``cache`` holds a static copy made from exactly these pins (and its files are there)."""
    stamp_path = cache / STAMP
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        return False
    if stamp.get("made_from") != stamp_of(packages, book_static):
        return False
    static = cache / "static"
    return all((static / f).is_file() for f in stamp.get("files", [])) and bool(stamp.get("files"))


def vendor(cache: Path = DEFAULT_CACHE, force: bool = False, packages=PACKAGES,
           book_static: Path = BOOK_STATIC) -> bool:
    """Make ``cache/static/offline/`` hold the pinned files; False when it already did (nothing done)."""
    if not force and up_to_date(cache, packages, book_static):
        return False
    cache.mkdir(parents=True, exist_ok=True)
    tarballs = {p.name: fetch(p, cache) for p in packages}
    building = cache / "static.tmp"
    shutil.rmtree(building, ignore_errors=True)
    vendor_dir = building / SUBDIR
    vendor_dir.mkdir(parents=True)
    for p in packages:
        n = unpack(p, tarballs[p.name], vendor_dir)
        print(f"vendor_js: {p.spec}: {n} files", flush=True)
    for f in own_files(book_static):
        shutil.copyfile(f, vendor_dir / f.name)
    files = sorted(f.relative_to(building).as_posix() for f in building.rglob("*") if f.is_file())
    static = cache / "static"
    shutil.rmtree(static, ignore_errors=True)
    building.rename(static)
    stamp = {"made_from": stamp_of(packages, book_static), "files": files}
    (cache / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where the tarballs and the static copy go (default: .cache/vendor)")
    parser.add_argument("--force", action="store_true", help="rebuild the static copy even when up to date")
    parser.add_argument("--check", action="store_true", help="only say whether it is up to date (no network)")
    args = parser.parse_args(argv)
    cache = args.cache.resolve()
    if args.check:
        ok = up_to_date(cache)
        print(f"vendor_js: {cache / 'static'} is {'up to date' if ok else 'missing or stale'}")
        return 0 if ok else 1
    try:
        did = vendor(cache, args.force)
    except (RuntimeError, ValueError, OSError, tarfile.TarError) as e:
        print(f"vendor_js: {e}", file=sys.stderr)
        return 2
    pins = ", ".join(p.spec for p in PACKAGES)
    where = cache / "static" / SUBDIR
    print(f"vendor_js: {'copied' if did else 'up to date, nothing to do:'} {pins} in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
