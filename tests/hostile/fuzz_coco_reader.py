"""Hypothesis fuzzing of the COCO reader: random JSON mutations of a valid dataset file must give either the reader's
own DataError (naming the file) or a correct load whose masks decode and whose evaluation runs - never another
exception, a crash or a hang.

Run as a script in a child process with a memory limit and a timeout (tests/hostile/test_hostile_fuzz.py), since
a regression here means pycocotools allocating without bound or looping forever:

    python tests/hostile/fuzz_coco_reader.py --examples 150
Prints one JSON line {"examples", "errors", "loads"} on success; a failing example is printed by Hypothesis.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_helpers import valid_coco

from boxseg.data.coco import CocoDataset
from boxseg.data.errors import DataError

BASE = valid_coco()


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in the document: dict keys and list indices, recursively."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


PATHS = [p for p in _paths(BASE) if p]
# Counts strings cut to length 200 at most, so a long RLE mutation stays cheap to write.
numbers = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 1, 2**31, 2**63, 1e12, -1e12, 0.5]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12),
                    st.sampled_from(["garbage!!~~", "", "0`", "05", "../x.png", "/etc/hostname", "a.png", "PPYo1"]))
polygons = st.lists(st.lists(numbers, max_size=10), max_size=3)
rles = st.fixed_dictionaries({"size": st.one_of(st.lists(st.integers(-2, 40), max_size=3), scalars),
                              "counts": st.one_of(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                                                          max_size=40),
                                                  st.lists(st.integers(-5, 800), max_size=6), scalars)})
values = st.one_of(scalars, polygons, rles, st.lists(scalars, max_size=4),
                   st.dictionaries(st.sampled_from(["id", "size", "counts", "bbox", "x"]), scalars, max_size=3))


@st.composite
def mutated(draw: st.DrawFn) -> dict:
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            last = path[-1]
            if not isinstance(parent, (dict, list)):
                continue  # an earlier mutation replaced a container on this path
            parent[last]
        except (KeyError, IndexError, TypeError):
            continue
        op = draw(st.sampled_from(["nudge", "nudge", "replace", "replace", "delete", "duplicate"]))
        current = parent[last]
        if op == "nudge" and isinstance(current, (int, float)) and not isinstance(current, bool):
            # A plausible value: boxes and polygon points moved within and around the image, ids and sizes
            # changed, which the reader must either accept correctly or reject clearly.
            parent[last] = draw(st.one_of(st.integers(-40, 80), st.floats(-40, 80)))
        elif op in ("nudge", "replace"):
            parent[last] = draw(values)
        elif op == "delete":
            del parent[last]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        else:
            parent[last] = [parent[last], parent[last]]
    return doc


def check_one(doc: dict, folder: Path, stats: dict[str, int]) -> None:
    from boxseg.eval.baselines import baseline_results
    from boxseg.eval.coco_eval import evaluate, load_gt

    path = folder / "annotations.json"
    path.write_text(json.dumps(doc))
    try:
        ds = CocoDataset(path, with_masks=True)
    except DataError as exc:
        assert str(path) in str(exc), f"the error does not name the file: {exc}"
        stats["errors"] += 1
        return
    # A correct load: finite boxes inside their image, masks that decode to the image's size.
    for i in range(len(ds)):
        info = ds.image_info(i)
        boxes, classes = ds.targets(i)
        assert all(math.isfinite(v) for v in boxes.reshape(-1))
        assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
        assert (boxes[:, [0, 2]] <= info["width"]).all() and (boxes[:, [1, 3]] <= info["height"]).all()
        assert ((classes >= 0) & (classes < len(ds.class_names))).all()
        masks = ds.load_masks(i)
        assert masks.shape == (len(boxes), info["height"], info["width"])
    # And evaluation of the same file runs (pycocotools' IoU is where a garbage RLE used to loop forever).
    gt = load_gt(path)
    metrics = evaluate(gt, baseline_results(gt, "box-fill"))
    assert set(metrics) == {"segm", "bbox"}
    stats["loads"] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=150)
    args = parser.parse_args(argv)
    stats = {"examples": 0, "errors": 0, "loads": 0}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        # derandomize: the same examples on every machine and run; deadline None: no clocks.
        @settings(max_examples=args.examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(doc=mutated())
        def fuzz(doc: dict) -> None:
            stats["examples"] += 1
            check_one(doc, folder, stats)

        fuzz()
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
