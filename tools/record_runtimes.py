"""Write ``notebooks/runtimes.json``: how long each chapter took to execute in the last book build.

Run it after ``make book`` (``make runtimes``). Every chapter opening quotes its line through
:func:`unclip_lite.profiles.chapter_runtime`, which reads the manifest written here::

    {"date": "2026-11-30", "hardware": "a 2-core AMD EPYC (AVX2, fp32)", "profile": "quick",
     "chapters": {"00_worlds_and_tokens": 23.1, ...}, "total": 1063.2}

Where the times come from: MyST-NB (the notebook layer of Jupyter Book 1) times every notebook
it executes and keeps the result in the Sphinx build environment,
``_build/.doctrees/environment.pickle``: ``env.nb_metadata[docname]["exec_data"]`` =
``{"mtime": <unix time of the run>, "runtime": <seconds>, "method": "force"|"cache"|...,
"succeeded": bool, ...}``. That is the source of the ``nb_execution_table`` directive too.
With ``execute_notebooks: cache`` the same numbers also live in jupyter-cache's SQLite
database (``_build/.jupyter_cache/global.db``, table ``nbcache``, JSON column ``data`` =
``{"execution_seconds": ...}``); it is read only when the pickle is missing.

Unpickling the environment needs Sphinx and MyST-NB importable (the ``book`` extra).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_PREFIX = "notebooks/"


# ---------------------------------------------------------------------------- pure functions

def runtimes_from_metadata(nb_metadata: dict, prefix: str = CHAPTER_PREFIX) -> tuple[dict[str, float], float | None, list[str]]:
    """Chapter runtimes from MyST-NB's per-document metadata (``env.nb_metadata``).

    Returns ``(chapters, last_run, skipped)``: ``{"00_worlds_and_tokens": seconds, ...}`` in
    name order for the documents under ``prefix`` that executed successfully, the unix time of
    the latest execution (None if none), and a line for each document left out and why.
    """
    chapters: dict[str, float] = {}
    skipped: list[str] = []
    last_run = None
    for docname in sorted(nb_metadata):
        if not docname.startswith(prefix):
            continue
        name = docname[len(prefix):]
        data = (nb_metadata[docname] or {}).get("exec_data")
        if not data:
            skipped.append(f"{name}: no execution data (not executed in this build)")
            continue
        if not data.get("succeeded", False):
            skipped.append(f"{name}: its execution failed ({data.get('error') or 'unknown error'})")
            continue
        if data.get("runtime") is None:
            skipped.append(f"{name}: execution recorded without a runtime")
            continue
        chapters[name] = round(float(data["runtime"]), 1)
        if data.get("mtime") is not None:
            last_run = max(last_run or 0.0, float(data["mtime"]))
    return chapters, last_run, skipped


def runtimes_from_cache_rows(rows, root: Path, prefix: str = CHAPTER_PREFIX) -> tuple[dict[str, float], float | None, list[str]]:
    """The same from jupyter-cache rows ``(uri, data_json, created_iso)``; the newest row per notebook wins."""
    newest: dict[str, tuple[str, dict]] = {}
    for uri, data, created in rows:
        try:
            rel = Path(uri).resolve().relative_to(root.resolve()).with_suffix("").as_posix()
        except ValueError:
            continue
        if not rel.startswith(prefix):
            continue
        record = json.loads(data) if isinstance(data, str) else (data or {})
        if rel not in newest or str(created) > newest[rel][0]:
            newest[rel] = (str(created), record)
    metadata = {}
    for docname, (created, record) in newest.items():
        when = datetime.fromisoformat(created).replace(tzinfo=timezone.utc).timestamp() if created else None
        metadata[docname] = {"exec_data": {"runtime": record.get("execution_seconds"), "mtime": when,
                                           "succeeded": True}}
    return runtimes_from_metadata(metadata, prefix)


def short_cpu_name(model: str) -> str:
    """``"Intel(R) Xeon(R) Platinum 8488C CPU @ 2.40GHz"`` → ``"Intel Xeon Platinum 8488C"``."""
    name = re.sub(r"\((R|TM|tm|r)\)", "", model)
    name = re.sub(r"\bCPU\b\s*@.*$", "", name)
    name = re.sub(r"@\s*[\d.]+\s*GHz", "", name)
    name = re.sub(r"\b\d+-Core Processor\b|\bProcessor\b|\bCPU\b", "", name)
    return re.sub(r"\s+", " ", name).strip() or model.strip()


def describe_hardware(cores: int, model: str, capability: str, precision: str, gpu: str | None = None) -> str:
    """``"a 2-core AMD EPYC (AVX2, fp32)"``, or ``"an NVIDIA H100 (CUDA, bf16) with a 16-core ..."``."""
    cpu = f"a {cores}-core {short_cpu_name(model)} ({capability}, {precision})" if gpu is None \
        else f"a {cores}-core {short_cpu_name(model)} ({capability})"
    if gpu:
        article = "an" if gpu[:1].upper() in "AEIOU" or gpu.upper().startswith("NVIDIA") else "a"
        return f"{article} {gpu} (CUDA, {precision}) with {cpu}"
    return cpu


def manifest(chapters: dict[str, float], *, date: str, hardware: str, profile: str = "quick") -> dict:
    """The JSON object ``chapter_runtime()`` reads."""
    return {"date": date, "hardware": hardware, "profile": profile, "chapters": dict(chapters),
            "total": round(sum(chapters.values()), 1)}


# ---------------------------------------------------------------------------- reading a build

def read_environment(pickle_path: Path) -> dict:
    """``env.nb_metadata`` from a Sphinx environment pickle (needs Sphinx and MyST-NB importable)."""
    with open(pickle_path, "rb") as f:
        env = pickle.load(f)
    return dict(getattr(env, "nb_metadata", {}) or {})


def read_cache(db_path: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return db.execute("SELECT uri, data, created FROM nbcache").fetchall()


def build_runtimes(build_dir: Path, root: Path) -> tuple[dict[str, float], float | None, list[str], str]:
    """Runtimes of the build in ``build_dir`` and a word for where they came from."""
    env_pickle = build_dir / ".doctrees" / "environment.pickle"
    if env_pickle.exists():
        return (*runtimes_from_metadata(read_environment(env_pickle)), str(env_pickle))
    db = build_dir / ".jupyter_cache" / "global.db"
    if db.exists():
        return (*runtimes_from_cache_rows(read_cache(db), root), str(db))
    raise FileNotFoundError(f"no {env_pickle} nor {db}: run `make book` first")


def this_hardware() -> str:
    """A short description of this machine, from :mod:`unclip_lite.hardware` (lscpu without torch)."""
    try:
        import torch

        from unclip_lite import hardware as hw
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        device = "cuda" if gpu else "cpu"
        return describe_hardware(os.cpu_count() or 1, hw.cpu_model(), hw.cpu_capability(),
                                 hw.resolve_precision("auto", device), gpu)
    except Exception:  # noqa: BLE001 - fall back to lscpu, say less
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
            model = re.search(r"Model name:\s*(.+)", out).group(1)
        except Exception:  # noqa: BLE001
            model = "CPU"
        return f"a {os.cpu_count() or 1}-core {short_cpu_name(model)}"


def expected_chapters(root: Path) -> list[str]:
    """The chapters a full build times: every notebook in ``root/notebooks``."""
    return sorted(p.stem for p in (root / "notebooks").glob("*.ipynb"))


def kept_other_machines(output, hardware: str) -> list[dict]:
    """The other machines' records already in the manifest (and the old record itself when it came from
    another machine): CPUs differ several-fold here, so a build on one must not erase the other's times."""
    try:
        old = json.loads(Path(output).read_text())
    except (OSError, ValueError, TypeError):
        return []
    others = [o for o in old.get("also_measured", []) if o.get("hardware") != hardware]
    if old.get("hardware") not in (None, hardware) and "chapters" in old:
        others.insert(0, {k: v for k, v in old.items() if k not in ("also_measured", "build_seconds", "build_note")})
    return others


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the book's source folder (default: this repo)")
    parser.add_argument("--build-dir", type=Path, help="the build folder (default: ROOT/_build)")
    parser.add_argument("--output", help="where to write the manifest (default: ROOT/notebooks/runtimes.json); "
                                         "'-' prints it")
    parser.add_argument("--profile", default=os.environ.get("UNCLIP_LITE_PROFILE") or "quick",
                        help="the profile the build ran under (default: $UNCLIP_LITE_PROFILE or quick)")
    parser.add_argument("--hardware", help="override the machine description")
    parser.add_argument("--allow-missing", action="store_true",
                        help="write the manifest even when chapters of notebooks/ have no time")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    build_dir = args.build_dir or root / "_build"
    output = args.output or str(root / "notebooks" / "runtimes.json")
    to_stdout = output == "-"
    log = sys.stderr if to_stdout else sys.stdout

    try:
        chapters, last_run, skipped, source = build_runtimes(build_dir, root)
    except FileNotFoundError as e:
        print(f"record_runtimes: {e}", file=sys.stderr)
        return 2
    for line in skipped:
        print(f"record_runtimes: skipped {line}", file=sys.stderr)
    if not chapters:
        print(f"record_runtimes: no chapter execution times in {source}", file=sys.stderr)
        return 1
    missing = [c for c in expected_chapters(root) if c not in chapters]
    if missing:
        print(f"record_runtimes: no time for {', '.join(missing)} in {source}", file=sys.stderr)
        if not args.allow_missing:
            print("record_runtimes: not writing a partial manifest (pass --allow-missing to write it anyway)",
                  file=sys.stderr)
            return 1
    when = datetime.fromtimestamp(last_run) if last_run else datetime.now()
    record = manifest(chapters, date=when.date().isoformat(), hardware=args.hardware or this_hardware(),
                      profile=args.profile)
    record["also_measured"] = kept_other_machines(output, record["hardware"])
    if not record["also_measured"]:
        del record["also_measured"]
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    if to_stdout:
        sys.stdout.write(text)
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
        print(f"record_runtimes: wrote {output} from {source}", file=log)
    for name, seconds in [*chapters.items(), ("total", record["total"])]:
        minutes, secs = divmod(round(seconds), 60)
        print(f"  {name:<40} {minutes:3d} min {secs:02d} s", file=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
