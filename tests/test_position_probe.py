"""tools/position_probe.py: the readings of chapter 05 §8's diagnosis, on the shipped GLIDEs.

glide-shapes-tiny ignores position (its x_0 estimate does not move with the named corner);
glide-shapes-tiny-positions moves it both ways, and its position maps use x as well as y."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import position_probe  # noqa: E402

pytestmark = pytest.mark.slow  # samples the shipped checkpoints


def test_the_probe_tells_the_model_that_places_from_the_one_that_does_not(capsys):
    fixed = position_probe.probe(position_probe.load("glide-shapes-tiny-positions", ""), steps=5)
    c = fixed["x0_centroid_t900"]
    assert c["top right"][0] - c["top left"][0] > 3 and c["bottom left"][1] - c["top left"][1] > 3, c
    assert fixed["map_column_norms"]["x"] > 0.3 and fixed["output_cos"]["top left vs top right"] < 0.5, fixed
    assert sum(map(sum, fixed["confusion"])) == 40 and fixed["accuracy"] >= 0.6, fixed

    base = position_probe.probe(position_probe.load("glide-shapes-tiny", ""), steps=2)
    c = base["x0_centroid_t900"]
    assert abs(c["top right"][0] - c["top left"][0]) < 1.5, c  # the named corner barely moves it
    assert base["map_column_norms"] == {} and base["output_cos"]["top left vs top right"] > 0.9, base

    position_probe.main(["glide-shapes-tiny-positions", "--steps", "1"])
    assert '"confusion"' in capsys.readouterr().out
