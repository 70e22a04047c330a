"""Large test images made of MNIST digits, and how well a heatmap finds the digits in them (numpy only).

A composite is a canvas divided into square cells; each cell holds a digit
with probability `fill`, pasted at a random offset inside the cell, so
digits never overlap and every placement (image, row, label, top, left) is
known.  Everything is drawn from one seeded generator per image, so the same
seed gives the same composites on any machine.

A fully-convolutional net turns a canvas into one probability map per class:
output position (i, j) is the classifier applied to the digit-sized window
whose top-left corner is (i*stride, j*stride).  The scores here compare those
maps with the placements:

  recall      placed digits whose own class exceeds the threshold at a window
              centred within `tolerance` pixels of the digit's centre
  precision   above-threshold (window, class) hits that lie within
              `tolerance` of a placed digit of that class
  peak_rate   placed digits whose own class is the strongest response of any
              class over every window overlapping the digit by at least half
              (window centre within half a digit of the digit's centre), and
              that strongest response sits within `tolerance` of the centre
              and above the threshold: "the digit's own class peaks at its
              location"
  area_rate   placed digits whose own class is the top class in more than
              half of the windows centred within a quarter of a digit (7 px
              for 28-pixel digits, the seeds' shift range) of the digit's
              centre: the map names the digit all over its location, not only
              where a window happens to line up with it exactly
  area_accuracy  the same over windows: of all windows centred within a
              quarter digit of a digit, the share whose top class is its class
  background_hit_rate  windows that overlap no digit at all, yet some digit
              class exceeds the threshold

A model with a background class (its last channel, `background=True`) may
name it anywhere: a window whose top class is background names no digit, and
only the digit classes make hits.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import numpy as np


@dataclass(frozen=True)
class Placement:
    image: int   # composite index
    row: int     # index of the digit in the source split (id order)
    label: int
    top: int
    left: int


def compose(digits: np.ndarray, labels: np.ndarray, count: int, canvas: int, cell: int, fill: float, seed: int):
    """`count` canvases (N, canvas, canvas, C) uint8 and their placements."""
    n, h, w, c = digits.shape
    if cell < max(h, w):
        raise ValueError(f"cell {cell} is smaller than a digit ({h}x{w})")
    cells = canvas // cell
    if cells < 1:
        raise ValueError(f"canvas {canvas} holds no cell of {cell} pixels")
    images = np.zeros((count, canvas, canvas, c), np.uint8)
    placements: List[Placement] = []
    for k in range(count):
        rng = np.random.default_rng([seed, k])
        occupied = rng.random((cells, cells)) < fill
        if not occupied.any():
            occupied[rng.integers(cells), rng.integers(cells)] = True
        for gy, gx in zip(*np.nonzero(occupied)):
            row = int(rng.integers(n))
            top = int(gy * cell + rng.integers(0, cell - h + 1))
            left = int(gx * cell + rng.integers(0, cell - w + 1))
            images[k, top:top + h, left:left + w] = digits[row]
            placements.append(Placement(k, row, int(labels[row]), top, left))
    return images, placements


def window_geometry(canvas: int, window: int, heat_size: int) -> int:
    """The stride between output windows, from the canvas and output sizes."""
    if heat_size == 1:
        return 1
    stride, rest = divmod(canvas - window, heat_size - 1)
    if rest:
        raise ValueError(f"a {heat_size}-wide map does not tile a {canvas}-pixel canvas with {window}-pixel windows")
    return stride


def localisation_scores(heatmaps: np.ndarray, placements: List[Placement], window: int, stride: int,
                        threshold: float, tolerance: int, background: bool = False) -> dict:
    """Scores of heatmaps (N, H', W', K) against the placements (see the module docstring)."""
    top_class = heatmaps.argmax(axis=-1)   # with a background class, its index is no digit's label
    if background:
        heatmaps = heatmaps[..., :-1]
    _, hh, hw, k = heatmaps.shape
    centres_y = np.arange(hh) * stride + window / 2.0
    centres_x = np.arange(hw) * stride + window / 2.0
    true_hits = np.zeros(heatmaps.shape, bool)   # windows within tolerance of a digit of that class
    touches_digit = np.zeros(heatmaps.shape[:3], bool)
    quarter = window / 4.0
    found = peaked = area_named = area_windows = area_right = 0
    for p in placements:
        cy, cx = p.top + window / 2.0, p.left + window / 2.0
        near_y = np.abs(centres_y - cy) <= tolerance
        near_x = np.abs(centres_x - cx) <= tolerance
        over_y = np.abs(centres_y - cy) <= window / 2.0
        over_x = np.abs(centres_x - cx) <= window / 2.0
        heat = heatmaps[p.image]
        true_hits[p.image][np.ix_(near_y, near_x, [p.label])] = True
        own_near = heat[np.ix_(near_y, near_x, [p.label])].max() if near_y.any() and near_x.any() else 0.0
        found += own_near > threshold
        strongest = heat[np.ix_(over_y, over_x)].max()
        peaked += own_near > threshold and own_near >= strongest - 1e-6
        in_quarter = np.ix_(np.abs(centres_y - cy) <= quarter, np.abs(centres_x - cx) <= quarter)
        right = top_class[p.image][in_quarter] == p.label
        area_windows += right.size
        area_right += int(right.sum())
        area_named += right.size > 0 and right.mean() > 0.5
        touches_digit[p.image][np.ix_(np.abs(centres_y - cy) < window, np.abs(centres_x - cx) < window)] = True
    hits = heatmaps > threshold
    total_hits = int(hits.sum())
    placed = len(placements)
    background = ~touches_digit
    return {
        "digits": placed,
        "recall": found / placed if placed else 0.0,
        "peak_rate": peaked / placed if placed else 0.0,
        "area_rate": area_named / placed if placed else 0.0,
        "area_accuracy": area_right / area_windows if area_windows else 0.0,
        "background_hit_rate": float(hits.any(axis=-1)[background].mean()) if background.any() else 0.0,
        "precision": float((hits & true_hits).sum() / total_hits) if total_hits else 0.0,
        "hits": total_hits,
        "false_hits_per_image": float((hits & ~true_hits).sum() / len(heatmaps)),
        "threshold": threshold, "tolerance": tolerance, "stride": stride, "window": window,
    }


def upsample(heat: np.ndarray, canvas: int, window: int, stride: int) -> np.ndarray:
    """A (H', W') map drawn on the canvas: each window's value over the stride-sized square at its centre."""
    out = np.zeros((canvas, canvas), heat.dtype)
    block = np.kron(heat, np.ones((stride, stride), heat.dtype))
    off = window // 2 - stride // 2
    h = min(block.shape[0], canvas - off)
    w = min(block.shape[1], canvas - off)
    out[off:off + h, off:off + w] = block[:h, :w]
    return out


def write_heatmap_pngs(out_dir: str, name: str, image: np.ndarray, heat: np.ndarray, window: int, stride: int,
                       threshold: float, class_names: list) -> List[str]:
    """<name>.png (the composite) and <name>_class<k>.png: the composite dimmed, red where class k > threshold."""
    from PIL import Image
    os.makedirs(out_dir, exist_ok=True)
    canvas = image.shape[0]
    grey = image[..., 0] if image.shape[-1] == 1 else image.mean(axis=-1).astype(np.uint8)
    paths = [os.path.join(out_dir, f"{name}.png")]
    Image.fromarray(grey).save(paths[0])
    for k in range(heat.shape[-1]):
        mask = upsample(heat[..., k], canvas, window, stride) > threshold
        rgb = np.stack([grey // 3] * 3, axis=-1)
        rgb[mask] = (255, 40, 40)
        label = str(class_names[k]).replace(os.sep, "_") if k < len(class_names) else str(k)
        path = os.path.join(out_dir, f"{name}_class{k}_{label}.png")
        Image.fromarray(rgb).save(path)
        paths.append(path)
    return paths
