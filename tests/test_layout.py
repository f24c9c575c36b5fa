"""The layout's rules, read from the imports: stages are thin and independent, mechanisms keep their
lanes, and dvc.yaml's deps name every project module a stage runs (and nothing else of the project)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"
STAGES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                 for p in PACKAGE.rglob("*.py") if p.stem != "__init__")


def module_file(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


@cache
def imports(module: str) -> frozenset[str]:
    """Every module `module` imports at run time (lazy imports inside functions included,
    `if TYPE_CHECKING:` blocks left out), as dotted names."""
    tree = ast.parse(module_file(module).read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # `from pipeline.x import y` where y is itself a module
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in MODULES)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return frozenset(found)


@cache
def closure(module: str) -> frozenset[str]:
    """`module` and the project modules it imports, transitively."""
    seen, todo = {module}, [module]
    while todo:
        for name in imports(todo.pop()):
            if name in MODULES and name not in seen:
                seen.add(name)
                todo.append(name)
    return frozenset(seen)


def third_party(module: str) -> set[str]:
    return {name.split(".")[0] for m in closure(module) for name in imports(m)
            if not name.startswith("pipeline")}


def test_package_markers_are_empty():
    """Importing a package runs nothing, so the dependency rules below see everything."""
    for marker in PACKAGE.rglob("__init__.py"):
        assert marker.read_text().strip() == "", marker


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_a_stage(module):
    stages = {f"pipeline.{stage}" for stage in STAGES}
    assert not (imports(module) & stages), f"{module} imports a stage; move the code both need to a mechanism"


# The rooms of the scrape side, each with the other rooms it may import (pipeline.core aside):
# web holds HTTP and the site adapters, and knows nothing of what it fetches for; demo holds the
# offline demo booru and the art it draws, a site of its own; sources drive a site (through web),
# the demo booru or a local folder or archive into the collection.
ROOMS = {
    "pipeline.web": set(),
    "pipeline.demo": set(),
    "pipeline.sources": {"pipeline.web", "pipeline.demo"},
}
TORCH = {"torch", "torchvision", "torch_fidelity", "dvclive"}
PICTURES = {"PIL", "numpy", "cv2"}  # what decodes or draws an image
NETWORK_CLIENTS = {"requests", "urllib3", "bs4", "protego"}


def room_of(module: str) -> str:
    return module.rsplit(".", 1)[0]


def in_rooms(*rooms: str) -> list[str]:
    return [m for m in MODULES if room_of(m) in rooms]


def project_imports(module: str) -> set[str]:
    return {name for name in imports(module) if name in MODULES}


def test_every_room_is_a_package_with_modules():
    for room in ROOMS:
        assert module_file(f"{room}.__init__").is_file(), room
        assert in_rooms(room), f"{room} holds no module"


@pytest.mark.parametrize("module", in_rooms(*ROOMS))
def test_a_room_imports_only_what_it_may(module):
    room = room_of(module)
    allowed = {room, "pipeline.core", *ROOMS[room]}
    stray = sorted(m for m in project_imports(module) if room_of(m) not in allowed)
    assert not stray, f"{module} imports {stray}; {room} may import only {sorted(allowed)}"


def test_the_sources_are_the_scrape_stages_alone():
    """Only the scrape stage (and the sources themselves) import the sources."""
    users = sorted(m for m in MODULES if room_of(m) != "pipeline.sources"
                   and any(room_of(name) == "pipeline.sources" for name in project_imports(m)))
    assert users == ["pipeline.scrape"]


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith(("pipeline.models.",
                                                                         "pipeline.training."))])
def test_models_and_training_never_import_the_scrape_side(module):
    assert not [m for m in closure(module) if room_of(m) in ROOMS]


@pytest.mark.parametrize("module", in_rooms(*ROOMS))
def test_the_scrape_side_never_imports_torch(module):
    assert not (third_party(module) & TORCH)


@pytest.mark.parametrize("module", in_rooms("pipeline.web"))
def test_web_holds_no_picture_code(module):
    """HTTP and the site adapters move bytes and read listings; decoding a picture is the
    collection's, drawing one the demo's."""
    assert not (third_party(module) & PICTURES)


@pytest.mark.parametrize("module", in_rooms("pipeline.demo"))
def test_the_demo_never_fetches(module):
    """The demo booru serves its own drawings: it is a site, not a client of one."""
    assert not (third_party(module) & NETWORK_CLIENTS)


@pytest.mark.parametrize("stage", STAGES)
def test_stages_are_thin(stage):
    assert len(module_file(f"pipeline.{stage}").read_text().splitlines()) <= 110


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def code_deps(stage: dict) -> list[str]:
    return [dep for dep in stage.get("deps", []) if dep.startswith("pipeline/")]


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_dvc_deps_are_exactly_the_modules_the_stage_runs(name):
    """A change to any module a stage imports reruns it; a module it does not import does not.
    A folder dep is allowed where the stage runs every module in it."""
    stage = dvc_stages()[name]
    module = stage["cmd"].split("-m ")[1].split()[0]
    runs = {module_file(m).relative_to(ROOT).as_posix() for m in closure(module)}
    deps = code_deps(stage)
    covered = set()
    for dep in deps:
        path = ROOT / dep
        files = ({p.relative_to(ROOT).as_posix() for p in path.rglob("*.py") if p.stem != "__init__"}
                 if path.is_dir() else {dep})
        assert files <= runs, f"{name}: {dep} lists {sorted(files - runs)}, which the stage never imports"
        covered |= files
    assert runs <= covered, f"{name}: dvc.yaml misses {sorted(runs - covered)}"


def test_test_modules_never_import_each_other():
    """Shared test code lives in tests/helpers.py or conftest.py, so a test module runs alone."""
    tests = Path(__file__).resolve().parent
    for module in tests.glob("test_*.py"):
        tree = ast.parse(module.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {name for name in imported if name.startswith("test_")}, module.name
