"""lab_utils is grouped into rooms: the index in lab_utils/__init__.py names every module, none is too long,
and imports flow one way (nothing in lab_utils/, data_loaders/ or rewards/ imports scripts/ or benchmarks/, and
no script imports a benchmark)."""

import ast
import re
from pathlib import Path

import lab_utils

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "lab_utils"
MAX_MODULE_LINES = 400


def library_modules():
    return sorted(p for p in LIBRARY.glob("*/*.py") if p.name != "__init__.py")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_the_index_names_every_room_and_module():
    index = lab_utils.__doc__
    rooms = sorted(p.parent.name for p in LIBRARY.glob("*/__init__.py"))
    assert rooms, "lab_utils has no rooms"
    for room in rooms:
        assert re.search(rf"^{room}/ ", index, re.M), f"the index in lab_utils/__init__.py misses the room {room}/"
    for module in library_modules():
        section = index.split(f"\n{module.parent.name}/", 1)[1].split("\n\n", 1)[0]
        assert re.search(rf"^    {module.stem}\b", section, re.M), (
            f"lab_utils/__init__.py does not index {module.relative_to(REPO)} under {module.parent.name}/")


def test_no_loose_modules_outside_the_rooms():
    assert [p.name for p in LIBRARY.glob("*.py")] == ["__init__.py"]


def test_no_library_module_is_over_the_limit():
    long = {str(p.relative_to(REPO)): n for p in library_modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these (>{MAX_MODULE_LINES} lines): {long}"


def test_imports_flow_one_way():
    for folder in ("lab_utils", "data_loaders", "rewards"):
        for path in (REPO / folder).rglob("*.py"):
            wrong = {m for m in imported_modules(path) if m.split(".")[0] in ("scripts", "benchmarks")}
            assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}"
    for path in (REPO / "scripts").rglob("*.py"):  # a script may use the library, never a benchmark
        wrong = {m for m in imported_modules(path) if m.split(".")[0] == "benchmarks"}
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}: move what it needs into lab_utils/"
    for path in (REPO / "rewards").rglob("*.py"):
        lab = {m for m in imported_modules(path) if m.split(".")[0] in ("lab_utils", "data_loaders", "torch")}
        assert not lab, f"{path.relative_to(REPO)}: rewards import nothing of the lab and no torch ({sorted(lab)})"
