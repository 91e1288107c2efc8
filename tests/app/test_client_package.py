"""The Python client imports in a project whose own package is called ``app``, as many are."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPOSITORY = Path(__file__).parents[2]


def test_the_client_imports_beside_a_project_of_its_own_named_app(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text('WHOSE = "the project\'s"\n')
    code = textwrap.dedent(
        """
        import os
        import sys

        sys.path.insert(0, os.getcwd())  # the project's folder first, as a project has it

        from dataset_audit import AuditClient

        import app

        with AuditClient("http://127.0.0.1:9") as client:
            print(client.server)
        assert app.WHOSE == "the project's", app.__file__
        print(sorted(name for name in sys.modules if name.startswith("app.")))
        """
    )
    # The repository after the project's folder, as an installed distribution would be.
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["http://127.0.0.1:9", "[]"]


def test_the_client_package_never_imports_the_server() -> None:
    sources = sorted((REPOSITORY / "dataset_audit").glob("**/*.py"))
    assert sources
    for source in sources:
        for line in source.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] != "app", f"{source.name}: {line}"
