"""Export Segment Anything to the two-file ONNX bundle of docs/model-contract.md (kind "sam").

load (a local ``.pth`` checkpoint, or seeded random weights) → image encoder → ``encoder.onnx``, prompt encoder +
mask decoder (prompt-batched) → ``decoder.onnx`` → parity check of both against PyTorch → ``model.json`` →
atomic rename into place. Read at run time by indexing/sam_model.py (``SamModel``).
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from artlens.export.dinov2 import FORMAT, OPSETS, Progress, _check_out_dir
from artlens.export.errors import ExportError
from artlens.export.staging import export_staging
from artlens.files import moved_into_place
from artlens.hashing import file_sha256

MODEL_TYPES = ("vit_b", "vit_l", "vit_h")  # what segment-anything publishes; "tiny" is for tests
CONFIG: dict[str, Any] = {
    "model_type": "vit_b",
    "opset": 17,
    # Max abs difference to PyTorch fp32 over the image embedding, the mask logits (values of order 1–30),
    # the IoU predictions and the low-resolution logits.
    "tolerance": 2e-3,
}
BUNDLE_FILES = {"model.json", "encoder.onnx", "decoder.onnx", "encoder.onnx.data"}
CHECKPOINT_HINT = ("download the official checkpoint (e.g. sam_vit_b_01ec64.pth) where a network is available "
                   "and pass its path, or use --random-init")


def export_sam(out_dir: str | Path, *, checkpoint: str | Path | None = None, model_type: str = "vit_b",
               random_init: bool = False, seed: int = 0, opset: int = CONFIG["opset"],
               tolerance: float | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Export SAM to ``out_dir``; return the model.json written.

    Exactly one of ``checkpoint`` (a local segment-anything ``.pth``) and ``random_init`` (seeded random
    weights, ``"pretrained": false``). ``model_type`` is vit_b / vit_l / vit_h, or "tiny" (test-only, random
    init or a checkpoint of it). Raises :class:`ExportError` on anything the user can fix; ``out_dir`` is
    untouched on failure.
    """
    report = progress or (lambda stage, detail: None)
    out = Path(out_dir).expanduser().resolve()
    if model_type not in (*MODEL_TYPES, "tiny"):
        raise ExportError(f"--model-type {model_type}: choose one of {', '.join(MODEL_TYPES)}")
    if (checkpoint is None) == (not random_init):
        raise ExportError("pass either --checkpoint FILE.pth (real weights) or --random-init (seeded random "
                          "weights), not both or neither")
    if opset not in OPSETS:
        raise ExportError(f"--opset {opset}: choose {OPSETS.start}–{OPSETS.stop - 1}")
    if seed < 0:
        raise ExportError(f"--seed {seed}: must be 0 or positive")
    if tolerance is not None and not tolerance > 0:
        raise ExportError(f"--tolerance {tolerance}: must be a positive number")
    tol = float(tolerance if tolerance is not None else CONFIG["tolerance"])
    ckpt_path = _check_checkpoint_file(checkpoint) if checkpoint is not None else None
    _check_out_dir(out, BUNDLE_FILES)

    import torch  # here, not at import: `artlens` without the export extra must still import this package

    from artlens.export import sam_graph

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    report("load", f"SAM {model_type} ({f'random init, seed {seed}' if random_init else ckpt_path.name})")
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path, model_type)
        sam = sam_graph.build_sam(model_type)
        try:
            sam.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ExportError(f"--checkpoint {ckpt_path.name}: does not fit the SAM {model_type} architecture "
                              f"({_short(exc)})") from None
    else:
        torch.manual_seed(seed)
        sam = sam_graph.build_sam(model_type)
        sam_graph.randomise_zero_parameters(sam, torch.Generator().manual_seed(seed))
    sam.requires_grad_(False)
    timings["load"] = time.perf_counter() - t0

    tmp = export_staging(out)
    with moved_into_place(tmp, out):
        t = time.perf_counter()
        report("export", f"image encoder and prompt-batched decoder to ONNX opset {opset}")
        enc_path, dec_path = tmp / "encoder.onnx", tmp / "decoder.onnx"
        _export_alone(lambda p: sam_graph.export_encoder(sam, p, opset=opset), enc_path)
        _export_alone(lambda p: sam_graph.export_decoder(sam, p, opset=opset), dec_path)
        timings["export"] = time.perf_counter() - t

        t = time.perf_counter()
        report("parity", "PyTorch (SAM's own path) vs ONNX Runtime: 1 image, 2 prompt batches")
        inputs = sam_graph.parity_inputs(sam)
        reference = sam_graph.torch_reference(sam, inputs)
        parity = sam_graph.compare(enc_path, dec_path, sam, inputs, reference, tolerance=tol)
        timings["parity"] = time.perf_counter() - t

        report("write", str(out))
        timings["total"] = time.perf_counter() - t0
        meta = _model_json(sam, sam_graph, model_type=model_type, checkpoint=ckpt_path, seed=seed, opset=opset,
                           enc_path=enc_path, dec_path=dec_path, parity=parity, timings=timings,
                           torch_version=torch.__version__)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# -- checkpoint ----------------------------------------------------------------------------------------------
def _check_checkpoint_file(checkpoint: str | Path) -> Path:
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise ExportError(f"--checkpoint {path}: no such file; {CHECKPOINT_HINT}")
    if not path.is_file():
        raise ExportError(f"--checkpoint {path}: is not a file (expected a segment-anything .pth checkpoint)")
    return path.resolve()


def load_checkpoint(path: Path, model_type: str) -> dict[str, Any]:
    """The state dict of a segment-anything checkpoint, checked to be a SAM of ``model_type``."""
    import torch

    from artlens.export.sam_graph import ARCHITECTURES

    try:
        # weights_only: a checkpoint is data; never run code from a downloaded pickle
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExportError(f"--checkpoint {path.name}: not a readable PyTorch checkpoint ({_short(exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # training checkpoints wrap the weights
    if not isinstance(state, dict) or "image_encoder.patch_embed.proj.weight" not in state:
        raise ExportError(f"--checkpoint {path.name}: not a Segment Anything checkpoint (no "
                          "image_encoder.patch_embed weights)")
    width = int(state["image_encoder.patch_embed.proj.weight"].shape[0])
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    found = next((name for name, a in ARCHITECTURES.items() if (a["embed_dim"], a["depth"]) == (width, depth)),
                 None)
    if found != model_type:
        what = f"SAM {found}" if found else "SAM of an unknown size"
        raise ExportError(f"--checkpoint {path.name}: holds a {what} (encoder width {width}, {depth} blocks), "
                          f"not --model-type {model_type}")
    return state


# -- bundle --------------------------------------------------------------------------------------------------
def _export_alone(export: Any, path: Path) -> None:
    """Export into a directory of its own, so a >2 GB graph's per-tensor files can be gathered into one
    ``<name>.data`` next to it (vit_h's encoder is 2.5 GB)."""
    work = path.parent / f".{path.stem}"
    work.mkdir()
    try:
        export(work / path.name)
        extra = [p for p in work.iterdir() if p.name != path.name]
        if extra:
            import onnx

            model = onnx.load(str(work / path.name))
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=f"{path.name}.data", size_threshold=1024)
        else:
            (work / path.name).rename(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)



def _file_meta(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size}
    data = path.with_name(f"{path.name}.data")
    if data.exists():
        meta["external_data"] = {"file": data.name, "sha256": file_sha256(data), "bytes": data.stat().st_size}
    return meta


def _model_json(sam: Any, sam_graph: Any, *, model_type: str, checkpoint: Path | None, seed: int, opset: int,
                enc_path: Path, dec_path: Path, parity: dict[str, Any], timings: dict[str, float],
                torch_version: str) -> dict[str, Any]:
    import onnx
    import onnxruntime

    arch = sam_graph.ARCHITECTURES[model_type]
    size = int(arch["img_size"])
    grid = size // int(arch["patch_size"])
    low = [int(v) for v in sam.prompt_encoder.mask_input_size]
    try:
        from importlib.metadata import version

        sa_version = version("segment-anything")
    except Exception:
        sa_version = "?"
    return {
        "format": FORMAT,
        "kind": "sam",
        "model_type": model_type,
        "source": str(checkpoint) if checkpoint else f"segment-anything {model_type} architecture",
        "pretrained": checkpoint is not None and model_type != "tiny",
        "seed": None if checkpoint else seed,
        "weights": "checkpoint" if checkpoint else "random-init",
        "checkpoint": {"file": checkpoint.name, "sha256": file_sha256(checkpoint)} if checkpoint else None,
        "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()},
        "image_size": size,
        "pixel_mean": list(sam_graph.PIXEL_MEAN),
        "pixel_std": list(sam_graph.PIXEL_STD),
        "embedding_shape": [int(arch["prompt_dim"]), grid, grid],
        "mask_input_size": low,
        "encoder": {**_file_meta(enc_path), "input": sam_graph.ENCODER_INPUT, "input_shape": [1, 3, size, size],
                    "output": sam_graph.ENCODER_OUTPUT,
                    "preprocessing": "RGB 0–255, longest side resized to image_size, (x − pixel_mean) / pixel_std, "
                                     "zero-padded bottom/right to image_size × image_size"},
        "decoder": {**_file_meta(dec_path), "inputs": list(sam_graph.DECODER_INPUTS),
                    "outputs": list(sam_graph.DECODER_OUTPUTS), "prompt_batch": True,
                    "masks_per_prompt": sam_graph.MASKS_PER_PROMPT,
                    "dynamic_axes": {k: list(v.values()) for k, v in sam_graph.DECODER_DYNAMIC_AXES.items()}},
        "opset": opset,
        "parity": {**parity, "inputs": "1 random image; 5 and 3 single-point prompts at 2 output sizes",
                   "reference": "pytorch fp32: prompt_encoder → mask_decoder(multimask_output=True) → "
                                "postprocess_masks", "runtime": "onnxruntime CPUExecutionProvider"},
        "versions": {"torch": torch_version, "segment_anything": sa_version, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "…"
