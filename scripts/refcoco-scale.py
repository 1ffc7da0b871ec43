#!/usr/bin/env python3
"""Write a RefCOCO-sized data set in the refer toolkit's layout, to measure what training on it costs in
memory (docs/training.md, "Memory"). Standard library only; deterministic (random.Random(SEED)).

    python3 scripts/refcoco-scale.py OUT

OUT/refs(unc).p       50,000 refs with 142,000 sentences (protocol 2, as the toolkit's pickles), split as
                      RefCOCO's: train 42,404 refs / 120,624 sentences, val 3,811 / 10,834, testA 1,975 /
                      5,657, testB 1,810 / 5,095
OUT/instances.json    19,994 images of 640 x 480 (COCO's usual size) with 7 to 8 annotations each (150,000
                      in all), polygons of 12 to 40 vertices, 80 categories
OUT/images/           one symbolic link a photo to the nine photos of tests/fixtures/data/refcoco/images
                      (40 x 30 JPEGs: decoding them is cheaper than COCO's photos; the index, masks
                      included, is full size)

About a quarter of the sentences come from a small set of templates ("man on left", "red car"...), so that
sentences repeat across photos and form G-RefC groups; the rest are unique.
"""
import json
import math
import os
import pickle
import random
import sys

SEED = 142
W, H = 640, 480
# RefCOCO (unc): (split, photos, refs, sentences)
SPLITS = [("train", 16994, 42404, 120624), ("val", 1500, 3811, 10834), ("testA", 750, 1975, 5657),
          ("testB", 750, 1810, 5095)]
CATEGORIES = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
              "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
              "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
              "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
              "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
              "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
              "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
              "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
              "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
              "teddy bear", "hair drier", "toothbrush"]
WHERE = ["left", "right", "middle", "on left", "on right", "in front", "in back", "top", "bottom", "far left",
         "far right", "closest", "center"]
LOOKS = ["red", "white", "black", "blue", "green", "big", "small", "tall", "striped", "brown"]


def polygon(rng):
    cx, cy = rng.uniform(40, W - 40), rng.uniform(40, H - 40)
    r = rng.uniform(10, 120)
    n = rng.randint(12, 40)
    pts = []
    for k in range(n):
        a = 2 * math.pi * k / n
        rr = r * rng.uniform(0.6, 1.0)
        pts += [round(min(max(cx + rr * math.cos(a), 0), W - 1), 2), round(min(max(cy + rr * math.sin(a), 0), H - 1), 2)]
    return [pts]


def sentence(rng, category):
    if rng.random() < 0.25:
        return rng.choice([f"{category} {rng.choice(WHERE)}", f"{rng.choice(LOOKS)} {category}", rng.choice(WHERE)])
    words = [rng.choice(LOOKS), category, rng.choice(WHERE), "next to the", rng.choice(CATEGORIES), str(rng.randint(0, 10**6))]
    return " ".join(words)


def main():
    out = sys.argv[1]
    rng = random.Random(SEED)
    here = os.path.dirname(os.path.abspath(__file__))
    fixture = os.path.join(here, "..", "tests", "fixtures", "data", "refcoco", "images")
    sources = sorted(os.path.abspath(os.path.join(fixture, f)) for f in os.listdir(fixture))
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    images, annotations, refs = [], [], []
    image_id, ann_id, ref_id, sent_id = 1, 1, 1, 1
    for split, n_photos, n_refs, n_sents in SPLITS:
        split_anns = []
        for _ in range(n_photos):
            name = f"COCO_train2014_{image_id:012d}.jpg"
            link = os.path.join(out, "images", name)
            if not os.path.lexists(link):
                os.symlink(sources[image_id % len(sources)], link)
            images.append({"id": image_id, "file_name": name, "height": H, "width": W})
            for _ in range(rng.choice([7, 8])):
                cat = rng.randrange(len(CATEGORIES)) + 1
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat,
                                    "segmentation": polygon(rng), "iscrowd": 0, "area": 0.0, "bbox": [0, 0, 0, 0]})
                split_anns.append((ann_id, image_id, cat))
                ann_id += 1
            image_id += 1
        chosen = rng.sample(split_anns, n_refs)
        # n_sents sentences over n_refs refs: every ref has at least one.
        counts = [1] * n_refs
        for _ in range(n_sents - n_refs):
            counts[rng.randrange(n_refs)] += 1
        for (a, img, cat), k in zip(chosen, counts):
            sents = []
            for _ in range(k):
                s = sentence(rng, CATEGORIES[cat - 1])
                sents.append({"sent": s, "raw": s, "tokens": s.split(), "sent_id": sent_id})
                sent_id += 1
            refs.append({"ref_id": ref_id, "ann_id": a, "image_id": img, "category_id": cat, "split": split,
                         "sentences": sents, "sent_ids": [x["sent_id"] for x in sents],
                         "file_name": f"COCO_train2014_{img:012d}_{a}.jpg"})
            ref_id += 1
    with open(os.path.join(out, "refs(unc).p"), "wb") as f:
        pickle.dump(refs, f, protocol=2)
    cats = [{"id": i + 1, "name": c, "supercategory": c} for i, c in enumerate(CATEGORIES)]
    with open(os.path.join(out, "instances.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": cats}, f)
    print(f"{len(images)} images, {len(annotations)} annotations, {len(refs)} refs, {sent_id - 1} sentences in {out}")


if __name__ == "__main__":
    main()
