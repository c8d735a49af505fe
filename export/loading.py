"""Get a DINOv2 ``torch.nn.Module``: from a local directory, the Hugging Face cache, or random init.

Never hangs on the network: hub ids are looked up in the local cache only, unless downloads are allowed
explicitly (``allow_download=True`` or ``ARTLENS_ALLOW_DOWNLOAD=1``); even then timeouts are short.
Every failure becomes an :class:`ExportError` that says how to proceed.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from artlens.export.archs import KNOWN_ARCHITECTURES, PLAIN_MODEL_TYPE, REGISTERS_MODEL_TYPE, known_ids
from artlens.export.errors import ExportError

ALLOW_DOWNLOAD_ENV = "ARTLENS_ALLOW_DOWNLOAD"
# "org/name" with the characters the hub allows; anything else that does not exist on disk is a bad path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

HOW_TO_PROCEED = (
    "put real weights (config.json + model.safetensors, e.g. a `save_pretrained` copy of "
    "facebook/dinov2-small) in a local directory and pass it with --model DIR, or use --random-init for "
    "offline tests and demos"
)


@dataclass
class LoadedModel:
    """The model (eval mode, float32, eager attention) and where its weights came from."""

    model: Any  # transformers Dinov2Model | Dinov2WithRegistersModel
    source: str  # hub id or absolute local directory
    source_kind: str  # "random-init" | "local-dir" | "hub-cache" | "hub-download"
    pretrained: bool
    seed: int | None

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_register_tokens(self) -> int:
        return int(getattr(self.config, "num_register_tokens", 0) or 0)


def downloads_allowed(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def load_dinov2(model: str, *, random_init: bool = False, seed: int = 0,
                allow_download: bool | None = None) -> LoadedModel:
    """Resolve ``model`` (hub id or directory) and return the model ready for export."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ExportError(f"--model {model}: is a file; expected a model directory with config.json "
                              f"and weights; {HOW_TO_PROCEED}")
        return _from_directory(path.resolve(), random_init=random_init, seed=seed)
    if not _HUB_ID.match(model):
        raise ExportError(f"--model {model}: no such directory (and not a hub id like "
                          f"facebook/dinov2-small); {HOW_TO_PROCEED}")
    if random_init:
        if model not in KNOWN_ARCHITECTURES:
            raise ExportError(f"--random-init knows no architecture {model!r}; use one of "
                              f"{', '.join(known_ids())} or a local directory with a DINOv2 config.json")
        return _random(_config_from_dict(KNOWN_ARCHITECTURES[model]), source=model, seed=seed)
    return _from_hub(model, allow_download=downloads_allowed(allow_download))


# -- sources -------------------------------------------------------------------------------------------------
def _from_directory(path: Path, *, random_init: bool, seed: int) -> LoadedModel:
    if not (path / "config.json").is_file():
        raise ExportError(f"--model {path}: no config.json in this directory; {HOW_TO_PROCEED}")
    config = _load_config(str(path), local_only=True, what=f"{path}/config.json")
    if random_init:  # the directory's architecture, fresh weights
        return _random(config, source=str(path), seed=seed)
    model = _load_weights(str(path), config, local_only=True, what=f"weights in {path}")
    return LoadedModel(model=model, source=str(path), source_kind="local-dir", pretrained=True, seed=None)


def _from_hub(model_id: str, *, allow_download: bool) -> LoadedModel:
    _short_hub_timeouts()
    if allow_download and not _in_local_cache(model_id):
        _require_hub_reachable(model_id)
    where = "the Hugging Face hub" if allow_download else "the local Hugging Face cache (downloads are off)"
    config = _load_config(model_id, local_only=not allow_download, what=f"{model_id} from {where}")
    model = _load_weights(model_id, config, local_only=not allow_download, what=f"{model_id} from {where}")
    kind = "hub-download" if allow_download else "hub-cache"
    return LoadedModel(model=model, source=model_id, source_kind=kind, pretrained=True, seed=None)


def _random(config: Any, *, source: str, seed: int) -> LoadedModel:
    import torch

    cls = _model_class(config)
    config._attn_implementation = "eager"  # plain MatMul/Softmax in the graph; same numerics in both runtimes
    # Fork the RNG so an export does not disturb the caller's random state; the model's own initialiser
    # (post_init → _init_weights: truncated normal, std initializer_range) is what "random init" means.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    return LoadedModel(model=_ready(model), source=source, source_kind="random-init", pretrained=False,
                       seed=seed)


# -- transformers plumbing -----------------------------------------------------------------------------------
def _config_from_dict(arch: dict[str, Any]) -> Any:
    from transformers import Dinov2Config, Dinov2WithRegistersConfig

    values = {k: v for k, v in arch.items() if k != "model_type"}
    if arch["model_type"] == REGISTERS_MODEL_TYPE:
        return Dinov2WithRegistersConfig(**values)
    return Dinov2Config(**values)


def _model_class(config: Any) -> Any:
    from transformers import Dinov2Model, Dinov2WithRegistersModel

    model_type = getattr(config, "model_type", None)
    if model_type == PLAIN_MODEL_TYPE:
        return Dinov2Model
    if model_type == REGISTERS_MODEL_TYPE:
        return Dinov2WithRegistersModel
    raise ExportError(f"config.json describes a {model_type!r} model, not DINOv2 "
                      f"({PLAIN_MODEL_TYPE} or {REGISTERS_MODEL_TYPE}); {HOW_TO_PROCEED}")


def _load_config(name: str, *, local_only: bool, what: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, local_files_only=local_only)
    except Exception as exc:  # OSError, hub errors, JSON errors, unknown model_type… all mean the same here
        if local_only and not Path(name).exists():
            # transformers' own text talks about connecting to the hub, which we did not even try
            raise ExportError(f"--model {name}: not a local directory and not in the local Hugging Face "
                              f"cache (downloads are off: --allow-download or {ALLOW_DOWNLOAD_ENV}=1 where a "
                              f"hub is reachable); {HOW_TO_PROCEED}") from exc
        raise ExportError(f"cannot load the config of {what}: {_short(exc)}; {HOW_TO_PROCEED}") from exc


def _load_weights(name: str, config: Any, *, local_only: bool, what: str) -> Any:
    import torch

    cls = _model_class(config)
    try:
        model, info = cls.from_pretrained(name, config=config, local_files_only=local_only,
                                          dtype=torch.float32, attn_implementation="eager",
                                          output_loading_info=True)
    except Exception as exc:
        raise ExportError(f"cannot load {what}: {_short(exc)}; {HOW_TO_PROCEED}") from exc
    # transformers fills missing tensors with random values and only warns; an export that claims
    # "pretrained" must not contain any.
    missing = [k for k in info.get("missing_keys", []) if "mask_token" not in k]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        bad = (list(missing) + [str(m[0]) if isinstance(m, tuple) else str(m) for m in mismatched])[:5]
        raise ExportError(f"{what}: the checkpoint does not match its config ({len(missing)} missing, "
                          f"{len(mismatched)} mismatched tensors, e.g. {', '.join(bad)}); {HOW_TO_PROCEED}")
    return _ready(model)


def _ready(model: Any) -> Any:
    import torch

    model = model.to(torch.float32).eval()
    model.requires_grad_(False)
    return model


def _short_hub_timeouts() -> None:
    # huggingface_hub reads these at import; set them before transformers pulls it in (no-op if already in).
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")


def _in_local_cache(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:
        return False


def _require_hub_reachable(model_id: str, timeout_s: float = 3.0) -> None:
    """One TCP connect instead of huggingface_hub's retries with backoff (~25 s) when there is no network."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s).close()
    except OSError as exc:
        raise ExportError(f"--model {model_id}: downloads are allowed but {endpoint.hostname} cannot be reached "
                          f"({exc.strerror or exc}); {HOW_TO_PROCEED}") from exc


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "…"
