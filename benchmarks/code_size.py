"""Code size of fqtool: lines per module, lines in ``cli/``, the longest function bodies (measured with ast).

    python benchmarks/code_size.py [--top 15] [--limit-module 500] [--limit-function 60] [--json] [--src DIR]

A function's body runs from its first statement after the docstring to its last line (the limit applies to
it); its total runs from ``def`` to the last line (a Typer command's options make its signature long).
Nested functions are measured on their own as well. The limits are the project's rule of thumb (no module
over ~500 lines, no function body over ~60 lines); the offenders are listed. Run it before and after a
change to compare (``--src OTHER/src/fqtool`` measures another checkout).
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "fqtool"


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of the body without the docstring (decorators and the signature are not counted)."""
    body = node.body
    first = body[0]
    if len(body) > 1 and isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1


def functions(path: Path, src: Path = SRC) -> list[tuple[int, int, str]]:
    """(body lines, total lines, ``module.py:qualified.name``) of every function in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                total = child.end_lineno - child.lineno + 1
                found.append((body_lines(child), total, f"{path.relative_to(src)}:{name}"))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def measure(top: int, limit_module: int, limit_function: int, src: Path = SRC) -> dict:
    modules = sorted(src.rglob("*.py"))
    lines = {str(p.relative_to(src)): len(p.read_text(encoding="utf-8").splitlines()) for p in modules}
    funcs = sorted((f for p in modules for f in functions(p, src)), reverse=True)
    return {
        "cli_lines": sum(n for name, n in lines.items() if name.startswith("cli/")),
        "src_lines": sum(lines.values()),
        "longest_functions": [{"function": name, "body_lines": n, "total_lines": total}
                              for n, total, name in funcs[:top]],
        "modules_over_limit": {name: n for name, n in sorted(lines.items(), key=lambda kv: -kv[1])
                               if n > limit_module},
        "functions_over_limit": {name: n for n, _, name in funcs if n > limit_function},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--limit-module", type=int, default=500)
    parser.add_argument("--limit-function", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--src", type=Path, default=SRC, help="the fqtool package folder to measure")
    args = parser.parse_args()
    result = measure(args.top, args.limit_module, args.limit_function, args.src.resolve())
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"src/fqtool: {result['src_lines']} lines; cli/: {result['cli_lines']} lines")
    print(f"longest function bodies (top {args.top}; body, def-to-end):")
    for row in result["longest_functions"]:
        print(f"  {row['body_lines']:4d} {row['total_lines']:4d}  {row['function']}")
    print(f"modules over {args.limit_module} lines:")
    for name, n in result["modules_over_limit"].items():
        print(f"  {n:4d}  {name}")
    print(f"function bodies over {args.limit_function} lines:")
    for name, n in result["functions_over_limit"].items():
        print(f"  {n:4d}  {name}")


if __name__ == "__main__":
    main()
