"""Seeded synthetic defect images: steel surfaces and bare PCBs, with exact boxes.

Every capability's tests and the embedded demo train and evaluate on these images, so the
project needs no download. The generator is a product feature, not a test stub: a small YOLO
trained for a few epochs at a small ``imgsz`` must learn to find its defects, so defects are drawn
with clear per-class shapes and enough contrast to survive downscaling to 128 px.

Two surface kinds, both single-channel uint8 (the cameras of an inspection station are mono):

* ``steel``: rolled/brushed metal in the style of NEU-DET / Severstal (grain noise, streaks along
  the rolling direction, slow illumination gradient) with scratches, pits, inclusions, patches.
* ``pcb``: a binarised bare board in the style of DeepPCB (dark substrate, bright copper buses,
  pads and pours on a grid) with its six defect classes.

Boxes are the tight box of the pixels a defect changed (taken from its drawn mask, clipped to the
image), grown symmetrically to a minimum side so that one-pixel-thin scratches still get a box a
detector can regress. All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np

from yolodefect.data.records import Box

SYNTH_KINDS = ("steel", "pcb")
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "steel": ("scratch", "pit", "inclusion", "patch"),
    "pcb": ("open", "short", "mousebite", "spur", "spurious_copper", "pin_hole"),
}

# Sizes below are in pixels at a 256 px part and scale with the shorter side; the floors keep
# defects a few pixels wide on the 120-160 px frames of the conveyor demo.
_REFERENCE_SIDE = 256.0
_MIN_SIDE = 32
_MIN_BOX_SIDE_AT_REFERENCE = 4.0
# Two defects of one image may touch but not pile up: a candidate placement is redrawn while it
# covers more than this share of the smaller box of an earlier defect.
_MAX_OVERLAP = 0.15
_PLACEMENT_TRIES = 12

_Xyxy = tuple[int, int, int, int]
_T = TypeVar("_T")


@dataclass
class SyntheticSample:
    """One generated image and its boxes; no boxes means a defect-free (background) part."""

    name: str
    image: np.ndarray
    boxes: list[Box]


# ---------------------------------------------------------------------------------------------
# Public API


def render_part(
    kind: str,
    rng: np.random.Generator,
    size_wh: tuple[int, int],
    defects: Sequence[str],
) -> tuple[np.ndarray, list[Box]]:
    """One grayscale uint8 (H, W) part surface with exactly ``defects`` drawn on it, and their boxes.

    ``defects`` are class names of ``kind`` (see :data:`CLASS_NAMES`); they may repeat, and an
    empty sequence renders a defect-free part. Boxes come back in the order of ``defects``.
    """
    _check_kind(kind)
    width, height = _check_size(size_wh)
    unknown = sorted({name for name in defects if name not in CLASS_NAMES[kind]})
    if unknown:
        raise ValueError(
            f"unknown {kind} defect class(es) {', '.join(map(repr, unknown))}; "
            f"expected any of {', '.join(CLASS_NAMES[kind])}"
        )
    if kind == "steel":
        return _render_steel(rng, width, height, list(defects))
    return _render_pcb(rng, width, height, list(defects))


def generate_samples(
    kind: str,
    count: int,
    *,
    seed: int = 0,
    size_wh: tuple[int, int] = (256, 256),
    background_fraction: float = 0.2,
    max_defects: int = 3,
) -> Iterator[SyntheticSample]:
    """``count`` deterministic samples named ``{kind}_{index:05d}``.

    ``background_fraction`` of the images (spread evenly) are defect-free; the others get 1 to
    ``max_defects`` defects whose classes are dealt from shuffled rounds of all classes, so every
    class gets the same number of boxes to within one round. Sample ``i`` depends only on
    ``seed`` and ``i``, so a shorter run is a prefix of a longer one with the same settings.
    """
    _check_kind(kind)
    _check_size(size_wh)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= float(background_fraction) <= 1.0:
        raise ValueError(f"background_fraction must be within [0, 1], got {background_fraction!r}")
    if isinstance(max_defects, bool) or not isinstance(max_defects, (int, np.integer)) or max_defects < 1:
        raise ValueError(f"max_defects must be an integer >= 1, got {max_defects!r}")
    return _iterate_samples(
        kind, int(count), int(seed), size_wh, float(background_fraction), int(max_defects)
    )


def _iterate_samples(
    kind: str,
    count: int,
    seed: int,
    size_wh: tuple[int, int],
    background_fraction: float,
    max_defects: int,
) -> Iterator[SyntheticSample]:
    # The plan (which images are background, which classes go where) uses its own stream so the
    # pixels of sample i never depend on how many samples came before it.
    plan_rng = np.random.default_rng([seed, 0])
    dealer = ClassDealer(CLASS_NAMES[kind], plan_rng)
    for index in range(count):
        if _is_background(index, background_fraction):
            defects: list[str] = []
        else:
            defects = dealer.deal(int(plan_rng.integers(1, max_defects + 1)))
        image_rng = np.random.default_rng([seed, 1, index])
        image, boxes = render_part(kind, image_rng, size_wh, defects)
        yield SyntheticSample(name=f"{kind}_{index:05d}", image=image, boxes=boxes)


class ClassDealer:
    """Deals class names from shuffled full rounds, so class counts stay balanced."""

    def __init__(self, names: Sequence[str], rng: np.random.Generator):
        self._names = list(names)
        self._rng = rng
        self._queue: list[str] = []

    def deal(self, n: int) -> list[str]:
        out: list[str] = []
        for _ in range(n):
            if not self._queue:
                self._queue = [self._names[i] for i in self._rng.permutation(len(self._names))]
            out.append(self._queue.pop())
        return out


def _is_background(index: int, fraction: float) -> bool:
    # Evenly spread (every 5th image at 0.2) and prefix-stable, unlike a shuffled choice.
    eps = 1e-9
    return math.floor((index + 1) * fraction + eps) > math.floor(index * fraction + eps)


def _check_kind(kind: str) -> None:
    if kind not in SYNTH_KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; expected one of {', '.join(SYNTH_KINDS)}")


def _check_size(size_wh: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size_wh)
    except (TypeError, ValueError):
        raise ValueError(f"size_wh must be (width, height), got {size_wh!r}") from None
    if width < _MIN_SIDE or height < _MIN_SIDE:
        raise ValueError(f"size_wh must be at least {_MIN_SIDE}x{_MIN_SIDE} pixels, got {size_wh!r}")
    return width, height


# ---------------------------------------------------------------------------------------------
# Shared geometry


def _scale(width: int, height: int) -> float:
    return min(width, height) / _REFERENCE_SIDE


def _px(rng: np.random.Generator, low: float, high: float, scale: float, floor: float) -> float:
    """A random length drawn at the 256 px reference and scaled, never below ``floor`` pixels."""
    return max(floor, float(rng.uniform(low, high)) * scale)


def _mask_box(mask: np.ndarray) -> _Xyxy | None:
    """Tight pixel-edge box of the non-zero pixels of a uint8 mask, None when it is empty."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return None
    return x, y, x + w, y + h


def _grow_to_min_side(xyxy: _Xyxy, min_side: int, width: int, height: int) -> _Xyxy:
    """Grow a box symmetrically to ``min_side`` per axis, shifted back inside the image."""

    def grow(lo: int, hi: int, limit: int) -> tuple[int, int]:
        need = min(min_side, limit) - (hi - lo)
        if need <= 0:
            return lo, hi
        lo -= need // 2
        hi += need - need // 2
        shift = max(0, -lo) - max(0, hi - limit)
        return lo + shift, hi + shift

    x0, x1 = grow(xyxy[0], xyxy[2], width)
    y0, y1 = grow(xyxy[1], xyxy[3], height)
    return x0, y0, x1, y1


def _overlap(a: _Xyxy, b: _Xyxy) -> float:
    """Intersection over the smaller box's area: 1.0 when one box sits inside the other."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1)


def _worst_overlap(box: _Xyxy, placed: Sequence[_Xyxy]) -> float:
    return max((_overlap(box, other) for other in placed), default=0.0)


def _place(
    draw: Callable[[], _T], placed: Sequence[_Xyxy], box_of: Callable[[_T], _Xyxy | None]
) -> tuple[_T, _Xyxy]:
    """Draw candidates until one does not pile onto earlier defects; keep the least bad one."""
    best: tuple[float, _T, _Xyxy] | None = None
    for _ in range(_PLACEMENT_TRIES):
        drawn = draw()
        xyxy = box_of(drawn)
        if xyxy is None:
            continue
        score = _worst_overlap(xyxy, placed)
        if best is None or score < best[0]:
            best = (score, drawn, xyxy)
        if score <= _MAX_OVERLAP:
            break
    if best is None:  # only reachable on degenerate sizes; the drawers always mark pixels
        raise RuntimeError("synthetic defect could not be placed")
    return best[1], best[2]


def _to_box(name: str, xyxy: _Xyxy) -> Box:
    return Box(name, (float(xyxy[0]), float(xyxy[1]), float(xyxy[2]), float(xyxy[3])))


def _irregular_polygon(
    rng: np.random.Generator, center: np.ndarray, radii: tuple[float, float], angle: float, jitter: float
) -> np.ndarray:
    """Vertices of a lumpy ellipse: radial noise makes blobs look grown rather than drawn."""
    n = int(rng.integers(10, 18))
    theta = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi / n)
    wobble = 1.0 + jitter * rng.uniform(-1.0, 1.0, n)
    x = radii[0] * np.cos(theta) * wobble
    y = radii[1] * np.sin(theta) * wobble
    c, s = math.cos(angle), math.sin(angle)
    pts = np.stack([c * x - s * y, s * x + c * y], axis=1) + center
    return np.round(pts * 4).astype(np.int32)  # 2 fractional bits for cv2's shift argument


def _fill_poly(mask: np.ndarray, pts: np.ndarray) -> None:
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=2)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * 4).astype(np.int32)


def _polyline(mask: np.ndarray, points: np.ndarray, thickness: int, value: int = 255) -> None:
    cv2.polylines(mask, [_fixed(points)], False, value, thickness, cv2.LINE_AA, shift=2)


def _smooth_noise(rng: np.random.Generator, grid: int, width: int, height: int) -> np.ndarray:
    """Unit-variance noise on a ``grid`` x ``grid`` lattice, interpolated: slow, blotchy change."""
    coarse = rng.standard_normal((grid, grid), dtype=np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _circle(mask: np.ndarray, center: np.ndarray, radius: float, value: int = 255) -> None:
    cx, cy = _fixed(center)
    cv2.circle(mask, (int(cx), int(cy)), int(round(radius * 4)), value, -1, cv2.LINE_AA, shift=2)


# ---------------------------------------------------------------------------------------------
# Steel


@dataclass(frozen=True)
class _SteelContext:
    width: int
    height: int
    scale: float
    rolling_angle: float  # radians; streaks and inclusions follow the rolling direction


_STEEL_DEFECT_SCALE_FLOOR = 0.7
_SteelDrawer = Callable[[np.random.Generator, _SteelContext], tuple[np.ndarray, float]]


def _render_steel(
    rng: np.random.Generator, width: int, height: int, defects: list[str]
) -> tuple[np.ndarray, list[Box]]:
    horizontal = bool(rng.random() < 0.75)
    # Defects shrink less than the part on small frames so they stay a few pixels wide.
    defect_scale = max(_scale(width, height), _STEEL_DEFECT_SCALE_FLOOR)
    ctx = _SteelContext(width, height, defect_scale, 0.0 if horizontal else math.pi / 2)
    surface = _steel_surface(rng, width, height, horizontal)
    min_side = max(2, round(_MIN_BOX_SIDE_AT_REFERENCE * ctx.scale))
    placed: list[_Xyxy] = []
    boxes: list[Box] = []
    for name in defects:
        (alpha, amplitude), xyxy = _place(lambda: _STEEL_DRAWERS[name](rng, ctx), placed, _steel_box)
        surface += alpha * amplitude
        placed.append(xyxy)
        boxes.append(_to_box(name, _grow_to_min_side(xyxy, min_side, width, height)))
    return np.clip(surface, 0, 255).astype(np.uint8), boxes


def _steel_box(drawn: tuple[np.ndarray, float]) -> _Xyxy | None:
    alpha, _ = drawn
    # A pixel counts as changed once it moved by a third of the defect's contrast: the soft
    # fringe of a blurred patch is not part of the defect a person would box.
    return _mask_box((np.abs(alpha) >= 0.33).astype(np.uint8))


def _steel_surface(rng: np.random.Generator, width: int, height: int, horizontal: bool) -> np.ndarray:
    base = rng.uniform(95.0, 165.0)
    # Streaks: noise sampled coarsely along the rolling direction and finely across it, then
    # stretched, gives the brushed look of rolled strip.
    stretch = int(rng.integers(16, 48))
    if horizontal:
        coarse = rng.standard_normal((height, max(2, width // stretch)), dtype=np.float32)
    else:
        coarse = rng.standard_normal((max(2, height // stretch), width), dtype=np.float32)
    streaks = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    streaks *= np.float32(rng.uniform(3.0, 7.0))
    grain = rng.standard_normal((height, width), dtype=np.float32)
    grain *= np.float32(rng.uniform(2.5, 5.0))
    # Lighting: a tilt plus a slow blob, as from a bar light that is not quite uniform.
    gx, gy = rng.uniform(-30.0, 30.0, 2)
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32) * np.float32(gx)
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32) * np.float32(gy)
    blob = _smooth_noise(rng, 3, width, height)
    blob *= np.float32(rng.uniform(3.0, 9.0))
    surface = streaks + grain + blob
    surface += xs[None, :]
    surface += ys[:, None]
    surface += np.float32(base)
    return surface


def _steel_center(rng: np.random.Generator, ctx: _SteelContext, extent: float) -> np.ndarray:
    """A center that keeps a defect of radius ``extent`` mostly inside the part."""
    mx = min(extent, ctx.width / 2 - 1)
    my = min(extent, ctx.height / 2 - 1)
    return np.array([rng.uniform(mx, ctx.width - mx), rng.uniform(my, ctx.height - my)])


def _draw_scratch(rng: np.random.Generator, ctx: _SteelContext) -> tuple[np.ndarray, float]:
    side = min(ctx.width, ctx.height)
    length = rng.uniform(0.22, 0.5) * side
    angle = rng.uniform(0.0, math.pi)
    center = _steel_center(rng, ctx, length / 2 * 0.9)
    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    # A shallow bow: tool scratches are rarely ruler-straight.
    t = np.linspace(-0.5, 0.5, 9)[:, None]
    bow = rng.uniform(-0.06, 0.06) * length * (1.0 - 4.0 * t**2)
    points = center + t * length * direction + bow * normal
    thickness = max(1, int(round(rng.uniform(1.2, 3.0) * ctx.scale)))
    groove = np.zeros((ctx.height, ctx.width), np.uint8)
    _polyline(groove, points, thickness)
    # Under oblique light a groove shows a lit flank beside a shadowed one; the opposite-signed
    # second line is what makes scratches stand out from the streaks along the rolling direction.
    flank = np.zeros_like(groove)
    _polyline(flank, points + normal * (thickness + 1), thickness)
    alpha = groove.astype(np.float32) / 255.0
    alpha -= np.float32(0.6 / 255.0) * flank.astype(np.float32)
    sign = 1.0 if rng.random() < 0.6 else -1.0
    return alpha, sign * rng.uniform(50.0, 80.0)


def _draw_pit(rng: np.random.Generator, ctx: _SteelContext) -> tuple[np.ndarray, float]:
    s = ctx.scale
    mask = np.zeros((ctx.height, ctx.width), np.uint8)
    if rng.random() < 0.3:
        radius = _px(rng, 3.0, 5.0, s, 2.0)
        _circle(mask, _steel_center(rng, ctx, radius + 2), radius)
    else:
        spread = _px(rng, 7.0, 14.0, s, 4.0)
        center = _steel_center(rng, ctx, spread + 4)
        for _ in range(int(rng.integers(3, 8))):
            offset = rng.normal(0.0, spread / 2, 2).clip(-spread, spread)
            _circle(mask, center + offset, _px(rng, 1.6, 3.5, s, 1.2))
    return mask.astype(np.float32) / 255.0, -rng.uniform(60.0, 95.0)


def _draw_inclusion(rng: np.random.Generator, ctx: _SteelContext) -> tuple[np.ndarray, float]:
    s = ctx.scale
    length = _px(rng, 22.0, 50.0, s, 10.0)
    width = _px(rng, 4.0, 9.0, s, 3.0)
    angle = ctx.rolling_angle + rng.uniform(-0.35, 0.35)
    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    center = _steel_center(rng, ctx, length / 2 + 2)
    mask = np.zeros((ctx.height, ctx.width), np.uint8)
    # A chain of lumpy ellipses along a wandering axis: rolled-in slag is stretched, not smooth.
    n = int(rng.integers(4, 8))
    wander = np.cumsum(rng.normal(0.0, width * 0.25, n))
    wander -= wander.mean()
    for i, t in enumerate(np.linspace(-0.5, 0.5, n)):
        taper = 1.0 - 0.6 * abs(t) * 2
        at = center + t * length * direction + wander[i] * normal
        radii = (length / n * rng.uniform(0.7, 1.1), width / 2 * taper * rng.uniform(0.7, 1.2))
        _fill_poly(mask, _irregular_polygon(rng, at, (max(radii[0], 1.0), max(radii[1], 1.0)), angle, 0.3))
    alpha = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32) / 255.0
    return alpha, -rng.uniform(45.0, 75.0)


def _draw_patch(rng: np.random.Generator, ctx: _SteelContext) -> tuple[np.ndarray, float]:
    s = ctx.scale
    radius = _px(rng, 18.0, 42.0, s, 8.0)
    center = _steel_center(rng, ctx, radius)
    mask = np.zeros((ctx.height, ctx.width), np.uint8)
    aspect = rng.uniform(0.55, 1.0)
    outline = _irregular_polygon(rng, center, (radius, radius * aspect), rng.uniform(0, math.pi), 0.25)
    _fill_poly(mask, outline)
    # Soft edge proportional to size; mottling inside so it reads as a stain, not a flat disc.
    sigma = max(1.0, radius / 5)
    alpha = cv2.GaussianBlur(mask, (0, 0), sigma).astype(np.float32) / 255.0
    mottle = _smooth_noise(rng, 4, ctx.width, ctx.height)
    alpha *= np.float32(0.85) + np.float32(0.15) * np.clip(mottle, -1.0, 1.0)
    sign = -1.0 if rng.random() < 0.7 else 1.0
    return alpha, sign * rng.uniform(35.0, 50.0)


_STEEL_DRAWERS: dict[str, _SteelDrawer] = {
    "scratch": _draw_scratch,
    "pit": _draw_pit,
    "inclusion": _draw_inclusion,
    "patch": _draw_patch,
}


# ---------------------------------------------------------------------------------------------
# PCB


@dataclass(frozen=True)
class _Trace:
    """One straight copper segment: end points and width."""

    p0: np.ndarray
    p1: np.ndarray
    width: float

    @property
    def direction(self) -> np.ndarray:
        d = self.p1 - self.p0
        return d / max(float(np.hypot(*d)), 1e-9)

    @property
    def normal(self) -> np.ndarray:
        d = self.direction
        return np.array([-d[1], d[0]])

    @property
    def length(self) -> float:
        return float(np.hypot(*(self.p1 - self.p0)))


@dataclass
class _Board:
    copper: np.ndarray  # uint8 0/255, the truth every defect edits
    traces: list[_Trace]
    neighbours: list[tuple[int, int]]  # trace indices of adjacent lanes running side by side
    pitch: float
    trace_w: float
    scale: float


_Rect = tuple[float, float, float, float]
# Tile roles beyond the two every board gets (a bus for trace defects, a pour for pin holes);
# empty tiles leave substrate for spurious copper.
_TILE_ROLES = ("bus", "pads", "pour", "empty")
_TILE_ROLE_P = (0.55, 0.2, 0.1, 0.15)
# Trace defects keep this many pitches from a segment's ends, away from pads and bends.
_TRACE_END_CLEARANCE = 0.8


def _render_pcb(
    rng: np.random.Generator, width: int, height: int, defects: list[str]
) -> tuple[np.ndarray, list[Box]]:
    board = _pcb_layout(rng, width, height)
    # A few layouts lack a long enough trace or a pair of lanes to bridge; lay out again rather
    # than draw an open or a short that does not look like one. The check covers every class,
    # not just the requested ones, and the scan is drawn before any defect, so the same
    # generator state renders the same board with and without defects (the tests rely on it).
    for _ in range(8):
        if _supports_every_class(board):
            break
        board = _pcb_layout(rng, width, height)
    scan = _draw_scan(rng, board.copper.shape)
    min_side = max(2, round(_MIN_BOX_SIDE_AT_REFERENCE * board.scale))
    placed: list[_Xyxy] = []
    boxes: list[Box] = []
    for name in defects:
        drawer = _PCB_DRAWERS[name]
        new_copper, xyxy = _place(
            lambda: drawer(rng, board), placed, lambda copper: _changed_box(copper, board)
        )
        board.copper = new_copper
        placed.append(xyxy)
        boxes.append(_to_box(name, _grow_to_min_side(xyxy, min_side, width, height)))
    return _pcb_image(scan, board.copper), boxes


def _supports_every_class(board: _Board) -> bool:
    has_pair = any(_side_by_side(board, pair) for pair in board.neighbours)
    return has_pair and bool(_usable_traces(board))


def _changed_box(new_copper: np.ndarray, board: _Board) -> _Xyxy | None:
    return _mask_box(cv2.compare(new_copper, board.copper, cv2.CMP_NE))


@dataclass(frozen=True)
class _Scan:
    """How the board is imaged: the two grey levels and the sensor noise."""

    substrate: float
    metal: float
    noise: np.ndarray


def _draw_scan(rng: np.random.Generator, shape: tuple[int, ...]) -> _Scan:
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise *= np.float32(rng.uniform(2.0, 5.0))
    return _Scan(float(rng.uniform(15.0, 45.0)), float(rng.uniform(195.0, 240.0)), noise)


def _pcb_image(scan: _Scan, copper: np.ndarray) -> np.ndarray:
    # DeepPCB images are thresholded scans: two levels, a little edge softness and sensor noise.
    gain = np.float32((scan.metal - scan.substrate) / 255.0)
    soft = cv2.GaussianBlur(copper, (3, 3), 0.7).astype(np.float32) * gain
    return np.clip(soft + scan.noise + np.float32(scan.substrate), 0, 255).astype(np.uint8)


def _pcb_layout(rng: np.random.Generator, width: int, height: int) -> _Board:
    scale = _scale(width, height)
    pitch = max(7.0, rng.uniform(19.0, 25.0) * scale)
    trace_w = max(3.0, rng.uniform(0.3, 0.38) * pitch)
    board = _Board(np.zeros((height, width), np.uint8), [], [], pitch, trace_w, scale)
    tiles = _tiles(rng, width, height, pitch)
    roles = ["bus", "pour"] + [str(rng.choice(_TILE_ROLES, p=_TILE_ROLE_P)) for _ in tiles[2:]]
    for role, tile_index in zip(roles, rng.permutation(len(tiles))):
        _TILE_DRAWERS[role](rng, board, tiles[int(tile_index)])
    return board


def _tiles(rng: np.random.Generator, width: int, height: int, pitch: float) -> list[_Rect]:
    """Split the board into 2 to 9 rectangles, like the functional blocks of a layout."""
    cols, rows = _parts(rng, width, pitch), _parts(rng, height, pitch)
    if cols * rows < 2:
        if width >= height:
            cols = 2
        else:
            rows = 2
    xs, ys = _cuts(rng, width, cols), _cuts(rng, height, rows)
    return [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for i in range(cols) for j in range(rows)]


def _parts(rng: np.random.Generator, extent: int, pitch: float) -> int:
    most = max(1, min(3, int(extent // (4 * pitch))))
    return int(rng.integers(min(2, most), most + 1))


def _cuts(rng: np.random.Generator, extent: int, parts: int) -> list[float]:
    step = extent / parts
    inner = [step * i + rng.uniform(-0.12, 0.12) * step for i in range(1, parts)]
    return [0.0, *inner, float(extent)]


def _unit(degrees: float) -> np.ndarray:
    radians = math.radians(degrees)
    return np.array([math.cos(radians), math.sin(radians)])


def _shrink(tile: _Rect, by: float) -> _Rect | None:
    rect = (tile[0] + by, tile[1] + by, tile[2] - by, tile[3] - by)
    return rect if rect[2] > rect[0] and rect[3] > rect[1] else None


def _draw_bus(rng: np.random.Generator, board: _Board, tile: _Rect) -> None:
    """Parallel traces at the board pitch along 0/45/90/135 degrees, half of them with one 45
    degree bend shared by all lanes (river routing), ending in round pads or at the tile edge."""
    inner = _shrink(tile, board.pitch * 0.5)
    if inner is None or min(inner[2] - inner[0], inner[3] - inner[1]) < board.pitch:
        return
    first = float(rng.choice([0.0, 0.0, 90.0, 90.0, 45.0, 135.0]))
    second = first + float(rng.choice([-45.0, 45.0])) if rng.random() < 0.5 else first
    d1, d2 = _unit(first), _unit(second)
    n1, n2 = np.array([-d1[1], d1[0]]), np.array([-d2[1], d2[0]])
    # Offsetting a polyline by o moves its corner by o * miter: lanes stay one pitch apart.
    miter = (n1 + n2) / (1.0 + float(np.dot(n1, n2)))
    size = np.array([inner[2] - inner[0], inner[3] - inner[1]])
    corner0 = np.array([inner[0], inner[1]]) + size * rng.uniform(0.3, 0.7, 2)
    pad_r = board.trace_w / 2 + (board.pitch - board.trace_w) * 0.28
    reach = float(np.hypot(*size)) + board.pitch
    lanes = int(reach // board.pitch) + 1
    placed: dict[tuple[int, int], int] = {}
    for lane in range(-lanes, lanes + 1):
        if rng.random() < 0.12:
            continue  # a missing lane varies density and leaves room for spurious copper
        corner = corner0 + lane * board.pitch * miter
        legs = [(0, d1, -reach, 0.0), (1, d2, 0.0, reach)] if second != first else [(0, d1, -reach, reach)]
        segments = []
        for leg, direction, lo, hi in legs:
            span = _clip_line(corner, direction, inner, pad_r)
            if span is None:
                continue
            t0, t1 = max(span[0], lo), min(span[1], hi)
            if t1 - t0 >= board.pitch:
                segments.append([leg, direction, t0, t1])
        if not segments:
            continue
        _trim_outer_ends(rng, segments, board.pitch)
        start = corner + segments[0][1] * segments[0][2]
        points = [start] + [corner + direction * t1 for _, direction, _, t1 in segments]
        joined = len(segments) == 2 and segments[0][3] == 0.0 and segments[1][2] == 0.0
        if joined:
            _polyline(board.copper, np.array(points), _thick(board.trace_w))
        for leg, direction, t0, t1 in segments:
            p0, p1 = corner + direction * t0, corner + direction * t1
            if not joined:
                cv2.line(board.copper, _pt(p0), _pt(p1), 255, _thick(board.trace_w), cv2.LINE_AA, shift=2)
            placed[(lane, leg)] = len(board.traces)
            board.traces.append(_Trace(p0, p1, board.trace_w))
        for end in _outer_ends(corner, segments, joined):
            if rng.random() < 0.6:
                _circle(board.copper, end, pad_r)
    for (lane, leg), index in placed.items():
        if (lane + 1, leg) in placed:
            board.neighbours.append((index, placed[(lane + 1, leg)]))


def _trim_outer_ends(rng: np.random.Generator, segments: list[list], pitch: float) -> None:
    """Pull back the free ends (not the bend) by a random amount, so lanes end staggered."""
    first, last = segments[0], segments[-1]
    if rng.random() < 0.5:
        first[2] = min(first[2] + rng.uniform(0.0, 0.35) * (first[3] - first[2]), first[3] - pitch)
    if rng.random() < 0.5:
        last[3] = max(last[3] - rng.uniform(0.0, 0.35) * (last[3] - last[2]), last[2] + pitch)


def _outer_ends(corner: np.ndarray, segments: list[list], joined: bool) -> list[np.ndarray]:
    if joined:
        return [corner + segments[0][1] * segments[0][2], corner + segments[1][1] * segments[1][3]]
    return [corner + direction * t for _, direction, t0, t1 in segments for t in (t0, t1)]


def _clip_line(
    origin: np.ndarray, direction: np.ndarray, rect: _Rect, pad: float
) -> tuple[float, float] | None:
    """Parameter range of the line ``origin + t * direction`` inside ``rect`` shrunk by ``pad``."""
    lo, hi = -1e9, 1e9
    for axis, (a, b) in enumerate(((rect[0] + pad, rect[2] - pad), (rect[1] + pad, rect[3] - pad))):
        d = direction[axis]
        if abs(d) < 1e-9:
            if not a <= origin[axis] <= b:
                return None
            continue
        ta, tb = (a - origin[axis]) / d, (b - origin[axis]) / d
        lo, hi = max(lo, min(ta, tb)), min(hi, max(ta, tb))
    return (lo, hi) if hi > lo else None


def _pt(p: np.ndarray) -> tuple[int, int]:
    x, y = _fixed(p)
    return int(x), int(y)


def _thick(width: float) -> int:
    return max(1, int(round(width)))


def _draw_pad_row(rng: np.random.Generator, board: _Board, tile: _Rect) -> None:
    """A row of rectangular SMD pads with fan-out stubs, like one side of an IC footprint."""
    inner = _shrink(tile, board.pitch * 0.5)
    if inner is None:
        return
    horizontal = (inner[2] - inner[0]) >= (inner[3] - inner[1])
    along_axis, across_axis = (0, 1) if horizontal else (1, 0)
    along = (inner[along_axis], inner[along_axis + 2])
    across = (inner[across_axis], inner[across_axis + 2])
    pad_long = board.pitch * rng.uniform(0.9, 1.4)
    pad_short = board.pitch * rng.uniform(0.45, 0.6)
    if across[1] - across[0] < pad_long:
        return
    count = int((along[1] - along[0] - pad_short) // board.pitch) + 1
    start = (along[0] + along[1]) / 2 - (count - 1) * board.pitch / 2
    row = rng.uniform(across[0] + pad_long / 2, across[1] - pad_long / 2)
    # Stubs leave towards the roomier side of the tile.
    outward = 1.0 if across[1] - row > row - across[0] else -1.0
    room = (across[1] - row) if outward > 0 else (row - across[0])
    placed: dict[int, int] = {}
    for i in range(count):
        centre = np.zeros(2)
        centre[along_axis] = start + i * board.pitch
        centre[across_axis] = row
        half = np.zeros(2)
        half[along_axis], half[across_axis] = pad_short / 2, pad_long / 2
        cv2.rectangle(board.copper, _pt(centre - half), _pt(centre + half), 255, -1, cv2.LINE_AA, shift=2)
        stub = room - board.trace_w / 2
        if rng.random() < 0.7 and stub > pad_long / 2 + board.pitch:
            end = centre.copy()
            end[across_axis] += outward * rng.uniform(pad_long / 2 + board.pitch, stub)
            cv2.line(board.copper, _pt(centre), _pt(end), 255, _thick(board.trace_w), cv2.LINE_AA, shift=2)
            # The traced part starts past the pad so trace defects do not land on the pad.
            begin = centre.copy()
            begin[across_axis] += outward * pad_long / 2
            placed[i] = len(board.traces)
            board.traces.append(_Trace(begin, end, board.trace_w))
    for i, index in placed.items():
        if i + 1 in placed:
            board.neighbours.append((index, placed[i + 1]))


def _draw_pour(rng: np.random.Generator, board: _Board, tile: _Rect) -> None:
    """A copper area with chamfered corners, as a ground pour or a large land."""
    inner = _shrink(tile, board.pitch * rng.uniform(0.5, 0.8))
    if inner is None:
        return
    room_w, room_h = inner[2] - inner[0], inner[3] - inner[1]
    w = max(min(room_w, board.pitch), room_w * rng.uniform(0.5, 1.0))
    h = max(min(room_h, board.pitch), room_h * rng.uniform(0.5, 1.0))
    cx = rng.uniform(inner[0] + w / 2, inner[2] - w / 2 + 1e-6)
    cy = rng.uniform(inner[1] + h / 2, inner[3] - h / 2 + 1e-6)
    c = min(w, h) * 0.2
    l, t, r, b = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    outline = np.array(
        [[l + c, t], [r - c, t], [r, t + c], [r, b - c], [r - c, b], [l + c, b], [l, b - c], [l, t + c]]
    )
    cv2.fillPoly(board.copper, [_fixed(outline)], 255, cv2.LINE_AA, shift=2)


def _draw_nothing(rng: np.random.Generator, board: _Board, tile: _Rect) -> None:
    """Bare substrate: boards have keep-out areas, and spurious copper needs somewhere to land."""


_TILE_DRAWERS: dict[str, Callable[[np.random.Generator, _Board, _Rect], None]] = {
    "bus": _draw_bus,
    "pads": _draw_pad_row,
    "pour": _draw_pour,
    "empty": _draw_nothing,
}


def _pick_trace_point(
    rng: np.random.Generator, board: _Board, end_clearance: float
) -> tuple[_Trace, np.ndarray] | None:
    """A trace and a point on its axis away from its pads; None if the board has no traces."""
    usable = _usable_traces(board, end_clearance)
    if not usable:
        return None
    trace = usable[int(rng.integers(len(usable)))]
    t = rng.uniform(end_clearance, trace.length - end_clearance)
    return trace, trace.p0 + t * trace.direction


def _usable_traces(board: _Board, end_clearance: float | None = None) -> list[_Trace]:
    clearance = _TRACE_END_CLEARANCE * board.pitch if end_clearance is None else end_clearance
    return [t for t in board.traces if t.length > 2 * clearance + 2]


def _fallback_blob(board: _Board, value: int) -> np.ndarray:
    """A last resort for a layout without the feature a defect needs: a small blob of copper or
    substrate where the distance map has the most room, so the defect is still drawn."""
    copper = board.copper.copy()
    source = copper == 0 if value == 255 else copper > 0
    dist = cv2.distanceTransform(source.astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    _circle(copper, np.array([x, y], dtype=float), max(2.0, 4.0 * board.scale), value)
    return copper


def _draw_open(rng: np.random.Generator, board: _Board) -> np.ndarray:
    picked = _pick_trace_point(rng, board, _TRACE_END_CLEARANCE * board.pitch)
    if picked is None:
        return _fallback_blob(board, 0)
    trace, at = picked
    gap = max(3.0, rng.uniform(5.0, 11.0) * board.scale)
    # The cut is a little wider than the trace but narrower than the space to the next lane.
    half_across = trace.width / 2 + (board.pitch - trace.width) * 0.3
    skew = rng.uniform(-0.3, 0.3)
    d, n = trace.direction, trace.normal
    corners = [
        at - d * gap / 2 - n * half_across + d * skew * half_across,
        at + d * gap / 2 - n * half_across + d * skew * half_across,
        at + d * gap / 2 + n * half_across - d * skew * half_across,
        at - d * gap / 2 + n * half_across - d * skew * half_across,
    ]
    copper = board.copper.copy()
    cv2.fillPoly(copper, [_fixed(np.array(corners))], 0, cv2.LINE_AA, shift=2)
    return copper


def _draw_short(rng: np.random.Generator, board: _Board) -> np.ndarray:
    spans = [span for span in map(lambda pair: _side_by_side(board, pair), board.neighbours) if span]
    if not spans:
        return _fallback_blob(board, 255)
    a, b, lo, hi = spans[int(rng.integers(len(spans)))]
    d = a.direction
    start = a.p0 + rng.uniform(lo, hi) * d
    end = start + float(np.dot(b.p0 - a.p0, a.normal)) * a.normal
    # A slanted, kinked bridge: etch residue rarely runs straight across.
    end = end + d * rng.uniform(-0.4, 0.4) * board.pitch
    mid = (start + end) / 2 + d * rng.uniform(-0.15, 0.15) * board.pitch
    thickness = max(2.0, rng.uniform(2.5, 5.0) * board.scale)
    copper = board.copper.copy()
    _polyline(copper, np.array([start, mid, end]), _thick(thickness))
    return copper


def _side_by_side(board: _Board, pair: tuple[int, int]) -> tuple[_Trace, _Trace, float, float] | None:
    """Two neighbouring traces and the stretch of the first's axis where both run, minus pad
    clearance at the ends; None when that stretch is too short to bridge."""
    a, b = board.traces[pair[0]], board.traces[pair[1]]
    b0, b1 = float(np.dot(b.p0 - a.p0, a.direction)), float(np.dot(b.p1 - a.p0, a.direction))
    clearance = board.pitch * 0.7
    lo, hi = max(0.0, min(b0, b1)) + clearance, min(a.length, max(b0, b1)) - clearance
    return (a, b, lo, hi) if hi > lo else None


def _draw_mousebite(rng: np.random.Generator, board: _Board) -> np.ndarray:
    picked = _pick_trace_point(rng, board, _TRACE_END_CLEARANCE * board.pitch)
    if picked is None:
        return _fallback_blob(board, 0)
    trace, at = picked
    side = 1.0 if rng.random() < 0.5 else -1.0
    radius = min(trace.width * 0.45, max(1.5, rng.uniform(2.5, 3.8) * board.scale))
    count = int(rng.integers(3, 6))
    spacing = radius * rng.uniform(1.3, 1.8)
    copper = board.copper.copy()
    edge = at + side * trace.normal * trace.width / 2
    # A row of overlapping round bites, as left by a breakaway tab or by under-etching.
    for i in range(count):
        offset = (i - (count - 1) / 2) * spacing
        depth = rng.uniform(0.0, 0.35) * radius
        _circle(copper, edge + trace.direction * offset - side * trace.normal * depth, radius, 0)
    return copper


def _draw_spur(rng: np.random.Generator, board: _Board) -> np.ndarray:
    picked = _pick_trace_point(rng, board, _TRACE_END_CLEARANCE * board.pitch)
    if picked is None:
        return _fallback_blob(board, 255)
    trace, at = picked
    side = 1.0 if rng.random() < 0.5 else -1.0
    space = board.pitch - trace.width
    # Reaches well into the gap but stops short of the next lane (that would be a short).
    length = max(3.0, space * rng.uniform(0.4, 0.65))
    base = max(2.0, rng.uniform(3.5, 6.5) * board.scale)
    lean = rng.uniform(-0.4, 0.4) * length
    edge = at + side * trace.normal * (trace.width / 2 - 1)
    tip = edge + side * trace.normal * length + trace.direction * lean
    tip_half = rng.uniform(0.05, 0.25) * base
    polygon = np.array([
        edge - trace.direction * base / 2,
        edge + trace.direction * base / 2,
        tip + trace.direction * tip_half,
        tip - trace.direction * tip_half,
    ])
    copper = board.copper.copy()
    cv2.fillPoly(copper, [_fixed(polygon)], 255, cv2.LINE_AA, shift=2)
    return copper


def _draw_spurious_copper(rng: np.random.Generator, board: _Board) -> np.ndarray:
    radius = max(2.0, rng.uniform(3.5, 8.0) * board.scale)
    clearance = max(2.0, 4.0 * board.scale)
    at = _room(rng, board.copper == 0, radius + clearance)
    if at is None:
        return _fallback_blob(board, 255)
    copper = board.copper.copy()
    aspect = rng.uniform(0.5, 1.0)
    _fill_poly(copper, _irregular_polygon(rng, at, (radius, radius * aspect), rng.uniform(0, math.pi), 0.3))
    return copper


def _draw_pin_hole(rng: np.random.Generator, board: _Board) -> np.ndarray:
    radius = max(1.5, rng.uniform(2.2, 3.8) * board.scale)
    at = _room(rng, board.copper > 0, radius + max(1.5, 2.0 * board.scale))
    if at is None:
        return _fallback_blob(board, 0)
    copper = board.copper.copy()
    _circle(copper, at, radius, 0)
    return copper


def _room(rng: np.random.Generator, free: np.ndarray, needed: float) -> np.ndarray | None:
    """A random pixel at least ``needed`` away from anything that is not ``free``, or None."""
    # Borders count as obstacles so blobs do not get cut by the image edge.
    padded = np.pad(free.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    ys, xs = np.nonzero(dist >= needed)
    if len(xs) == 0:
        return None
    i = int(rng.integers(len(xs)))
    return np.array([xs[i], ys[i]], dtype=float)


_PCB_DRAWERS: dict[str, Callable[[np.random.Generator, _Board], np.ndarray]] = {
    "open": _draw_open,
    "short": _draw_short,
    "mousebite": _draw_mousebite,
    "spur": _draw_spur,
    "spurious_copper": _draw_spurious_copper,
    "pin_hole": _draw_pin_hole,
}


# ---------------------------------------------------------------------------------------------
# A defect no detector learns

# Not in any CLASS_NAMES list: no dataset of the generator carries it, so no detector trained on them can
# name it. It stands for the defect nobody thought of (a label glued on, a smear of grease) that only a
# model of what good parts look like can catch (yolodefect.anomaly).
UNSEEN_CLASS = "contamination"


def draw_contamination(
    image: np.ndarray, rng: np.random.Generator, avoid: Sequence[Box] = ()
) -> tuple[np.ndarray, Box]:
    """A copy of a grey uint8 part with a foreign object on it, and its box (class :data:`UNSEEN_CLASS`).

    The object is a glued-on label (a near-white card with dark print lines, slightly turned) or a dark
    irregular smear with streaks, a fifth to a third of the part's shorter side across, placed where it does
    not pile onto the ``avoid`` boxes (the part's other defects).
    """
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"expected a grey uint8 (H, W) image, got {image.dtype} {image.shape}")
    width, height = _check_size((image.shape[1], image.shape[0]))
    placed = [tuple(round(v) for v in box.xyxy) for box in avoid]
    drawer = _draw_label if rng.random() < 0.5 else _draw_smear
    (alpha, target), xyxy = _place(lambda: drawer(rng, width, height), placed, _steel_box)
    surface = image.astype(np.float32)
    # Paint towards the object's own grey levels (an opaque object hides the surface under it).
    surface += alpha * (target - surface)
    return np.clip(np.round(surface), 0, 255).astype(np.uint8), _to_box(UNSEEN_CLASS, xyxy)


def _draw_label(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    side = min(width, height)
    label_w, label_h = rng.uniform(0.26, 0.36) * side, rng.uniform(0.17, 0.24) * side
    center = np.array([rng.uniform(label_w * 0.6, width - label_w * 0.6),
                       rng.uniform(label_w * 0.6, height - label_w * 0.6)])
    turn = float(rng.uniform(-25.0, 25.0))
    corners = cv2.boxPoints(((float(center[0]), float(center[1])), (float(label_w), float(label_h)), turn))
    mask = np.zeros((height, width), np.uint8)
    _fill_poly(mask, _fixed(corners))
    target = np.full((height, width), rng.uniform(225.0, 245.0), np.float32)
    # Print: two or three lines of text-like dashes along the card, inside its margins.
    ink = np.zeros_like(mask)
    along = np.array([math.cos(math.radians(turn)), math.sin(math.radians(turn))])
    across = np.array([-along[1], along[0]])
    lines = int(rng.integers(2, 4))
    for row in range(lines):
        offset = (row - (lines - 1) / 2) * label_h * 0.26
        start = -label_w * 0.38
        while start < label_w * 0.3:
            dash = rng.uniform(0.08, 0.22) * label_w
            points = np.array([center + across * offset + along * start,
                               center + across * offset + along * min(start + dash, label_w * 0.38)])
            _polyline(ink, points, max(1, round(side / 70)))
            start += dash + rng.uniform(0.03, 0.06) * label_w
    ink = np.minimum(ink, mask)
    target -= (ink.astype(np.float32) / 255.0) * np.float32(rng.uniform(150.0, 190.0))
    return mask.astype(np.float32) / 255.0, target


def _draw_smear(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    side = min(width, height)
    radius = rng.uniform(0.12, 0.17) * side
    reach = radius * 2.1  # the lumpy ellipse's long half-axis, wobble included
    center = np.array([rng.uniform(reach, width - reach), rng.uniform(reach, height - reach)])
    angle = rng.uniform(0.0, math.pi)
    mask = np.zeros((height, width), np.uint8)
    _fill_poly(mask, _irregular_polygon(rng, center, (radius * 1.5, radius * 0.6), angle, 0.35))
    alpha = cv2.GaussianBlur(mask, (0, 0), max(1.0, radius / 8)).astype(np.float32) / 255.0
    # Streaks along the wipe: grease smeared by a glove or a wiper blade.
    coarse = rng.standard_normal((4, max(2, width // 6)), dtype=np.float32)
    streaks = cv2.resize(coarse, (width * 2, height * 2), interpolation=cv2.INTER_LINEAR)
    turn = cv2.getRotationMatrix2D((width, height), math.degrees(angle), 1.0)
    streaks = cv2.warpAffine(streaks, turn, (width * 2, height * 2))[height // 2:height // 2 + height,
                                                                      width // 2:width // 2 + width]
    target = np.float32(rng.uniform(20.0, 40.0)) + np.float32(12.0) * streaks
    return alpha, target
