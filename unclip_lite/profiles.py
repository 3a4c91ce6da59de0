"""One switch for how much compute a chapter spends: ``UNCLIP_LITE_PROFILE``.

- ``smoke``: tests and CI. Seconds per chapter; proves the code runs, not that it learns.
- ``quick`` (default): a learner on a laptop CPU. A few minutes per chapter; heavy models
  come from shipped checkpoints, with a short live training run to watch.
- ``full``: a GPU. The papers' configs, or the largest that fits.

Notebooks read the profile in their first cell (tagged ``parameters`` so papermill can
override it) and pass it here; everything else calls :func:`get_profile`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

PROFILE_NAMES = ("smoke", "quick", "full")
ENV_VAR = "UNCLIP_LITE_PROFILE"


@dataclass(frozen=True)
class Profile:
    name: str

    @property
    def smoke(self) -> bool:
        return self.name == "smoke"

    @property
    def quick(self) -> bool:
        return self.name == "quick"

    @property
    def full(self) -> bool:
        return self.name == "full"

    def pick(self, smoke, quick, full=None):
        """The value for this profile: ``profile.pick(smoke=10, quick=500, full=20_000)``."""
        return {"smoke": smoke, "quick": quick, "full": quick if full is None else full}[self.name]


def get_profile(name: str | None = None) -> Profile:
    """The profile named ``name``, else ``$UNCLIP_LITE_PROFILE``, else ``quick``."""
    name = name or os.environ.get(ENV_VAR) or "quick"
    name = name.strip().lower()
    if name not in PROFILE_NAMES:
        raise ValueError(
            f"unknown profile {name!r} (from {ENV_VAR} or the notebook's parameters cell); "
            f"choose one of {', '.join(PROFILE_NAMES)}"
        )
    return Profile(name)


def chapter_runtime(chapter: str) -> str:
    """One line for a chapter's opening: how long it took under the quick profile in the last
    measured book build, and on what CPU, read from ``notebooks/runtimes.json`` (a manifest
    written by ``tools/record_runtimes.py`` after ``make book``)."""
    import json
    from pathlib import Path

    manifest = Path(__file__).resolve().parents[1] / "notebooks" / "runtimes.json"
    try:
        record = json.loads(manifest.read_text())
        seconds = record["chapters"][chapter]
    except (OSError, ValueError, KeyError):
        return f"run time of {chapter} under the quick profile: not measured yet"
    def took(seconds: float, hardware: str) -> str:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes} min {secs:02d} s on {hardware}"

    # CPUs differ: a build on another machine is quoted too (bf16 autocast is native on some, emulated on others)
    others = [took(other["chapters"][chapter], other.get("hardware", "another CPU"))
              for other in record.get("also_measured", []) if chapter in other.get("chapters", {})]
    return (f"run time under the quick profile: {took(seconds, record.get('hardware', 'a CPU'))} "
            f"(measured in the book build of {record.get('date', '?')})" + "".join(f"; {o}" for o in others))
