"""Module line counts and the biggest classes (lines, methods, attributes) of a package tree.

    python scripts/layout_sizes.py [PACKAGE_DIR] [N]

What a layout change reports before and after; the package's own tree by default.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "hyrax_tbhub"
    top = int(argv[1]) if len(argv) > 1 else 12
    modules: list[tuple[int, str]] = []
    classes: list[tuple[int, int, int, str]] = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        name = str(path.relative_to(root.parent))
        modules.append((len(text.splitlines()), name))
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.ClassDef):
                continue
            methods = [b for b in node.body if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))]
            attributes = {
                sub.attr for sub in ast.walk(node)
                if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store)
                and isinstance(sub.value, ast.Name) and sub.value.id == "self"
            }
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            classes.append((lines, len(methods), len(attributes), f"{name}:{node.name}"))
    print(f"modules: {len(modules)}, lines: {sum(n for n, _ in modules)}")
    for lines, name in sorted(modules, reverse=True)[:top]:
        print(f"  {lines:5d}  {name}")
    print("classes (lines, methods, attributes):")
    for lines, methods, attributes, name in sorted(classes, reverse=True)[:top]:
        print(f"  {lines:5d} {methods:3d} {attributes:3d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
