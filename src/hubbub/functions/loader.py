"""Load an Azure Functions Python app: the v2 model (``function_app.py``) and the v1 model (folders).

v2: the module named by app setting ``PYTHON_SCRIPT_FILE_NAME`` (default ``function_app.py``) is
imported with the app root on ``sys.path``; its one top-level ``FunctionRegister``
(``func.FunctionApp``, ``AsgiFunctionApp``, …) is asked for its functions with the
``azure-functions`` package's own indexing (``get_functions()``), and each function's binding
metadata is read from ``get_raw_bindings()`` — what the real Python worker sends to the host.

v1: each folder with a ``function.json`` is a function named after the folder; its ``scriptFile``
(default ``__init__.py``) is imported as ``__app__.<folder>[.<module>]`` through a synthetic
``__app__`` package, as the real worker does, and ``entryPoint`` (default ``main``) is called.

A function that cannot be loaded is reported (:attr:`LoadedApp.errors`) and left out; the others
are served. Checks follow the real worker (one trigger; every parameter has a binding and every
binding but ``$return`` a parameter; ``context`` is the invocation context) but not its type
annotation rules.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubbub.functions.appconfig import AppConfig

__all__ = [
    "Binding",
    "FunctionDef",
    "LoadError",
    "LoadedApp",
    "load_app",
]

log = logging.getLogger("hubbub.functions")

SCRIPT_FILE_SETTING = "PYTHON_SCRIPT_FILE_NAME"
DEFAULT_SCRIPT_FILE = "function_app.py"
RETURN = "$return"

#: binding types the host knows (lower case); others are load errors with a clear message
TRIGGER_TYPES = frozenset({"httptrigger", "webpubsubtrigger", "signalrtrigger", "timertrigger"})
INPUT_TYPES = frozenset({"webpubsubconnection", "webpubsubcontext", "signalrconnectioninfo"})
OUTPUT_TYPES = frozenset({"http", "webpubsub", "signalr"})


class LoadError(Exception):
    """One function (or the whole v2 app) cannot be loaded."""


@dataclass(frozen=True)
class Binding:
    """One entry of ``bindings``: the metadata exactly as declared, looked up case-insensitively."""

    raw: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        wanted = key.lower()
        for k, v in self.raw.items():
            if k.lower() == wanted:
                return v
        return default

    @property
    def name(self) -> str:
        return str(self.get("name", ""))

    @property
    def type(self) -> str:
        """The binding type in lower case (``httptrigger``, ``webpubsub``, …)."""
        return str(self.get("type", "")).lower()

    @property
    def direction(self) -> str:
        return str(self.get("direction", "in")).lower()

    @property
    def data_type(self) -> str | None:
        """``dataType`` as written in the JSON (v2 writes the enum name, ``BINARY``), lower case."""
        value = self.get("dataType")
        return str(value).lower() if value is not None else None

    @property
    def is_trigger(self) -> bool:
        return self.type.endswith("trigger")


@dataclass
class FunctionDef:
    name: str
    func: Callable[..., Any]
    bindings: list[Binding]
    #: v1: the function's folder; v2: the app root (what ``context.function_directory`` says)
    directory: Path
    script_file: Path
    params: tuple[str, ...] = ()
    wants_context: bool = False
    is_async: bool = False

    @property
    def trigger(self) -> Binding:
        return next(b for b in self.bindings if b.is_trigger)

    def inputs(self) -> Iterator[Binding]:
        return (b for b in self.bindings if b.direction == "in" and not b.is_trigger)

    def outputs(self) -> Iterator[Binding]:
        return (b for b in self.bindings if b.direction == "out")

    @property
    def is_http(self) -> bool:
        return self.trigger.type == "httptrigger"


@dataclass
class LoadedApp:
    model: str  # "v1" or "v2"
    functions: list[FunctionDef] = field(default_factory=list)
    #: (function name or file, why) for each function that could not be loaded
    errors: list[tuple[str, str]] = field(default_factory=list)


def load_app(config: AppConfig, settings: Mapping[str, str] | None = None) -> LoadedApp:
    """Import the app at ``config.root`` (v2 if its script file exists, else v1)."""
    env = os.environ if settings is None else settings
    script = config.root / env.get(SCRIPT_FILE_SETTING, DEFAULT_SCRIPT_FILE)
    root = str(config.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    importlib.invalidate_caches()
    app = _load_v2(config, script) if script.is_file() else _load_v1(config)
    if config.allowed_functions is not None:
        allowed = {name.lower() for name in config.allowed_functions}
        app.functions = [f for f in app.functions if f.name.lower() in allowed]
    return app


# --- v2 -------------------------------------------------------------------------------------------


def _purge_modules(root: Path, *names: str) -> None:
    """Forget modules of an earlier load (a host restart or another app in the same process)."""
    for mod_name, module in list(sys.modules.items()):
        top = mod_name.split(".", 1)[0]
        file = getattr(module, "__file__", None) or ""
        ours = file and "site-packages" not in Path(file).parts and Path(file).resolve().is_relative_to(root)
        if top in names or ours:
            del sys.modules[mod_name]


def _load_v2(config: AppConfig, script: Path) -> LoadedApp:
    import azure.functions as func

    result = LoadedApp("v2")
    _purge_modules(config.root, script.stem, "__app__")
    try:
        module = importlib.import_module(script.stem)
    except Exception as exc:
        log.error("cannot import %s", script, exc_info=exc)
        result.errors.append((script.name, f"{type(exc).__name__}: {exc}"))
        return result
    registers = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if len(registers) != 1:
        why = (
            "More than one function app instance is defined"
            if registers
            else "Could not find a top-level function app instance (func.FunctionApp())"
        )
        result.errors.append((script.name, why))
        return result
    register = registers[0]
    register.functions_bindings = None  # get_functions() refuses to index the same app twice
    try:
        indexed = register.get_functions()
    except Exception as exc:
        result.errors.append((script.name, f"indexing failed: {exc}"))
        return result
    for fn in indexed:
        name = str(fn.get_function_name())
        try:
            bindings = [Binding(json.loads(raw)) for raw in fn.get_raw_bindings()]
            result.functions.append(_define(name, fn.get_user_function(), bindings, config.root, script))
        except LoadError as exc:
            result.errors.append((name, str(exc)))
    return result


# --- v1 -------------------------------------------------------------------------------------------


def _app_package(root: Path) -> None:
    package = types.ModuleType("__app__")
    package.__path__ = [str(root)]
    package.__package__ = "__app__"
    sys.modules["__app__"] = package


def _module_name(root: Path, script: Path) -> str:
    parts = list(script.relative_to(root).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(["__app__", *parts])


def _load_v1(config: AppConfig) -> LoadedApp:
    result = LoadedApp("v1")
    _purge_modules(config.root, "__app__")
    _app_package(config.root)
    for folder in sorted(p for p in config.root.iterdir() if (p / "function.json").is_file()):
        try:
            fn = _load_folder(config.root, folder)
        except LoadError as exc:
            result.errors.append((folder.name, str(exc)))
            continue
        if fn is not None:
            result.functions.append(fn)
    return result


def _load_folder(root: Path, folder: Path) -> FunctionDef | None:
    meta_file = folder / "function.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise LoadError(f"{meta_file}: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("bindings", []), list):
        raise LoadError(f"{meta_file}: expected an object with a 'bindings' list")
    if meta.get("disabled") is True or str(meta.get("disabled")).lower() == "true":
        log.info("function %s is disabled", folder.name)
        return None
    script = (folder / str(meta.get("scriptFile") or "__init__.py")).resolve()
    entry = str(meta.get("entryPoint") or "main")
    if not script.is_file():
        raise LoadError(f"script file {script} does not exist")
    if script.suffix != ".py":
        raise LoadError(f"script file {script.name} is not a Python file")
    try:
        if script.is_relative_to(root):
            module = importlib.import_module(_module_name(root, script))
        else:
            spec = importlib.util.spec_from_file_location(f"__app__.{folder.name}", script)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
    except Exception as exc:
        log.error("cannot import %s", script, exc_info=exc)
        raise LoadError(f"cannot import {script.name}: {type(exc).__name__}: {exc}") from None
    target = getattr(module, entry, None)
    if not callable(target):
        raise LoadError(f"{script.name} has no callable entry point '{entry}'")
    bindings = [Binding(b) for b in meta.get("bindings", []) if isinstance(b, dict)]
    return _define(folder.name, target, bindings, folder, script)


# --- checks shared by both models -----------------------------------------------------------------


def _define(
    name: str, target: Callable[..., Any], bindings: list[Binding], directory: Path, script: Path
) -> FunctionDef:
    triggers = [b for b in bindings if b.is_trigger]
    if len(triggers) != 1:
        raise LoadError(f"a function needs exactly one trigger binding, found {len(triggers)}")
    for b in bindings:
        if not b.name:
            raise LoadError(f"a '{b.get('type')}' binding has no name")
        if b.direction not in ("in", "out"):
            raise LoadError(f"binding '{b.name}': direction '{b.direction}' is not supported")
        if b.name == RETURN and b.direction != "out":
            raise LoadError("'$return' binding must have direction 'out'")
        known = TRIGGER_TYPES if b.is_trigger else INPUT_TYPES if b.direction == "in" else OUTPUT_TYPES
        if b.type not in known:
            raise LoadError(f"binding '{b.name}': type '{b.get('type')}' is not supported by hubbub")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError) as exc:
        raise LoadError(f"cannot inspect the entry point: {exc}") from None
    params = tuple(
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY)
    )
    declared = {b.name for b in bindings if b.name != RETURN}
    wants_context = "context" in params and "context" not in declared
    missing = [p for p in params if p not in declared and not (p == "context" and wants_context)]
    if missing:
        raise LoadError(f"the following parameters are declared in Python but not in the bindings: {missing}")
    unused = sorted(declared - set(params))
    if unused:
        raise LoadError(
            f"the following bindings are declared but the Python function has no parameter for them: {unused}"
        )
    return FunctionDef(
        name=name,
        func=target,
        bindings=bindings,
        directory=directory,
        script_file=script,
        params=params,
        wants_context=wants_context,
        is_async=inspect.iscoroutinefunction(target),
    )
