"""Which hwflow modules travel with the host: the import closure of ``hwflow_host``, found in the source.

The board has numpy and the standard library, not TensorFlow, hls4ml, scipy or PyYAML; so the
bundle carries exactly the hwflow modules the host imports when its modules load (imports inside
functions are left out: ``--board emulator`` imports the emulator lazily, on a workstation only).
The closure is computed from the installed sources at deploy time, so a module another part of
hwflow adds to, say, ``hwflow.image`` is packed as soon as ``hwflow.image`` imports it; the deploy
tests import the packed set with the heavy packages made unimportable.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hwflow_host

import hwflow

ROOT = "hwflow"


def module_imports(path: Path, package: str) -> set[str]:
    """Absolute names imported by the module-level statements of ``path`` (not inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ClassDef):
            stack.extend(n for n in node.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
        else:
            stack.extend(ast.iter_child_nodes(node))
    return names


def _file_of(name: str, src: Path) -> Path | None:
    """The source file of module ``hwflow.a.b`` under ``src`` (the hwflow package folder), if any."""
    rel = name.split(".")[1:]
    for candidate in (src.joinpath(*rel, "__init__.py"), src.joinpath(*rel).with_suffix(".py") if rel else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def vendored_modules() -> tuple[str, ...]:
    """Paths (relative to the hwflow package) of every hwflow module the host needs, sorted."""
    src = Path(hwflow.__file__).parent
    host = Path(hwflow_host.__file__).parent
    todo = [(p, "hwflow_host") for p in sorted(host.glob("*.py"))]
    seen: set[Path] = {src / "__init__.py"}
    while todo:
        path, package = todo.pop()
        for name in module_imports(path, package):
            if name != ROOT and not name.startswith(ROOT + "."):
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # the module and every package above it
                f = _file_of(".".join(parts[:i]), src)
                if f is not None and f not in seen:
                    seen.add(f)
                    pkg = ".".join(parts[:i]) if f.name == "__init__.py" else ".".join(parts[: i - 1])
                    todo.append((f, pkg))
    return tuple(sorted(str(p.relative_to(src)) for p in seen))
