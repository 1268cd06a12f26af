"""``webPubSubConnection`` input properties, output action parsing, and ``hubbub func start`` errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest

from hubbub.cli import main
from hubbub.functions.appconfig import ConfigError
from hubbub.functions.expressions import BindingData, ExpressionError
from hubbub.functions.invoke import Invocation, Invoker
from hubbub.functions.loader import Binding, FunctionDef
from hubbub.functions.webpubsub import WebPubSubExtension
from hubbub.functions.wps_actions import ActionError, action_name, parse_actions
from tests.functions.support import KEY, OTHER_KEY, connection_string

SETTINGS = {
    "WebPubSubConnectionString": connection_string(),
    "Other": "Endpoint=https://x.webpubsub.azure.com;AccessKey=" + OTHER_KEY + ";Version=1.0;",
    "WebPubSubHub": "defaulthub",
    "HUB_NAME": "fromsetting",
}


async def connection(props: dict[str, Any], data: dict[str, Any] | None = None) -> dict[str, Any]:
    ext = WebPubSubExtension([], Invoker({}, {}), SETTINGS)
    binding = Binding({"type": "webPubSubConnection", "direction": "in", "name": "c", **props})
    fn = FunctionDef("f", lambda: None, [binding], Path("."), Path("."))
    result: dict[str, Any] = json.loads(
        await ext.connection_input(binding, Invocation(fn, None, BindingData(data)))
    )
    return result


async def test_connection_input_properties() -> None:
    info = await connection({"hub": "chat", "userId": "{query.userid}"}, {"query": {"userid": "bob"}})
    assert info["baseUrl"] == "ws://localhost:8080/client/hubs/chat"
    claims = jwt.decode(
        info["accessToken"], KEY, algorithms=["HS256"], audience="http://localhost:8080/client/hubs/chat"
    )
    assert claims["sub"] == "bob" and claims["exp"] - claims["iat"] == 3600

    info = await connection({"hub": "%HUB_NAME%", "connectionStringSetting": "Other"})
    assert info["baseUrl"] == "wss://x.webpubsub.azure.com/client/hubs/fromsetting"
    claims = jwt.decode(info["accessToken"], OTHER_KEY, algorithms=["HS256"], options={"verify_aud": False})
    assert "sub" not in claims

    info = await connection({"connection": "Other", "clientProtocol": "mqtt"})
    assert info["baseUrl"] == "wss://x.webpubsub.azure.com/clients/mqtt/hubs/defaulthub"

    with pytest.raises(ConfigError, match="Missing"):
        await connection({"connection": "Missing"})
    with pytest.raises(ExpressionError):
        await connection({"userId": "{headers.x-ms-client-principal-name}"}, {"headers": {}})


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ('{"actionName": "sendToAll", "data": "x"}', ["sendtoall"]),
        (
            b'[{"actionName": "SendToGroupAction"}, {"ACTIONNAME": "closeAllConnections"}]',
            ["sendtogroup", "closeallconnections"],
        ),
        ({"operationKind": "addToGroup"}, ["addusertogroup"]),
        (
            [{"operationKind": "grandGroupPermission"}, '{"actionName": "revokePermission"}'],
            ["grantpermission", "revokepermission"],
        ),
    ],
)
def test_action_parsing(value: Any, names: list[str]) -> None:
    assert [action_name(a) for a in parse_actions(value)] == names


@pytest.mark.parametrize("value", ["not json", "[1]", 3, '{"actionName": "fly"}', "{}"])
def test_bad_action_values(value: Any) -> None:
    with pytest.raises(ActionError):
        [action_name(a) for a in parse_actions(value)]


def test_func_start_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["func", "start", "--script-root", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "host.json").write_text("{")
    assert main(["func", "start", "--script-root", str(tmp_path)]) == 2
    assert "host.json: not valid JSON" in capsys.readouterr().err
