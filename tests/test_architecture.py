"""The shape of harness/, read from its source (ast): no import cycles between modules, the package
layering of the data flow, and the size limits of the house rules. Nothing is allow-listed: a
module that breaks a rule is split or its import moved, not exempted here."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Packages that sit below the engine: they may not import the engine, the commands, the reports,
# the training code or the command line.
LOWER = ("kinds", "backends", "metrics", "compare", "task")
ENGINE_AND_ABOVE = ("run", "commands", "report", "train", "cli")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. harness.compare.paired
    target: str  # the imported harness module
    line: int
    in_function: bool
    comment: str  # the comments on the import's lines and on the line above it


def module_name(path: Path) -> str:
    parts = list(path.relative_to(HARNESS.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(HARNESS.rglob("*.py"))}


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The harness modules one import statement loads by name (`from harness.run import stages`
    loads harness.run.stages; `from harness.store import Store` loads harness.store)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in MODULES]
    if node.level:
        base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        named = ".".join([*base, *([node.module] if node.module else [])])
    else:
        named = node.module or ""
    submodules = [f"{named}.{alias.name}" for alias in node.names if f"{named}.{alias.name}" in MODULES]
    if len(submodules) < len(node.names) and named in MODULES:
        submodules.append(named)
    return submodules


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports_of(module: str, path: Path) -> list[Import]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue  # annotations only: never executed
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                text = "\n".join(lines[child.lineno - 2:child.end_lineno])
                comment = " ".join(re.findall(r"#.*", text))
                for target in _targets(module, path.name == "__init__.py", child):
                    if target != module:
                        found.append(Import(module, target, child.lineno, in_function, comment))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(source), False)
    return found


IMPORTS = [imported for module, path in MODULES.items() for imported in _imports_of(module, path)]


def _top_level_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for imported in IMPORTS:
        if not imported.in_function:
            graph[imported.source].add(imported.target)
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A path of top-level imports from start to goal, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        if node == goal:
            return path
        if node in seen:
            continue
        seen.add(node)
        stack.extend((after, [*path, after]) for after in sorted(graph[node]))
    return None


def _package(module: str) -> str:
    """harness.compare.paired -> compare; harness.cli -> cli; harness.store -> store."""
    return module.split(".")[1] if module.count(".") >= 1 else ""


def test_the_import_graph_is_read():
    """The parser finds what is plainly there (so the rules below cannot pass on an empty graph)."""
    assert "harness.cli" in MODULES and "harness.kinds.classify" in MODULES
    edges = {(i.source, i.target) for i in IMPORTS if not i.in_function}
    assert ("harness.cli", "harness.errors") in edges
    assert ("harness.cli", "harness.commands.eval") in edges  # `from harness.commands import eval as evaluate`
    assert any(i.in_function for i in IMPORTS)


def test_no_import_cycles_between_modules():
    """No cycle among top-level imports. An import inside a function that would close one is
    allowed only with a comment saying so (the word `cycle`)."""
    graph = _top_level_graph()
    cycles = []
    for module in MODULES:
        for target in sorted(graph[module]):
            back = _reaches(graph, target, module)
            if back:
                cycles.append(" -> ".join([module, *back]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))
    unexplained = [f"{i.source}:{i.line} imports {i.target} inside a function, closing the cycle "
                   f"{' -> '.join(_reaches(graph, i.target, i.source) or [])} -> {i.target}, with no comment saying so"
                   for i in IMPORTS if i.in_function and _reaches(graph, i.target, i.source) and "cycle" not in i.comment]
    assert not unexplained, "\n".join(unexplained)


def test_no_function_re_imports_a_module_imported_at_the_top():
    top = {(i.source, i.target) for i in IMPORTS if not i.in_function}
    again = [f"{i.source}:{i.line} imports {i.target} inside a function; the module imports it at the top"
             for i in IMPORTS if i.in_function and (i.source, i.target) in top]
    assert not again, "\n".join(again)


def test_package_layering():
    """The data flow, bottom up: kinds/backends/metrics/compare/task know nothing of the engine,
    the commands, the reports or training; reports read the store and the sweep plan, never run
    or train anything; only the command line imports a command. Function-level imports count."""
    wrong = []
    for i in IMPORTS:
        source, target = _package(i.source), _package(i.target)
        if source == target:
            continue
        if source in LOWER and target in ENGINE_AND_ABOVE:
            wrong.append(f"{i.source}:{i.line} imports {i.target}: {source}/ sits below {target}")
        if source == "report" and (target in ("commands", "train") or
                                   (target == "run" and i.target != "harness.run.sweep_plan")):
            wrong.append(f"{i.source}:{i.line} imports {i.target}: report/ renders stored results only")
        if target == "commands" and i.source != "harness.cli":
            wrong.append(f"{i.source}:{i.line} imports {i.target}: only harness/cli.py imports the commands")
    assert not wrong, "\n".join(wrong)


def test_module_and_function_sizes():
    too_long = []
    for module, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines >= MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(HARNESS.parent)}: {lines} lines (limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length >= MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(HARNESS.parent)}:{node.lineno} {node.name}: {length} lines "
                                    f"(limit {MAX_FUNCTION_LINES})")
    assert not too_long, "\n".join(too_long)
