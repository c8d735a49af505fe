"""One JSON from the parts `scripts/gpu-check.sh` measured: the machine, its GPUs, `bench model` per architecture,
`bench recognition`, and a summary table's worth of p50s.

Usage: gpu_check_report.py --out FILE --gpus "CSV lines of nvidia-smi" [--rehearsal] SECTION/NAME=PART.json …
Exits with status 1 (one sentence, no traceback) when a GPU run's sessions did not run on the CUDA provider.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from artlens.eval.bench import describe_machine

FORMAT = "artlens-gpu-check/1"
SECTIONS = ("bench_model", "bench_recognition")


def parse_gpus(text: str) -> list[dict[str, str]]:
    """``nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader`` lines as dicts."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 3 and fields[0]:
            gpus.append({"name": fields[0], "memory": fields[1], "driver": fields[2]})
    return gpus


def summarise(sections: dict[str, dict[str, dict]]) -> dict:
    """The p50s a reader wants first: forward ms per model and batch (and per image), recognition vs forward."""
    summary: dict = {"forward_p50_ms": {}, "recognition": {}}
    for arch, result in sections.get("bench_model", {}).items():
        for row in result["models"]:
            summary["forward_p50_ms"][f"{arch} {row['precision']}"] = {
                "provider": row["execution_provider"],
                **{f"batch {b}": {"p50": t["p50"], "per_image": t["per_image_p50"]}
                   for b, t in row["forward_ms"].items()}}
    for arch, result in sections.get("bench_recognition", {}).items():
        summary["recognition"][arch] = {
            "provider": result["execution_provider"], "top_k": result["top_k"],
            "shortlist": result.get("shortlist"), "model_forward_p50": result["model_forward_ms"]["p50"],
            "recognize_p50": result["recognize_ms"]["p50"], "recognize_p95": result["recognize_ms"]["p95"],
            "stages_p50": {stage: t["p50"] for stage, t in result["stages_ms"].items()}}
    return summary


def providers_used(sections: dict[str, dict[str, dict]]) -> set[str]:
    used = {row["execution_provider"] for r in sections.get("bench_model", {}).values() for row in r["models"]}
    return used | {r["execution_provider"] for r in sections.get("bench_recognition", {}).values()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpus", default="")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rehearsal", action="store_true")
    parser.add_argument("parts", nargs="+", help="SECTION/NAME=PATH of a bench JSON")
    args = parser.parse_args(argv)

    sections: dict[str, dict[str, dict]] = {}
    for part in args.parts:
        key, _, path = part.partition("=")
        section, _, name = key.partition("/")
        if section not in SECTIONS or not name or not path:
            parser.error(f"{part!r}: expected SECTION/NAME=PATH with SECTION one of {', '.join(SECTIONS)}")
        sections.setdefault(section, {})[name] = json.loads(Path(path).read_text())
    pretrained = {r["pretrained"] for r in sections.get("bench_model", {}).values()}
    report = {
        "format": FORMAT,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rehearsal": args.rehearsal,
        "note": ("CPU rehearsal of the script with the tiny test architecture: no GPU numbers" if args.rehearsal
                 else "DINOv2 with seeded random weights: speed is that of the real architecture, embeddings are"
                      " not those of pretrained weights"),
        "pretrained": pretrained.pop() if len(pretrained) == 1 else sorted(pretrained),
        "input_size": args.size,
        "artlens_device": args.device,
        "gpus": parse_gpus(args.gpus),
        "machine": describe_machine(),
        "summary": summarise(sections),
        **sections,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {args.out}")
    off_gpu = providers_used(sections) - {"CUDAExecutionProvider"}
    if not args.rehearsal and off_gpu:
        print(f"gpu-check: some sessions ran on {', '.join(sorted(off_gpu))}, not on the GPU; {args.out} says which",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
