"""Build a Dockerfile's file system under a folder, without a container engine (none runs on our machines).

    python docker/rootfs.py ROOT [--dockerfile Dockerfile] [--plan]

Follows the Dockerfile's steps as far as they can be followed here: the build context is the repository filtered
by .dockerignore (Docker's rules: patterns in order, the last match wins, ``!`` re-includes, a pattern that matches
a parent folder matches what is inside); ``COPY`` from the context copies into ROOT + the destination (``WORKDIR``
resolved); ``COPY --from=STAGE`` is the same folder here; ``RUN sh docker/install-venv.sh …`` runs that script with
the image's paths moved under ROOT. Other ``RUN`` steps (apt-get, useradd) and the base image are not reproduced:
they are listed as skipped. ``--plan`` only checks that every COPY source is in the context. Prints a JSON summary
(context files and bytes, what was copied, run and skipped, the image's ENV).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = "docker/install-venv.sh"


# -- .dockerignore ------------------------------------------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


@dataclass
class DockerIgnore:
    rules: list[tuple[re.Pattern, bool, str]] = field(default_factory=list)  # (regex, re-include, pattern)

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        rules = []
        for line in path.read_text().splitlines() if path.is_file() else []:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line[1:] if negate else line).lstrip("/")
            rules.append((_pattern_regex(pattern), negate, pattern))
        return cls(rules)

    def excluded(self, rel: str) -> bool:
        parts = rel.split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]  # the path and its parent folders
        result = False
        for regex, negate, _ in self.rules:
            if any(regex.match(c) for c in candidates):
                result = not negate
        return result

    def may_reinclude_under(self, rel: str) -> bool:
        """Whether a ``!`` rule could bring back something inside folder ``rel`` (else the walk skips it)."""
        return any(negate and (pattern.startswith(rel + "/") or "*" in pattern) for _, negate, pattern in self.rules)


def context_files(repo: Path = REPO) -> list[str]:
    """Paths (relative, sorted) that ``docker build`` would send as the build context."""
    ignore = DockerIgnore.read(repo / ".dockerignore")
    files = []
    for folder, dirs, names in os.walk(repo):
        rel_dir = os.path.relpath(folder, repo)
        rel_dir = "" if rel_dir == "." else rel_dir
        keep = []
        for d in sorted(dirs):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if not ignore.excluded(rel) or ignore.may_reinclude_under(rel):
                keep.append(d)
        dirs[:] = keep
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if not ignore.excluded(rel):
                files.append(rel)
    return sorted(files)


# -- Dockerfile -------------------------------------------------------------------------------------------------
def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    steps, pending = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        steps.append((word.upper(), rest.strip()))
    return steps


def _inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def build(root: Path, dockerfile: Path, *, plan: bool = False, repo: Path = REPO) -> dict:
    files = context_files(repo)
    available = set(files)
    folders = {"/".join(f.split("/")[:n]) for f in files for n in range(1, f.count("/") + 1)}
    summary: dict = {"dockerfile": str(dockerfile.relative_to(repo)) if dockerfile.is_relative_to(repo)
                     else str(dockerfile), "context_files": len(files),
                     "context_bytes": sum((repo / f).stat().st_size for f in files),
                     "copied": [], "ran": [], "skipped": [], "env": {}}
    workdir = "/"
    for word, args in instructions(dockerfile):
        if word == "FROM":
            workdir = "/"
            summary["skipped"].append(f"FROM {args} (the base image is not reproduced)")
        elif word == "WORKDIR":
            workdir = os.path.join(workdir, args)
        elif word == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                summary["env"][key] = value
        elif word == "COPY":
            tokens = shlex.split(args)
            flags = [t for t in tokens if t.startswith("--")]
            paths = [t for t in tokens if not t.startswith("--")]
            if any(f.startswith("--from=") for f in flags):
                continue  # another stage of the same image: one folder here
            sources, dest = paths[:-1], os.path.normpath(os.path.join(workdir, paths[-1]))
            for src in sources:
                src = os.path.normpath(src)
                if src not in available and src not in folders:
                    raise SystemExit(f"rootfs: COPY {src}: not in the build context (.dockerignore excludes it or"
                                     " it does not exist)")
                if not plan:
                    _copy(repo, files, src, _inside(root, dest), into=len(sources) > 1 or paths[-1].endswith("/"))
                summary["copied"].append(f"{src} -> {dest}")
        elif word == "RUN":
            tokens = shlex.split(args)
            if INSTALL_SCRIPT in tokens:
                at = tokens.index(INSTALL_SCRIPT)
                argv = [str(_inside(root, a)) if a.startswith("/") else a for a in tokens[at + 1:]]
                summary["ran"].append(f"sh {INSTALL_SCRIPT} {' '.join(tokens[at + 1:])}")
                if not plan:
                    env = {**os.environ, **{k: v for k, v in summary["env"].items() if k.startswith(("PIP_",
                                                                                                      "PYTHON"))}}
                    subprocess.run(["sh", str(_inside(root, workdir) / INSTALL_SCRIPT), *argv], check=True,
                                   cwd=_inside(root, workdir), env=env)
            else:
                summary["skipped"].append(f"RUN {args[:80]}")
    return summary


def _copy(repo: Path, files: list[str], src: str, dest: Path, *, into: bool) -> None:
    """Docker's COPY: a file to ``dest`` (or into it when ``into``), a folder's context files into ``dest``."""
    if src in files:
        target = dest / Path(src).name if into else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / src, target)
        return
    for rel in files:
        if rel.startswith(src + "/"):
            target = dest / rel[len(src) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder to build the image's file system in (created)")
    parser.add_argument("--dockerfile", type=Path, default=REPO / "Dockerfile")
    parser.add_argument("--plan", action="store_true", help="only check the COPY sources against the context")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    print(json.dumps(build(args.root.resolve(), args.dockerfile.resolve(), plan=args.plan), indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
