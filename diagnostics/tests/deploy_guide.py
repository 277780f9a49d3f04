"""Read the deploy guides and the code they describe: commands, variables, markers, metrics."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

from django.core.management import get_commands, load_command_class

BASE_DIR = Path(__file__).resolve().parents[2]
GUIDES = (BASE_DIR / "docs" / "DEPLOY.md", BASE_DIR / "docs" / "DEPLOY.zh-CN.md")
DEPLOY_DIR = BASE_DIR / "deploy"
INSTALL_DIR = "/opt/taskhub"  # where deploy/ and the guides put the code
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SETTINGS_VARIABLE = re.compile(r"env\.(?:str|int|bool|float|list|cache|json|url|path)\(\s*[\"']([A-Z0-9_]+)[\"']")
ENVIRON_VARIABLE = re.compile(r"os\.environ(?:\.get\(|\[)\s*[\"']([A-Z0-9_]+)[\"']")
MARKER = re.compile(r"^[A-Z_]+_MARKER = \"(.+)\"$", re.M)
METRIC = re.compile(r"[\"'](taskhub_[a-z0-9_]+)[\"']")
APP_DIRS = ("accounts", "config", "core", "diagnostics", "tasks")
OPERATORS = {"&&", "||", "|", ";"}


def fenced_blocks(path: Path, language: str | None = None) -> list[str]:
    """Return the bodies of the fenced code blocks of `path` (only `language` ones if given)."""
    return [body for lang, body in FENCE.findall(path.read_text()) if language is None or lang == language]


def shell_commands(path: Path) -> list[str]:
    """Return every command line of the ```sh blocks, continuations joined, comments left out."""
    commands = []
    for block in fenced_blocks(path, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def simple_commands(command: str) -> Iterator[tuple[list[str], str | None]]:
    """Yield each simple command of a command line as words, with the operator that follows it."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    words: list[str] = []
    for token in lexer:
        if token in OPERATORS:
            yield words, token
            words = []
        else:
            words.append(token)
    if words:
        yield words, None


def without_sudo(words: list[str]) -> list[str]:
    return words[1:] if words and words[0] == "sudo" else words


def settings_variables() -> set[str]:
    """Return every environment variable config/settings.py reads."""
    return set(SETTINGS_VARIABLE.findall((BASE_DIR / "config" / "settings.py").read_text()))


def process_variables() -> set[str]:
    """Return the variables read straight from os.environ by gunicorn.conf.py and the app code."""
    names = set(ENVIRON_VARIABLE.findall((BASE_DIR / "gunicorn.conf.py").read_text()))
    for path in app_sources():
        names |= {name for name in ENVIRON_VARIABLE.findall(path.read_text()) if name.startswith("PROMETHEUS_")}
    return names


def app_sources() -> Iterator[Path]:
    """Yield the app modules (tests and migrations left out)."""
    for app in APP_DIRS:
        for path in sorted((BASE_DIR / app).rglob("*.py")):
            if "tests" not in path.parts and "migrations" not in path.parts:
                yield path


def log_markers() -> dict[str, list[str]]:
    """Return {marker: its fixed parts}: every `*_MARKER` constant, cut at its `{placeholders}`."""
    markers = {}
    for path in app_sources():
        for marker in MARKER.findall(path.read_text()):
            markers[marker] = [part for part in re.split(r"\{\w+\}", marker) if part.strip()]
    return markers


def metric_names() -> set[str]:
    """Return the Prometheus series TaskHub defines (in modules that use prometheus_client)."""
    names = set()
    for path in app_sources():
        text = path.read_text()
        if "prometheus_client" in text:
            names |= set(METRIC.findall(text))
    return names


def designed_run_worker_parser() -> argparse.ArgumentParser:
    """Return run_worker's flags as its design (issue 5) states them, for branches without the worker."""
    parser = argparse.ArgumentParser(prog="run_worker", exit_on_error=False)
    parser.add_argument("--queue", action="append")
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--max-tasks", type=int)
    parser.add_argument("--poll-interval", type=float)
    return parser


def parse_manage_py(arguments: list[str]) -> str:
    """Parse `manage.py <command> <flags>` with the command's own parser; return the command name.

    Raises CommandError (or argparse.ArgumentError) for an unknown command or a bad flag.
    """
    name, *flags = arguments
    commands = get_commands()
    if name == "run_worker" and name not in commands:
        designed_run_worker_parser().parse_args(flags)
        return name
    if name not in commands:
        raise AssertionError(f"manage.py has no command {name!r}")
    command = load_command_class(commands[name], name)
    command.create_parser("manage.py", name).parse_args(flags)
    return name


def manage_py_arguments(words: list[str]) -> list[str] | None:
    """Return the words after `manage.py` when `words` run it with the project's Python."""
    if len(words) >= 2 and words[0].endswith("python") and words[1] == "manage.py":
        return words[2:]
    return None


def unit_file(name: str) -> Path:
    """Return the file in deploy/ that provides systemd unit `name` (instances use their template)."""
    name = name if name.endswith(".service") else f"{name}.service"
    if "@" in name:
        name = name.split("@")[0] + "@.service"
    return DEPLOY_DIR / name


def unit_for_install_path(path: str) -> Path:
    """Return deploy/'s file for a unit the guides install under /etc/systemd/system/."""
    assert path.startswith("/etc/systemd/system/"), path
    return DEPLOY_DIR / Path(path).name


def unit_keys(path: Path) -> dict[str, dict[str, list[str]]]:
    """Parse a systemd unit: {section: {key: [values]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path.name}: not a key=value line: {raw!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def localized_unit(path: Path, base_dir: Path) -> str:
    """Return the unit's text with the install directory replaced by this checkout (for verifying)."""
    return path.read_text().replace(INSTALL_DIR, str(base_dir))
