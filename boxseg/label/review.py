"""The review page of `boxseg label --review`, and `--apply-review`.

`write_review(OUT)` writes OUT/review/index.html: one static page, everything inline (thumbnails as data: URIs,
masks as run-length codes drawn by the page's own script), no server and no network. It lists the images from
the lowest label quality w up, each with its boxes and masks; a class filter and a quality slider ("w at most")
choose what is shown; a Reject button per mask marks it, and "Download rejected.json" saves
`{"rejected": [annotation ids]}`. Rejections are also kept in the browser's localStorage for that page.

`apply_review(OUT, rejected.json)` marks those annotations invalid in OUT/annotations.json: `boxseg_valid` false,
no `segmentation`, `area` the box's, `boxseg_source` "rejected".

For tests and scripts the page reads its URL fragment: `#class=NAME&wmax=0.5&reject=3,17` sets the filters, then
clicks the Reject buttons of those ids; the resulting JSON is always in `<pre id="rejected-json">`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from boxseg.data.coco import ANNOTATIONS_FILE, CocoDataset, load_json
from boxseg.data.segmentation import segmentation_to_mask
from boxseg.label.store import STATE_DIR, LabelError, dumps, file_sha256
from boxseg.tempfiles import write_atomic

THUMB_SIZE = 256  # longer side of a thumbnail, pixels
DEFAULT_LIMIT = 1000  # images on the page, lowest w first (0: all)


def _thumb_size(h: int, w: int, size: int) -> tuple[int, int]:
    s = min(1.0, size / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def _row_runs(mask: np.ndarray) -> list[int]:
    """Row-major run lengths of a bool mask, starting with a run of zeros (possibly 0 long)."""
    flat = mask.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def _data_uri(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _label_key(a: dict) -> float:
    """Sort key of one label: its w, an invalid one first of all."""
    return float(a.get("boxseg_quality", 1.0)) if a.get("boxseg_valid", True) else -1.0


def review_items(out_dir: str | Path, limit: int = DEFAULT_LIMIT, thumb: int = THUMB_SIZE) -> dict[str, Any]:
    """The page's data: images (lowest w first) with thumbnails, and per label its box and mask on the
    thumbnail, class, w, validity and source."""
    out = Path(out_dir)
    ds = CocoDataset(out, with_masks=False)  # images through OUT/images (a link to, or copy of, the dataset's)
    data = load_json(ds.ann_file)
    names = {c["id"]: c["name"] for c in data["categories"]}
    per_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0) and "boxseg_valid" in a:
            per_image.setdefault(a["image_id"], []).append(a)
    index = {iid: k for k, iid in enumerate(ds.image_ids)}
    order = sorted(per_image, key=lambda iid: (min(_label_key(a) for a in per_image[iid]), iid))
    if limit > 0:
        order = order[:limit]
    items = []
    for iid in order:
        k = index[iid]
        info = ds.image_info(k)
        h, w = info["height"], info["width"]
        th, tw = _thumb_size(h, w, thumb)
        image = np.asarray(Image.fromarray(ds.load_image(k)).resize((tw, th), Image.BILINEAR))
        sx, sy = tw / w, th / h
        anns = []
        for a in sorted(per_image[iid], key=lambda a: (_label_key(a), a["id"])):
            x, y, bw, bh = (float(v) for v in a["bbox"])
            rec = {"id": a["id"], "cat": names.get(a["category_id"], str(a["category_id"])),
                   "w": round(float(a.get("boxseg_quality", 1.0)), 3), "valid": bool(a["boxseg_valid"]),
                   "source": a.get("boxseg_source", ""),
                   "box": [round(x * sx, 2), round(y * sy, 2), round(bw * sx, 2), round(bh * sy, 2)]}
            seg = a.get("segmentation")
            if seg is not None:
                full = segmentation_to_mask(seg, h, w)
                small = np.asarray(Image.fromarray(full.astype(np.uint8) * 255).resize((tw, th), Image.BILINEAR))
                rec["rle"] = _row_runs(small >= 128)
            anns.append(rec)
        items.append({"id": iid, "file": info["file_name"], "src": _data_uri(image), "w": tw, "h": th,
                      "anns": anns})
    classes = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    labelled = sum(len(v) for v in per_image.values())
    return {"items": items, "classes": classes, "images_total": len(per_image), "labels_total": labelled,
            "key": file_sha256(ds.ann_file)[:16], "title": str(out.resolve().name)}


def write_review(out_dir: str | Path, limit: int = DEFAULT_LIMIT, thumb: int = THUMB_SIZE) -> Path:
    """Write OUT/review/index.html (atomically); returns its path."""
    out = Path(out_dir)
    payload = review_items(out, limit, thumb)
    text = (_PAGE.replace("__TITLE__", html.escape(payload["title"]))
            # "</" cannot end the inline JSON early inside the script element
            .replace("__DATA__", json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")))
    path = out / "review" / "index.html"
    write_atomic(path, text)
    return path


def read_rejected(path: str | Path) -> list[int]:
    """Annotation ids from a review download: `{"rejected": [ids]}` or a plain list of ids."""
    data = load_json(Path(path))
    ids = data.get("rejected") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in ids):
        raise LabelError(f"{path}: expected {{\"rejected\": [annotation ids]}} (what the review page downloads) or "
                         f"a list of integer ids")
    return ids


def apply_review(out_dir: str | Path, rejected_file: str | Path) -> dict[str, Any]:
    """Mark the rejected annotations of OUT/annotations.json invalid (atomic rewrite); returns a summary."""
    out = Path(out_dir)
    ann_file = out / ANNOTATIONS_FILE
    if (out / STATE_DIR).is_dir():
        raise LabelError(f"{out} holds an unfinished labelling ({out / STATE_DIR}); finish it with --resume first")
    if not ann_file.is_file():
        raise LabelError(f"{ann_file}: no such file; --apply-review needs the --out folder of a `boxseg label` run")
    ids = read_rejected(rejected_file)
    data = load_json(ann_file)
    by_id = {a.get("id"): a for a in data.get("annotations", []) if isinstance(a, dict)}
    unknown = sorted({i for i in ids if i not in by_id or "boxseg_valid" not in by_id[i]})
    if unknown:
        raise LabelError(f"{rejected_file}: {len(unknown)} id(s) are not labelled annotations of {ann_file}: "
                         f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}; was the review made for this file?")
    changed = 0
    for i in dict.fromkeys(ids):
        a = by_id[i]
        changed += a.get("boxseg_source") != "rejected"
        a.pop("segmentation", None)
        a.update(boxseg_valid=False, boxseg_source="rejected", area=float(a["bbox"][2] * a["bbox"][3]))
    meta = data.setdefault("boxseg_label", {})
    meta["review"] = {"rejected": sorted(set(ids) | set(meta.get("review", {}).get("rejected", [])))}
    write_atomic(ann_file, dumps(data))
    return {"annotations_file": str(ann_file), "rejected": len(set(ids)), "newly_rejected": changed,
            "valid": sum(1 for a in data["annotations"] if a.get("boxseg_valid"))}


_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>BoxSeg label review: __TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 0; background: #f4f4f4; color: #222; }
header { position: sticky; top: 0; z-index: 2; background: #263238; color: #fff; padding: 8px 14px;
         display: flex; flex-wrap: wrap; gap: 18px; align-items: center; }
header h1 { font-size: 16px; margin: 0; }
header select, header button { font: inherit; }
#items { display: flex; flex-wrap: wrap; gap: 12px; padding: 12px; }
.item { background: #fff; border-radius: 6px; box-shadow: 0 1px 3px rgba(0,0,0,.2); padding: 8px; width: 276px; }
.item[hidden] { display: none; }
.view { position: relative; margin: 0 auto; }
.view img, .view canvas { position: absolute; left: 0; top: 0; image-rendering: pixelated; }
.file { font-size: 12px; color: #555; margin: 6px 0 4px; overflow-wrap: anywhere; }
.anns { list-style: none; margin: 0; padding: 0; }
.ann { display: flex; align-items: center; gap: 6px; padding: 2px 0; font-size: 13px; }
.ann[hidden] { display: none; }
.swatch { width: 12px; height: 12px; border-radius: 2px; flex: none; }
.ann .text { flex: 1; }
.ann.rejected .text { text-decoration: line-through; color: #b71c1c; }
.ann.invalid .text { color: #888; }
button.reject { font-size: 12px; padding: 1px 8px; cursor: pointer; }
.ann.rejected button.reject { background: #b71c1c; color: #fff; border-color: #b71c1c; }
#empty { padding: 24px; color: #666; }
</style>
</head>
<body>
<header>
  <h1>Label review: __TITLE__</h1>
  <span id="summary"></span>
  <label>Class <select id="class-filter"><option value="">all</option></select></label>
  <label>w at most <input id="wmax" type="range" min="0" max="1" step="0.01" value="1">
    <output id="wmax-value">1.00</output></label>
  <span>Rejected: <b id="rejected-count">0</b></span>
  <button id="download">Download rejected.json</button>
</header>
<main id="items"></main>
<div id="empty" hidden>Nothing matches the filters.</div>
<pre id="rejected-json" hidden></pre>
<script id="review-data" type="application/json">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("review-data").textContent);
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                "#469990", "#9a6324", "#800000", "#808000", "#000075", "#ffe119"];
const STORE = "boxseg-review:" + DATA.key;
const DISPLAY = 256;
const rejected = new Set();
try { for (const id of JSON.parse(localStorage.getItem(STORE) || "[]")) rejected.add(id); } catch (e) {}
const filter = { cls: "", wmax: 1 };
const cards = [];

function color(cat) { return COLORS[Math.max(0, DATA.classes.indexOf(cat)) % COLORS.length]; }
function rgb(hex) { return [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16)); }
function shown(a) { return (!filter.cls || a.cat === filter.cls) && a.w <= filter.wmax + 1e-9; }

function rejectedJson() { return JSON.stringify({ rejected: [...rejected].sort((a, b) => a - b) }); }

function draw(card) {
  const { item, canvas } = card;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, item.w, item.h);
  const img = ctx.createImageData(item.w, item.h);
  for (const a of item.anns) {
    if (!shown(a) || !a.rle || rejected.has(a.id)) continue;
    const [r, g, b] = rgb(color(a.cat));
    let pos = 0, on = false;
    for (const run of a.rle) {
      if (on) for (let p = pos; p < pos + run; p++) {
        img.data[4 * p] = r; img.data[4 * p + 1] = g; img.data[4 * p + 2] = b; img.data[4 * p + 3] = 120;
      }
      pos += run; on = !on;
    }
  }
  ctx.putImageData(img, 0, 0);
  for (const a of item.anns) {
    if (!shown(a)) continue;
    const gone = rejected.has(a.id);
    ctx.strokeStyle = gone ? "#b71c1c" : color(a.cat);
    ctx.lineWidth = Math.max(1, Math.round(Math.max(item.w, item.h) / 128));
    ctx.setLineDash(gone || !a.valid ? [4, 3] : []);
    ctx.strokeRect(a.box[0], a.box[1], a.box[2], a.box[3]);
  }
}

function update() {
  let visible = 0;
  for (const card of cards) {
    let any = false;
    for (const row of card.rows) {
      const show = shown(row.ann);
      row.el.hidden = !show;
      row.el.classList.toggle("rejected", rejected.has(row.ann.id));
      row.button.textContent = rejected.has(row.ann.id) ? "Rejected" : "Reject";
      any = any || show;
    }
    card.el.hidden = !any;
    visible += any ? 1 : 0;
    if (any) draw(card);
  }
  document.getElementById("empty").hidden = visible > 0;
  document.getElementById("rejected-count").textContent = rejected.size;
  document.getElementById("rejected-json").textContent = rejectedJson();
  document.getElementById("summary").textContent =
    `${visible} of ${cards.length} images shown (${DATA.images_total} labelled images, ${DATA.labels_total} labels)`;
  try { localStorage.setItem(STORE, JSON.stringify([...rejected])); } catch (e) {}
}

function toggle(id) { if (rejected.has(id)) rejected.delete(id); else rejected.add(id); update(); }

function build() {
  const select = document.getElementById("class-filter");
  for (const c of DATA.classes) { const o = document.createElement("option"); o.value = o.textContent = c; select.append(o); }
  const main = document.getElementById("items");
  for (const item of DATA.items) {
    const el = document.createElement("section");
    el.className = "item"; el.dataset.imageId = item.id;
    const view = document.createElement("div");
    // Small images are shown enlarged (pixelated) to the card's width; the canvas keeps thumbnail pixels.
    const zoom = Math.max(1, DISPLAY / Math.max(item.w, item.h));
    const dw = Math.round(item.w * zoom) + "px", dh = Math.round(item.h * zoom) + "px";
    view.className = "view"; view.style.width = dw; view.style.height = dh;
    const img = document.createElement("img");
    img.src = item.src; img.alt = item.file; img.style.width = dw; img.style.height = dh;
    const canvas = document.createElement("canvas");
    canvas.width = item.w; canvas.height = item.h; canvas.style.width = dw; canvas.style.height = dh;
    view.append(img, canvas);
    const file = document.createElement("div");
    file.className = "file"; file.textContent = `${item.file} (image ${item.id})`;
    const list = document.createElement("ul");
    list.className = "anns";
    const rows = [];
    for (const a of item.anns) {
      const li = document.createElement("li");
      li.className = "ann" + (a.valid ? "" : " invalid"); li.dataset.annId = a.id;
      const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = color(a.cat);
      const text = document.createElement("span"); text.className = "text";
      text.textContent = `#${a.id} ${a.cat}  w=${a.w.toFixed(3)}  ${a.valid ? a.source : "invalid (" + a.source + ")"}`;
      const button = document.createElement("button");
      button.className = "reject"; button.dataset.annId = a.id; button.textContent = "Reject";
      button.addEventListener("click", () => toggle(a.id));
      li.append(sw, text, button); list.append(li);
      rows.push({ el: li, ann: a, button });
    }
    el.append(view, file, list);
    main.append(el);
    cards.push({ item, el, canvas, rows });
  }
  select.addEventListener("change", () => { filter.cls = select.value; update(); });
  const slider = document.getElementById("wmax"), out = document.getElementById("wmax-value");
  slider.addEventListener("input", () => { filter.wmax = Number(slider.value); out.textContent = filter.wmax.toFixed(2); update(); });
  document.getElementById("download").addEventListener("click", () => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([rejectedJson() + "\n"], { type: "application/json" }));
    a.download = "rejected.json"; document.body.append(a); a.click(); a.remove();
  });
  // Scripted use: #class=NAME&wmax=0.5&reject=3,17 (tests drive the page through this).
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has("class")) { select.value = params.get("class"); filter.cls = select.value; }
  if (params.has("wmax")) { slider.value = params.get("wmax"); filter.wmax = Number(slider.value); out.textContent = filter.wmax.toFixed(2); }
  update();
  for (const id of (params.get("reject") || "").split(",").filter(Boolean)) {
    const b = document.querySelector(`button.reject[data-ann-id="${Number(id)}"]`);
    if (b) b.click();
  }
}
build();
</script>
</body>
</html>
"""
