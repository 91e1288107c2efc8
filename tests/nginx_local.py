"""docker/nginx.conf.template, read and run outside its container.

``directives`` parses it (nginx's syntax: words, quoted strings, ``;`` and blocks) so that tests
can check its values without nginx; ``render`` makes it runnable on this machine: the template
filled in as the image fills it, and the container's user, log paths and addresses swapped for a
temporary prefix and local ports. Each swap must find its line, so a changed file fails loudly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "docker" / "nginx.conf.template"
NGINX = shutil.which("nginx")
# A comment, a quoted string, a brace or ;, or a word (where ${name} is one variable).
TOKEN = re.compile(
    r"""#[^\n]*|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[{};]|(?:\$\{\w+\}|[^\s{};'"#])+"""
)


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def one(self, name: str) -> Directive:
        found = [d for d in self.block or [] if d.name == name]
        assert len(found) == 1, f"{self.name} has {len(found)} {name} directives"
        return found[0]


def directives(text: str) -> Directive:
    """The file as a tree under a root directive named ``main``."""
    tokens = [t for t in TOKEN.findall(text) if not t.startswith("#")]
    root = Directive("main", [], [])
    stack, words = [root], list[str]()
    for token in tokens:
        if token in (";", "{"):
            name, *args = words
            directive = Directive(
                name, [a.strip("'\"") for a in args], [] if token == "{" else None
            )
            parent = stack[-1]
            assert parent.block is not None
            parent.block.append(directive)
            if token == "{":
                stack.append(directive)
            words = []
        elif token == "}":
            assert not words, f"unterminated directive {words}"
            stack.pop()
        else:
            words.append(token)
    assert len(stack) == 1, "a block is not closed"
    assert not words, f"unterminated directive {words}"
    return root


def render(prefix: Path, *, listen_port: int, api_port: int, max_upload_bytes: int) -> Path:
    """The config as nginx would run it here, under ``prefix``; its path."""
    text = TEMPLATE.read_text().replace("${MAX_UPLOAD_BYTES}", str(max_upload_bytes))
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    swaps = {
        "user nginx;\n": "",  # this machine has no such user; root's workers run as nobody
        "error_log /var/log/nginx/error.log notice;": f"error_log {prefix / 'error.log'} notice;",
        "access_log /var/log/nginx/access.log;": f"access_log {prefix / 'access.log'};",
        "    server_tokens off;\n": "    server_tokens off;\n" + temp_paths,
        "server api:8000;": f"server 127.0.0.1:{api_port};",
        "listen 8000;": f"listen 127.0.0.1:{listen_port};",
    }
    for old, new in swaps.items():
        assert text.count(old) == 1, f"{TEMPLATE.name} no longer has {old!r}"
        text = text.replace(old, new)
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


def command(conf: Path, *args: str) -> list[str]:
    """nginx on ``conf``, in the foreground, its pid file beside it."""
    assert NGINX is not None
    globals_ = f"pid {conf.parent / 'nginx.pid'}; daemon off;"
    return [NGINX, "-p", str(conf.parent), "-c", str(conf), "-e", "stderr", "-g", globals_, *args]


def check(conf: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t``: the syntax, and that every directive and value is one nginx accepts."""
    return subprocess.run(command(conf, "-t"), capture_output=True, text=True, timeout=60)
