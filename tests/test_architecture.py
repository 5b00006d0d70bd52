"""Every "never" of the architecture (docs/architecture.md, ARCHITECTURE.md), checked on the code.

- The library imports no service, and no import runs back up its floors.
- Services import the library, never each other; the gateway never imports the worker or the
  training code; the worker never serves HTTP.
- The frontend imports only the library's gateway client and schemas (it reaches only the gateway).
- The HTTP commands of the CLI (and ``--help``) import no torch, torchvision, scikit-learn or scipy:
  checked in fresh interpreters, as a user runs them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "shared" / "dermasynth"
SERVICES = REPO / "services"

# The library's floors, lowest first (docs/architecture.md, "Layout"): a module may import its own floor
# and those below it, never one above.
FLOORS: dict[str, int] = {
    "config": 0,
    "labels": 0,
    "progress": 0,
    "logs": 0,
    "storage": 1,
    "metrics": 2,
    "data": 3,
    "classifier": 4,
    "gan": 5,
    "serving": 6,
    "experiments": 7,
    "jobs": 8,
    "auth": 8,
    "gateway_client": 9,
    "cli": 10,
}
HEAVY = ("torch", "torchvision", "sklearn", "scipy")
"""What a client must never load: the ML stack."""
NOT_IN_A_CLIENT = (*HEAVY, "numpy", "PIL", "redis", "celery", "kombu", "minio", "fastapi", "tritonclient", "matplotlib")
"""What the gateway client and the schemas it returns must not load: only the ``client`` extra is there."""


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*.py") if "__pycache__" not in path.parts)


def test_the_library_imports_no_service() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(n for n in _imports(path) if n.split(".")[0] == "services")
        for path in _modules(LIBRARY)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_library_import_runs_back_up_a_floor() -> None:
    assert set(FLOORS) == {p.stem if p.is_file() else p.name for p in LIBRARY.iterdir()} - {"__init__", "__pycache__"}
    upward = []
    for path in _modules(LIBRARY):
        floor = path.relative_to(LIBRARY).parts[0].removesuffix(".py")
        if floor == "__init__":
            continue
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "dermasynth" and len(parts) > 1 and FLOORS[parts[1]] > FLOORS[floor]:
                upward.append(f"{path.relative_to(REPO)} imports {name}")
    assert upward == []


def test_services_never_import_each_other() -> None:
    crossings = []
    for service in sorted(p for p in SERVICES.iterdir() if p.is_dir() and p.name != "__pycache__"):
        for path in _modules(service):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "services" and len(parts) > 1 and parts[1] != service.name:
                    crossings.append(f"{path.relative_to(REPO)} imports {name}")
    assert crossings == []


def test_the_frontend_imports_only_the_gateway_client_and_schemas() -> None:
    allowed = {  # the client, and the pure modules its answers are made of (checked below: no ML stack)
        "dermasynth.gateway_client",
        "dermasynth.serving.schemas",
        "dermasynth.data.schemas",
        "dermasynth.jobs",
        "dermasynth.jobs.records",  # job and progress schemas (pydantic only)
        "dermasynth.jobs.schemas",
        "dermasynth.progress",
        "dermasynth.labels",
        "dermasynth.config",  # the one Settings object (gateway URL, service key)
    }
    reached = {
        name
        for path in _modules(SERVICES / "frontend")
        for name in _imports(path)
        if name.split(".")[0] in ("dermasynth", "services") and not name.startswith("services.frontend")
    }
    assert reached <= allowed
    assert not (SERVICES / "frontend" / "gateway.py").exists(), "one gateway client: the library's"


def _run(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter with this checkout first on the path; it prints one JSON line."""
    env = {"PYTHONPATH": f"{REPO / 'shared'}:{REPO}", "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_gateway_client_and_its_schemas_load_only_the_client_extra() -> None:
    loaded = _run(
        "import json, sys\n"
        "import dermasynth.gateway_client, dermasynth.serving.schemas, dermasynth.data.schemas\n"
        "import dermasynth.jobs, dermasynth.jobs.schemas, dermasynth.labels, dermasynth.config\n"
        f"print(json.dumps({{'loaded': [m for m in {NOT_IN_A_CLIENT!r} if m in sys.modules]}}))"
    )
    assert loaded == {"loaded": []}


def test_the_gateway_never_imports_the_worker_nor_training_code_and_the_worker_serves_no_http() -> None:
    gateway = _run(
        "import json, sys\nimport services.gateway.app\n"
        "names = ['services.worker', 'dermasynth.classifier.engine', 'dermasynth.gan.training_loop',"
        " 'dermasynth.experiments.runner']\n"
        "print(json.dumps({'loaded': [m for m in names if m in sys.modules]}))"
    )
    assert gateway == {"loaded": []}
    worker = _run(
        "import json, sys\nimport services.worker.celery_app\n"
        "import services.worker.tasks.training, services.worker.tasks.synthesis\n"
        "import services.worker.tasks.evaluation, services.worker.tasks.experiment\n"
        "names = ['services.gateway', 'services.frontend', 'fastapi', 'uvicorn', 'streamlit']\n"
        "print(json.dumps({'loaded': [m for m in names if m in sys.modules]}))"
    )
    assert worker == {"loaded": []}


HTTP_COMMANDS = [
    ["--help"],
    ["--version"],
    ["datasets", "--help"],
    ["datasets", "list"],
    ["jobs", "--help"],
    ["jobs", "list", "--json"],
    ["jobs", "status", "0" * 32],
    ["models", "--help"],
    ["models", "list"],
    ["models", "deploy", "classifier", "1", "--instances", "2"],
    ["predict", "--help"],
    ["predict", "pyproject.toml"],
    ["keys", "--help"],
]


def test_http_commands_and_help_import_no_torch() -> None:
    """Each command as a user runs it, against a gateway that is not there: exit 1, and no ML stack loaded."""
    script = f"""
import json, os, sys, time
os.environ["DERMASYNTH_GATEWAY_URL"] = "http://127.0.0.1:{free_port()}"
os.environ["DERMASYNTH_API_KEY"] = "dsk_000000000000_" + "a" * 43
started = time.perf_counter()
from dermasynth.cli import main
report = {{}}
for argv in {HTTP_COMMANDS!r}:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    report[" ".join(argv)] = [code, [m for m in {HEAVY!r} if m in sys.modules]]
report["seconds"] = time.perf_counter() - started
print(json.dumps(report))
"""
    report = _run(script)
    seconds = report.pop("seconds")
    assert report == {
        " ".join(argv): [1 if argv[-1] not in ("--help", "--version") else 0, []] for argv in HTTP_COMMANDS
    }, report
    assert isinstance(seconds, float)


@pytest.mark.parametrize("argv", [["--help"], ["jobs", "list", "--help"], ["predict", "--help"]])
def test_help_starts_at_once(argv: list[str]) -> None:
    """``dermasynth --help`` and the HTTP commands' help in a fresh interpreter: nothing heavy, well under 1 s
    of imports (the bound is loose: this 2-core machine is shared; the figures are in docs/cli.md)."""
    report = _run(
        "import json, sys, time\nstarted = time.perf_counter()\nfrom dermasynth.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'s': time.perf_counter() - started, 'heavy': heavy}))"
    )
    assert report["heavy"] == []
    assert isinstance(report["s"], float) and report["s"] < 5.0
