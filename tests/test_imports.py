"""The internal import graph of vox3d/ has no cycle (issue 19, item 3).

Every module under ``vox3d/`` is parsed with :mod:`ast` (never imported), and every
``import vox3d...`` / ``from vox3d... import`` / relative import, at module level *and*
inside functions, becomes an edge between modules; a cycle hidden by function-level
imports counts as much as one at the top.  A function-level vox3d import is only for a
module that loads a heavy package (:data:`HEAVY`) its importer does not load at import time.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vox3d"

#: Edges of module cycles still allowed: none.  The last cycle, fit <-> ict_regressor <->
#: regressor_data, went with the split of those two modules (the fitter now imports only
#: ict_checkpoint, which imports neither).  Never add an edge here.
ALLOWED_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset()


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _packages() -> set[str]:
    """The package and its room subpackages (``vox3d``, ``vox3d.face``, ...)."""
    return {m for m, p in _modules().items() if p.name == "__init__.py"}


def test_subpackages_are_rooms_without_code():
    """Each room subpackage's ``__init__`` holds its docstring only: no re-exports, no
    shims, so a module has one import path."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    room_names = set(documented_rooms(text).values()) - {BASE_ROOM}
    subs = {m.removeprefix("vox3d.") for m in _packages()} - {"vox3d"}
    assert subs == room_names, f"subpackages {sorted(subs)} vs rooms {sorted(room_names)}"
    for sub in sorted(subs):
        path = PACKAGE / sub / "__init__.py"
        body = ast.parse(path.read_text(encoding="utf-8")).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{path}: docstring only"
        assert isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)


def _import_names(node: ast.Import | ast.ImportFrom, pkg: str) -> list[str]:
    """The dotted names an import statement in package ``pkg`` may bind: ``import a.b``
    gives ``a.b``; ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a module);
    relative imports are made absolute."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def _resolve(name: str, mods: Iterable[str]) -> str | None:
    """The longest module of ``mods`` that ``name`` is or lies in, or None."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, dict[str, list[int]]]:
    """``{module: {imported vox3d module: [line numbers]}}`` (the package itself, whose
    ``__init__`` holds only the version, is no node)."""
    mods = _modules()
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    graph: dict[str, dict[str, list[int]]] = {}
    for mod, path in mods.items():
        edges: dict[str, list[int]] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in sorted(_internal_targets(node, mod, mods, packages) - {"vox3d"}):
                lines = edges.setdefault(target, [])
                if node.lineno not in lines:
                    lines.append(node.lineno)
        graph[mod] = edges
    return graph


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the directed graph, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_graph_sees_function_level_imports():
    """The parser finds imports inside functions (the kind that hid evaluate <-> train)."""
    graph = import_graph()
    assert "vox3d.face.face_model" in graph["vox3d.voice.evaluate"]
    assert (
        "vox3d.voice.voice_model" in graph["vox3d.voice.evaluate"]
    )  # imported inside run_evaluate
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    graph = import_graph()
    edges = {m: {t for t in ts if (m, t) not in ALLOWED_CYCLE_EDGES} for m, ts in graph.items()}
    cycle = find_cycle(edges)
    if cycle:
        where = [
            f"{a} -> {b} (line {', '.join(map(str, graph[a][b]))})"
            for a, b in zip(cycle, cycle[1:], strict=False)
        ]
        raise AssertionError("import cycle in vox3d/: " + "; ".join(where))


def test_workflow_time_modules_do_not_import_torch():
    """The Snakefile and rules/common.smk import these to build the DAG; the
    face-model configuration and the target readers are light too."""
    code = (
        "import sys\n"
        "import vox3d.config, vox3d.media.manifest, vox3d.face.face_model, vox3d.voice.targets, vox3d.media.split\n"
        "import vox3d.fitting.fit, vox3d.workflow.jobsize, vox3d.voice.train_presets, vox3d.torch_setup, vox3d.report.export\n"
        "import vox3d.outlock\n"
        "heavy = sorted(m for m in ('torch', 'matplotlib') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


# function-level imports: internal ones sit at module top, unless hoisting one would make
# importing the module load a heavy third-party package it does not load today

#: Third-party packages slow or big enough to import only where they are needed, and the
#: compiled Sim3DR extension (``vox3d.face.render``), which an unbuilt checkout lacks: the
#: commands that render only with ``--png`` (``vox3d mesh``, ``image2mesh``) run without it.
HEAVY = frozenset(
    {"torch", "torchvision", "matplotlib", "cv2", "scipy", "librosa", "av", "Sim3DR"}
    | {"face_alignment", "mediapipe", "numba", "soxr", "PIL", "sklearn"}
)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: its own statements and those of its
    module-level ``if`` / ``try`` blocks, except under ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _top_level_imports(node.body)
            yield from _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try | ast.TryStar):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse):
                yield from _top_level_imports(block)
            yield from _top_level_imports(node.finalbody)


def _function_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The imports inside functions (nested ones once), by line."""
    found: dict[tuple[int, int], ast.Import | ast.ImportFrom] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    found[(node.lineno, node.col_offset)] = node
    return [found[k] for k in sorted(found)]


def _third_party(node: ast.Import | ast.ImportFrom) -> set[str]:
    """The top-level packages outside vox3d that an import statement loads."""
    if isinstance(node, ast.Import):
        roots = {a.name.partition(".")[0] for a in node.names}
    else:
        roots = {(node.module or "").partition(".")[0]} if not node.level else set()
    return roots - {"vox3d"}


def _internal_targets(
    node: ast.Import | ast.ImportFrom, mod: str, mods: Iterable[str], packages: set[str]
) -> set[str]:
    """The vox3d modules (or packages) an import statement of module ``mod`` imports."""
    pkg = mod if mod in packages else mod.rpartition(".")[0]
    targets = set()
    for name in _import_names(node, pkg):
        if name == "vox3d" or name.startswith("vox3d."):
            target = _resolve(name, mods)
            if target and target != mod:
                targets.add(target)
    return targets


def heavy_at_import(trees: dict[str, ast.Module], packages: set[str]) -> dict[str, set[str]]:
    """``{module: the HEAVY packages importing it loads}``, computed statically: its own
    top-level third-party imports and, transitively, those of the vox3d modules it
    imports at top (a package counts with its own ``__init__``'s imports only)."""
    heavy: dict[str, set[str]] = {}
    deps: dict[str, set[str]] = {}
    for mod, tree in trees.items():
        heavy[mod], deps[mod] = set(), set()
        for node in _top_level_imports(tree.body):
            heavy[mod] |= _third_party(node) & HEAVY
            deps[mod] |= _internal_targets(node, mod, trees, packages)
    changed = True
    while changed:
        changed = False
        for mod in trees:
            new = heavy[mod].union(*(heavy[d] for d in deps[mod]))
            if new != heavy[mod]:
                heavy[mod], changed = new, True
    return heavy


def misplaced_lazy_imports(trees: dict[str, ast.Module], packages: set[str]) -> list[str]:
    """``module:line -> target`` for each function-level vox3d import that could sit at
    module top: importing its target loads no HEAVY package the module does not already."""
    heavy = heavy_at_import(trees, packages)
    out = []
    for mod, tree in sorted(trees.items()):
        for node in _function_level_imports(tree):
            targets = _internal_targets(node, mod, trees, packages)
            if targets and set().union(*(heavy[t] for t in targets)) <= heavy[mod]:
                # name the module, not also the package it is imported from
                shown = sorted(
                    t for t in targets if not any(u.startswith(f"{t}.") for u in targets)
                )
                out.append(f"{mod}:{node.lineno} -> {', '.join(shown)}")
    return out


def test_lazy_import_rule_on_a_synthetic_package():
    """Control: a lazy import of a light module is reported, one of a module that loads
    torch (itself or through another module) is not, unless the importer loads torch too;
    ``if TYPE_CHECKING:`` imports load nothing."""
    sources = {
        "vox3d": "",
        "vox3d.light": "import json\nif TYPE_CHECKING:\n    import torch\n",
        "vox3d.heavy": "try:\n    import torch.nn\nexcept ImportError:\n    pass\n",
        "vox3d.middle": "from vox3d.heavy import x\n",
        "vox3d.user": (
            "def f():\n    from vox3d.light import y\n"
            "def g():\n    from vox3d import heavy, middle\n"
        ),
        "vox3d.torchy": "import torch\ndef h():\n    from vox3d import middle\n",
    }
    trees = {m: ast.parse(s) for m, s in sources.items()}
    heavy = heavy_at_import(trees, {"vox3d"})
    assert heavy["vox3d.light"] == set()
    assert heavy["vox3d.heavy"] == heavy["vox3d.middle"] == {"torch"}
    assert misplaced_lazy_imports(trees, {"vox3d"}) == [
        "vox3d.torchy:3 -> vox3d.middle",
        "vox3d.user:2 -> vox3d.light",
    ]


def test_function_level_imports_are_only_for_heavy_modules():
    """docs/architecture.md: a vox3d import sits inside a function only where hoisting it
    would make importing the module load a HEAVY package it does not load today."""
    trees = {m: ast.parse(p.read_text(encoding="utf-8"), str(p)) for m, p in _modules().items()}
    misplaced = misplaced_lazy_imports(trees, _packages())
    assert not misplaced, (
        "function-level vox3d imports of light modules; move them to module top:\n  "
        + "\n  ".join(misplaced)
    )


# the rooms of docs/architecture.md

ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
#: The room every other room may import; it imports no other room and is not drawn.
BASE_ROOM = "foundation"


def _block(text: str, name: str) -> str:
    start, end = f"<!-- rooms:{name} -->", f"<!-- /rooms:{name} -->"
    assert start in text and end in text, f"{ARCHITECTURE}: no {start} ... {end} block"
    return text.split(start, 1)[1].split(end, 1)[0]


def documented_rooms(text: str) -> dict[str, str]:
    """``{module: room}`` from the table block of docs/architecture.md.  A room is a
    subpackage: module ``m`` of room ``r`` is ``vox3d.r.m``, except the base room's, which
    are the package's top-level modules ``vox3d.m``."""
    rooms: dict[str, str] = {}
    for line in _block(text, "table").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("room", "") or set(cells[0]) <= {"-"}:
            continue
        pkg = "vox3d" if cells[0] == BASE_ROOM else f"vox3d.{cells[0]}"
        for mod in (m.strip().strip("`") for m in cells[1].split(",")):
            assert not any(k.endswith(f".{mod}") for k in rooms), (
                f"{ARCHITECTURE}: {mod} is in two rooms"
            )
            rooms[f"{pkg}.{mod}"] = cells[0]
    return rooms


def documented_edges(text: str) -> set[tuple[str, str]]:
    """The ``a --> b`` lines of the graph block."""
    edges = set()
    for line in _block(text, "graph").splitlines():
        if "-->" in line:
            a, b = (s.strip() for s in line.split("-->"))
            edges.add((a, b))
    return edges


def room_edges(graph: dict[str, dict[str, list[int]]], rooms: dict[str, str]) -> dict:
    """``{(room a, room b): [module edges]}`` between different rooms."""
    out: dict[tuple[str, str], list[str]] = {}
    for a, targets in graph.items():
        for b in targets:
            if a in rooms and b in rooms and rooms[a] != rooms[b]:
                out.setdefault((rooms[a], rooms[b]), []).append(f"{a} -> {b}")
    return out


def test_room_parsers_read_what_they_should():
    text = (
        "<!-- rooms:table -->\n| room | modules |\n|---|---|\n| a | `x`, `y` |\n| b | `z` |\n"
        "<!-- /rooms:table -->\n<!-- rooms:graph -->\n```mermaid\ngraph TD\n  a --> b\n```\n"
        "<!-- /rooms:graph -->\n"
    )
    rooms = documented_rooms(text)
    assert rooms == {"vox3d.a.x": "a", "vox3d.a.y": "a", "vox3d.b.z": "b"}
    assert documented_rooms(text.replace("| b |", f"| {BASE_ROOM} |"))["vox3d.z"] == BASE_ROOM
    assert documented_edges(text) == {("a", "b")}
    graph = {"vox3d.a.x": {"vox3d.a.y": [1], "vox3d.b.z": [2]}, "vox3d.b.z": {}, "vox3d.a.y": {}}
    assert room_edges(graph, rooms) == {("a", "b"): ["vox3d.a.x -> vox3d.b.z"]}


def test_architecture_page_matches_the_imports():
    """docs/architecture.md: every module in one room and in that room's subpackage, the
    drawn graph = the computed one (without the base room), no cycle between rooms, the
    base room imports no other."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    rooms = documented_rooms(text)
    graph = {m: ts for m, ts in import_graph().items() if m not in _packages()}
    assert set(rooms) == set(graph), (
        f"{ARCHITECTURE}: modules without a room {sorted(set(graph) - set(rooms))}, "
        f"rooms naming no module {sorted(set(rooms) - set(graph))}"
    )
    edges = room_edges(graph, rooms)
    outward = {e: w for e, w in edges.items() if e[0] == BASE_ROOM}
    assert not outward, f"{BASE_ROOM} imports other rooms: {outward}"
    drawn = {e for e in edges if e[1] != BASE_ROOM}
    expected = "\n".join(f"  {a} --> {b}" for a, b in sorted(drawn))
    assert documented_edges(text) == drawn, (
        f"{ARCHITECTURE}: the room graph changed; the graph block should read\n{expected}\n"
        f"(new: {sorted(drawn - documented_edges(text))}, "
        f"gone: {sorted(documented_edges(text) - drawn)})"
    )
    cycle = find_cycle({a: {b for (x, b) in edges if x == a} for (a, _) in edges})
    assert cycle is None, f"rooms import each other: {' -> '.join(cycle)}"


#: Lines above which docs/architecture.md lists a module as still to be split (issue 19).
LONG_MODULE_LINES = 600


def documented_long_modules(text: str) -> set[str]:
    """The modules the page names as over ~600 lines (its "Modules over" sentence)."""
    start = text.index("Modules over ~600 lines")
    sentence = text[start : text.index(". ", start)]
    return set(re.findall(r"`([a-z_0-9]+)`", sentence))


def test_architecture_page_lists_the_long_modules():
    """The page's list of modules over ~600 lines is the modules' real line counts: a module
    that grows past it, or is split below it, makes this fail until the page says so."""
    long = {
        m.rsplit(".", 1)[-1]
        for m, p in _modules().items()
        if len(p.read_text(encoding="utf-8").splitlines()) > LONG_MODULE_LINES
    }
    assert documented_long_modules(ARCHITECTURE.read_text(encoding="utf-8")) == long
