"""Function keys, kept the way the Functions host keeps them with ``AzureWebJobsSecretStorageType=files``.

One directory per app holds ``host.json`` (the master key, host function keys and system keys) and
``<function>.json`` per function (its function keys), in the host's own JSON shape::

    {"masterKey": {"name": "master", "value": "…", "encrypted": false},
     "functionKeys": [{"name": "default", "value": "…", "encrypted": false}],
     "systemKeys": [{"name": "webpubsub_extension", "value": "…", "encrypted": false}],
     "hostName": "localhost:7071", "instanceId": "…", "source": "runtime", "decryptionKeyId": ""}

    {"keys": [{"name": "default", "value": "…", "encrypted": false}], "hostName": …}

Missing keys are generated on first use (40 random bytes, base64url, like the host's); edit the files
to set your own values (the host reads them at start). Files are written ``0600``.

Authorization levels: ``anonymous`` needs no key; ``function`` takes a key of that function, a host
function key or the master key; ``admin`` takes only the master key; the extension webhooks
(``/runtime/webhooks/<name>``) take the system key ``<name>_extension`` or the master key.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

__all__ = ["KeyStore", "default_keys_dir"]

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def default_keys_dir(app_root: Path) -> Path:
    """``<hubbub data dir>/functions/<app folder name>-<hash of its path>/secrets``."""
    from hubbub.store import default_data_dir

    digest = base64.b32encode(
        hmac.digest(b"hubbub-functions", str(app_root).encode("utf-8"), "sha256")[:5]
    ).decode()
    name = _SAFE_NAME.sub("_", app_root.name) or "app"
    return Path(default_data_dir()) / "functions" / f"{name}-{digest.lower()}" / "secrets"


def _new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(40)).decode("ascii")


def _key_entry(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value, "encrypted": False}


def _values(entries: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry.get("value"):
            if entry.get("encrypted"):
                raise ValueError(f"key '{entry['name']}' is encrypted; hubbub reads plain keys only")
            found[entry["name"]] = str(entry["value"])
    return found


class KeyStore:
    """Master, host, system and function keys of one app, persisted in ``directory``."""

    def __init__(self, directory: Path, host_name: str = "localhost:7071") -> None:
        self.directory = directory
        self.host_name = host_name
        self.master = ""
        self.host_keys: dict[str, str] = {}
        self.system_keys: dict[str, str] = {}
        self.function_keys: dict[str, dict[str, str]] = {}
        self._load_host()

    # --- files ----------------------------------------------------------------------------------

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read keys: {exc}") from None
        return data if isinstance(data, dict) else {}

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {
            **data,
            "hostName": self.host_name,
            "instanceId": data.get("instanceId") or secrets.token_hex(16),
            "source": "runtime",
            "decryptionKeyId": "",
        }
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)

    def _load_host(self) -> None:
        data = self._read(self.directory / "host.json")
        master = data.get("masterKey")
        self.master = str(master.get("value") or "") if isinstance(master, dict) else ""
        self.host_keys = _values(data.get("functionKeys"))
        self.system_keys = _values(data.get("systemKeys"))
        if not self.master or "default" not in self.host_keys:
            self.master = self.master or _new_key()
            self.host_keys.setdefault("default", _new_key())
            self._save_host(data)

    def _save_host(self, previous: dict[str, Any] | None = None) -> None:
        self._write(
            self.directory / "host.json",
            {
                **(previous or {}),
                "masterKey": _key_entry("master", self.master),
                "functionKeys": [_key_entry(n, v) for n, v in self.host_keys.items()],
                "systemKeys": [_key_entry(n, v) for n, v in self.system_keys.items()],
            },
        )

    def _function_file(self, function: str) -> Path:
        return self.directory / f"{_SAFE_NAME.sub('_', function.lower())}.json"

    # --- keys -----------------------------------------------------------------------------------

    def system_key(self, name: str) -> str:
        """The system key ``name`` (e.g. ``webpubsub_extension``), created if missing."""
        if name not in self.system_keys:
            self.system_keys[name] = _new_key()
            self._save_host(self._read(self.directory / "host.json"))
        return self.system_keys[name]

    def keys_of(self, function: str) -> dict[str, str]:
        """The function keys of ``function`` (``default`` created if there are none)."""
        key = function.lower()
        if key not in self.function_keys:
            path = self._function_file(function)
            data = self._read(path)
            found = _values(data.get("keys"))
            if not found:
                found = {"default": _new_key()}
                self._write(path, {**data, "keys": [_key_entry(n, v) for n, v in found.items()]})
            self.function_keys[key] = found
        return self.function_keys[key]

    # --- checks ---------------------------------------------------------------------------------

    @staticmethod
    def _any(given: str, candidates: Any) -> bool:
        ok = False
        for value in candidates:
            ok |= hmac.compare_digest(given.encode("utf-8"), str(value).encode("utf-8"))
        return ok

    def allows(self, level: str, given: str | None, function: str | None = None) -> bool:
        """Does key ``given`` satisfy ``level`` (``anonymous``/``function``/``admin``) for ``function``?"""
        level = level.lower()
        if level == "anonymous":
            return True
        if not given:
            return False
        if self._any(given, [self.master]):
            return True
        if level == "function":
            own = self.keys_of(function).values() if function else ()
            return self._any(given, [*self.host_keys.values(), *own])
        return False

    def allows_extension(self, extension: str, given: str | None) -> bool:
        """A webhook call for ``extension``: its system key or the master key."""
        if not given:
            return False
        return self._any(given, [self.master, self.system_key(f"{extension.lower()}_extension")])
