"""Loading apps: v2 (function_app.py through azure-functions' own indexing) and v1 (function.json folders)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubbub.functions.appconfig import (
    ConfigError,
    exported_settings,
    load_app_config,
    parse_connection_string,
)
from hubbub.functions.loader import load_app
from tests.functions.support import write_app

V2_APP = """
    import azure.functions as func
    from blueprint_mod import bp

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    app.register_functions(bp)

    @app.route(route="hello/{name}", methods=["GET"])
    def hello(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("hi " + req.route_params["name"])

    @app.function_name("renamed")
    @app.route(auth_level=func.AuthLevel.FUNCTION)
    async def original(req: func.HttpRequest, context: func.Context) -> str:
        return context.function_name

    @app.generic_trigger(arg_name="data", type="webPubSubTrigger", hub="chat", eventName="message",
                         eventType="user", data_type=func.DataType.BINARY)
    @app.generic_output_binding(arg_name="actions", type="webPubSub", hub="chat")
    def message(data: bytes, actions: func.Out[str]):
        return None
"""

BLUEPRINT = """
    import azure.functions as func

    bp = func.Blueprint()

    @bp.route(route="from-blueprint")
    def from_blueprint(req: func.HttpRequest) -> str:
        return "bp"
"""


def test_v2_app_is_indexed_by_azure_functions(tmp_path: Path) -> None:
    root = write_app(tmp_path / "v2app", {"function_app.py": V2_APP, "blueprint_mod.py": BLUEPRINT})
    app = load_app(load_app_config(root))
    assert app.model == "v2" and app.errors == []
    by_name = {f.name: f for f in app.functions}
    assert set(by_name) == {"hello", "renamed", "message", "from_blueprint"}

    hello = by_name["hello"]
    assert hello.trigger.type == "httptrigger"
    assert hello.trigger.get("route") == "hello/{name}"
    assert hello.trigger.get("methods") == ["GET"]
    assert hello.trigger.get("authLevel") == "ANONYMOUS"  # the enum *name*, as the worker sends it
    assert [b.name for b in hello.outputs()] == ["$return"]
    assert not hello.is_async and hello.directory == root

    renamed = by_name["renamed"]
    assert renamed.is_async and renamed.wants_context
    assert renamed.trigger.get("route") == "renamed"  # route defaults to the function name
    assert renamed.trigger.get("authLevel") == "FUNCTION"

    message = by_name["message"]
    assert message.trigger.type == "webpubsubtrigger"
    assert message.trigger.data_type == "binary"  # read from the JSON ("BINARY"), not the attribute
    assert message.trigger.get("eventName") == "message"
    assert [b.type for b in message.outputs()] == ["webpubsub"]


def test_v2_script_file_setting_and_errors(tmp_path: Path) -> None:
    root = write_app(
        tmp_path / "custom",
        {
            "main_app.py": """
                import azure.functions as func
                app = func.FunctionApp()

                @app.route(route="x")
                def x(req, extra):
                    return "x"

                @app.generic_trigger(arg_name="t", type="queueTrigger", queueName="q")
                def q(t):
                    pass
            """
        },
    )
    app = load_app(load_app_config(root), {"PYTHON_SCRIPT_FILE_NAME": "main_app.py"})
    assert app.model == "v2" and app.functions == []
    errors = dict(app.errors)
    assert "extra" in errors["x"] and "not in the bindings" in errors["x"]
    assert "queueTrigger" in errors["q"] and "not supported" in errors["q"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import azure.functions as func\n", "Could not find a top-level function app"),
        ("import azure.functions as func\na = func.FunctionApp()\nb = func.FunctionApp()\n", "More than one"),
        ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
    ],
)
def test_v2_app_level_errors(tmp_path: Path, source: str, expected: str) -> None:
    root = write_app(tmp_path / "bad", {"function_app.py": source})
    app = load_app(load_app_config(root))
    assert app.functions == [] and expected in app.errors[0][1]


V1_FILES = {
    "shared/__init__.py": "",
    "shared/greeting.py": "def greet(name):\n    return 'hello ' + name\n",
    "hello/function.json": {
        "bindings": [
            {
                "authLevel": "anonymous",
                "type": "httpTrigger",
                "direction": "in",
                "name": "req",
                "methods": ["get"],
            },
            {"type": "http", "direction": "out", "name": "$return"},
        ]
    },
    "hello/__init__.py": """
        import azure.functions as func
        from ..shared.greeting import greet

        def main(req: func.HttpRequest) -> str:
            return greet(req.params.get("name", "world"))
    """,
    "custom/function.json": {
        "scriptFile": "handler.py",
        "entryPoint": "run",
        "bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "request", "route": "custom/{id:int}"},
            {"type": "http", "direction": "out", "name": "res"},
        ],
    },
    "custom/handler.py": """
        import azure.functions as func
        from __app__.shared import greeting

        async def run(request: func.HttpRequest, res: func.Out[func.HttpResponse]) -> None:
            res.set(func.HttpResponse(greeting.greet(request.route_params["id"]), status_code=201))
    """,
    "off/function.json": {
        "disabled": True,
        "bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}],
    },
    "off/__init__.py": "def main(req):\n    pass\n",
    "noentry/function.json": {"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]},
    "noentry/__init__.py": "def other(req):\n    pass\n",
    "badjson/function.json": "{not json",
    "inout/function.json": {
        "bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req"},
            {"type": "webPubSub", "direction": "inout", "name": "x"},
        ]
    },
    "inout/__init__.py": "def main(req, x):\n    pass\n",
    "notifications/function.json": {"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]},
    "notifications/__init__.py": "def main(req, missing):\n    pass\n",
}


def test_v1_app_folders_scriptfile_entrypoint_and_errors(tmp_path: Path) -> None:
    root = write_app(tmp_path / "v1app", V1_FILES)
    app = load_app(load_app_config(root))
    assert app.model == "v1"
    by_name = {f.name: f for f in app.functions}
    assert set(by_name) == {"hello", "custom"}  # 'off' is disabled; the others fail to load
    assert by_name["hello"].func.__module__ == "__app__.hello"
    assert by_name["custom"].func.__module__ == "__app__.custom.handler"
    assert by_name["custom"].is_async and by_name["custom"].directory == root / "custom"
    errors = dict(app.errors)
    assert "entry point 'main'" in errors["noentry"]
    assert "function.json" in errors["badjson"]
    assert "inout" in errors["inout"]
    assert "missing" in errors["notifications"]
    assert by_name["hello"].func(_request("name=bob")) == "hello bob"


def _request(query: str) -> object:
    import azure.functions as func

    params = dict(p.split("=") for p in query.split("&"))
    return func.HttpRequest("GET", "http://x/", params=params, body=b"")


def test_host_json_allow_list_and_route_prefix(tmp_path: Path) -> None:
    root = write_app(
        tmp_path / "allow",
        V1_FILES,
        host_json={"version": "2.0", "functions": ["hello"], "extensions": {"http": {"routePrefix": "/v1/"}}},
    )
    config = load_app_config(root)
    assert config.route_prefix == "v1"
    assert [f.name for f in load_app(config).functions] == ["hello"]


def test_local_settings(tmp_path: Path) -> None:
    root = write_app(
        tmp_path / "settings",
        {},
        values={"A_SETTING": "from-file", "PATH_LIKE": "x"},
        host_section={
            "LocalHttpPort": 7199,
            "CORS": "http://a.example, http://b.example",
            "CORSCredentials": True,
        },
    )
    config = load_app_config(root)
    assert config.port == 7199
    assert config.cors == ("http://a.example", "http://b.example") and config.cors_credentials
    os.environ["PATH_LIKE"] = "from-env"
    try:
        with exported_settings(config.values, {"OVERRIDE": "yes"}):
            assert os.environ["A_SETTING"] == "from-file"
            assert os.environ["PATH_LIKE"] == "from-env"  # the real environment wins over Values
            assert os.environ["OVERRIDE"] == "yes"
        assert "A_SETTING" not in os.environ and "OVERRIDE" not in os.environ
        assert os.environ["PATH_LIKE"] == "from-env"
    finally:
        del os.environ["PATH_LIKE"]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "no host.json"),
        ({"host.json": "[]"}, "expected a JSON object"),
        ({"host.json": "{", "x": ""}, "not valid JSON"),
        ({"host.json": {"extensions": {"http": {"routePrefix": 3}}}}, "routePrefix"),
        ({"host.json": {}, "local.settings.json": {"IsEncrypted": True}}, "encrypted"),
        ({"host.json": {}, "local.settings.json": {"Host": {"LocalHttpPort": "x"}}}, "LocalHttpPort"),
    ],
)
def test_config_errors(tmp_path: Path, files: dict[str, object], expected: str) -> None:
    root = tmp_path / "cfg"
    root.mkdir()
    for name, content in files.items():
        (root / name).write_text(content if isinstance(content, str) else __import__("json").dumps(content))
    with pytest.raises(ConfigError, match=expected):
        load_app_config(root)


def test_connection_strings() -> None:
    ep = parse_connection_string("endpoint=https://x.webpubsub.azure.com;accesskey=k=;Version=1.0;")
    assert (
        ep.endpoint == "https://x.webpubsub.azure.com"
        and ep.access_key == "k="
        and ep.host == "x.webpubsub.azure.com"
    )
    ep = parse_connection_string("Endpoint=http://LocalHost/;Port=8080;AccessKey=abc;Version=1.0;")
    assert ep.endpoint == "http://localhost:8080" and ep.host == "localhost"
    for bad in ("AccessKey=x", "Endpoint=ftp://x;AccessKey=y", "Endpoint=http://x;garbage"):
        with pytest.raises(ConfigError):
            parse_connection_string(bad)
