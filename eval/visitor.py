"""Simulated visitor photos on kornia: batched, seeded, with severity levels (the scene: docs/benchmarks.md).

Evaluation only: the one module outside ``export/`` that may import PyTorch (via kornia), and only inside
functions; the build-time calibration keeps the light cv2 simulator of ``calibration/photos.py``. Photo i draws
from generators seeded with (seed, i), so the same seed and image give the same photo however they are batched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

PHOTO_LONG, PHOTO_SHORT = 1024, 768  # output photo size (both multiples of 16, as the JPEG codec needs)
CANVAS = 1280  # side of the wall-plane canvas the painting is placed on
FOCAL = 0.85  # focal length / photo long side: a phone's main camera (≈ 60° horizontal field of view)


@dataclass(frozen=True)
class Severity:
    """Ranges the per-photo parameters are drawn from."""

    yaw_deg: float  # visitor standing to one side: |yaw| up to this
    pitch_deg: float  # looking up at / down on the painting
    roll_deg: float  # phone held slightly rotated
    fill: tuple[float, float]  # painting's long side / photo's matching side, log-uniform
    detail_p: float  # chance of a close-up that shows only part of the painting
    detail_fill: tuple[float, float]
    offset: float  # painting centre off the photo centre, as a fraction of the photo
    exposure: tuple[float, float]
    white_balance: float  # per-channel gain spread
    haze: float  # max loss of contrast (lens flare, cheap optics)
    vignette: float  # light falloff towards the corners
    glare_p: float
    glare: tuple[float, float]  # added brightness of a spotlight reflection (0…255 scale)
    defocus: float  # max Gaussian sigma, pixels of the 1024-px photo
    motion_p: float
    motion: int  # max motion-blur kernel length, pixels
    noise: tuple[float, float]  # read-noise sigma range (shot noise scales with it)
    jpeg: tuple[int, int]  # JPEG quality range
    occlusion_p: float  # chance of people between the visitor and the painting
    occlusion: float  # max fraction of the painting's width a person covers
    frame_p: float
    label_p: float


SEVERITIES: dict[str, Severity] = {
    "mild": Severity(yaw_deg=12, pitch_deg=6, roll_deg=3, fill=(0.45, 0.9), detail_p=0.0, detail_fill=(1.0, 1.0),
                     offset=0.08, exposure=(0.85, 1.1), white_balance=0.06, haze=0.1, vignette=0.15, glare_p=0.15,
                     glare=(30, 70), defocus=0.8, motion_p=0.05, motion=5, noise=(1, 3), jpeg=(80, 95),
                     occlusion_p=0.0, occlusion=0.0, frame_p=0.8, label_p=0.5),
    "default": Severity(yaw_deg=30, pitch_deg=12, roll_deg=7, fill=(0.3, 0.95), detail_p=0.15,
                        detail_fill=(1.1, 2.0), offset=0.15, exposure=(0.6, 1.15), white_balance=0.12, haze=0.3,
                        vignette=0.35, glare_p=0.4, glare=(50, 150), defocus=1.8, motion_p=0.25, motion=11,
                        noise=(2, 7), jpeg=(55, 90), occlusion_p=0.2, occlusion=0.35, frame_p=0.85, label_p=0.7),
    "hard": Severity(yaw_deg=50, pitch_deg=18, roll_deg=12, fill=(0.2, 0.95), detail_p=0.3,
                     detail_fill=(1.2, 3.0), offset=0.25, exposure=(0.4, 1.2), white_balance=0.2, haze=0.45,
                     vignette=0.5, glare_p=0.7, glare=(100, 220), defocus=3.0, motion_p=0.5, motion=21,
                     noise=(5, 14), jpeg=(35, 75), occlusion_p=0.45, occlusion=0.55, frame_p=0.9, label_p=0.8),
}


def severity(name: str | Severity) -> Severity:
    if isinstance(name, Severity):
        return name
    if name not in SEVERITIES:
        from artlens.errors import CollectionError

        raise CollectionError(f"unknown severity {name!r}; known: {', '.join(SEVERITIES)}")
    return SEVERITIES[name]


@dataclass
class Shot:
    """One photo's drawn parameters (recorded so a photo can be explained)."""

    portrait: bool
    fill: float
    detail: bool
    yaw: float
    pitch: float
    roll: float
    offset: tuple[float, float]
    exposure: float
    gains: tuple[float, float, float]
    haze: float
    glare: float
    defocus: float
    motion: int
    motion_angle: float
    noise: float
    jpeg: int
    occluders: int


@dataclass
class SimulatedPhoto:
    jpeg: bytes
    corners: np.ndarray  # [4, 2] the painting's corners in the photo, pixels (TL, TR, BR, BL)
    shot: Shot


def simulate_photos(images: list[np.ndarray], *, seed: int, level: str | Severity = "default",
                    batch_size: int = 8, first_index: int = 0) -> list[SimulatedPhoto]:
    """One simulated visitor photo per RGB uint8 image, as JPEG.

    Photo ``first_index + i`` of a seed depends only on (seed, its index, its image): batching and the
    number of images in the call never change it."""
    import torch

    sev = severity(level)
    keys = [(seed, first_index + i) for i in range(len(images))]
    shots = [_draw_shot(np.random.default_rng([*key, 0]), sev) for key in keys]
    out: list[SimulatedPhoto | None] = [None] * len(images)
    with torch.no_grad():
        for portrait in (False, True):  # one photo size per batch
            idx = [i for i, s in enumerate(shots) if s.portrait == portrait]
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                photos = _render(images, shots, chunk, sev, [keys[i] for i in chunk])
                for i, photo in zip(chunk, photos, strict=True):
                    out[i] = photo
    return [p for p in out if p is not None]


def _draw_shot(rng: np.random.Generator, sev: Severity) -> Shot:
    detail = bool(rng.random() < sev.detail_p)
    lo, hi = sev.detail_fill if detail else sev.fill
    return Shot(
        portrait=bool(rng.random() < 0.4),
        fill=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
        detail=detail,
        yaw=float(rng.uniform(-sev.yaw_deg, sev.yaw_deg)),
        pitch=float(rng.uniform(-0.3 * sev.pitch_deg, sev.pitch_deg)),  # paintings hang at or above eye level
        roll=float(rng.uniform(-sev.roll_deg, sev.roll_deg)),
        offset=(float(rng.uniform(-sev.offset, sev.offset)), float(rng.uniform(-sev.offset, sev.offset))),
        exposure=float(rng.uniform(*sev.exposure)),
        gains=tuple(float(g) for g in 1.0 + rng.uniform(-sev.white_balance, sev.white_balance, size=3)),
        haze=float(rng.uniform(0, sev.haze)),
        glare=float(rng.uniform(*sev.glare)) if rng.random() < sev.glare_p else 0.0,
        defocus=float(rng.uniform(0.0, sev.defocus)),
        motion=int(rng.integers(3, sev.motion + 1)) | 1 if rng.random() < sev.motion_p else 0,
        motion_angle=float(rng.uniform(0, 180)),
        noise=float(rng.uniform(*sev.noise)),
        jpeg=int(rng.integers(sev.jpeg[0], sev.jpeg[1] + 1)),
        occluders=int(rng.integers(1, 3)) if rng.random() < sev.occlusion_p else 0,
    )


# -- the wall plane -----------------------------------------------------------------------------------------
def _wall_canvas(rgb: np.ndarray, painting_side: int, sev: Severity, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The painting (framed, with a label beside it) on a CANVAS² wall; returns canvas and painting corners."""
    h, w = rgb.shape[:2]
    scale = painting_side / max(h, w)
    pw, ph = max(8, round(w * scale)), max(8, round(h * scale))
    wall_rgb = rng.uniform(120, 235) + rng.uniform(-14, 14, size=3)  # gallery walls: greys, creams, muted colours
    # Low-frequency unevenness of paint and light on the wall.
    texture = cv2.resize(rng.normal(0, 5, size=(6, 6)).astype(np.float32), (CANVAS, CANVAS),
                         interpolation=cv2.INTER_CUBIC)
    canvas = (np.clip(wall_rgb, 15, 240).astype(np.float32)[None, None] + texture[..., None])
    x0, y0 = (CANVAS - pw) // 2, (CANVAS - ph) // 2
    if rng.random() < sev.frame_p:
        fw = max(3, round(rng.uniform(0.03, 0.09) * max(pw, ph)))
        base = [np.array([176, 138, 62]), np.array([70, 45, 28]), np.array([25, 22, 20]),
                np.array([200, 190, 170])][int(rng.integers(4))] * rng.uniform(0.8, 1.15)
        # Bevel: brighter towards the outside edge, a dark rabbet at the inside.
        ramp = np.linspace(1.25, 0.55, fw)[:, None]
        # Cast shadow of the frame on the wall (the spotlight is above), then the frame itself.
        q = 4  # drawn and blurred at quarter resolution: a soft shadow needs no detail
        shadow = np.zeros((CANVAS // q, CANVAS // q), np.float32)
        cv2.rectangle(shadow, ((x0 - fw + 6) // q, (y0 - fw + 10) // q),
                      ((x0 + pw + fw + 6) // q, (y0 + ph + fw + 14) // q), 1.0, -1)
        shadow = cv2.resize(cv2.GaussianBlur(shadow, (0, 0), 2), (CANVAS, CANVAS), interpolation=cv2.INTER_LINEAR)
        canvas *= (1 - 0.35 * shadow)[..., None]
        for k in range(fw):
            c = np.clip(base * ramp[k], 0, 255)
            cv2.rectangle(canvas, (x0 - fw + k, y0 - fw + k), (x0 + pw + fw - 1 - k, y0 + ph + fw - 1 - k),
                          tuple(float(v) for v in c), 1)
    canvas[y0:y0 + ph, x0:x0 + pw] = cv2.resize(rgb, (pw, ph), interpolation=cv2.INTER_AREA).astype(np.float32)
    if rng.random() < sev.label_p:
        _draw_label(canvas, x0, y0, pw, ph, rng)
    corners = np.array([[x0, y0], [x0 + pw, y0], [x0 + pw, y0 + ph], [x0, y0 + ph]], np.float32)
    return canvas, corners


def _draw_label(canvas: np.ndarray, x0: int, y0: int, pw: int, ph: int, rng: np.random.Generator) -> None:
    """A wall label: a light card with lines of dark 'text' (title, artist, date), beside or under the work."""
    lw = round(rng.uniform(0.12, 0.2) * max(pw, ph))
    lh = round(lw * rng.uniform(0.45, 0.7))
    gap = round(0.08 * max(pw, ph))
    if rng.random() < 0.6:
        lx, ly = x0 + pw + gap, y0 + ph - lh - round(rng.uniform(0, 0.3) * ph)
    else:
        lx, ly = x0 + round(rng.uniform(0, 0.2) * pw), y0 + ph + gap
    lx, ly = int(np.clip(lx, 0, CANVAS - lw - 1)), int(np.clip(ly, 0, CANVAS - lh - 1))
    card = np.array([235, 232, 222]) * rng.uniform(0.9, 1.05)
    cv2.rectangle(canvas, (lx, ly), (lx + lw, ly + lh), tuple(float(v) for v in card), -1)
    line_h = max(2, lh // 9)
    y = ly + line_h * 2
    while y + line_h < ly + lh - line_h:
        x_end = lx + round(lw * rng.uniform(0.45, 0.9))
        x = lx + line_h * 2
        while x < x_end:  # words
            word = round(line_h * rng.uniform(1.5, 5))
            cv2.rectangle(canvas, (x, y), (min(x + word, x_end), y + line_h), (40, 38, 36), -1)
            x += word + line_h
        y += round(line_h * 1.8)


# -- the camera ---------------------------------------------------------------------------------------------
def _camera_quad(corners: np.ndarray, shot: Shot, size: tuple[int, int]) -> np.ndarray:
    """Where the painting's corners land in the photo: a rotated pinhole camera (yaw, pitch, roll) looking at
    the wall, scaled so the painting fills ``shot.fill`` of the frame, shifted by ``shot.offset``."""
    pw_h, pw_w = size
    f = FOCAL * max(pw_w, pw_h)
    # The painting's corners, centred, on a fronto-parallel plane at depth f (pixel units).
    c = corners - corners.mean(axis=0)
    pts = np.column_stack([c, np.full(4, f)])
    y, p, r = np.deg2rad([shot.yaw, shot.pitch, shot.roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    # Rotate the plane about its centre (the visitor walks around the painting) and project.
    cam = (pts - [0, 0, f]) @ (rz @ rx @ ry).T + [0, 0, f]
    quad = cam[:, :2] / cam[:, 2:3] * f
    quad -= quad.mean(axis=0)
    span = quad.max(axis=0) - quad.min(axis=0)
    k = shot.fill * min(pw_w / span[0], pw_h / span[1])
    return (quad * k + [pw_w / 2 + shot.offset[0] * pw_w, pw_h / 2 + shot.offset[1] * pw_h]).astype(np.float32)


def _person_mask(size: tuple[int, int], quad: np.ndarray, sev: Severity, n: int, rng: np.random.Generator
                 ) -> np.ndarray:
    """People between the visitor and the painting: head and shoulders rising from the bottom edge."""
    h, w = size
    mask = np.zeros((h, w), np.float32)
    x_lo, x_hi = float(quad[:, 0].min()), float(quad[:, 0].max())
    paint_w = max(x_hi - x_lo, 1.0)
    for _ in range(n):
        shoulder = rng.uniform(0.3, 0.5) * w
        # Stand so that the person covers up to sev.occlusion of the painting's width, from its left or right.
        covered = rng.uniform(0.3, 1.0) * sev.occlusion * paint_w
        cx = x_lo + covered - shoulder / 2 if rng.random() < 0.5 else x_hi - covered + shoulder / 2
        top = h - rng.uniform(0.45, 0.85) * h
        head_r = shoulder * 0.2
        cv2.ellipse(mask, (round(cx), round(top + head_r)), (round(head_r), round(head_r * 1.25)), 0, 0, 360, 1.0, -1)
        body_top = top + head_r * 2.2
        pts = np.array([[cx - shoulder / 2, body_top + shoulder * 0.2], [cx - shoulder * 0.3, body_top],
                        [cx + shoulder * 0.3, body_top], [cx + shoulder / 2, body_top + shoulder * 0.2],
                        [cx + shoulder * 0.55, h], [cx - shoulder * 0.55, h]], np.int32)
        cv2.fillPoly(mask, [pts], 1.0)
        cv2.rectangle(mask, (round(cx - head_r * 0.5), round(top + head_r * 1.8)),
                      (round(cx + head_r * 0.5), round(body_top + 2)), 1.0, -1)  # neck
    return cv2.GaussianBlur(mask, (0, 0), 2.0)


# -- rendering ----------------------------------------------------------------------------------------------
def _render(images: list[np.ndarray], shots: list[Shot], chunk: list[int], sev: Severity,
            keys: list[tuple[int, int]]) -> list[SimulatedPhoto]:
    import kornia
    import torch

    portrait = shots[chunk[0]].portrait
    size = (PHOTO_LONG, PHOTO_SHORT) if portrait else (PHOTO_SHORT, PHOTO_LONG)  # (H, W)
    h, w = size
    canvases, src, dst, masks = [], [], [], []
    rngs = [np.random.default_rng([*key, 1]) for key in keys]  # each photo's own stream for its scene and light
    for i, rng in zip(chunk, rngs, strict=True):
        shot = shots[i]
        # Wall-plane resolution close to the painting's size in the photo (≤ 1.3× it): no aliasing when warping
        # down, no more upsampling than the phone's optics would blur anyway.
        target = shot.fill * max(h, w)
        painting_side = int(np.clip(1.3 * target, 192, 0.75 * CANVAS))  # room for frame and label
        canvas, corners = _wall_canvas(images[i], painting_side, sev, rng)
        quad = _camera_quad(corners, shot, size)
        canvases.append(canvas)
        src.append(corners)
        dst.append(quad)
        masks.append(_person_mask(size, quad, sev, shot.occluders, rng) if shot.occluders
                     else np.zeros(size, np.float32))
    x = torch.from_numpy(np.stack(canvases)).permute(0, 3, 1, 2) / 255.0  # [B, 3, C, C]
    M = kornia.geometry.transform.get_perspective_transform(torch.from_numpy(np.stack(src)),
                                                            torch.from_numpy(np.stack(dst)))
    img = kornia.geometry.transform.warp_perspective(x, M, dsize=size, mode="bilinear", padding_mode="border")
    b = img.shape[0]
    p = [shots[i] for i in chunk]

    def per_sample(values) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32).view(b, -1, 1, 1)

    # Light: vignette and a side-to-side gradient from the gallery lighting, exposure, white balance.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    radial = (xx**2 + yy**2) / 2
    vignette = 1 - per_sample([sev.vignette * r.uniform(0.3, 1.0) for r in rngs]) * radial
    tilt = per_sample([r.uniform(-0.15, 0.15) for r in rngs])
    img = img * vignette * (1 + tilt * xx) * per_sample([s.exposure for s in p]) * per_sample([s.gains for s in p])
    # A small, cheap lens and sensor: flare lifts the blacks, contrast drops.
    haze = per_sample([s.haze for s in p])
    img = img * (1 - haze) + haze * img.mean(dim=(1, 2, 3), keepdim=True)
    # Spotlight glare on the varnish: a bright spot (and a fainter halo) inside the painting's outline.
    glare = torch.zeros(b, 1, h, w)
    for k, i in enumerate(chunk):
        if shots[i].glare > 0:
            q, rng = dst[k], rngs[k]
            t = rng.uniform(0.15, 0.85, size=2)
            top = q[0] + (q[1] - q[0]) * t[0]
            bottom = q[3] + (q[2] - q[3]) * t[0]
            gx, gy = top + (bottom - top) * t[1]
            radius = rng.uniform(0.03, 0.1) * w
            spot = torch.exp(-((xx * w / 2 + w / 2 - gx) ** 2 + (yy * h / 2 + h / 2 - gy) ** 2) / (2 * radius**2))
            halo = torch.exp(-((xx * w / 2 + w / 2 - gx) ** 2 + (yy * h / 2 + h / 2 - gy) ** 2) / (18 * radius**2))
            glare[k, 0] = shots[i].glare / 255.0 * (spot + 0.25 * halo)
    img = img + glare
    # People in front (not on the wall plane, so composited after the warp, before the optics).
    occ = torch.from_numpy(np.stack(masks))[:, None]
    if occ.any():
        # Dark, muted clothing: a grey level with a slight tint.
        clothes = torch.tensor(np.stack([r.uniform(0.05, 0.35) + r.uniform(-0.04, 0.04, size=3) for r in rngs]),
                               dtype=torch.float32).clamp(0, 1)
        img = img * (1 - occ) + clothes.view(b, 3, 1, 1) * occ * (0.8 + 0.2 * yy.clamp(min=0))
    # Optics and hand: defocus (per-photo sigma, batched) and motion blur (per-photo length and direction).
    sigma = torch.tensor([[max(s.defocus, 0.05)] * 2 for s in p], dtype=torch.float32)
    ksize = 2 * int(np.ceil(3 * max(sev.defocus, 0.05))) + 1  # fixed per severity: batching must not matter
    img = kornia.filters.gaussian_blur2d(img, (ksize, ksize), sigma)
    for k, s in enumerate(p):
        if s.motion:
            img[k:k + 1] = kornia.filters.motion_blur(img[k:k + 1], s.motion, torch.tensor([s.motion_angle]),
                                                      torch.tensor([0.0]), mode="bilinear")
    # Sensor: shot noise (∝ √signal) plus read noise, in 0…255 units.
    read = per_sample([s.noise / 255.0 for s in p])
    signal = img.clamp(0, 1)
    gauss = torch.stack([torch.randn(signal.shape[1:], generator=torch.Generator().manual_seed(int(
        np.random.default_rng([*key, 2]).integers(2**62)))) for key in keys])
    noisy = signal + gauss * torch.sqrt(read**2 + read * 0.02 * signal)
    # JPEG: the real codec at the phone's (or a messaging app's) quality. kornia's differentiable JPEG was
    # tried: ≈ 5 s per photo on this CPU, and the real codec's artefacts are the ones recognition meets.
    arr = (noisy.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    photos = []
    for k, i in enumerate(chunk):
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(arr[k], cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, shots[i].jpeg])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        photos.append(SimulatedPhoto(jpeg.tobytes(), dst[k], replace(shots[i])))
    return photos
