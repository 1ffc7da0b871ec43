#!/usr/bin/env python3
"""The best mIoU a model whose masks come from an N x N grid can reach on a synthetic split.

Every ground-truth mask is reduced to the grid exactly as the trainer does (triangle filter, >= 0.5),
then brought back to the photo's size as photoseg does (bilinear upsampling of a +1/-1 map, > 0), and
compared with the full-resolution truth. The built-in model decodes at 1/4 of its 128 px input, a
32 x 32 grid: docs/builtin-model.md quotes this script's figures.

    python3 scripts/mask_grid_ceiling.py SYNTH_DIR [SPLIT] [GRID...]     (numpy and Pillow)
"""
import glob
import json
import sys

import numpy as np
from PIL import Image


def main():
    root = sys.argv[1]
    split = sys.argv[2] if len(sys.argv) > 2 else "heldout"
    grids = [int(g) for g in sys.argv[3:]] or [32, 64]
    ious = {g: [] for g in grids}
    for album in sorted(glob.glob(f"{root}/{split}/album_*")):
        meta = json.load(open(f"{album}/album.json"))
        for e in meta["expressions"]:
            for mask in e["positives"].values():
                gt = np.array(Image.open(f"{album}/{mask}").convert("L")) > 127
                h, w = gt.shape
                for g in grids:
                    small = Image.fromarray(gt.astype(np.uint8) * 255).resize((g, g), Image.BILINEAR)
                    sign = (np.array(small) >= 128).astype(np.float32) * 2 - 1
                    up = np.array(Image.fromarray(sign, mode="F").resize((w, h), Image.BILINEAR)) > 0
                    union = (up | gt).sum()
                    ious[g].append((up & gt).sum() / union if union else 1.0)
    for g, v in ious.items():
        print(f"{split}: {len(v)} positives, {g} x {g} grid: best mIoU {np.mean(v):.3f} (10th percentile {np.percentile(v, 10):.3f})")


if __name__ == "__main__":
    main()
