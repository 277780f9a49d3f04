"""docs/CONFIGURATION.md has one table of variables, and it lists exactly the variables the code reads.

The variables are found in the syntax tree of each module that reads the environment for
TaskHub's configuration, so a new `env.int("X")` (or `os.environ.get("X")`, or a call to a helper
that reads the variable it is given) cannot go undocumented, and a row for a variable nothing
reads any more cannot stay.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
DOC = BASE_DIR / "docs" / "CONFIGURATION.md"
ENV_EXAMPLE = BASE_DIR / ".env.example"
# The modules that read the environment: settings, the secret loader settings call, gunicorn's.
SOURCES = ("config/settings.py", "config/secrets.py", "gunicorn.conf.py")
# django-environ methods that take no variable name.
ENV_NON_READERS = {"read_env", "parse_value", "smart_cast", "escape_proxy"}
# os.environ methods whose first argument is the name of a variable they read.
ENVIRON_READERS = {"get", "setdefault", "pop"}
ENV_EXAMPLE_VARIABLE = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]+)=", re.M)


class EnvironmentReads:
    """The environment variables one module reads, from its syntax tree.

    Forms: `env.<method>("X", ...)` and `env("X")` for every object built by `environ.Env()`,
    `os.environ.get("X")`, `os.environ["X"]`, `"X" in os.environ`, `os.getenv("X")` (also when
    `environ`/`getenv` are imported from `os`), and calls to functions of the module that pass
    one of their parameters to any of these (helpers, also helpers of helpers).
    `names` holds the variables; `unresolved` every read whose name is not a string literal.
    """

    def __init__(self, source: str, filename: str = "<source>") -> None:
        self.tree = ast.parse(source, filename)
        self.filename = filename
        self._imports()
        self.env_objects = self._env_objects()
        self.helpers: dict[str, tuple[int, str]] = {}  # function name -> (position, parameter)
        helper_keys = self._find_helpers()
        self.names: set[str] = set()
        self.unresolved: list[str] = []
        for key in self._keys(self.tree):
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                self.names.add(key.value)
            elif id(key) not in helper_keys:
                self.unresolved.append(f"{filename}:{getattr(key, 'lineno', '?')}: {ast.unparse(key)}")

    def _imports(self) -> None:
        self.os_modules: set[str] = set()  # names bound to the os module
        self.environ_names: set[str] = set()  # names bound to os.environ
        self.getenv_names: set[str] = set()  # names bound to os.getenv
        self.env_classes: set[str] = set()  # names bound to environ.Env
        self.environ_modules: set[str] = set()  # names bound to the django-environ module
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "os":
                        self.os_modules.add(alias.asname or "os")
                    elif alias.name == "environ":
                        self.environ_modules.add(alias.asname or "environ")
            elif isinstance(node, ast.ImportFrom) and node.module == "os":
                for alias in node.names:
                    if alias.name == "environ":
                        self.environ_names.add(alias.asname or "environ")
                    elif alias.name == "getenv":
                        self.getenv_names.add(alias.asname or "getenv")
            elif isinstance(node, ast.ImportFrom) and node.module == "environ":
                self.env_classes |= {alias.asname or alias.name for alias in node.names if alias.name == "Env"}

    def _env_objects(self) -> set[str]:
        """Names assigned an `environ.Env(...)` instance."""
        names = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call):
                func = node.value.func
                is_env = (isinstance(func, ast.Name) and func.id in self.env_classes) or (
                    isinstance(func, ast.Attribute)
                    and func.attr == "Env"
                    and isinstance(func.value, ast.Name)
                    and func.value.id in self.environ_modules
                )
                if is_env:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    names |= {target.id for target in targets if isinstance(target, ast.Name)}
        return names

    def _is_os_environ(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.environ_names
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and node.value.id in self.os_modules
        )

    def _key(self, node: ast.AST) -> ast.expr | None:
        """The expression naming the variable `node` reads, or None when it reads none."""
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and self._is_os_environ(node.value):
            return node.slice
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.In | ast.NotIn):
            return node.left if self._is_os_environ(node.comparators[0]) else None
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        position, keyword = 0, None
        if isinstance(func, ast.Name) and func.id in self.env_objects:
            keyword = "var"  # env("X")
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in self.env_objects:
            if func.attr in ENV_NON_READERS:
                return None
            keyword = "var"  # env.str("X"), env.int("X"), env.db("X"), ...
        elif isinstance(func, ast.Attribute) and func.attr in ENVIRON_READERS and self._is_os_environ(func.value):
            keyword = "key"
        elif (isinstance(func, ast.Name) and func.id in self.getenv_names) or (
            isinstance(func, ast.Attribute)
            and func.attr == "getenv"
            and isinstance(func.value, ast.Name)
            and func.value.id in self.os_modules
        ):
            keyword = "key"
        elif isinstance(func, ast.Name) and func.id in self.helpers:
            position, keyword = self.helpers[func.id]
        else:
            return None
        if len(node.args) > position and not any(isinstance(arg, ast.Starred) for arg in node.args[: position + 1]):
            return node.args[position]
        for kw in node.keywords:
            if kw.arg == keyword:
                return kw.value
        return node  # the name is not given where it can be read: reported as unresolved

    def _keys(self, root: ast.AST) -> Iterator[ast.expr]:
        for node in ast.walk(root):
            key = self._key(node)
            if key is not None:
                yield key

    def _find_helpers(self) -> set[int]:
        """Record the module's functions that read a variable named by one of their parameters.

        Returns the ids of the key expressions inside them (the parameter names), which are not
        variables themselves.
        """
        functions = [n for n in ast.walk(self.tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        helper_keys: set[int] = set()
        changed = True
        while changed:
            changed = False
            for function in functions:
                arguments = function.args
                parameters = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]
                for key in self._keys(function):
                    if isinstance(key, ast.Name) and key.id in parameters:
                        helper_keys.add(id(key))
                        if function.name not in self.helpers:
                            self.helpers[function.name] = (parameters.index(key.id), key.id)
                            changed = True
        return helper_keys


def variables_read() -> dict[str, set[str]]:
    """Map each variable the code reads to the files that read it."""
    readers: dict[str, set[str]] = {}
    for relative in SOURCES:
        reads = EnvironmentReads((BASE_DIR / relative).read_text(), relative)
        assert reads.unresolved == [], f"environment reads whose variable name is not a literal: {reads.unresolved}"
        for name in reads.names:
            readers.setdefault(name, set()).add(relative)
    return readers


def markdown_tables(text: str) -> list[list[str]]:
    """Return the tables of a Markdown text (outside fenced code), each as its lines."""
    tables: list[list[str]] = []
    current: list[str] = []
    fenced = False
    for line in [*text.splitlines(), ""]:
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def first_cells(table: list[str]) -> list[str]:
    """The first cell of each body row (header and separator left out)."""
    return [row.split("|")[1].strip() for row in table[2:]]


def documented_variables(text: str) -> list[str]:
    """The variables of the one table of docs/CONFIGURATION.md, in order, repeats kept."""
    tables = markdown_tables(text)
    assert len(tables) == 1, f"docs/CONFIGURATION.md must have exactly one table, not {len(tables)}"
    (table,) = tables
    assert table[0].split("|")[1].strip() == "variable", "the table's first column must be `variable`"
    names = []
    for cell in first_cells(table):
        found = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", cell)
        assert found, f"a row of the table names no variable in backticks: {cell!r}"
        names += found
    return names


def test_the_table_lists_exactly_the_variables_the_code_reads():
    readers = variables_read()
    documented = set(documented_variables(DOC.read_text()))
    missing = {name: sorted(files) for name, files in sorted(readers.items()) if name not in documented}
    extra = sorted(documented - set(readers))
    assert not missing and not extra, (
        f"docs/CONFIGURATION.md is out of step with the code.\n"
        f"  read but not in the table: {missing or 'none'}\n"
        f"  in the table but read nowhere: {extra or 'none'}"
    )


def test_each_variable_has_one_row():
    names = documented_variables(DOC.read_text())
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert repeated == [], f"variables in more than one row of docs/CONFIGURATION.md: {repeated}"


def test_env_example_lists_no_variable_missing_from_the_table():
    listed = set(ENV_EXAMPLE_VARIABLE.findall(ENV_EXAMPLE.read_text()))
    missing = sorted(listed - set(documented_variables(DOC.read_text())))
    assert missing == [], f".env.example lists variables docs/CONFIGURATION.md does not: {missing}"


def test_no_other_page_repeats_the_table():
    """The other pages name variables in prose and link to docs/CONFIGURATION.md."""
    variables = set(variables_read())
    pages = [BASE_DIR / "README.md", *sorted((BASE_DIR / "docs").glob("*.md"))]
    for page in pages:
        if page == DOC:
            continue
        for table in markdown_tables(page.read_text()):
            rows = [cell for cell in first_cells(table) if set(re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)) & variables]
            assert rows == [], (
                f"{page.relative_to(BASE_DIR)} has a table of variables ({rows}): link to docs/CONFIGURATION.md"
            )


def test_every_form_of_reading_the_environment_is_found():
    source = textwrap.dedent(
        """
        import os
        import environ
        from os import environ as ENVIRON, getenv

        env = environ.Env()
        environ.Env.read_env("x/.env", overwrite=False)
        A = env.str("A_STR", default="")
        B = env.bool("B_BOOL")
        C = env.int("C_INT", default=1)
        D = env.float("D_FLOAT")
        E = env.list("E_LIST", default=[])
        F = env.db("F_DB")
        G = env.cache(var="G_CACHE")
        H = env("H_CALL")
        I = os.environ.get("I_GET", "")
        J = os.environ["J_ITEM"]
        K = os.getenv("K_GETENV")
        L = getenv("L_GETENV")
        M = ENVIRON.get("M_IMPORTED")
        N = "N_IN" in os.environ
        os.environ["NOT_READ"] = "written, not read"

        def _seconds(name, default):
            return env.int(name, default=default)

        def _minutes(label, *, default=0):
            return _seconds(label, default * 60)

        O = _seconds("O_HELPER", 5)
        P = _minutes("P_HELPER_OF_HELPER", default=1)
        Q = _seconds(name="Q_KEYWORD", default=1)
        R = env.str("R_" + "COMPUTED")
        """
    )
    reads = EnvironmentReads(source)
    expected = {
        *("A_STR", "B_BOOL", "C_INT", "D_FLOAT", "E_LIST", "F_DB", "G_CACHE", "H_CALL"),
        *("I_GET", "J_ITEM", "K_GETENV", "L_GETENV", "M_IMPORTED", "N_IN"),
        *("O_HELPER", "P_HELPER_OF_HELPER", "Q_KEYWORD"),
    }
    assert reads.names == expected
    (unresolved,) = reads.unresolved
    assert unresolved.startswith("<source>:") and unresolved.endswith(": 'R_' + 'COMPUTED'")


def test_the_settings_reads_are_found():
    """A few known reads of each form settings uses, so a parser that finds nothing cannot pass."""
    readers = variables_read()
    for name in ("DEBUG", "JWT_SECRET_KEY", "EXTRA_ALLOWED_HOSTS", "TASKHUB_POLL_INTERVAL_SECONDS", "CACHE_URL"):
        assert readers.get(name) == {"config/settings.py"}, name
    assert readers.get("GUNICORN_WORKERS") == {"gunicorn.conf.py"}
    assert "PROMETHEUS_MULTIPROC_DIR" in readers
