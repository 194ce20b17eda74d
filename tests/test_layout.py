"""The package's shape: sub-packages by audience, imports that only go down, short modules.

captioner/ (the core: settings, images, links, errors, flags) <- engine/ (the model) and
review/ (a review of captions, which holds no model) <- app/, bulk/, train/ (one audience each)
<- cli.py and __init__.py (the front doors). Lazy imports inside
functions count: a cycle through one still ties two modules together.
"""

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "captioner"
SUBSYSTEMS = ("engine", "review", "app", "bulk", "train")
FRONT_DOORS = {"captioner", "captioner.__main__", "captioner.cli"}
# What each layer may import from the package, besides itself.
ALLOWED = {"core": {"core"}, "engine": {"core"}, "review": {"core"}, "app": {"core", "engine", "review"},
           "bulk": {"core", "engine"}, "train": {"core", "engine"}}
OPTIONAL = {"gradio", "gradio_client", "ray", "pyarrow", "datasets", "matplotlib", "pycocoevalcap", "pandas"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in SUBSYSTEMS else "core"


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules of the package, other top-level packages) imported anywhere in `path`."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.startswith("captioner") else theirs).add(alias.name.split(".")[0]
                                                                              if not alias.name.startswith("captioner")
                                                                              else alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("captioner"):
                # `from .engine import inference` names a module; `from .settings import X` a name.
                names = [f"{target}.{a.name}" for a in node.names]
                found = [n for n in names if _exists(n)]
                ours.update(found or [target])
            else:
                theirs.add(target.split(".")[0])
    return {m for m in ours if m != me}, theirs


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: imports(path)[0] for name, path in MODULES.items()}


def test_the_folders_are_the_subsystems():
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(SUBSYSTEMS)
    for subsystem in SUBSYSTEMS:
        assert (PACKAGE / subsystem / "__init__.py").read_text().startswith('"""'), f"{subsystem} says what it is for"


@pytest.mark.parametrize("module", sorted(set(MODULES) - FRONT_DOORS))
def test_imports_only_go_down(module):
    own = layer(module)
    for target in GRAPH[module]:
        other = layer(target)
        assert target not in FRONT_DOORS, f"{module} imports the front door {target}"
        assert other == own or other in ALLOWED[own], f"{module} ({own}) imports {target} ({other})"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in ("core", "engine") and m not in FRONT_DOORS))
def test_core_and_engine_need_no_optional_package(module):
    assert not imports(MODULES[module])[1] & OPTIONAL


def test_no_import_cycle_even_through_lazy_imports():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


SOURCES = sorted([*PACKAGE.rglob("*.py"), ROOT / "app.py", *(ROOT / "bench").glob("*.py"), *(ROOT / "tests").glob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_read_in_one_sitting(path):
    assert len(path.read_text().splitlines()) <= 300


DATE = re.compile(r"\b20\d\d-\d\d(-\d\d)?\b|\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* 20\d\d\b")
FIGURE = re.compile(r"\b\d[\d.,]*\s*(MB|MiB|GB|GiB|ms|µs|us|s|seconds|images/s|x)\b.*\b(against|measured|vs\.?|took|was)\b"
                    r"|\b(VmRSS|we saw|scratch)\b", re.I)


@pytest.mark.parametrize("path", [p for p in SOURCES if p.name != "test_layout.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_comments_say_why_without_dates_or_scratch_figures(path):
    comments = [token.string for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
                if token.type == tokenize.COMMENT]
    tree = ast.parse(path.read_text())
    docstrings = [ast.get_docstring(node) or "" for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    for text in comments + docstrings:
        assert not DATE.search(text), f"a date in {path.name}: {text!r}"
        assert not FIGURE.search(text), f"a measurement in {path.name}: {text!r} (it belongs in docs/performance.md)"


def test_the_layout_test_sees_a_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: fed a made-up graph with a cycle, the walk raises."""
    GRAPH["captioner.settings"].add("captioner.engine.inference")
    try:
        with pytest.raises(AssertionError, match="import cycle"):
            test_no_import_cycle_even_through_lazy_imports()
        with pytest.raises(AssertionError, match=r"\(core\) imports captioner.engine.inference"):
            test_imports_only_go_down("captioner.settings")
    finally:
        GRAPH["captioner.settings"].discard("captioner.engine.inference")


@pytest.mark.parametrize("module, absent", [
    ("captioner.cli", {"gradio", "ray", "pyarrow", "datasets", "matplotlib", "pycocoevalcap"}),
    ("captioner.app.ui", {"ray", "datasets", "matplotlib", "pycocoevalcap"}),
])
def test_a_front_door_loads_only_what_it_needs(module, absent):
    import subprocess
    import sys

    probe = f"import sys, {module}; print(sorted(m for m in {sorted(absent)!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
