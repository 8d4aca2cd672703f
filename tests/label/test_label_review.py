"""The review page in a real headless browser (Chromium from the system packages), and --apply-review.

The page is driven through its URL fragment (`#class=NAME&wmax=W&reject=ID,...`: filters, then clicks on the
Reject buttons of those ids) and read back with `--dump-dom`; `<pre id="rejected-json">` holds what "Download
rejected.json" saves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from boxseg.cli import main


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


BROWSER = _browser()
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no headless browser: install Chromium "
                                   "(apt-get install chromium) to test the review page")


def _chromium(tmp: Path, url: str, *extra: str) -> str:
    args = [BROWSER, "--headless", "--disable-gpu", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=5000", *extra, url]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    r = subprocess.run(args, check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, bool]] = []  # (image id, hidden)
        self.rejected_json = ""
        self._in_pre = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and "item" in (a.get("class") or "").split():
            self.items.append((a.get("data-image-id") or "", "hidden" in a))
        self._in_pre = tag == "pre" and a.get("id") == "rejected-json"

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data: str) -> None:
        if self._in_pre:
            self.rejected_json += data


def _dom(tmp: Path, page: Path, fragment: str = "") -> _Page:
    p = _Page()
    p.feed(_chromium(tmp, page.resolve().as_uri() + (f"#{fragment}" if fragment else ""), "--dump-dom"))
    return p


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory, label_data: Path, checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("review") / "out"
    r = CliRunner().invoke(main, ["label", "--no-progress", "--checkpoint", str(checkpoint), "--data",
                                  str(label_data), "--out", str(out), "--review", "--fallback", "box"])
    assert r.exit_code == 0, r.output
    return out


def test_review_page_is_one_static_file(reviewed: Path):
    page = reviewed / "review" / "index.html"
    text = page.read_text()
    assert sorted(p.name for p in page.parent.iterdir()) == ["index.html"]
    # no network: every image inline, no external script, style or link
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert text.count('"src":"data:image/jpeg;base64,') == 6


@needs_browser
def test_review_page_in_chromium(reviewed: Path, tmp_path: Path):
    page = reviewed / "review" / "index.html"
    anns = [a for a in json.loads((reviewed / "annotations.json").read_text())["annotations"]]
    images = {a["image_id"] for a in anns}

    dom = _dom(tmp_path, page)
    assert len(dom.items) == len(images) and not any(hidden for _, hidden in dom.items)
    assert json.loads(dom.rejected_json) == {"rejected": []}
    # sorted from the lowest w up (an invalid label counts lowest)
    key = {iid: min(a["boxseg_quality"] if a["boxseg_valid"] else -1.0 for a in anns if a["image_id"] == iid)
           for iid in images}
    shown = [int(i) for i, _ in dom.items]
    assert [key[i] for i in shown] == sorted(key[i] for i in shown)

    # filters, then the Reject buttons of three labels (one clicked twice: rejected, then restored)
    names = {c["id"]: c["name"] for c in json.loads((reviewed / "annotations.json").read_text())["categories"]}
    cls = names[anns[0]["category_id"]]
    ids = [anns[0]["id"], anns[1]["id"], anns[2]["id"]]
    dom = _dom(tmp_path, page, f"class={cls}&reject={ids[0]},{ids[1]},{ids[2]},{ids[2]}")
    with_cls = {a["image_id"] for a in anns if names[a["category_id"]] == cls}
    assert {int(i) for i, hidden in dom.items if not hidden} == with_cls
    assert json.loads(dom.rejected_json) == {"rejected": sorted(ids[:2])}
    dom = _dom(tmp_path, page, "wmax=0")
    low = {a["image_id"] for a in anns if a["boxseg_quality"] <= 0}
    assert {int(i) for i, hidden in dom.items if not hidden} == low

    shot = tmp_path / "review.png"
    _chromium(tmp_path, page.resolve().as_uri() + f"#reject={ids[0]}", f"--screenshot={shot}",
              "--window-size=1200,900", "--hide-scrollbars")
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (900, 1200)
    assert (np.abs(img - np.array([38, 50, 56])).sum(-1) < 6).mean() > 0.03  # the header bar
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 500  # thumbnails, masks and text, not a blank page
    assert (img == np.array([183, 28, 28])).all(-1).sum() > 50  # the pressed Reject button's red


def test_apply_review_marks_the_rejected_labels_invalid(reviewed: Path, tmp_path: Path):
    out = tmp_path / "out"
    shutil.copytree(reviewed, out, symlinks=True)
    before = {a["id"]: a for a in json.loads((out / "annotations.json").read_text())["annotations"]}
    valid = [i for i, a in before.items() if a["boxseg_valid"]]
    rejected = tmp_path / "rejected.json"
    rejected.write_text(json.dumps({"rejected": valid[:2]}))
    r = CliRunner().invoke(main, ["label", "--out", str(out), "--apply-review", str(rejected), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["review_applied"]["rejected"] == 2
    after = {a["id"]: a for a in json.loads((out / "annotations.json").read_text())["annotations"]}
    assert list(after) == list(before)
    for i, a in after.items():
        if i in valid[:2]:
            assert not a["boxseg_valid"] and "segmentation" not in a and a["boxseg_source"] == "rejected"
            assert a["area"] == a["bbox"][2] * a["bbox"][3]
        else:
            assert a == before[i]
    from boxseg.data.coco import CocoDataset

    ds = CocoDataset(out, with_masks=True)  # still a training set: the rejected boxes stay, without masks
    _, ok = zip(*(ds.label_weights(k) for k in range(len(ds))))
    assert int(np.concatenate(ok).sum()) == len(valid) - 2

    rejected.write_text(json.dumps({"rejected": [123456]}))
    r = CliRunner().invoke(main, ["label", "--out", str(out), "--apply-review", str(rejected)])
    assert r.exit_code == 1 and "123456" in r.output
    rejected.write_text(json.dumps({"rejected": ["3"]}))
    r = CliRunner().invoke(main, ["label", "--out", str(out), "--apply-review", str(rejected)])
    assert r.exit_code == 1 and "integer ids" in r.output
