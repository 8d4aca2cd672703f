"""The fully resolved config of every shipped preset, bare and with the ``synthetic_cpu`` overlay, is pinned.

tests/train/data/resolved_presets.json holds the dataclass defaults (every key, flattened to ``a.b.c``) and, per
``preset+overlay``, only the keys whose resolved value differs from them. A change to a default, a preset or the
loader that moves any effective value fails here, naming the key. Values are compared as their JSON text, so an
int that became a float (which would also change `boxseg bench ablation`'s run fingerprints) is a difference too.

After an intended change: ``python tests/train/test_config_presets.py`` rewrites the file; review its diff.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from boxseg.train.config import TrainConfig, available_presets, config_to_dict, load_config

DATA = Path(__file__).with_name("data") / "resolved_presets.json"
PRESETS = ("boxinst", "boxinst_pc", "boxseg", "boxteacher", "condinst", "sim", "sim_pc", "sim_pc_qam")
OVERLAYS = (None, "synthetic_cpu")


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1.0}}`` -> ``{"a.b": "1.0"}`` (values as JSON text)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v)
    return out


def resolved(preset: str, overlay: str | None) -> dict[str, str]:
    return flat(config_to_dict(load_config(preset, overlay)))


def snapshot() -> dict[str, Any]:
    defaults = flat(config_to_dict(TrainConfig()))
    diffs = {}
    for preset in PRESETS:
        for overlay in OVERLAYS:
            got = resolved(preset, overlay)
            diffs[f"{preset}+{overlay}"] = {k: v for k, v in got.items() if defaults.get(k) != v}
    return {"defaults": defaults, "presets": diffs}


@pytest.fixture(scope="module")
def pinned() -> dict[str, Any]:
    return json.loads(DATA.read_text())


def test_the_shipped_presets_are_the_pinned_ones() -> None:
    assert set(PRESETS) == set(available_presets())


def test_defaults_are_pinned(pinned: dict[str, Any]) -> None:
    assert flat(config_to_dict(TrainConfig())) == pinned["defaults"]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("preset", PRESETS)
def test_resolved_preset_is_pinned(pinned: dict[str, Any], preset: str, overlay: str | None) -> None:
    expected = {**pinned["defaults"], **pinned["presets"][f"{preset}+{overlay}"]}
    got = resolved(preset, overlay)
    changed = {k: (expected.get(k), got.get(k)) for k in expected.keys() | got.keys() if expected.get(k) != got.get(k)}
    assert not changed, f"{preset} + {overlay}: (pinned, now) per key: {changed}"


if __name__ == "__main__":
    DATA.parent.mkdir(exist_ok=True)
    DATA.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {DATA}", file=sys.stderr)
