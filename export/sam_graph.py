"""Segment Anything in PyTorch → two ONNX graphs: the image encoder, and prompt encoder + mask decoder.

The decoder graph starts from segment-anything's own ONNX wrapper (``utils.onnx.SamOnnxModel``) with two
changes: the prompt dimension is dynamic (``point_coords [P, N, 2]``: one call decodes P grid points, each
with N points), and it returns SAM's three multimask outputs per prompt (``multimask_output=True``, what the
automatic mask generator uses) instead of all four mask tokens. The parity reference is not the wrapper but
SAM's own path — ``prompt_encoder`` → ``mask_decoder(multimask_output=True)`` → ``Sam.postprocess_masks`` —
so the export is checked against what ``SamPredictor`` computes.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from artlens.export.errors import ExportError

ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
                  "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
DECODER_DYNAMIC_AXES = {
    "point_coords": {0: "prompts", 1: "points"},
    "point_labels": {0: "prompts", 1: "points"},
    "masks": {0: "prompts", 2: "height", 3: "width"},
    "iou_predictions": {0: "prompts"},
    "low_res_masks": {0: "prompts"},
}
MASKS_PER_PROMPT = 3

# segment_anything.build_sam's three published sizes, and a test-only tiny one (like artlens/dinov2-tiny).
_SAM_COMMON = {"img_size": 1024, "patch_size": 16, "window_size": 14, "prompt_dim": 256, "mask_in_chans": 16,
               "decoder_depth": 2, "decoder_mlp_dim": 2048, "decoder_heads": 8, "iou_hidden": 256}
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "vit_b": {**_SAM_COMMON, "embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)},
    "vit_l": {**_SAM_COMMON, "embed_dim": 1024, "depth": 24, "num_heads": 16,
              "global_attn_indexes": (5, 11, 17, 23)},
    "vit_h": {**_SAM_COMMON, "embed_dim": 1280, "depth": 32, "num_heads": 16,
              "global_attn_indexes": (7, 15, 23, 31)},
    # 256 px input (16×16 embedding grid), 2 encoder blocks of width 32, 32-wide prompt/decoder: exports and
    # runs in about a second, same module classes.
    "tiny": {"img_size": 256, "patch_size": 16, "window_size": 4, "prompt_dim": 32, "mask_in_chans": 4,
             "decoder_depth": 2, "decoder_mlp_dim": 64, "decoder_heads": 2, "iou_hidden": 32,
             "embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,)},
}
PIXEL_MEAN = (123.675, 116.28, 103.53)  # SAM's, on the 0–255 scale
PIXEL_STD = (58.395, 57.12, 57.375)


def segment_anything() -> types.SimpleNamespace:
    """The segment-anything classes this export needs.

    segment-anything 1.0's package ``__init__`` imports its predictor, which imports torchvision — needed
    neither here nor anywhere in artlens, and installing it risks pulling another torch build. When it is
    missing, the subpackages are loaded under a bare package module instead of the real ``__init__``.
    """
    try:
        import segment_anything  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name == "segment_anything":
            raise ExportError("artlens export sam needs segment-anything==1.0: pip install 'artlens[export]'"
                              ) from None
        if exc.name != "torchvision":
            raise
        spec = importlib.util.find_spec("segment_anything")
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations or [])  # type: ignore[union-attr]
        package.__spec__ = spec
        sys.modules["segment_anything"] = package
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    from segment_anything.utils.onnx import SamOnnxModel

    return types.SimpleNamespace(ImageEncoderViT=ImageEncoderViT, MaskDecoder=MaskDecoder,
                                 PromptEncoder=PromptEncoder, Sam=Sam, TwoWayTransformer=TwoWayTransformer,
                                 SamOnnxModel=SamOnnxModel)


def build_sam(model_type: str) -> nn.Module:
    """SAM of ``model_type`` with the modules' own initialisation (as segment_anything.build_sam builds it)."""
    sa = segment_anything()
    a = ARCHITECTURES[model_type]
    grid = a["img_size"] // a["patch_size"]
    sam = sa.Sam(
        image_encoder=sa.ImageEncoderViT(
            depth=a["depth"], embed_dim=a["embed_dim"], img_size=a["img_size"], mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=a["num_heads"],
            patch_size=a["patch_size"], qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=a["global_attn_indexes"], window_size=a["window_size"], out_chans=a["prompt_dim"]),
        prompt_encoder=sa.PromptEncoder(embed_dim=a["prompt_dim"], image_embedding_size=(grid, grid),
                                        input_image_size=(a["img_size"], a["img_size"]),
                                        mask_in_chans=a["mask_in_chans"]),
        mask_decoder=sa.MaskDecoder(
            num_multimask_outputs=3,
            transformer=sa.TwoWayTransformer(depth=a["decoder_depth"], embedding_dim=a["prompt_dim"],
                                             mlp_dim=a["decoder_mlp_dim"], num_heads=a["decoder_heads"]),
            transformer_dim=a["prompt_dim"], iou_head_depth=3, iou_head_hidden_dim=a["iou_hidden"]),
        pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD),
    )
    return sam.eval()


def randomise_zero_parameters(sam: nn.Module, generator: torch.Generator) -> None:
    """Position embeddings and relative-position tables start at zero in SAM; draw them from N(0, 0.02) so a
    random-init model (and its parity check) exercises those paths too."""
    with torch.no_grad():
        for _, p in sam.named_parameters():
            if p.numel() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)


class SamEncoder(nn.Module):
    """Normalised, padded image [1, 3, S, S] → image embeddings [1, C, S/16, S/16]."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.image_encoder = sam.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


def decoder_wrapper(sam: nn.Module) -> nn.Module:
    """segment-anything's ``SamOnnxModel`` with multimask output and a batch of prompts."""
    base = segment_anything().SamOnnxModel

    class SamPromptBatchDecoder(base):  # type: ignore[misc, valid-type]
        @torch.no_grad()
        def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                    mask_input: torch.Tensor, has_mask_input: torch.Tensor, orig_im_size: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            sparse = self._embed_points(point_coords, point_labels)  # [P, N, C]: one row per prompt
            dense = self._embed_masks(mask_input, has_mask_input)
            masks, scores = self.model.mask_decoder.predict_masks(
                image_embeddings=image_embeddings, image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
            # MaskDecoder.forward(multimask_output=True): token 0 is the single-mask output, 1–3 the multimask
            masks, scores = masks[:, 1:, :, :], scores[:, 1:]
            return self.mask_postprocessing(masks, orig_im_size), scores, masks

        def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
            # The package's version crops with int(tensor), which tracing freezes to the example's size (the
            # parity check's second, portrait output size catches that); slicing by tensors stays dynamic.
            masks = F.interpolate(masks, size=(self.img_size, self.img_size), mode="bilinear",
                                  align_corners=False)
            prepadded = self.resize_longest_image_size(orig_im_size, self.img_size)
            masks = masks[..., : prepadded[0], : prepadded[1]]
            size = orig_im_size.to(torch.int64)
            return F.interpolate(masks, size=(size[0], size[1]), mode="bilinear", align_corners=False)

    return SamPromptBatchDecoder(sam, return_single_mask=False).eval()


# -- export --------------------------------------------------------------------------------------------------
def export_encoder(sam: nn.Module, path: Path, *, opset: int) -> None:
    size = sam.image_encoder.img_size
    _export(SamEncoder(sam).eval(), (torch.zeros(1, 3, size, size),), path, opset=opset,
            input_names=[ENCODER_INPUT], output_names=[ENCODER_OUTPUT], dynamic_axes=None, what="image encoder")


def export_decoder(sam: nn.Module, path: Path, *, opset: int) -> None:
    size = sam.image_encoder.img_size
    c = sam.prompt_encoder.embed_dim
    grid = sam.prompt_encoder.image_embedding_size
    low = sam.prompt_encoder.mask_input_size
    example = (torch.randn(1, c, *grid), torch.randint(0, size, (2, 2, 2)).float(),
               torch.tensor([[1.0, -1.0], [1.0, -1.0]]), torch.zeros(1, 1, *low), torch.zeros(1),
               torch.tensor([size * 0.75, size], dtype=torch.float32))
    _export(decoder_wrapper(sam), example, path, opset=opset, input_names=list(DECODER_INPUTS),
            output_names=list(DECODER_OUTPUTS), dynamic_axes=DECODER_DYNAMIC_AXES, what="prompt encoder + mask decoder")


def _export(module: nn.Module, example: tuple, path: Path, *, opset: int, input_names: list[str],
            output_names: list[str], dynamic_axes: dict | None, what: str) -> None:
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic are expected
            torch.onnx.export(module, example, str(path), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export of the SAM {what} failed (opset {opset}): {first[:300]}") from exc


# -- parity --------------------------------------------------------------------------------------------------
PARITY_SEED = 20_231_123


def parity_inputs(sam: nn.Module) -> dict[str, Any]:
    """A seeded random image (normalised as at run time) and two prompt batches of different sizes and
    output resolutions (a landscape and a portrait image), single positive points like the mask generator."""
    gen = torch.Generator().manual_seed(PARITY_SEED)
    size = sam.image_encoder.img_size
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    image = (torch.rand(1, 3, size, size, generator=gen) * 255 - mean) / std
    batches = []
    for prompts, (h, w) in ((5, (round(size * 0.75), size)), (3, (size, round(size * 0.6)))):
        points = torch.rand(prompts, 1, 2, generator=gen) * torch.tensor([w, h], dtype=torch.float32)
        batches.append({"points": points, "orig": (h, w)})
    return {"image": image, "batches": batches}


def torch_reference(sam: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """SAM's own PyTorch path (what SamPredictor runs), for the parity check."""
    with torch.no_grad():
        emb = sam.image_encoder(inputs["image"])
        outs = []
        for b in inputs["batches"]:
            points = b["points"]
            labels = torch.ones(points.shape[:2])
            sparse, dense = sam.prompt_encoder(points=(points, labels), boxes=None, masks=None)
            low, iou = sam.mask_decoder(image_embeddings=emb, image_pe=sam.prompt_encoder.get_dense_pe(),
                                        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                        multimask_output=True)
            h, w = b["orig"]
            s = sam.image_encoder.img_size / max(h, w)
            masks = sam.postprocess_masks(low, (int(h * s + 0.5), int(w * s + 0.5)), (h, w))
            outs.append((masks.numpy(), iou.numpy(), low.numpy()))
    return {"embedding": emb.numpy(), "decoded": outs}


def compare(encoder_path: Path, decoder_path: Path, sam: nn.Module, inputs: dict[str, Any],
            reference: dict[str, Any], *, tolerance: float) -> dict[str, Any]:
    """ONNX Runtime vs ``reference``; ExportError beyond ``tolerance`` (max abs difference) or on any
    shape difference. The decoder runs on the *PyTorch* embedding so the two parts are judged separately."""
    from artlens.export.parity import onnx_session

    enc = onnx_session(encoder_path)
    dec = onnx_session(decoder_path)
    try:
        (emb,) = enc.run(None, {ENCODER_INPUT: inputs["image"].numpy()})
    except Exception as exc:
        raise ExportError(f"SAM encoder ONNX fails on ONNX Runtime: {str(exc)[:300]}") from exc
    ref_emb = reference["embedding"]
    if emb.shape != ref_emb.shape:
        raise ExportError(f"SAM encoder ONNX gives {emb.shape}, PyTorch {ref_emb.shape}")
    enc_diff = float(np.abs(emb - ref_emb).max())
    low_size = sam.prompt_encoder.mask_input_size
    diffs = {"masks": 0.0, "iou_predictions": 0.0, "low_res_masks": 0.0}
    mask_agreement = 1.0
    for batch, ref in zip(inputs["batches"], reference["decoded"], strict=True):
        points = batch["points"].numpy()
        feeds = {"image_embeddings": ref_emb,
                 # the padding point (label -1) SAM's prompt encoder adds when no box is given
                 "point_coords": np.concatenate([points, np.zeros((len(points), 1, 2), np.float32)], axis=1),
                 "point_labels": np.tile(np.array([[1, -1]], np.float32), (len(points), 1)),
                 "mask_input": np.zeros((1, 1, *low_size), np.float32), "has_mask_input": np.zeros(1, np.float32),
                 "orig_im_size": np.array(batch["orig"], np.float32)}
        try:
            got = dec.run(None, feeds)
        except Exception as exc:
            raise ExportError(f"SAM decoder ONNX fails on {len(points)} prompts: {str(exc)[:300]}") from exc
        for name, a, b in zip(DECODER_OUTPUTS, got, ref, strict=True):
            if a.shape != b.shape:
                raise ExportError(f"SAM decoder ONNX {name} has shape {a.shape} for {len(points)} prompts at "
                                  f"{batch['orig']}; PyTorch gives {b.shape}")
            diffs[name] = max(diffs[name], float(np.abs(a - b).max()))
        mask_agreement = min(mask_agreement, float(((got[0] > 0) == (ref[0] > 0)).mean()))
    result = {"encoder_max_abs_diff": enc_diff, "decoder_max_abs_diff": max(diffs.values()),
              "decoder_max_abs_diff_by_output": diffs, "binary_mask_agreement": mask_agreement,
              "tolerance": tolerance}
    result["max_abs_diff"] = max(enc_diff, result["decoder_max_abs_diff"])
    if not np.isfinite(result["max_abs_diff"]) or result["max_abs_diff"] > tolerance:
        raise ExportError(f"SAM ONNX differs from PyTorch by {result['max_abs_diff']:.3g} (encoder "
                          f"{enc_diff:.3g}, decoder {result['decoder_max_abs_diff']:.3g}; tolerance {tolerance:g})")
    return result
