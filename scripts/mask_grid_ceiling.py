#!/usr/bin/env python3
"""The best mIoU a model whose masks come from an N x N grid can reach on a synthetic split.

Every ground-truth mask is reduced to the grid exactly as the trainer does (triangle filter, >= 0.5),
then brought back to the photo's size in two ways, and compared with the full-resolution truth:
bilinear upsampling of a +1/-1 map (> 0), as photoseg did before the third session, and joint bilateral
upsampling guided by the photo (src/model/upsample.rs, re-implemented here with the same constants:
4 x 4 taps, spatial sigma 1 cell, colour sigma 25 levels, cell colours averaged over each cell). The built-in model decodes at 1/4 of its 128 px input, a
32 x 32 grid: docs/builtin-model.md quotes this script's figures.

    python3 scripts/mask_grid_ceiling.py SYNTH_DIR [SPLIT] [GRID...]     (numpy and Pillow)
"""
import glob
import json
import sys

import numpy as np
from PIL import Image


SIGMA_SPATIAL = 1.0
SIGMA_RANGE = 25.0


def guided(values, photo):
    """Joint bilateral upsampling of a g x g map to the photo's size (photo: H x W x 3 uint8)."""
    g = values.shape[0]
    h, w, _ = photo.shape
    cells = np.zeros((g, g, 3))
    for gy in range(g):
        y0, y1 = gy * h // g, min(max((gy + 1) * h // g, gy * h // g + 1), h)
        for gx in range(g):
            x0, x1 = gx * w // g, min(max((gx + 1) * w // g, gx * w // g + 1), w)
            cells[gy, gx] = np.floor(photo[y0:y1, x0:x1].reshape(-1, 3).mean(0) + 0.5)
    pos_y = (np.arange(h) + 0.5) * g / h - 0.5
    pos_x = (np.arange(w) + 0.5) * g / w - 0.5
    num = np.zeros((h, w))
    den = np.zeros((h, w))
    for ty in range(4):
        qy = np.floor(pos_y).astype(int) - 1 + ty
        wy = np.exp(-((pos_y - qy) ** 2) / (2 * SIGMA_SPATIAL ** 2))
        qy = np.clip(qy, 0, g - 1)
        for tx in range(4):
            qx = np.floor(pos_x).astype(int) - 1 + tx
            wx = np.exp(-((pos_x - qx) ** 2) / (2 * SIGMA_SPATIAL ** 2))
            qx = np.clip(qx, 0, g - 1)
            d2 = ((photo.astype(np.float64) - cells[qy][:, qx]) ** 2).sum(-1)
            wgt = wy[:, None] * wx[None, :] * np.exp(-d2 / (2 * SIGMA_RANGE ** 2))
            num += wgt * values[qy][:, qx]
            den += wgt
    return num / np.maximum(den, 1e-30)


def main():
    root = sys.argv[1]
    split = sys.argv[2] if len(sys.argv) > 2 else "heldout"
    grids = [int(g) for g in sys.argv[3:]] or [32, 64]
    ious = {(g, m): [] for g in grids for m in ("bilinear", "guided")}
    for album in sorted(glob.glob(f"{root}/{split}/album_*")):
        meta = json.load(open(f"{album}/album.json"))
        for e in meta["expressions"]:
            for name, mask in e["positives"].items():
                gt = np.array(Image.open(f"{album}/{mask}").convert("L")) > 127
                photo = np.array(Image.open(f"{album}/{name}").convert("RGB"))
                h, w = gt.shape
                for g in grids:
                    small = Image.fromarray(gt.astype(np.uint8) * 255).resize((g, g), Image.BILINEAR)
                    sign = (np.array(small) >= 128).astype(np.float32) * 2 - 1
                    up = np.array(Image.fromarray(sign, mode="F").resize((w, h), Image.BILINEAR)) > 0
                    prob = (sign + 1) / 2
                    for m, pred in (("bilinear", up), ("guided", guided(prob, photo) > 0.5)):
                        union = (pred | gt).sum()
                        ious[(g, m)].append((pred & gt).sum() / union if union else 1.0)
    for (g, m), v in ious.items():
        print(f"{split}: {len(v)} positives, {g} x {g} grid, {m}: best mIoU {np.mean(v):.3f} (10th percentile {np.percentile(v, 10):.3f})")


if __name__ == "__main__":
    main()
