"""The model core is plain PyTorch + timm: it imports nothing from the training, data or CLI layers."""

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
    "types",
    "functools",
    "io",
    "itertools",
    "json",
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
