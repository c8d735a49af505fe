"""Import rules between the pipeline stages, checked on the source with ``ast`` (nothing is imported).

export → indexing → recognition → calibration, and recognition → server (never calibration); eval may use
everything but the server; verification is pure array code every stage may use; the ``artlens`` base modules
(errors, imaging, embedder) are shared by all.
Only export may use PyTorch/transformers, and even it loads them lazily (``artlens --help`` without the extra).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO

# Folder in the repository → the package it installs as (pyproject.toml [tool.setuptools.package-dir]).
PACKAGES = {"artlens": "artlens", "export": "artlens.export", "indexing": "artlens.indexing",
            "recognition": "artlens.recognition", "verification": "artlens.verification",
            "calibration": "artlens.calibration", "server": "artlens.server", "eval": "artlens.eval"}
BASE = {"artlens", "artlens.errors", "artlens.hashing", "artlens.imaging", "artlens.embedder", "artlens.files",
        "artlens.config", "artlens.local_model", "artlens.local_features"}
# What base modules may use of the stages: the local-feature type and its descriptor encoding (a pure-array leaf),
# which the learned-feature runtime returns.
BASE_MAY_IMPORT = {"artlens.verification.features"}
STAGES = {"verification", "export", "indexing", "recognition", "calibration", "eval", "server"}
# Base modules of the standard library alone (no numpy, no Pillow): what export and verification may import.
LIGHT_BASE = {"artlens.errors", "artlens.hashing", "artlens.files", "artlens.config"}
HEAVY = {"torch", "transformers"}

# Stage → the other artlens stages it may import from (itself and the base modules always allowed).
ALLOWED = {
    "verification": set(),
    "export": set(),
    "indexing": {"verification"},
    "recognition": {"verification", "indexing"},
    "calibration": {"verification", "indexing", "recognition"},
    "server": {"verification", "indexing", "recognition"},
    "eval": {"verification", "export", "indexing", "recognition", "calibration"},  # in fact anything but the server
}


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name, relative imports resolved
    line: int
    top_level: bool  # executed when the module is imported (not inside a function or `if TYPE_CHECKING:`)


@dataclass(frozen=True)
class Source:
    path: Path
    module: str
    stage: str  # "verification", "export", … or "base" (artlens/)
    imports: tuple[Import, ...]

    def __str__(self) -> str:
        return str(self.path.relative_to(REPO))


def _module_name(path: Path) -> tuple[str, str]:
    folder, *inner = path.relative_to(REPO).with_suffix("").parts
    if inner[-1] == "__init__":
        inner.pop()
    return ".".join([PACKAGES[folder], *inner]), ("base" if folder == "artlens" else folder)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, module: str, is_package: bool, modules: frozenset[str] = frozenset()) -> list[Import]:
    """``modules``: every module of ours, so that ``from artlens.indexing import incremental`` is seen as an import
    of ``artlens.indexing.incremental`` too."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(Import(alias.name, child.lineno, top_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if child.module is None or child.level:
                    # `from . import bundle`: each name may be a submodule; record both forms.
                    found.extend(Import(f"{target}.{alias.name}", child.lineno, top_level) for alias in child.names)
                else:
                    found.extend(Import(f"{target}.{alias.name}", child.lineno, top_level) for alias in child.names
                                 if f"{target}.{alias.name}" in modules)
                found.append(Import(target, child.lineno, top_level))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), False)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), top_level)
            else:
                visit(child, top_level)

    visit(tree, True)
    return found


def _sources() -> list[Source]:
    paths = [path for folder in PACKAGES for path in sorted((REPO / folder).rglob("*.py"))]
    modules = frozenset(_module_name(path)[0] for path in paths)
    sources = []
    for path in paths:
        module, stage = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imports = _imports(tree, module, path.name == "__init__.py", modules)
        sources.append(Source(path, module, stage, tuple(imports)))
    return sources


SOURCES = _sources()


def _stage_of(module: str) -> str | None:
    """The artlens stage a module belongs to ("base" for artlens.*), None when it is not ours."""
    if module == "artlens" or module in BASE:
        return "base"
    parts = module.split(".")
    if parts[0] != "artlens":
        return None
    if len(parts) > 1 and parts[1] in STAGES:
        return parts[1]
    return "base" if module in BASE else "artlens-other"  # artlens.cli and anything new in artlens/


def _ours(src: Source) -> list[Import]:
    return [i for i in src.imports if i.module.split(".")[0] == "artlens"]


def _by_stage(stage: str) -> list[Source]:
    found = [s for s in SOURCES if s.stage == stage]
    assert found, f"no .py files found for {stage}"
    return found


def test_the_scan_sees_the_imports():
    """Guard against a vacuous pass: known imports are found and relative imports resolved."""
    by_module = {s.module: s for s in SOURCES}
    build = {i.module for i in by_module["artlens.indexing.build"].imports}
    assert {"artlens.verification", "artlens.embedder", "artlens.indexing.bundle_writer",
            "artlens.indexing.store.bundle", "artlens.indexing.vlad_index", "cv2"} <= build
    recognizer = {i.module for i in by_module["artlens.recognition.recognizer"].imports}
    assert {"artlens.indexing.store.bundle", "artlens.indexing.store.vlad",
            "artlens.recognition.confidence"} <= recognizer
    services = {i.module for i in by_module["artlens.server.services"].imports}
    assert {"artlens.indexing.incremental", "artlens.indexing.store.renditions"} <= services  # `from pkg import mod`
    store_bundle = {i.module for i in by_module["artlens.indexing.store.bundle"].imports}
    assert "artlens.indexing.store.segments" in store_bundle  # relative, inside the subpackage
    calibrate = {i.module for i in by_module["artlens.calibration.calibrate"].imports}
    assert {"artlens.indexing.build", "artlens.calibration.ray_evidence", "artlens.calibration.fit"} <= calibrate
    ray_evidence = {i.module for i in by_module["artlens.calibration.ray_evidence"].imports}
    assert {"artlens.recognition.recognizer", "artlens.indexing.ray_build"} <= ray_evidence
    cli = by_module["artlens.cli.index"].imports
    assert any(i.module == "artlens.calibration.calibrate" and not i.top_level for i in cli)  # lazy, in a command
    assert {"artlens.cli.common", "artlens.cli.index"} <= {i.module for i in by_module["artlens.cli"].imports}
    assert {"artlens.export.dinov2", "artlens.export.graph"} <= {s.module for s in SOURCES}


def test_verification_imports_nothing_of_artlens_but_its_config_helper():
    for src in _by_stage("verification"):
        bad = [i for i in _ours(src) if _stage_of(i.module) != "verification" and i.module != "artlens.config"]
        assert not bad, f"{src}: verification must stay free of artlens imports (artlens.config aside): {bad}"


def test_base_modules_import_only_each_other():
    for src in SOURCES:
        if src.module not in BASE:
            continue
        bad = [i for i in _ours(src) if i.module not in BASE | BASE_MAY_IMPORT]
        assert not bad, f"{src}: base modules may import only {sorted(BASE | BASE_MAY_IMPORT)}: {bad}"


def _is_cli(module: str) -> bool:
    return module == "artlens.cli" or module.startswith("artlens.cli.")


def test_cli_imports_stages_lazily():
    """`artlens --help` loads no stage: the commands import what they need when they run. The one exception is
    the export command group, whose options take their choices and defaults from the export stage's torch-free
    modules (test_export_package_and_cli_load_torch_lazily)."""
    cli = [s for s in SOURCES if _is_cli(s.module)]
    assert len(cli) >= 10, [s.module for s in cli]
    for src in cli:
        eager = [i for i in _ours(src) if i.top_level and i.module not in BASE and not _is_cli(i.module)
                 and not (src.module == "artlens.cli.export" and i.module.startswith("artlens.export."))]
        assert not eager, f"{src}: module-level imports of stages: {eager}"


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_stage_imports_follow_the_pipeline(stage):
    allowed = ALLOWED[stage] | {stage}
    for src in _by_stage(stage):
        for imp in _ours(src):
            target = _stage_of(imp.module)
            if stage == "export":
                ok = target == "export" or imp.module in LIGHT_BASE
            elif stage == "eval":
                ok = target != "server"
            else:
                ok = target == "base" or target in allowed
            assert ok, f"{src}:{imp.line}: {stage} must not import {imp.module}"


# What the online stages may use of indexing: the index store (the read/search side of a bundle); the server also
# the admin changes (one artwork, a bulk import, the writers' lock) and the object-id rules. Builders (build, SAM,
# training, bundle writing) stay offline.
INDEXING_FOR = {
    "recognition": ("artlens.indexing.store",),
    "server": ("artlens.indexing.store", "artlens.indexing.incremental", "artlens.indexing.collection",
               "artlens.indexing.bulk_import", "artlens.indexing.bundle_lock"),
}
STORE = "artlens.indexing.store"


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _builder_imports(src: Source, allowed: tuple[str, ...]) -> list[Import]:
    """Imports of ``src`` from indexing outside ``allowed`` (the bare package, whose names are recorded as their
    own imports, does not count)."""
    return [i for i in _ours(src) if _stage_of(i.module) == "indexing" and i.module != "artlens.indexing"
            and not _within(i.module, allowed)]


@pytest.mark.parametrize("stage", sorted(INDEXING_FOR))
def test_online_stages_use_only_the_index_store(stage):
    for src in _by_stage(stage):
        bad = _builder_imports(src, INDEXING_FOR[stage])
        assert not bad, f"{src}: {stage} may import from indexing only {INDEXING_FOR[stage]}: {bad}"


def test_the_rule_catches_a_builder_import():
    """Guard against a vacuous pass of the rule above."""
    fake = Source(REPO / "recognition" / "x.py", "artlens.recognition.x", "recognition",
                  (Import("artlens.indexing", 1, True), Import("artlens.indexing.build", 1, True),
                   Import("artlens.indexing.store.bundle", 2, True)))
    assert [i.module for i in _builder_imports(fake, INDEXING_FOR["recognition"])] == ["artlens.indexing.build"]


def test_the_index_store_imports_only_base_and_verification():
    store = [s for s in SOURCES if _within(s.module, (STORE,))]
    assert {f"{STORE}.bundle", f"{STORE}.vlad", f"{STORE}.vectors", f"{STORE}.footprint"} <= {s.module for s in store}
    for src in store:
        bad = [i for i in _ours(src) if _stage_of(i.module) not in {"base", "verification"}
               and not _within(i.module, (STORE,))]
        assert not bad, f"{src}: the index store must not import builders or later stages: {bad}"


def test_indexing_never_touches_torch_or_export():
    for src in _by_stage("indexing"):
        bad = [i for i in src.imports if i.module.split(".")[0] in HEAVY or i.module.startswith("artlens.export")]
        assert not bad, f"{src}: the index build runs without the export extra: {bad}"


def test_only_export_imports_torch_or_transformers_at_module_level():
    for src in SOURCES:
        if src.stage == "export":
            continue
        bad = [i for i in src.imports if i.top_level and i.module.split(".")[0] in HEAVY]
        assert not bad, f"{src}: imports {bad[0].module} at module level (line {bad[0].line})"


def test_export_package_and_cli_load_torch_lazily():
    """The modules `artlens` mounts (export/__init__.py, artlens/cli/export.py, dinov2.py, sam.py) must import
    without torch."""
    for name in ("artlens.export", "artlens.cli.export", "artlens.export.dinov2", "artlens.export.sam",
                 "artlens.export.errors"):
        src = next(s for s in SOURCES if s.module == name)
        bad = [i for i in src.imports if i.top_level and i.module.split(".")[0] in HEAVY | {"onnx"}]
        eager_graph = [i for i in src.imports if i.top_level and i.module in {"artlens.export.graph",
                                                                             "artlens.export.parity",
                                                                             "artlens.export.loading"}]
        assert not bad and not eager_graph, f"{src}: {bad + eager_graph}"


# Evaluation-time photo simulation (kornia on PyTorch tensors) is the one use of torch outside export: it lives in
# this module only, and imports it inside functions. Recognition, indexing and serving never need torch; the
# build-time calibration keeps calibration/photos.py's cv2 simulator for that reason.
TORCH_IN_EVAL = {"artlens.eval.visitor"}


def test_torch_and_kornia_only_in_export_and_the_eval_simulator():
    for src in SOURCES:
        uses = [i for i in src.imports if i.module.split(".")[0] in HEAVY | {"kornia"}]
        if not uses or (src.stage == "export" and not any(i.module.split(".")[0] == "kornia" for i in uses)):
            continue
        assert src.module in TORCH_IN_EVAL, f"{src}: imports {uses[0].module} (line {uses[0].line})"
        bad = [i for i in uses if i.top_level or i.module.split(".")[0] == "transformers"]
        assert not bad, f"{src}: torch/kornia only lazily, inside the simulation functions: {bad}"


def test_runtime_import_loads_no_torch():
    """What the AST promises, checked once for real: the online path starts without PyTorch."""
    code = ("import sys, artlens.cli, artlens.indexing.build, artlens.recognition.recognizer, artlens.eval.evaluate,"
            " artlens.calibration.calibrate, artlens.eval.bench, artlens.eval.visitor, artlens.eval.registry,"
            " artlens.eval.report, artlens.export; "
            "heavy = sorted(m for m in ('torch', 'transformers', 'onnx', 'kornia') if m in sys.modules); "
            "print(','.join(heavy)); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"loaded at import: {proc.stdout.strip()} {proc.stderr[-2000:]}"


# Inside recognition a request goes one way: burst → recognizer → segment search → settings, results, confidence →
# walls (the second look at a wall, whose defaults settings holds).
RECOGNITION_ORDER = ("walls", "settings", "results", "confidence", "parallel", "rankings", "segment_search",
                     "recognizer", "burst")


def test_recognition_modules_call_in_one_direction():
    rank = {f"artlens.recognition.{name}": i for i, name in enumerate(RECOGNITION_ORDER)}
    seen = set()
    for src in _by_stage("recognition"):
        if src.module not in rank:
            continue
        seen.add(src.module)
        for imp in _ours(src):
            if imp.module in rank and imp.module != src.module:
                assert rank[imp.module] < rank[src.module], (
                    f"{src}:{imp.line}: {src.module} must not import {imp.module} (order: {RECOGNITION_ORDER})")
    assert seen == set(rank), f"modules named in RECOGNITION_ORDER are missing: {set(rank) - seen}"
