"""A learner's first steps in JupyterLab, driven once in headless Chromium.

``make lab-walkthrough`` runs it. The path a reader takes:

1. start ``jupyter lab`` from ``.venv`` (no browser, a token, a free port on 127.0.0.1) in a temporary
   copy of ``notebooks/`` with ``UNCLIP_LITE_PROFILE=smoke`` (and, as for a learner, without
   ``UNCLIP_LITE_SOLUTIONS``: the exercises report "not done yet" and the chapter goes on);
2. open ``00_worlds_and_tokens.ipynb``, wait for its kernel;
3. Run ▸ Run All Cells (the menu, as a reader clicks it);
4. wait until every code cell has run and the kernel is idle;
5. find the ipywidgets slider of the "Explore" cell and move it with the keyboard (a drag if the
   keyboard does nothing);
6. check that the readout changed and that the picture it drives was redrawn;
7. save a screenshot to ``_build/lab-walkthrough.png``.

Exits 0 when every step passed, 1 with the failing step and why (a screenshot is saved anyway),
2 when it could not start (no Chromium, no Playwright, no JupyterLab). Nothing is written into the
repository except the screenshot: JupyterLab's settings, workspaces and autosaves stay in the
temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_book import find_chromium, is_local, launch  # noqa: E402  (same browser, same flags)

NOTEBOOK = "00_worlds_and_tokens.ipynb"

# JupyterLab user settings for the run: every cell stays in the DOM (no virtual scrolling), no
# news or update pop-ups.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}

# Counts the code cells and their prompts; a prompt is "[12]:" once run, "[*]:" while queued or running.
CELLS_JS = r"""
() => {
  const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell')];
  const prompts = cells.map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || '');
  const status = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
  return {n: cells.length, prompts: prompts.map(p => p.trim()), status: status ? status.dataset.status : null};
}
"""

# What the "Explore" widget shows: slider readout and the picture's data URL.
WIDGET_JS = r"""
(root) => {
  const readout = root.querySelector('.widget-hslider .widget-readout');
  const img = root.querySelector('.widget-output img');
  return {readout: readout ? readout.textContent.trim() : null, src: img ? img.getAttribute('src') : null};
}
"""


class StepFailed(Exception):
    def __init__(self, step: str, why: str):
        super().__init__(f"{step}: {why}")
        self.step, self.why = step, why


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_state(prompts: list[str]) -> tuple[int, int, int]:
    """``(done, running, not_run)`` from the code cells' input prompts (``[3]:``, ``[*]:``, ``[ ]:``)."""
    done = sum(1 for p in prompts if p.strip("[]: ").isdigit())
    running = sum(1 for p in prompts if "*" in p)
    return done, running, len(prompts) - done - running


def lab_environment(tmp: Path, solutions: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "UNCLIP_LITE_PROFILE": "smoke",
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        "IPYTHONDIR": str(tmp / "ipython"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("MPLBACKEND", None)
    if not solutions:
        env.pop("UNCLIP_LITE_SOLUTIONS", None)
    for name, value in LAB_SETTINGS.items():
        path = tmp / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    return env


def start_lab(venv: Path, workdir: Path, env: dict, port: int, token: str, log: Path) -> subprocess.Popen:
    lab = venv / "bin" / "jupyter-lab"
    if not lab.exists():
        raise FileNotFoundError(f"{lab} is missing: pip install -e '.[book]' (make setup)")
    cmd = [str(lab), "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={workdir}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for_server(proc: subprocess.Popen, base: str, token: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StepFailed("start jupyter lab", f"the server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}api/status?token={token}", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise StepFailed("start jupyter lab", f"no answer on {base} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop the server we started (its own process group), politely first."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def say(msg: str) -> None:
    print(f"[lab-walkthrough] {msg}", flush=True)


def walk(page, base: str, token: str, run_timeout: float) -> dict:
    """The learner's path; raises StepFailed at the first step that does not work."""
    facts: dict = {}
    step = "open the notebook"
    page.goto(f"{base}lab/tree/{NOTEBOOK}?token={token}", wait_until="domcontentloaded", timeout=120_000)
    try:
        page.locator(".jp-NotebookPanel .jp-Notebook .jp-CodeCell").first.wait_for(timeout=120_000)
    except Exception as e:  # noqa: BLE001
        raise StepFailed(step, f"no notebook appeared ({type(e).__name__})") from e
    say("notebook open")

    step = "wait for the kernel"
    try:
        page.wait_for_function(
            "() => { const s = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');"
            " return s && s.dataset.status === 'idle'; }", timeout=120_000)
    except Exception as e:  # noqa: BLE001
        raise StepFailed(step, "the kernel never reported idle") from e
    state, previous = page.evaluate(CELLS_JS), -1
    for _ in range(30):  # a long notebook renders in batches: wait for the cell count to settle
        if state["n"] == previous:
            break
        previous = state["n"]
        page.wait_for_timeout(1000)
        state = page.evaluate(CELLS_JS)
    say(f"kernel idle, {state['n']} code cells")

    step = "Run ▸ Run All Cells"
    page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
    try:
        page.get_by_role("menuitem", name="Run", exact=True).click(timeout=10_000)
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click(timeout=10_000)
        facts["run_all_via"] = "menu"
    except Exception:  # noqa: BLE001 - the command palette reaches the same command
        page.keyboard.press("Escape")
        page.keyboard.press("Control+Shift+C")
        page.keyboard.type("Run All Cells")
        page.keyboard.press("Enter")
        facts["run_all_via"] = "command palette"
    say(f"Run All Cells ({facts['run_all_via']})")

    step = "wait for every cell to run"
    t0 = time.monotonic()
    deadline = t0 + run_timeout
    started = False
    last = None
    while True:
        state = page.evaluate(CELLS_JS)
        done, running, not_run = run_state(state["prompts"])
        started = started or running > 0 or done > 0
        if (done, running) != last:
            say(f"  {done}/{state['n']} cells run, {running} queued or running")
            last = (done, running)
        if started and running == 0 and state["status"] == "idle":
            break
        if time.monotonic() > deadline:
            raise StepFailed(step, f"after {run_timeout:.0f} s: {done} of {state['n']} cells run, {running} still queued")
        time.sleep(1)
    facts["run_all_seconds"] = round(time.monotonic() - t0, 1)
    facts["code_cells"] = state["n"]
    if not_run:
        first = next(i for i, p in enumerate(state["prompts"]) if not p.strip("[]: ").isdigit())
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        detail = errors.last.inner_text()[-600:] if errors.count() else "no error output found"
        raise StepFailed(step, f"Run All stopped: code cell {first} and {not_run - 1} after it did not run; "
                               f"last error output: {detail}")
    say(f"all {state['n']} code cells ran in {facts['run_all_seconds']} s")

    step = "find the slider"
    interact = page.locator(".jp-OutputArea .widget-interact").filter(has=page.locator(".widget-hslider")).first
    try:
        interact.wait_for(timeout=30_000)
    except Exception as e:  # noqa: BLE001
        n = page.locator(".widget-hslider").count()
        raise StepFailed(step, f"no ipywidgets interact with a slider in any output ({n} sliders on the page)") from e
    interact.scroll_into_view_if_needed()
    handle = interact.locator(".widget-hslider .noUi-handle").first
    try:
        page.wait_for_function("(root) => { const i = root.querySelector('.widget-output img'); return !!i; }",
                               arg=interact.element_handle(), timeout=30_000)
    except Exception as e:  # noqa: BLE001
        raise StepFailed(step, "the slider's output shows no picture before it is moved") from e
    before = page.evaluate(WIDGET_JS, interact.element_handle())
    facts["before"] = {"readout": before["readout"], "picture_bytes": len(before["src"] or "")}
    say(f"slider found: readout {before['readout']}")

    def changed() -> dict | None:
        try:
            page.wait_for_function(
                "([root, r0, s0]) => { const r = root.querySelector('.widget-hslider .widget-readout');"
                " const i = root.querySelector('.widget-output img');"
                " return r && i && r.textContent.trim() !== r0 && i.getAttribute('src') !== s0; }",
                arg=[interact.element_handle(), before["readout"], before["src"]], timeout=60_000)
        except Exception:  # noqa: BLE001
            return None
        page.wait_for_timeout(1500)  # continuous updates: let the last redraw land
        return page.evaluate(WIDGET_JS, interact.element_handle())

    step = "move the slider"
    handle.click()
    for _ in range(2):
        page.keyboard.press("ArrowRight")
    facts["moved_with"] = "keyboard (→ ×2)"
    after = changed()
    if after is None:  # try a drag
        box = handle.bounding_box()
        if box is None:
            raise StepFailed(step, "the slider handle has no box on screen")
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 60, y, steps=8)
        page.mouse.up()
        facts["moved_with"] = "mouse drag (+60 px)"
        after = changed()
    if after is None:
        now = page.evaluate(WIDGET_JS, interact.element_handle())
        if now["readout"] == before["readout"]:
            raise StepFailed(step, f"the readout stayed at {before['readout']} after the keyboard and a drag")
        raise StepFailed("check the output changed",
                         f"the readout went {before['readout']} → {now['readout']} but the picture was not redrawn")
    facts["after"] = {"readout": after["readout"], "picture_bytes": len(after["src"] or "")}
    say(f"moved with the {facts['moved_with']}: readout {before['readout']} → {after['readout']}, picture redrawn")
    interact.scroll_into_view_if_needed()
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    parser.add_argument("--screenshot", type=Path, default=ROOT / "_build" / "lab-walkthrough.png")
    parser.add_argument("--chromium", help="the Chromium binary (default: /usr/bin/chromium or on PATH)")
    parser.add_argument("--run-timeout", type=float, default=900, help="seconds Run All may take")
    parser.add_argument("--solutions", action="store_true", help="run with UNCLIP_LITE_SOLUTIONS=1 (as the book)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (server log, autosaves)")
    args = parser.parse_args(argv)

    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("lab_walkthrough: no Chromium found; install Debian's: apt-get install -y chromium", file=sys.stderr)
        return 2
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("lab_walkthrough: Playwright is missing: pip install -e '.[browser]'", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="lab-walkthrough-"))
    workdir = tmp / "notebooks"
    shutil.copytree(ROOT / "notebooks", workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    env = lab_environment(tmp, args.solutions)
    port, token = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}/"
    log = tmp / "jupyter-lab.log"
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"ok": False, "screenshot": None}
    t0 = time.monotonic()
    try:
        proc = start_lab(args.venv, workdir, env, port, token, log)
    except FileNotFoundError as e:
        print(f"lab_walkthrough: {e}", file=sys.stderr)
        return 2
    say(f"jupyter lab on {base} (pid {proc.pid}), notebooks copied to {workdir}")
    try:
        wait_for_server(proc, base, token, timeout=180)
        say(f"server up after {time.monotonic() - t0:.0f} s")
        with sync_playwright() as pw:
            browser = launch(pw, chromium)
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            external: list[str] = []
            page_errors: list[str] = []

            def route(r):
                if is_local(r.request.url, base):
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort("blockedbyclient")

            page.route("**/*", route)
            page.on("pageerror", lambda err: page_errors.append(str(err)))
            try:
                result["facts"] = walk(page, base, token, args.run_timeout)
                result["ok"] = True
            except StepFailed as e:
                result.update(step=e.step, why=e.why)
            except Exception as e:  # noqa: BLE001 - a Playwright timeout in a step
                result.update(step="browser", why=f"{type(e).__name__}: {e}")
            finally:
                try:
                    page.screenshot(path=str(args.screenshot))
                    result["screenshot"] = str(args.screenshot)
                except Exception as e:  # noqa: BLE001
                    say(f"no screenshot: {e}")
                result["external_requests"] = sorted(set(external))
                result["page_errors"] = page_errors
                browser.close()
    except StepFailed as e:
        result.update(step=e.step, why=e.why)
    finally:
        stop(proc)
        result["seconds"] = round(time.monotonic() - t0, 1)
        if not result["ok"] and log.exists():
            result["server_log_tail"] = log.read_text(errors="replace")[-2000:]
        if args.keep:
            result["tmp"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if result["ok"]:
        say(f"PASS in {result['seconds']} s; screenshot: {result['screenshot']}")
    else:
        say(f"FAIL at step '{result.get('step')}': {result.get('why')}")
        if result.get("server_log_tail"):
            print(result["server_log_tail"], file=sys.stderr)
        if result["screenshot"]:
            say(f"screenshot: {result['screenshot']}")
    if result.get("page_errors"):
        say(f"page errors in JupyterLab: {result['page_errors'][:5]}")
    (args.screenshot.with_suffix(".json")).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
