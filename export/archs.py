"""Built-in DINOv2 architectures, so ``--random-init`` needs no model hub.

Values are those of the published ``config.json`` files on the Hugging Face hub (facebook/dinov2-*,
facebook/dinov2-with-registers-*): patch 14, 518 px native grid (37×37 position embeddings), MLP ratio 4,
LayerScale initialised at 1.0, SwiGLU feed-forward for giant only, 4 register tokens for the registers models.
"""

from __future__ import annotations

from typing import Any

# What every DINOv2 config.json on the hub shares.
_COMMON: dict[str, Any] = {
    "image_size": 518,
    "patch_size": 14,
    "num_channels": 3,
    "mlp_ratio": 4,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "layerscale_value": 1.0,
    "qkv_bias": True,
    "initializer_range": 0.02,
    "drop_path_rate": 0.0,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}

# name → (hidden_size, num_hidden_layers, num_attention_heads, use_swiglu_ffn)
_SIZES: dict[str, tuple[int, int, int, bool]] = {
    "small": (384, 12, 6, False),
    "base": (768, 12, 12, False),
    "large": (1024, 24, 16, False),
    "giant": (1536, 40, 24, True),
}

REGISTERS_MODEL_TYPE = "dinov2_with_registers"
PLAIN_MODEL_TYPE = "dinov2"


def _arch(size: str, registers: bool) -> dict[str, Any]:
    hidden, layers, heads, swiglu = _SIZES[size]
    cfg = {**_COMMON, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
           "use_swiglu_ffn": swiglu}
    if registers:
        cfg.update(model_type=REGISTERS_MODEL_TYPE, num_register_tokens=4)
    else:
        cfg.update(model_type=PLAIN_MODEL_TYPE)
    return cfg


KNOWN_ARCHITECTURES: dict[str, dict[str, Any]] = {
    **{f"facebook/dinov2-{s}": _arch(s, registers=False) for s in _SIZES},
    **{f"facebook/dinov2-with-registers-{s}": _arch(s, registers=True) for s in _SIZES},
    # Test-only: a few hundred kB, exports in about a second. 224 px native grid so that 224×224 inputs take
    # PyTorch's no-interpolation path and the parity check also covers the ONNX identity resize.
    "artlens/dinov2-tiny": {**_COMMON, "model_type": PLAIN_MODEL_TYPE, "hidden_size": 48,
                            "num_hidden_layers": 2, "num_attention_heads": 3, "use_swiglu_ffn": False,
                            "image_size": 224},
    "artlens/dinov2-with-registers-tiny": {**_COMMON, "model_type": REGISTERS_MODEL_TYPE, "hidden_size": 48,
                                           "num_hidden_layers": 2, "num_attention_heads": 3,
                                           "use_swiglu_ffn": True, "num_register_tokens": 4,
                                           "image_size": 224},
}


def known_ids() -> list[str]:
    return sorted(KNOWN_ARCHITECTURES)
