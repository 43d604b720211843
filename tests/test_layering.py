"""The model core is plain PyTorch + timm: it imports nothing from the training, data or CLI layers. Inside it,
the family modules (model/families/) sit between the parts and the registry's readers; nothing imports in a
circle."""

from __future__ import annotations

import ast
from pathlib import Path

import maskformer

CORE = Path(maskformer.__file__).parent / "model"
ALLOWED_TOP_LEVEL = {
    "__future__",
    "hashlib",
    "importlib",
    "collections",
    "contextlib",
    "copy",
    "dataclasses",
    "difflib",
    "types",
    "functools",
    "io",
    "itertools",
    "json",
    "logging",
    "math",
    "os",
    "pathlib",
    "pickle",
    "re",
    "typing",
    "urllib",
    "warnings",
    "numpy",
    "scipy",
    "torch",
    "timm",
    "yaml",
    "safetensors",
    "huggingface_hub",
}


def test_model_core_imports_only_libraries_and_itself():
    for file in CORE.rglob("*.py"):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative imports stay inside maskformer/model (checked by depth below)
                    depth = len(file.relative_to(CORE).parts) - 1
                    assert node.level <= depth + 1, f"{file}: relative import leaves maskformer.model"
                    continue
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ALLOWED_TOP_LEVEL, f"{file.name} imports {name}"


PACKAGE = Path(maskformer.__file__).parent
# Each layer and the layers it may import; "model" is the core above. Nothing imports a layer above it.
LAYERS: dict[str, set[str]] = {
    "model": set(),
    # Whether bfloat16 pays on a device (plain torch), for the layers that choose or warn about a precision.
    "precision": set(),
    "data": {"model"},
    "evaluation": {"data", "model"},
    "visualize": {"data", "model"},
    "export": {"model"},
    "predict": {"data", "model", "precision", "visualize"},
    # Training starts from any model source (model.weights), which predict's zoo resolves.
    "training": {"data", "evaluation", "model", "precision", "predict", "visualize"},
    "demo": {"data", "evaluation", "model", "precision", "predict", "training", "visualize"},
    "serve": {"data", "model", "predict"},
    "cli": {"data", "demo", "evaluation", "export", "model", "predict", "serve", "training", "visualize"},
}
# Third-party libraries that belong to one layer only.
ONLY_IN = {
    "lightning": {"training"},
    "fastapi": {"serve"},
    "fastapi_offline": {"serve"},
    "starlette": {"serve"},
    "uvicorn": {"serve"},
}


def _layer(file: Path) -> str:
    part = file.relative_to(PACKAGE).parts[0]
    return part.removesuffix(".py")


def _imports(file: Path) -> list[str]:
    """Absolute module names ``file`` imports (relative imports resolved)."""
    package = file.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    names = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
                names += [f"{module}.{alias.name}" if not node.module else module for alias in node.names]
            else:
                names.append(node.module)
    return names


def test_every_layer_imports_only_the_layers_below_it():
    files = [f for f in PACKAGE.rglob("*.py") if f.name != "__init__.py" or f.parent != PACKAGE]
    seen = set()
    for file in files:
        layer = _layer(file)
        if layer in ("__main__",):
            continue
        assert layer in LAYERS, f"{file}: layer {layer!r} is not in the layering test"
        seen.add(layer)
        for name in _imports(file):
            parts = name.split(".")
            if parts[0] == "maskformer" and len(parts) > 1:
                target = parts[1]
                assert target == layer or target in LAYERS[layer], f"{file.relative_to(PACKAGE)} imports {name}"
            elif parts[0] in ONLY_IN:
                assert layer in ONLY_IN[parts[0]], f"{file.relative_to(PACKAGE)} imports {name}"
    assert seen == set(LAYERS)


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Each package module's imports of other package modules, function-level imports included (not those
    under ``if TYPE_CHECKING``)."""
    modules = {_module(f): f for f in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        tree = ast.parse(path.read_text())
        typing_only = {
            id(n) for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }  # fmt: skip
        targets = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join([*package[: len(package) - node.level + 1], node.module or ""]).strip(".")
                base = base if node.level else node.module
                targets |= {base} | {f"{base}.{a.name}" for a in node.names}
        resolved = set()
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                resolved.add(target)
        graph[name] = resolved
    return graph


def test_no_import_circle_in_the_package():
    graph = _import_graph()
    circles = []
    for start in graph:
        seen, frontier = set(), [start]
        while frontier:
            node = frontier.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.append(start)
                elif nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
    assert not sorted(set(circles)), sorted(set(circles))


def test_the_families_sit_between_the_parts_and_the_readers_of_the_registry():
    """Family modules build on the model's parts and the weight formats; only the registry's readers (the
    loader, the presets, the package's API) import the families, and no family imports them."""
    graph = _import_graph()
    families = {m for m in graph if m.startswith("maskformer.model.families")}
    readers = {"maskformer.model", "maskformer.model.loading", "maskformer.model.presets"}
    inside_model = {m for m in graph if m.startswith("maskformer.model")} - families
    for module in inside_model:
        if graph[module] & families:
            assert module in readers, f"{module} imports the families"
    for module in families:
        assert not graph[module] & readers, f"{module} imports {graph[module] & readers}"
