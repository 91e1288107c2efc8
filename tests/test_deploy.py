"""The deployment files (Dockerfile, docker-compose*.yml, .env.example, .dockerignore) against
the project they deploy: every command they run exists and is spelt as its tool accepts it, the
API image gets no torch, the services share what they must, and the compose check can fail.

No Docker engine is needed: the files are parsed and their pieces checked one by one. (hadolint
and the compose schema check themselves run in .ci/run.)
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml
from alembic.config import Config
from alembic.script import ScriptDirectory
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import TypeAdapter

from app.queue import QUEUE, WEBHOOK_QUEUE
from app.settings import Settings
from tests import nginx_local

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
COMPOSE_S3 = ROOT / "docker-compose.s3.yml"  # the API host of two
COMPOSE_WORKER = ROOT / "docker-compose.worker.yml"  # a GPU host
ENV_EXAMPLE = ROOT / ".env.example"
ENV_WORKER_EXAMPLE = ROOT / ".env.worker.example"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

APP_SERVICES = ("migrate", "api", "worker", "webhooks")  # the ones built from this repository
# Variables the app services may get besides the app's settings: uvicorn's own.
NOT_SETTINGS = {"FORWARDED_ALLOW_IPS"}


@functools.cache
def docker_module(name: str) -> ModuleType:
    """A script under docker/ (not a package), imported from its file."""
    spec = importlib.util.spec_from_file_location(f"docker_{name}", ROOT / "docker" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- The Dockerfile, parsed ----------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    parent: str  # the FROM image or stage
    instructions: list[tuple[str, str]] = field(default_factory=list)


@functools.cache
def stages() -> dict[str, Stage]:
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):
            continue  # comments may also sit inside a continued instruction
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        lines.append(pending + text)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    result: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(result))
            current = result[name] = Stage(name, words[0])
        else:
            assert current is not None, f"{line!r} before the first FROM"
            current.instructions.append((keyword, args.strip()))
    return result


def effective(stage: str) -> list[tuple[str, str]]:
    """A stage's instructions with those of the stages it is built on, oldest first."""
    own = stages()[stage]
    inherited = effective(own.parent) if own.parent in stages() else []
    return inherited + own.instructions


def last(stage: str, keyword: str) -> str:
    values = [args for kw, args in effective(stage) if kw == keyword]
    assert values, f"stage {stage} has no {keyword}"
    return values[-1]


def exec_form(args: str) -> list[str]:
    """CMD/HEALTHCHECK in exec form (a JSON array), the form the images use."""
    assert args.startswith("["), f"not in exec form: {args}"
    argv = json.loads(args)
    assert isinstance(argv, list)
    assert all(isinstance(word, str) for word in argv)
    return argv


def healthcheck(stage: str) -> list[str]:
    _options, cmd, argv = last(stage, "HEALTHCHECK").partition("CMD ")
    assert cmd, "HEALTHCHECK without CMD"
    return exec_form(argv)


def env(stage: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, args in effective(stage):
        if keyword == "ENV":
            for word in shlex.split(args):
                name, _, value = word.partition("=")
                values[name] = value
    return values


def workdir(stage: str) -> PurePosixPath:
    return PurePosixPath(last(stage, "WORKDIR"))


def in_repo(stage: str, image_path: str) -> Path:
    """The repository file that the image has at ``image_path`` (under its WORKDIR)."""
    relative = PurePosixPath(image_path)
    if relative.is_absolute():
        relative = relative.relative_to(workdir(stage))
    return ROOT / relative


def pip_installs(stage: str) -> list[str]:
    return [args for kw, args in stages()[stage].instructions if kw == "RUN" and "pip" in args]


# --- The compose files, parsed -------------------------------------------------------------------


@dataclass(frozen=True)
class Tagged:
    """A value under a Compose merge tag (``!reset``, ``!override``)."""

    tag: str
    value: Any


class TagKeepingLoader(yaml.SafeLoader):
    pass


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Tagged:
    untagged: Any = docker_module("check_compose").ComposeLoader.yaml_constructors[node.tag]
    return Tagged(node.tag, untagged(loader, node))


for _tag in ("!reset", "!override"):
    TagKeepingLoader.add_constructor(_tag, _tagged)


@functools.cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = docker_module("check_compose").load(COMPOSE)
    return loaded


def service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose()["services"]
    return services[name]


def environment(name: str) -> dict[str, str]:
    value = service(name).get("environment", {})
    if isinstance(value, list):
        value = dict(item.split("=", 1) for item in value)
    return {key: "" if v is None else str(v) for key, v in value.items()}


def command(name: str) -> list[str]:
    value = service(name)["command"]
    return shlex.split(value) if isinstance(value, str) else [str(word) for word in value]


def compose_healthcheck(name: str) -> list[str]:
    test = service(name)["healthcheck"]["test"]
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(word) for word in test]


def image_stage(name: str) -> str:
    build = service(name)["build"]
    assert build["context"] == "."
    target: str = build["target"]
    assert target in stages()
    return target


VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def variables(path: Path) -> dict[str, tuple[str, str]]:
    """Every ${VAR} the file interpolates: its operator (``:-``, ``:?``, ...) and default."""
    text = path.read_text()
    assert not re.search(r"(?<!\$)\$[A-Za-z_]", text), f"{path.name}: use ${{VAR}}, not $VAR"
    found: dict[str, tuple[str, str]] = {}
    for match in VARIABLE.finditer(text):
        name, operator, default = match.group(1), match.group(2) or "", match.group(3) or ""
        assert found.setdefault(name, (operator, default)) == (operator, default), (
            f"${{{name}}} has two different defaults in {path.name}"
        )
    return found


def env_example(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not NAME=VALUE"
            assert name not in values, f"{path.name} sets {name} twice"
            values[name] = value
    return values


# --- Commands: each calls something real ---------------------------------------------------------


def console_scripts() -> dict[str, str]:
    """Console scripts the images have: the project's, and those of its direct dependencies
    (all of which but torch are installed in both images)."""
    scripts = dict.fromkeys(PYPROJECT.get("scripts", {}), "dataset-audit")
    for requirement in map(Requirement, PYPROJECT["dependencies"]):
        if canonicalize_name(requirement.name) == "torch":
            continue
        for entry in distribution(requirement.name).entry_points:
            if entry.group == "console_scripts":
                scripts[entry.name] = requirement.name
    return scripts


@functools.cache
def help_text(*argv: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name(argv[0])), *argv[1:], "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def assert_options_exist(options: list[str], *tool: str) -> None:
    text = help_text(*tool)
    for option in options:
        name = option.split("=", 1)[0]
        assert re.search(rf"(^|[\s,]){re.escape(name)}([\s,=/]|$)", text, re.M), (
            f"{' '.join(tool)} has no option {name}"
        )


def assert_runs_something_real(argv: list[str], stage: str) -> None:
    """The command exists in the image built from ``stage`` and its arguments make sense."""
    program, *args = argv
    if program == "python":
        if args[0] == "-c":
            compile(args[1], "<healthcheck>", "exec")
            for path in re.findall(r"http://127\.0\.0\.1:8000(/[a-z]+)", args[1]):
                assert path in api_paths(), f"the API has no route {path}"
        else:
            script = in_repo(stage, args[0])
            assert script.is_file(), f"{args[0]}: no {script.relative_to(ROOT)} in the repo"
            assert copied_into(stage, script), f"{stage} image lacks {args[0]}"
        return
    assert program in console_scripts(), f"{program} is no console script the image installs"
    options = [a for a in args if a.startswith("-")]
    if program == "uvicorn":
        module, _, attribute = next(a for a in args if not a.startswith("-")).partition(":")
        assert hasattr(importlib.import_module(module), attribute), f"{module}:{attribute}"
        assert_options_exist(options, "uvicorn")
        if "--http" in args:  # a protocol class of the project's, rather than a name of uvicorn's
            module, _, attribute = args[args.index("--http") + 1].partition(":")
            assert hasattr(importlib.import_module(module), attribute), f"{module}:{attribute}"
    elif program == "celery":
        app = args[args.index("-A") + 1]
        assert importlib.util.find_spec(app) is not None, f"celery app {app} does not import"
        sub = next(a for a in args[args.index("-A") + 2 :] if not a.startswith("-"))
        assert re.search(rf"^\s+{sub}\b", help_text("celery"), re.M), f"celery has no {sub}"
        assert_options_exist([o for o in options if o != "-A"], "celery", sub)
    elif program == "alembic":
        assert args == ["upgrade", "head"], args
        ini = in_repo(stage, "alembic.ini")
        assert copied_into(stage, ini), f"{stage} image lacks alembic.ini in its WORKDIR"
        heads = ScriptDirectory.from_config(Config(str(ini))).get_heads()
        assert len(heads) == 1, f"the migrations have {len(heads)} heads"
    else:
        pytest.fail(f"no check written for {program}")


@functools.cache
def api_paths() -> set[str]:
    """The API's GET routes (``uvicorn app.main:app`` serves this very object)."""
    paths = importlib.import_module("app.main").app.openapi()["paths"]
    return {path for path, methods in paths.items() if "get" in methods}


def copied_into(stage: str, path: Path) -> bool:
    """Whether a COPY from the build context in ``stage`` brings ``path`` into the image."""
    relative = path.relative_to(ROOT).as_posix()
    for keyword, args in effective(stage):
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _destination = args.split()
        for source in (s.rstrip("/") for s in sources):
            if relative == source or relative.startswith(source + "/"):
                return True
    return False


@pytest.mark.parametrize("stage", ["api", "worker"])
def test_the_image_commands_call_something_real(stage: str) -> None:
    assert_runs_something_real(exec_form(last(stage, "CMD")), stage)
    assert_runs_something_real(healthcheck(stage), stage)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_compose_commands_call_something_real(name: str) -> None:
    stage = image_stage(name)
    assert "entrypoint" not in service(name)
    assert_runs_something_real(command(name), stage)
    check = service(name).get("healthcheck", {})
    if not check.get("disable"):
        kind, *argv = compose_healthcheck(name)
        assert kind == "CMD"
        assert_runs_something_real(argv, stage)


def test_the_compose_file_runs_what_the_images_run() -> None:
    """Compose spells out each image's command and healthcheck: the same ones."""
    for name in ("api", "worker"):
        assert command(name) == exec_form(last(name, "CMD"))
        assert compose_healthcheck(name) == ["CMD", *healthcheck(name)]
    assert image_stage("migrate") == "api"
    assert command("migrate") == ["alembic", "upgrade", "head"]
    assert service("migrate")["healthcheck"] == {"disable": True}


def test_the_celery_worker_runs_one_audit_at_a_time() -> None:
    argv = command("worker")
    assert argv[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert "--pool=solo" in argv
    # No -Q: it takes the default queue, audits, and never a webhook delivery.
    assert not any(a in ("-Q", "--queues") or a.startswith("--queues=") for a in argv)
    assert QUEUE != WEBHOOK_QUEUE


def test_webhooks_are_delivered_by_a_cpu_pool_of_their_own() -> None:
    argv = command("webhooks")
    assert argv[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert argv[argv.index("-Q") + 1] == WEBHOOK_QUEUE
    assert "--pool=threads" in argv
    assert "--concurrency=${WEBHOOK_CONCURRENCY:-8}" in argv
    assert image_stage("webhooks") == image_stage("worker")
    assert "deploy" not in service("webhooks")  # no GPU
    assert environment("webhooks")["WORKER_DEVICE"] == "cpu"
    assert "ports" not in service("webhooks")
    assert "volumes" not in service("webhooks")  # it needs no uploads


# --- The images ----------------------------------------------------------------------------------


def test_the_images_are_built_as_the_brief_says() -> None:
    assert {"api", "worker"} <= set(stages())
    for stage in stages().values():
        parent = stage.parent
        if parent not in stages():
            assert re.fullmatch(r"python:3\.11-slim-bookworm", parent), parent
    for target in ("api", "worker"):
        variables = env(target)
        assert variables["PYTHONDONTWRITEBYTECODE"] == "1"
        assert variables["PYTHONUNBUFFERED"] == "1"
        user = last(target, "USER")
        assert user.split(":")[0] not in ("0", "root"), f"{target} runs as root"
        assert not re.search(r"(?i)(secret|password|token|api_key)", " ".join(variables))
    assert last("api", "EXPOSE") == "8000"
    for target in ("api", "worker"):
        for run in pip_installs(target):
            assert "--no-cache-dir" in run, run


def test_dependencies_are_installed_before_the_source() -> None:
    for target in ("api", "worker"):
        instructions = stages()[target].instructions
        first_source = next(
            i for i, (kw, args) in enumerate(instructions) if kw == "COPY" and "app/" in args
        )
        requirement_installs = [
            i for i, (kw, args) in enumerate(instructions) if kw == "RUN" and "-r " in args
        ]
        assert requirement_installs, f"{target} installs no requirements file"
        assert max(requirement_installs) < first_source


def requirement_runs() -> dict[str, list[str]]:
    """The docker/requirements.py invocations of the Dockerfile: output file name -> arguments."""
    runs: dict[str, list[str]] = {}
    for keyword, args in stages()["requirements"].instructions:
        if keyword != "RUN":
            continue
        for part in args.split("&&"):
            argv = shlex.split(part)
            if argv[:2] == ["python", "/tmp/build/requirements.py"]:
                output = argv[argv.index("-o") + 1]
                runs[PurePosixPath(output).name] = argv[2:]
    return runs


def test_the_requirement_split_of_the_dockerfile(tmp_path: Path) -> None:
    """The very commands of the Dockerfile, on the real pyproject.toml: api.txt is every
    dependency but torch, and the s3 extra; torch.txt torch alone; the API stage installs api.txt
    only."""
    script = docker_module("requirements")
    runs = requirement_runs()
    assert set(runs) == {"api.txt", "torch.txt"}
    files = {}
    for name, argv in runs.items():
        argv = [str(ROOT / "pyproject.toml") if a.endswith("pyproject.toml") else a for a in argv]
        argv[argv.index("-o") + 1] = str(tmp_path / name)
        assert script.main(argv) == 0
        files[name] = (tmp_path / name).read_text().splitlines()
    dependencies = PYPROJECT["dependencies"]
    torch = [d for d in dependencies if canonicalize_name(Requirement(d).name) == "torch"]
    assert files["torch.txt"] == torch == ["torch==2.14.1"]
    s3 = PYPROJECT["optional-dependencies"]["s3"]
    assert [canonicalize_name(Requirement(r).name) for r in s3] == ["s3fs"]
    assert files["api.txt"] == [d for d in dependencies if d not in torch] + s3

    api = " ".join(pip_installs("api"))
    assert "/tmp/requirements/api.txt" in api
    assert "torch" not in api
    worker = " ".join(pip_installs("worker"))
    assert "/tmp/requirements/torch.txt" in worker
    assert "/tmp/requirements/api.txt" in worker
    # The project itself goes in without dependencies, so pip cannot bring torch back.
    for target in ("api", "worker"):
        project = [run for run in pip_installs(target) if " -r " not in run]
        assert project, f"{target} does not install the project"
        assert all("--no-deps" in run for run in project), project


def closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull in, transitively, as installed here."""
    names: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [(Requirement(r), frozenset[str]()) for r in requirements]
    while stack:
        requirement, parent_extras = stack.pop()
        marker = requirement.marker
        if marker is not None and not any(
            marker.evaluate({"extra": extra}) for extra in (parent_extras or {""})
        ):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        stack.extend((Requirement(r), frozenset(requirement.extras)) for r in requires)
    return names


def test_nothing_the_api_image_installs_pulls_torch(tmp_path: Path) -> None:
    script = docker_module("requirements")
    assert script.main(["--pyproject", str(ROOT / "pyproject.toml"), "--exclude", "torch",
                        "--extra", "s3", "-o", str(tmp_path / "api.txt")]) == 0  # fmt: skip
    api = closure((tmp_path / "api.txt").read_text().splitlines())
    assert {"fastapi", "uvicorn", "celery", "alembic", "psycopg", "uvloop", "s3fs"} <= api
    heavy = {n for n in api if n in ("torch", "triton") or n.startswith("nvidia-")}
    assert not heavy, f"the API image would install {sorted(heavy)}"
    assert "torch" in closure(PYPROJECT["dependencies"])


def test_the_requirements_script_refuses_unknown_names() -> None:
    script = docker_module("requirements")
    deps = ["numpy>=1.26", "Torch==2.14.1; sys_platform == 'linux'", "uvicorn[standard]>=0.30"]
    assert script.select(deps, exclude=["torch"]) == ["numpy>=1.26", "uvicorn[standard]>=0.30"]
    assert script.select(deps, only=["TORCH"]) == [deps[1]]
    assert script.select(deps) == deps
    with pytest.raises(ValueError, match="torchx"):
        script.select(deps, exclude=["torchx"])
    with pytest.raises(ValueError, match="PEP 508"):
        script.requirement_name("[broken")
    with pytest.raises(ValueError, match="s4"):
        script.dependencies(ROOT / "pyproject.toml", ["s4"])


def test_the_build_context_is_an_allowlist_with_what_the_images_copy() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for target in stages():
        for keyword, args in stages()[target].instructions:
            if keyword == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert source.rstrip("/") in allowed, f"{source} is outside the context"
    for secret in (".env", ".git", ".venv", "scratch", "tests"):
        assert secret not in allowed


def test_the_data_dir_is_a_folder_the_user_owns() -> None:
    data_dir = env("api")["DATA_DIR"]
    assert data_dir == env("worker")["DATA_DIR"]
    setup = " ".join(args for kw, args in stages()["base"].instructions if kw == "RUN")
    uid = last("api", "USER").split(":")[0]
    assert uid == last("worker", "USER").split(":")[0]
    assert f"--uid {uid}" in setup
    assert f"mkdir -p {data_dir}" in setup
    assert f"chown audit:audit {data_dir}" in setup


# --- The compose files -------------------------------------------------------------------------


def test_the_services() -> None:
    assert set(compose()["services"]) == {
        "postgres", "redis", "migrate", "api", "worker", "webhooks", "proxy"
    }  # fmt: skip
    assert service("postgres")["image"] == "postgres:16"
    assert service("redis")["image"] == "redis:7"
    assert "pg_isready" in compose_healthcheck("postgres")
    assert "redis-cli ping" in " ".join(compose_healthcheck("redis"))
    assert "container_name" not in COMPOSE.read_text() + COMPOSE_CPU.read_text()
    assert "ports" not in service("worker"), "a published port would stop --scale worker=N"
    # Clients reach the API through the proxy only.
    assert "ports" not in service("api")
    assert service("proxy")["ports"] == ["${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8000"]


def test_the_start_order() -> None:
    assert service("migrate")["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker", "webhooks"):
        depends = service(name)["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["redis"] == {"condition": "service_healthy"}
        assert depends["postgres"] == {"condition": "service_healthy"}


def test_the_worker_reserves_one_nvidia_gpu() -> None:
    devices = service("worker")["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_the_cpu_override_removes_the_gpu_reservation() -> None:
    override = yaml.load(COMPOSE_CPU.read_text(), Loader=TagKeepingLoader)
    worker = override["services"]["worker"]
    assert set(override["services"]) == {"worker"}
    # A plain list would be appended to the base file's reservation: it must be !reset.
    assert worker["deploy"]["resources"]["reservations"]["devices"] == Tagged("!reset", [])
    assert worker["environment"] == {"WORKER_DEVICE": "cpu"}


def test_api_and_worker_share_the_uploads_volume() -> None:
    mounts = {}
    for name in ("api", "worker"):
        volumes = service(name)["volumes"]
        assert len(volumes) == 1
        source, target = volumes[0].split(":")[:2]
        mounts[name] = (source, target)
        assert source in compose()["volumes"], f"{source} is not a named volume"
        data_dir = environment(name)["DATA_DIR"]
        storage = environment(name)["STORAGE_URL"]
        assert data_dir == target == env(image_stage(name))["DATA_DIR"]
        assert PurePosixPath(storage).is_relative_to(target), f"{storage} is not on the volume"
    assert mounts["api"] == mounts["worker"]


def test_the_services_are_configured_with_real_settings() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    for name in APP_SERVICES:
        variables = environment(name)
        unknown = set(variables) - settings - NOT_SETTINGS
        assert not unknown, f"{name} sets {sorted(unknown)}, which the app does not read"
        assert variables["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in variables["DATABASE_URL"]
        assert variables["BROKER_URL"] == "redis://redis:6379/0"
    for name in ("api", "worker", "webhooks"):
        # No shared webhook secret: each tenant signs with its own (app/webhooks.py).
        assert "WEBHOOK_SECRET" not in environment(name)
        assert "WEBHOOK_SECRET" not in Settings.model_fields
        assert environment(name)["WEBHOOK_ALLOWED_NETWORKS"] == "${WEBHOOK_ALLOWED_NETWORKS:-}"


@pytest.mark.parametrize(
    ("example_file", "compose_files"),
    [
        (ENV_EXAMPLE, (COMPOSE, COMPOSE_CPU, COMPOSE_S3)),
        (ENV_WORKER_EXAMPLE, (COMPOSE_WORKER,)),
    ],
    ids=["api-host", "gpu-host"],
)
def test_env_example_defines_every_variable_the_compose_files_use(
    example_file: Path, compose_files: tuple[Path, ...]
) -> None:
    example = env_example(example_file)
    used: dict[str, tuple[str, str]] = {}
    for path in compose_files:
        for name, spelling in variables(path).items():
            assert used.setdefault(name, spelling) == spelling, f"{name}: two defaults"
    assert set(used) == set(example), (
        f"missing from {example_file.name}: {sorted(set(used) - set(example))}; "
        f"unused: {sorted(set(example) - set(used))}"
    )
    for secret in ("POSTGRES_PASSWORD", "STORAGE_SECRET"):
        if secret in used:
            assert example[secret] == "", f"{example_file.name} must not carry a secret"
    if example_file == ENV_EXAMPLE:
        assert used["POSTGRES_PASSWORD"][0] == ":?", "the password must be required"
        assert used["STORAGE_SECRET"][0] == ":?", "MinIO's password must be required"
    for name, (operator, default) in used.items():
        if operator == ":-":
            assert example[name] == default, f"{name}: {example_file.name} and compose disagree"
    for name, value in example.items():
        setting = Settings.model_fields.get(name.lower())
        if setting is not None and setting.annotation is not None and value:
            typed = TypeAdapter(setting.annotation).validate_python(value)
            assert typed == setting.default, f"{name}={value}: the app's default is different"


# --- Two hosts, and one worker per GPU ----------------------------------------------------------


def compose_file(path: Path) -> dict[str, Any]:
    """A compose file as written, merge tags kept."""
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=TagKeepingLoader)
    return loaded


def assert_settings(variables: dict[str, Any], where: str) -> None:
    unknown = {name for name in variables if name.lower() not in Settings.model_fields}
    assert not unknown, f"{where} sets {sorted(unknown)}, which the app does not read"


def test_the_s3_override_keeps_uploads_in_minio() -> None:
    services = compose_file(COMPOSE_S3)["services"]
    assert set(services) == {"minio", "minio-init", "postgres", "redis", "api", "worker"}
    storage = services["api"]["environment"]
    assert services["worker"]["environment"] == storage
    assert_settings(storage, "docker-compose.s3.yml")
    bucket = storage["STORAGE_URL"].removeprefix("s3://")
    assert storage["STORAGE_URL"].startswith("s3://")
    assert "/" not in bucket
    assert storage["STORAGE_ENDPOINT_URL"] == "http://minio:9000"
    minio = services["minio"]
    assert minio["environment"] == {
        "MINIO_ROOT_USER": storage["STORAGE_KEY"],
        "MINIO_ROOT_PASSWORD": storage["STORAGE_SECRET"],
    }
    assert minio["command"][:2] == ["server", "/data"]
    assert re.fullmatch(r"minio/minio:RELEASE\.[0-9T-]+Z", minio["image"]), "pin a release"
    # The bucket exists before the API or a worker starts.
    init = services["minio-init"]
    assert re.fullmatch(r"minio/mc:RELEASE\.[0-9T-]+Z", init["image"]), "pin a release"
    assert init["command"] == ["mb", "--ignore-existing", f"local/{bucket}"]
    key, secret = storage["STORAGE_KEY"], storage["STORAGE_SECRET"]
    assert init["environment"] == {"MC_HOST_local": f"http://{key}:{secret}@minio:9000"}
    assert init["depends_on"] == {"minio": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        done = {"condition": "service_completed_successfully"}
        assert services[name]["depends_on"] == {"minio-init": done}
    # What the GPU hosts reach, on the address they share with this host.
    published = {name: services[name]["ports"] for name in ("postgres", "redis", "minio")}
    assert published == {
        name: [f"${{SERVICES_BIND:-127.0.0.1}}:{port}:{port}"]
        for name, port in (("postgres", 5432), ("redis", 6379), ("minio", 9000))
    }
    assert environment("api")["DATABASE_URL"].split("@postgres:")[1].startswith("5432/")
    assert environment("api")["BROKER_URL"].startswith("redis://redis:6379/")


def test_a_gpu_host_runs_the_worker_of_the_single_host() -> None:
    services = compose_file(COMPOSE_WORKER)["services"]
    assert set(services) == {"worker"}
    worker, single = services["worker"], service("worker")
    for key in ("build", "command", "restart", "stop_grace_period", "healthcheck", "deploy"):
        assert worker[key] == single[key], f"{key} differs from docker-compose.yml's worker"
    assert worker["logging"] == single["logging"]
    assert "depends_on" not in worker, "PostgreSQL and Redis run on the API host"
    variables = worker["environment"]
    assert_settings(variables, "docker-compose.worker.yml")
    assert set(environment("worker")) <= set(variables), "the same settings as on one host"
    for name in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL"):
        assert variables[name].startswith(f"${{{name}:?"), f"{name} must be required"
    for name in ("STORAGE_ENDPOINT_URL", "STORAGE_KEY", "STORAGE_SECRET", "STORAGE_REGION"):
        assert variables[name] == f"${{{name}:-}}"  # empty: unset (app/settings.py)
    (volume,) = worker["volumes"]
    source, target = volume.split(":")
    assert source in compose_file(COMPOSE_WORKER)["volumes"]
    assert target == variables["DATA_DIR"] == env("worker")["DATA_DIR"]


def gpu_workers(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert docker_module("gpu_workers").main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("base", [COMPOSE, COMPOSE_WORKER], ids=["one-host", "gpu-host"])
def test_one_worker_per_gpu(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = gpu_workers(capsys, "--gpus", "3", "--base", base.name)
    output = tmp_path / "docker-compose.gpus.yml"
    output.write_text(text)
    done = run_check(output)
    assert done.returncode == 0, done.stdout + done.stderr
    services = compose_file(output)["services"]
    assert list(services) == ["worker", "worker-gpu1", "worker-gpu2"]
    # The base file's worker reserves a GPU by count: each service's list replaces it.
    base_devices = compose_file(base)["services"]["worker"]["deploy"]["resources"]
    assert base_devices["reservations"]["devices"][0]["count"] == 1
    for gpu, (name, worker) in enumerate(services.items()):
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        assert devices == Tagged(
            "!override", [{"driver": "nvidia", "device_ids": [str(gpu)], "capabilities": ["gpu"]}]
        )
        assert worker["environment"] == {"WORKER_DEVICE": "cuda"}
        if name != "worker":
            # Relative to the output file, which sits beside the base file.
            assert worker["extends"] == {"file": base.name, "service": "worker"}
    assert "extends" not in services["worker"]
    assert Settings(worker_device="cuda").worker_device == "cuda"


def test_one_worker_per_named_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    services = yaml.load(gpu_workers(capsys, "--gpus", "1,3"), Loader=TagKeepingLoader)["services"]
    assert list(services) == ["worker", "worker-gpu3"]
    ids = [s["deploy"]["resources"]["reservations"]["devices"].value[0]["device_ids"]
           for s in services.values()]  # fmt: skip
    assert ids == [["1"], ["3"]]
    for wrong in ("0", "-1", "two", "1,1", "1,x"):
        with pytest.raises(SystemExit):
            docker_module("gpu_workers").main(["--gpus", wrong])
    assert "not" in capsys.readouterr().err


# --- The proxy ---------------------------------------------------------------------------------


def nginx_http() -> nginx_local.Directive:
    return nginx_local.directives(nginx_local.TEMPLATE.read_text()).one("http")


def test_the_proxy_fronts_the_api() -> None:
    proxy = service("proxy")
    assert re.fullmatch(r"nginx:\d+\.\d+-alpine", proxy["image"]), "pin a stable nginx"
    template = "/etc/nginx/templates/nginx.conf.template"
    assert proxy["volumes"] == [f"./docker/nginx.conf.template:{template}:ro"]
    assert proxy["depends_on"] == {"api": {"condition": "service_healthy"}}
    # The image renders the template into nginx.conf, filling in only the variables it uses.
    variables = environment("proxy")
    assert variables["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    used = set(re.findall(r"\$\{(\w+)\}", nginx_local.TEMPLATE.read_text()))
    assert used == {"MAX_UPLOAD_BYTES"}
    assert set(variables["NGINX_ENVSUBST_FILTER"].split("|")) == used
    assert variables["MAX_UPLOAD_BYTES"] == environment("api")["MAX_UPLOAD_BYTES"]
    # It listens where compose publishes it, and passes requests to where the API listens.
    server = nginx_http().one("server")
    assert server.one("listen").args == [service("proxy")["ports"][0].rsplit(":", 1)[1]]
    api_port = command("api")[command("api").index("--port") + 1]
    assert nginx_http().one("upstream").one("server").args == [f"api:{api_port}"]
    check = compose_healthcheck("proxy")
    assert check[:2] == ["CMD", "wget"]
    assert check[-1] == "http://127.0.0.1:8000/healthz"
    assert "/healthz" in api_paths()


def test_the_proxy_has_the_limits_of_the_api() -> None:
    """The proxy refuses what the API would refuse, and bounds what the API cannot: the time
    and bytes of a request head and the requests of one address."""
    http = nginx_http()
    defaults = Settings.model_fields

    def value(name: str) -> list[str]:
        return http.one(name).args

    assert value("client_header_timeout") == [f"{defaults['http_header_timeout_s'].default:g}s"]
    count, size = value("large_client_header_buffers")
    assert int(count) * int(size.removesuffix("k")) * 1024 == defaults["max_header_bytes"].default
    assert value("client_max_body_size") == ["${MAX_UPLOAD_BYTES}"]
    for name in ("client_body_timeout", "send_timeout", "keepalive_timeout"):
        assert re.fullmatch(r"\d+s", value(name)[0]), name
    assert value("reset_timedout_connection") == ["on"]
    zone = value("limit_conn_zone")
    assert zone[0] == "$binary_remote_addr"
    assert value("limit_conn")[0] == zone[1].removeprefix("zone=").split(":")[0]
    location = next(d for d in http.one("server").block or [] if d.args == ["/"])
    assert location.one("proxy_pass").args == ["http://api"]
    assert location.one("proxy_request_buffering").args == ["off"]  # uploads stream
    assert location.one("proxy_http_version").args == ["1.1"]  # chunked ones too


@pytest.mark.skipif(nginx_local.NGINX is None, reason="nginx is not installed")
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    conf = nginx_local.render(tmp_path, listen_port=8080, api_port=8000, max_upload_bytes=2**30)
    done = nginx_local.check(conf)
    assert done.returncode == 0, done.stderr
    broken = tmp_path / "broken" / "nginx.conf"
    broken.parent.mkdir()
    broken.write_text(conf.read_text().replace("client_header_timeout", "client_header_timeot"))
    assert nginx_local.check(broken).returncode != 0


# --- The compose check can fail ----------------------------------------------------------------


def run_check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "docker" / "check_compose.py"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_compose_check_fails_on_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  api:\n    image: x\n    restart_policy: always\n")
    done = run_check(broken)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "restart_policy" in done.stdout + done.stderr
    # check-jsonschema itself, as the check calls it
    plain = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(broken)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert plain.returncode != 0


def test_the_compose_check_reads_merge_tags(tmp_path: Path) -> None:
    good = tmp_path / "override.yml"
    good.write_text("services:\n  worker:\n    deploy:\n      resources: !reset {}\n")
    done = run_check(good)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "bad-override.yml"
    bad.write_text("services:\n  worker:\n    deploy: !override\n      gpus: 1\n")
    assert run_check(bad).returncode != 0


# --- The worker healthcheck --------------------------------------------------------------------


@pytest.fixture
def sqlite_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from app.db import make_engine
    from app.migrate import upgrade
    from app.settings import get_settings

    url = f"sqlite:///{tmp_path / 'audits.sqlite'}"
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("HEARTBEAT_TIMEOUT_S", "600")
    get_settings.cache_clear()
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()
    get_settings.cache_clear()


def add_audit(engine: Any, *, worker: str, status: str, heartbeat_age_s: float) -> None:
    from sqlalchemy.orm import Session

    from app.tables import Audit, utcnow
    from dataset_audit.schemas import AuditStatus

    with Session(engine) as session, session.begin():
        session.add(
            Audit(
                id=uuid.uuid4(),
                status=AuditStatus(status),
                preset="tiny",
                seed=0,
                dataset_format="npz",
                dataset_sha256="0" * 64,
                dataset_bytes=1,
                storage_key="audits/x/dataset.npz",
                n_samples=10,
                n_classes=2,
                image_shape=[8, 8],
                worker=worker,
                heartbeat_at=utcnow() - timedelta(seconds=heartbeat_age_s),
            )
        )


def test_the_worker_healthcheck(sqlite_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    check = docker_module("worker_healthcheck")
    engine = sqlite_settings
    monkeypatch.setattr(check.socket, "gethostname", lambda: "c0ffee_1%")
    pinged: list[str] = []
    answers = {"value": True}

    def ping(hostname: str) -> bool:
        pinged.append(check.celery_node(hostname))
        return answers["value"]

    monkeypatch.setattr(check, "answers_ping", ping)
    assert check.main() == 0  # it answers
    assert pinged == ["celery@c0ffee_1%"]

    answers["value"] = False  # busy (solo pool) or dead: the database tells
    assert check.main() == 1
    add_audit(engine, worker="c0ffee_1%:1", status="succeeded", heartbeat_age_s=1)
    add_audit(engine, worker="c0ffee_1%:1", status="running", heartbeat_age_s=900)  # stale
    add_audit(engine, worker="c0ffee_12:1", status="running", heartbeat_age_s=1)  # another host
    add_audit(engine, worker="c0ffee_1x:1", status="running", heartbeat_age_s=1)  # LIKE escaped
    assert check.main() == 1
    add_audit(engine, worker="c0ffee_1%:1", status="running", heartbeat_age_s=5)
    assert check.running_audits_with_heartbeat(engine, "c0ffee_1%", 600) == 1
    assert check.main() == 0


def test_the_worker_healthcheck_pings_its_own_node() -> None:
    """Celery names a worker celery@HOSTNAME unless told otherwise: the command must not."""
    argv = command("worker")
    assert not any(a in ("-n", "--hostname") or a.startswith("--hostname=") for a in argv)
    assert docker_module("worker_healthcheck").celery_node("abc") == "celery@abc"
