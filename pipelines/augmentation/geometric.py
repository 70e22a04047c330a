"""Geometric ops: rotate, rotate90, shift, shear, zoom, crop, flips and skew, each a per-image 3x3
output->input matrix, and elastic, a displacement field added to the sampling grid.

Pipeline composes them into one transform per image and resamples once (pipelines.augmentation.resample).
Per-image trigonometry uses Python's math (libm) one value at a time rather than numpy's SIMD
kernels, so no value depends on its position in a batch.
"""
from __future__ import annotations

import math

import numpy as np

from pipelines.augmentation.draws import uniform
from pipelines.augmentation.params import Op, Param
from pipelines.augmentation.resample import _PAD, _buffer, _cv2, _grid_cells, _row_weights


def _eye(n):
    return np.broadcast_to(np.eye(3), (n, 3, 3)).copy()


def _centred(m2: np.ndarray, h: int, w: int) -> np.ndarray:
    """Embed per-image 2x2 linear maps (N,2,2) about the image centre as output->input matrices."""
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    m = _eye(len(m2))
    m[:, :2, :2] = m2
    m[:, 0, 2] = cx - (m2[:, 0, 0] * cx + m2[:, 0, 1] * cy)
    m[:, 1, 2] = cy - (m2[:, 1, 0] * cx + m2[:, 1, 1] * cy)
    return m


def _libm(fn, values: np.ndarray) -> np.ndarray:
    """fn (a math function) of every value, through libm one value at a time (see the module docstring)."""
    return np.fromiter(map(fn, values.tolist()), np.float64, len(values))


def _radians(angles_deg: np.ndarray) -> np.ndarray:
    return angles_deg * _DEG   # one IEEE multiply each, exactly what math.radians does


_DEG = math.pi / 180.0


def _cos_sin(angles_deg: np.ndarray):
    rad = _radians(angles_deg)
    return _libm(math.cos, rad), _libm(math.sin, rad)


class Rotate(Op):
    name, doc = "rotate", "rotate by an angle drawn from degrees (positive: counter-clockwise), corners filled black"
    params = {"degrees": Param("range", (-25.0, 25.0), -360, 360)}

    def draw(self, keys, h, w):
        return {"degrees": self.between(keys, 1, self.values["degrees"])}

    def matrix(self, d, h, w):
        c, s = _cos_sin(d["degrees"])
        return _centred(np.stack([np.stack([c, -s], 1), np.stack([s, c], 1)], 1), h, w)


class Rotate90(Op):
    name, doc = "rotate90", "rotate by one of angles (multiples of 90, exact; non-square images keep their canvas)"
    params = {"angles": Param("angles", (90, 180, 270))}

    def draw(self, keys, h, w):
        angles = np.array(self.values["angles"])
        pick = np.minimum((self.u(keys, 1) * len(angles)).astype(np.int64), len(angles) - 1)
        return {"degrees": angles[pick]}

    def matrix(self, d, h, w):
        quarter = (d["degrees"] // 90) % 4
        c = np.array([1, 0, -1, 0], np.float64)[quarter]
        s = np.array([0, 1, 0, -1], np.float64)[quarter]
        return _centred(np.stack([np.stack([c, -s], 1), np.stack([s, c], 1)], 1), h, w)


class Shift(Op):
    name, doc = "shift", "translate by fractions of width (x) and height (y): the seeds' shifted digits"
    params = {"x": Param("range", (-0.25, 0.25), -1, 1), "y": Param("range", (-0.25, 0.25), -1, 1)}

    def draw(self, keys, h, w):
        return {"x": self.between(keys, 1, self.values["x"]), "y": self.between(keys, 2, self.values["y"])}

    def matrix(self, d, h, w):
        m = _eye(len(d["x"]))
        m[:, 0, 2] = -d["x"] * w
        m[:, 1, 2] = -d["y"] * h
        return m


class Shear(Op):
    name, doc = "shear", "shear along x and y by angles drawn from x_degrees / y_degrees"
    params = {"x_degrees": Param("range", (-10.0, 10.0), -60, 60), "y_degrees": Param("range", (0.0, 0.0), -60, 60)}

    def draw(self, keys, h, w):
        return {"x_degrees": self.between(keys, 1, self.values["x_degrees"]),
                "y_degrees": self.between(keys, 2, self.values["y_degrees"])}

    def matrix(self, d, h, w):
        tx = _libm(math.tan, _radians(d["x_degrees"]))
        ty = _libm(math.tan, _radians(d["y_degrees"]))
        one = np.ones_like(tx)
        # forward (x + tx*y, ty*x + y); the sampler needs its inverse
        det = one - tx * ty
        return _centred(np.stack([np.stack([one / det, -tx / det], 1), np.stack([-ty / det, one / det], 1)], 1), h, w)


class Zoom(Op):
    name, doc = "zoom", "scale about the centre by a factor drawn from factor (>1 zooms in)"
    params = {"factor": Param("range", (0.9, 1.1), 0.05, 20)}

    def draw(self, keys, h, w):
        return {"factor": self.between(keys, 1, self.values["factor"])}

    def matrix(self, d, h, w):
        inv = 1.0 / d["factor"]
        zero = np.zeros_like(inv)
        return _centred(np.stack([np.stack([inv, zero], 1), np.stack([zero, inv], 1)], 1), h, w)


class Crop(Op):
    name, doc = "crop", "crop a square-proportioned box of `size` (fraction of each side) and resize it back"
    params = {"size": Param("range", (0.8, 1.0), 0.05, 1), "mode": Param("choice", "random", choices=("random", "centre"))}

    def draw(self, keys, h, w):
        size = self.between(keys, 1, self.values["size"])
        if self.values["mode"] == "centre":
            ox, oy = (1 - size) / 2, (1 - size) / 2
        else:
            ox, oy = (1 - size) * self.u(keys, 2), (1 - size) * self.u(keys, 3)
        return {"size": size, "x0": ox, "y0": oy}

    def matrix(self, d, h, w):
        s = d["size"]
        m = _eye(len(s))
        m[:, 0, 0] = s
        m[:, 1, 1] = s
        m[:, 0, 2] = d["x0"] * w + 0.5 * s - 0.5   # pixel centres: in + .5 = x0*w + (out + .5)*s
        m[:, 1, 2] = d["y0"] * h + 0.5 * s - 0.5
        return m


class FlipLR(Op):
    name, doc = "flip_lr", "mirror left-right (exact)"
    params = {}

    def matrix(self, d, h, w):
        m = _eye(d["_n"])
        m[:, 0, 0] = -1
        m[:, 0, 2] = w - 1
        return m


class FlipTB(Op):
    name, doc = "flip_tb", "mirror top-bottom (exact)"
    params = {}

    def matrix(self, d, h, w):
        m = _eye(d["_n"])
        m[:, 1, 1] = -1
        m[:, 1, 2] = h - 1
        return m


def _square_to_quad(x, y):
    """Heckbert's closed form: per-image 3x3 maps of the unit square's corners (0,0),(1,0),(1,1),(0,1) to x[:, i], y[:, i]."""
    n = len(x)
    sx = x[:, 0] - x[:, 1] + x[:, 2] - x[:, 3]
    sy = y[:, 0] - y[:, 1] + y[:, 2] - y[:, 3]
    dx1, dx2 = x[:, 1] - x[:, 2], x[:, 3] - x[:, 2]
    dy1, dy2 = y[:, 1] - y[:, 2], y[:, 3] - y[:, 2]
    den = dx1 * dy2 - dx2 * dy1
    g = (sx * dy2 - dx2 * sy) / den
    hh = (dx1 * sy - sx * dy1) / den
    m = np.empty((n, 3, 3))
    m[:, 0] = np.stack([x[:, 1] - x[:, 0] + g * x[:, 1], x[:, 3] - x[:, 0] + hh * x[:, 3], x[:, 0]], 1)
    m[:, 1] = np.stack([y[:, 1] - y[:, 0] + g * y[:, 1], y[:, 3] - y[:, 0] + hh * y[:, 3], y[:, 0]], 1)
    m[:, 2] = np.stack([g, hh, np.ones(n)], 1)
    return m


def _inverse3(m):
    """Per-image 3x3 inverse by the adjugate (elementwise, no LAPACK)."""
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    g, h, i = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    adj = np.stack([np.stack([e * i - f * h, c * h - b * i, b * f - c * e], 1),
                    np.stack([f * g - d * i, a * i - c * g, c * d - a * f], 1),
                    np.stack([d * h - e * g, b * g - a * h, a * e - b * d], 1)], 1)
    det = a * adj[:, 0, 0] + b * adj[:, 1, 0] + c * adj[:, 2, 0]
    return adj / det[:, None, None]


class Skew(Op):
    name = "skew"
    doc = ("perspective skew as Augmentor's: 'tilt' widens one side (left/right/top/bottom), 'corner' "
           "pulls one corner, 'any' picks either; corners move by up to magnitude x the side")
    params = {"type": Param("choice", "any", choices=("tilt", "corner", "any")),
              "magnitude": Param("float", 0.2, 0.0, 1.0)}

    def draw(self, keys, h, w):
        kind = self.values["type"]
        corner = (self.u(keys, 1) < 0.5) if kind == "any" else np.full(len(keys), kind == "corner")
        amount = self.values["magnitude"] * self.u(keys, 2)
        which = np.minimum((self.u(keys, 3) * 4).astype(np.int64), 3)     # side or corner
        axis = self.u(keys, 4) < 0.5                                       # corner: move along x or y
        return {"corner": corner, "amount": amount, "which": which, "axis_x": axis}

    def matrix(self, d, h, w):
        n = len(d["amount"])
        # output quad where the input rectangle's corners (TL, TR, BR, BL) land
        qx = np.tile(np.array([0.0, w - 1, w - 1, 0.0]), (n, 1))
        qy = np.tile(np.array([0.0, 0.0, h - 1, h - 1]), (n, 1))
        ax, ay = d["amount"] * (w - 1), d["amount"] * (h - 1)
        rows = np.arange(n)
        tilt, corner = ~d["corner"], d["corner"]
        side = d["which"]
        # tilt: one side's two corners spread apart along that side
        for s, (i, j, along_x) in enumerate(((0, 1, True), (1, 2, False), (2, 3, True), (3, 0, False))):
            sel = tilt & (side == s)
            if along_x:
                qx[sel, i] -= ax[sel] if s == 0 else -ax[sel]
                qx[sel, j] += ax[sel] if s == 0 else -ax[sel]
            else:
                qy[sel, i] -= ay[sel] if s == 1 else -ay[sel]
                qy[sel, j] += ay[sel] if s == 1 else -ay[sel]
        # corner: one corner pulled outward along x or y
        out_x = np.array([-1.0, 1.0, 1.0, -1.0])
        out_y = np.array([-1.0, -1.0, 1.0, 1.0])
        cx = corner & d["axis_x"]
        cy = corner & ~d["axis_x"]
        qx[rows[cx], side[cx]] += out_x[side[cx]] * ax[cx]
        qy[rows[cy], side[cy]] += out_y[side[cy]] * ay[cy]
        rect_to_quad = _square_to_quad(qx, qy)
        # output -> input: quad -> unit square -> rectangle
        out = _inverse3(rect_to_quad)
        out[:, 0] *= w - 1
        out[:, 1] *= h - 1
        return out


class Elastic(Op):
    name, kind = "elastic", "elastic"
    doc = ("Augmentor's random_distortion: a grid_width x grid_height grid whose inner vertices move by up to "
           "magnitude pixels; the displacement is interpolated to every pixel and added to the sampling grid")
    params = {"grid_width": Param("int", 4, 1, 64), "grid_height": Param("int", 4, 1, 64),
              "magnitude": Param("float", 2.0, 0.0, 100.0)}

    def draw(self, keys, h, w):
        gw, gh = self.values["grid_width"], self.values["grid_height"]
        mag = self.values["magnitude"]
        inner = (gh + 1) * (gw + 1)
        dx = np.zeros((len(keys), gh + 1, gw + 1))
        dy = np.zeros_like(dx)
        for v in range(inner):
            r, c = divmod(v, gw + 1)
            if 0 < r < gh and 0 < c < gw:   # border vertices stay put, as in Augmentor
                tag = (self.index << 32) | (1 << 31) | (2 * v)   # a tag space of its own: many draws
                dx[:, r, c] = mag * (2 * uniform(keys, tag) - 1)
                dy[:, r, c] = mag * (2 * uniform(keys, tag + 1) - 1)
        return {"dx": dx, "dy": dy}

    def _vertices(self):
        return self.values["grid_width"], self.values["grid_height"]

    def displace_grid(self, d, h, w, framed: bool = False):
        """The output pixel grid plus the displacement: float32 (k, H, W) each (scratch arrays).

        framed: shifted into the resampler's frame (x + _PAD, y + 1), saving a pass when nothing follows.

        For elastic as the last geometric op.  On the grid every image looks up the same vertices
        with the same weights, so the field is interpolated along x once per grid row (small
        arrays), then along y by gathering whole rows: field = row y0 + ty * (row y0+1 - row y0).
        The grid itself is folded into the rows: x is added to every row; y = (y0 + ty) * (h-1)/gh
        adds y0 * (h-1)/gh to row y0 and (h-1)/gh to the row differences.
        """
        gw, gh = self._vertices()
        k = len(d["dx"])
        x0, tx, y0, _ = _grid_cells(h, w, gw, gh)
        fields = np.stack([d["dx"], d["dy"]]).astype(np.float32)    # (2, k, gh + 1, gw + 1)
        left = fields[..., x0]
        rows = left + tx * (fields[..., x0 + 1] - left)               # (2, k, gh + 1, W)
        steps = rows[:, :, 1:] - rows[:, :, :-1]
        y_per_row = np.float32((h - 1) / max(gh, 1))
        rows[0] += np.arange(w, dtype=np.float32) + np.float32(_PAD if framed else 0)
        rows[1] += (np.arange(gh + 1, dtype=np.float32) * y_per_row + np.float32(1 if framed else 0))[:, None]
        steps[1] += y_per_row
        out = np.take(rows, y0, axis=2, out=_buffer("grid", (2, k, h, w), np.float32), mode="clip")
        between = np.take(steps, y0, axis=2, out=_buffer("between", (2, k, h, w), np.float32), mode="clip")
        cv2 = _cv2()
        flat_between = between.reshape(2 * k, h * w)
        cv2.multiply(flat_between, _row_weights(2 * k, h, w, gh), dst=flat_between)
        cv2.add(out.reshape(2 * k, h * w), flat_between, dst=out.reshape(2 * k, h * w))
        return out[0], out[1]

    def displace(self, d, u, v, h, w):
        """Coordinates (k, H, W) plus the displacement interpolated at them (bilinear between vertices)."""
        gw, gh = self._vertices()
        k = len(d["dx"])
        fx = np.clip(u, 0, w - 1) * np.float32(gw / max(w - 1, 1))
        fy = np.clip(v, 0, h - 1) * np.float32(gh / max(h - 1, 1))
        x0 = np.minimum(np.floor(fx), np.float32(gw - 1))
        y0 = np.minimum(np.floor(fy), np.float32(gh - 1))
        tx, ty = fx - x0, fy - y0
        stride, cells = gw + 1, (gh + 1) * (gw + 1)
        cell = (y0 * stride + x0).astype(np.intp)
        cell += (np.arange(k, dtype=np.intp) * cells).reshape(k, 1, 1)
        moved = []
        for field, base in ((d["dx"], u), (d["dy"], v)):
            flat = field.reshape(-1).astype(np.float32)
            g00, g01, g10, g11 = (flat.take(cell + off) for off in (0, 1, stride, stride + 1))
            g01 -= g00
            g01 *= tx
            g00 += g01
            g11 -= g10
            g11 *= tx
            g10 += g11
            g10 -= g00
            g10 *= ty
            g00 += g10
            moved.append(base + g00)
        return moved[0], moved[1]


class ResizedCrop(Op):
    name, kind = "resized_crop", "crop"
    doc = ("random resized crop, torchvision's RandomResizedCrop: a box of area `scale` x the image's and "
           "aspect ratio (width / height) `ratio`, whole pixels, resized back to the image's size (bilinear, "
           "edges clamped to the box); ten tries to fit, then the centre box of the nearest allowed ratio. "
           "Resampled on its own before the other geometric ops, so it must be listed first")
    params = {"scale": Param("range", (0.08, 1.0), 0.001, 1.0, doc="box area as a fraction of the image's"),
              "ratio": Param("range", (3 / 4, 4 / 3), 0.05, 20.0, doc="box width / height")}
    ATTEMPTS = 10

    def draw(self, keys, h, w):
        n = len(keys)
        lo, hi = self.values["ratio"]
        log_lo, log_hi = math.log(lo), math.log(hi)
        box = {"y0": np.zeros(n, np.int64), "x0": np.zeros(n, np.int64),
               "height": np.zeros(n, np.int64), "width": np.zeros(n, np.int64)}
        found = np.zeros(n, bool)
        for attempt in range(self.ATTEMPTS):   # draws 1 + 4 attempt .. 4 + 4 attempt
            if found.all():                       # later attempts change no image: not drawn
                break
            j = 1 + 4 * attempt
            area = self.between(keys, j, self.values["scale"]) * (h * w)
            aspect = np.exp(log_lo + (log_hi - log_lo) * self.u(keys, j + 1))
            bw = np.rint(np.sqrt(area * aspect)).astype(np.int64)
            bh = np.rint(np.sqrt(area / aspect)).astype(np.int64)
            fits = ~found & (bw > 0) & (bw <= w) & (bh > 0) & (bh <= h)
            y0 = ((h - bh + 1) * self.u(keys, j + 2)).astype(np.int64)
            x0 = ((w - bw + 1) * self.u(keys, j + 3)).astype(np.int64)
            for key, value in (("y0", y0), ("x0", x0), ("height", bh), ("width", bw)):
                box[key][fits] = value[fits]
            found |= fits
        if not found.all():   # torchvision's fallback: the centre box of the closest allowed ratio
            if w / h < lo:
                bw, bh = w, int(round(w / lo))
            elif w / h > hi:
                bw, bh = int(round(h * hi)), h
            else:
                bw, bh = w, h
            rest = ~found
            box["width"][rest], box["height"][rest] = bw, bh
            box["y0"][rest], box["x0"][rest] = (h - bh) // 2, (w - bw) // 2
        return box

    def resize(self, images, idx, d, out):
        """Image idx[j]'s box (d's j-th) resized to the full size into out[idx[j]] (cv2.resize, bilinear,
        pixel centres aligned)."""
        cv2 = _cv2()
        n, h, w, c = images.shape
        for i, y0, x0, bh, bw in zip(idx.tolist(), *(d[k].tolist() for k in ("y0", "x0", "height", "width"))):
            box = images[i, y0:y0 + bh, x0:x0 + bw]
            if c == 1:
                cv2.resize(box[..., 0], (w, h), dst=out[i, ..., 0], interpolation=cv2.INTER_LINEAR)
            else:
                cv2.resize(box, (w, h), dst=out[i], interpolation=cv2.INTER_LINEAR)
