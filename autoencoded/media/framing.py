"""How a picture of one shape becomes a frame of another: find black bars, crop, fit or stretch, resize.

One geometry for every command: prepare frames a film for training, live and render frame a camera or a
film for the model. Sizes are stored pixels; the sample aspect ratio (`sar`, a pixel's width over its
height) turns them into the shape the picture is shown at, so a 704x480 clip with 128:117 pixels is
treated as the 4:3 picture it is.

Modes (`--crop`):
- center: the middle of the picture at the frame's aspect (fills the frame, cuts the rest);
- fit: the whole picture scaled into the frame, black bars on the two short sides;
- none: the whole picture stretched to the frame;
- auto: black letterbox/pillarbox bars trimmed first; then the centre is cropped when that cuts at most
  `crop_limit` of the picture, else it is fitted. prepare crops always (crop_limit 1: training wants frames
  without bars); live and render crop only a sliver (AUTO_CROP_LIMIT), so a 4:3 face or a 2.35:1 film is
  shown whole and a 16:10 webcam still fills a 16:9 frame.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np

from autoencoded import signals
from autoencoded.media.probe import VideoInfo
from autoencoded.media.tools import ffmpeg_path, file_arg, have_ffmpeg

CROP_MODES = ("auto", "center", "fit", "none")
AUTO_CROP_LIMIT = 0.10  # live and render: `auto` crops when that cuts at most 10% of the width or height
# a row/column is a black bar only if no pixel in it, in any sample, is brighter than this (0..255, the
# brightest channel): black with the codec's noise on it. A mean would take dim picture (a night sky, a
# dark coat with a lit button) for a bar and cut it away
BAR_MAX = 32

Box = tuple[int, int, int, int]  # x, y, w, h in stored pixels


def detect_bars(samples: list[np.ndarray], full_size: tuple[int, int] | None = None) -> Box | None:
    """(x, y, w, h) of the picture inside black letterbox/pillarbox bars, or None if there are none.

    A row or column is a bar only if it is black in every sample: its brightest pixel over all samples is
    at most BAR_MAX, so dim picture at an edge is never taken for a bar. Bars are trimmed from the edges
    inwards only. Samples may be smaller than the source: the box is scaled to `full_size` (W, H), rounding
    into the picture.
    """
    if not samples:
        return None
    peak = np.max([s.max(axis=2) for s in samples], axis=0)  # each pixel's brightest channel in any sample
    rows, cols = peak.max(axis=1), peak.max(axis=0)
    bright_rows, bright_cols = np.nonzero(rows > BAR_MAX)[0], np.nonzero(cols > BAR_MAX)[0]
    if bright_rows.size == 0 or bright_cols.size == 0:  # all black: nothing to judge by
        return None
    h, w = peak.shape
    fw, fh = full_size or (w, h)
    sx, sy = fw / w, fh / h
    # a partly dark edge row (the scaled-down bar boundary) counts as picture; then scale and stay inside
    y0, y1 = int(np.ceil(bright_rows[0] * sy)), int(np.floor((bright_rows[-1] + 1) * sy))
    x0, x1 = int(np.ceil(bright_cols[0] * sx)), int(np.floor((bright_cols[-1] + 1) * sx))
    # even coordinates and sizes (YUV 4:2:0)
    y0, x0 = y0 + (y0 & 1), x0 + (x0 & 1)
    y1, x1 = y1 - ((y1 - y0) & 1), x1 - ((x1 - x0) & 1)
    if (x0, y0, x1, y1) == (0, 0, fw, fh) or y1 - y0 < fh * 0.3 or x1 - x0 < fw * 0.3:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def sample_frames(info: VideoInfo, decoder: str, count: int = 12) -> list[np.ndarray]:
    """Up to `count` RGB frames spread over 10%..90% of the film, at most SAMPLE_WIDTH wide.

    ffmpeg: one process taking the keyframe at or before each point and decoding nothing else (~0.7 s
    for 12 samples of a 720p H.264 file here; accurate seeks took ~3 s, and 8 s on a 1080p clip whose only
    keyframe is its first).
    """
    count = min(count, max(6, int((info.duration_s or 0) / 5)))  # one per 5 s, 6 to `count`
    sw, sh = sample_size(info)
    points = [0.1 + 0.8 * k / max(count - 1, 1) for k in range(count)] if count > 1 else [0.5]
    if decoder == "opencv" or not info.duration_s:
        return _sample_opencv(info, points, (sw, sh))
    cmd, graph = [ffmpeg_path() or "ffmpeg", "-v", "quiet", "-nostdin"], []
    for k, p in enumerate(points):
        cmd += ["-skip_frame", "nokey", "-noaccurate_seek", "-ss", f"{info.duration_s * p:.3f}",
                "-i", file_arg(info.path)]
        graph.append(f"[{k}:v:0]trim=end_frame=1,setpts=PTS-STARTPTS,scale={sw}:{sh}:flags=area,setsar=1[v{k}]")
    joined = ";".join(graph) + ";" + "".join(f"[v{k}]" for k in range(count)) + f"concat=n={count}:v=1:a=0[out]"
    cmd += ["-filter_complex", joined, "-map", "[out]", "-vsync", "passthrough", "-f", "rawvideo",
            "-pix_fmt", "rgb24", "pipe:1"]
    data = subprocess.run(cmd, capture_output=True, **signals.CHILD).stdout
    size = sw * sh * 3
    out = [np.frombuffer(data[o:o + size], np.uint8).reshape(sh, sw, 3) for o in range(0, len(data) - size + 1, size)]
    return out or _sample_opencv(info, points, (sw, sh))


SAMPLE_WIDTH = 960


def sample_size(info: VideoInfo) -> tuple[int, int]:
    if info.width <= SAMPLE_WIDTH:
        return info.width, info.height
    return SAMPLE_WIDTH, max(2, int(round(info.height * SAMPLE_WIDTH / info.width / 2)) * 2)


def _sample_opencv(info: VideoInfo, points: list[float], size: tuple[int, int]) -> list[np.ndarray]:
    n = info.expected_frames or 0
    cap = cv2.VideoCapture(str(info.path))
    out = []
    try:
        for i in sorted({int(n * p) for p in points}) if n > 1 else [0]:
            if i:
                cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            ok, frame = cap.read()
            if ok and frame.shape[:2] == (info.height, info.width):
                out.append(cv2.cvtColor(resize(frame, *size), cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return out


def centre_box(box: Box, sar: float, target: float) -> Box:
    """The middle of `box` at the display aspect `target` (even coordinates and sizes, for ffmpeg's crop)."""
    x, y, w, h = box
    shown = w * sar / h
    if shown > target + 1e-3:
        cw = min(w, max(2, int(round(h * target / sar / 2)) * 2))
        x += (w - cw) // 2 // 2 * 2
        w = cw
    elif shown < target - 1e-3:
        ch = min(h, max(2, int(round(w * sar / target / 2)) * 2))
        y += (h - ch) // 2 // 2 * 2
        h = ch
    return (x, y, w, h)


def fit_size(box: Box, sar: float, width: int, height: int) -> tuple[int, int]:
    """The size of `box` scaled whole into width x height at its display aspect (even sides)."""
    shown = box[2] * sar / box[3]
    if shown >= width / height:
        return width, max(2, min(height, int(round(width / shown / 2)) * 2))
    return max(2, min(width, int(round(height * shown / 2)) * 2)), height


def cut_share(box: Box, sar: float, target: float) -> float:
    """The share of the picture's width or height a centre crop to `target` would cut (0 to 1)."""
    shown = box[2] * sar / box[3]
    return 1.0 - min(shown, target) / max(shown, target)


@dataclass(frozen=True)
class Framing:
    """What becomes of a picture of `source` size (stored pixels, pixel aspect `sar`) in a frame of aspect
    `target`: the region kept (`box`), and whether it is cropped, fitted (padded), stretched or used as is."""

    source: tuple[int, int]
    sar: float
    target: float
    mode: str  # the mode asked for
    action: str  # "as is", "crop", "fit" or "stretch"
    box: Box
    bars: Box | None = None

    def inner(self, width: int, height: int) -> tuple[int, int]:
        """Size of the picture inside a width x height frame (smaller than the frame when fitted)."""
        return fit_size(self.box, self.sar, width, height) if self.action == "fit" else (width, height)

    def apply(self, frame: np.ndarray, width: int, height: int) -> np.ndarray:
        """A uint8 H x W x 3 picture of `source` size -> the width x height frame."""
        x, y, w, h = self.box
        if (w, h) != (frame.shape[1], frame.shape[0]):
            frame = frame[y:y + h, x:x + w]
        iw, ih = self.inner(width, height)
        return pad_to(resize(frame, iw, ih), width, height)

    def describe(self) -> str:
        """One line for the start of a run: the picture's shape and what is done to it."""
        w, h = self.source
        pixels = f" with {_pixel_ratio(self.sar)} pixels" if abs(self.sar - 1.0) > 1e-3 else ""
        shown = f"{w}x{h}{pixels} ({_ratio(w * self.sar / h)})"
        target = _ratio(self.target)
        trimmed = ""
        if self.bars is not None and self.action in ("crop", "fit"):
            trimmed = f"black bars trimmed to {self.bars[2]}x{self.bars[3]}, then "
        if self.action == "as is":
            return f"{shown} fills the {target} frame as it is"
        if self.action == "stretch":
            return f"{shown} stretched to {target} (--crop none)"
        region = self.bars or (0, 0, w, h)
        if self.action == "crop":
            cut = cut_share(region, self.sar, self.target)
            side = "width" if region[2] * self.sar / region[3] > self.target else "height"
            return (f"{shown}: {trimmed}the centre cropped to {target} (cuts {cut:.0%} of the {side}; "
                    f"--crop fit keeps it whole)")
        bars = "left and right" if region[2] * self.sar / region[3] < self.target else "above and below"
        return (f"{shown}: {trimmed}fitted whole into {target}, black bars {bars} "
                f"(--crop center fills the frame)")


def frame_for(width: int, height: int, sar: float, mode: str, target_w: int, target_h: int,
              bars: Box | None = None, crop_limit: float = 1.0) -> Framing:
    """The Framing of a width x height picture (pixel aspect `sar`) into target_w x target_h frames."""
    if mode not in CROP_MODES:
        raise ValueError(f"crop mode {mode!r}: use one of {', '.join(CROP_MODES)}")
    sar = sar if sar and sar > 0 else 1.0
    target = target_w / target_h
    region = bars if (mode == "auto" and bars is not None) else (0, 0, width, height)
    if mode == "auto":
        action = "crop" if cut_share(region, sar, target) <= crop_limit + 1e-9 else "fit"
    else:
        action = {"center": "crop", "fit": "fit", "none": "stretch"}[mode]
    box = centre_box(region, sar, target) if action == "crop" else region
    if action != "stretch" and abs(box[2] * sar / box[3] - target) <= 1e-3 * target and box == (0, 0, width, height):
        action = "as is"
    return Framing((width, height), sar, target, mode, action, box, bars if mode == "auto" else None)


def for_video(info: VideoInfo, mode: str, width: int, height: int, crop_limit: float = AUTO_CROP_LIMIT,
              decoder: str | None = None) -> Framing:
    """The Framing of a video file into width x height frames; for `auto`, black bars are found on frames
    sampled across the film first. decoder: "ffmpeg" or "opencv" (default: ffmpeg when installed)."""
    bars = None
    if mode == "auto":
        decoder = decoder or ("ffmpeg" if have_ffmpeg() else "opencv")
        bars = detect_bars(sample_frames(info, decoder), (info.width, info.height))
    return frame_for(info.width, info.height, info.sar, mode, width, height, bars, crop_limit)


def resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-filtered resize; halves first while the shrink is over 4x (same look, ~3x cheaper)."""
    h, w = frame.shape[:2]
    while w >= 4 * width and h >= 4 * height:
        w, h = w // 2, h // 2
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    if (w, h) == (width, height):
        return np.ascontiguousarray(frame)
    interp = cv2.INTER_AREA if (w >= width and h >= height) else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(frame), (width, height), interpolation=interp)


def pad_to(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """`frame` centred on black at width x height."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    out = np.zeros((height, width, 3), np.uint8)
    y0, x0 = (height - h) // 2, (width - w) // 2
    out[y0:y0 + h, x0:x0 + w] = frame
    return out


COMMON_ASPECTS = {"16:9": 16 / 9, "4:3": 4 / 3, "16:10": 16 / 10, "3:2": 3 / 2, "1:1": 1.0, "5:4": 5 / 4,
                  "9:16": 9 / 16, "3:4": 3 / 4, "21:9": 21 / 9}


def _ratio(aspect: float) -> str:
    """A picture's shape: 1.777 -> '16:9', 1.333 -> '4:3', 2.35 -> '2.35:1'."""
    for name, value in COMMON_ASPECTS.items():
        if abs(aspect - value) < 0.005:
            return name
    return f"{aspect:.2f}:1"


def _pixel_ratio(sar: float) -> str:
    """A pixel's shape as a fraction: 128/117 -> '128:117'."""
    f = Fraction(sar).limit_denominator(1000)
    return f"{f.numerator}:{f.denominator}"


class Reframer:
    """The Framing of each picture size a stream shows, worked out when that size first appears: `first`
    for the size the film was probed at (its black bars found on frames sampled across it), frame_for
    without bars for any other, since a later segment's bars cannot be sampled before it comes. A stream
    may change size part-way (a portrait segment after a landscape one): its frames are framed as they are,
    never stretched to the first segment's shape."""

    def __init__(self, first: Framing, target_w: int, target_h: int, crop_limit: float) -> None:
        self.first, self.size, self.crop_limit = first, (target_w, target_h), crop_limit
        self._known: dict[tuple[int, int, float], Framing] = {}

    def __call__(self, width: int, height: int, sar: float | None = None) -> tuple[Framing, bool]:
        """(the Framing of a width x height picture, whether this is the first picture of that shape)."""
        if (width, height) == self.first.source:
            return self.first, False
        key = (width, height, round(sar or self.first.sar, 6))
        known = self._known.get(key)
        if known is not None:
            return known, False
        f = frame_for(width, height, sar or self.first.sar, self.first.mode, *self.size, None, self.crop_limit)
        self._known[key] = f
        return f, True
