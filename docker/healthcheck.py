"""The images' HEALTHCHECK: healthy once GET /ready answers (model and bundle loaded) and, with
ARTLENS_DEVICE=cuda, only while the model runs on ONNX Runtime's CUDA execution provider. Exit status 0 or 1, one
line saying why; standard library only (it runs with the image's Python, outside the service)."""

import json
import os
import sys
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('ARTLENS_PORT', '8000')}/ready"
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            ready = json.load(resp)
    except Exception as exc:  # refused, timed out, not JSON: all mean "not ready"
        print(f"unhealthy: {url}: {exc}")
        return 1
    provider = ready.get("execution_provider", "?")
    if os.environ.get("ARTLENS_DEVICE", "").strip().lower() == "cuda" and provider != "CUDAExecutionProvider":
        print(f"unhealthy: ARTLENS_DEVICE=cuda but the model runs on {provider}")
        return 1
    print(f"healthy: bundle version {ready.get('bundle_version')}, {ready.get('artworks')} artworks, {provider}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
