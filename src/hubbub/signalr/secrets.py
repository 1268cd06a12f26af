"""Key Vault secret references in SignalR upstream URL templates, resolved from a local store.

Azure replaces ``{@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>/[<version>])}``
in an upstream URL template with the secret's value (re-read every 30 minutes or when the settings
change). Self-hosted, the value of secret ``<name>`` comes from, in this order:

1. the environment variable ``HUBBUB_SECRET_<NAME>``: the name upper-cased, ``-`` turned into ``_``
   (``my-func-key`` -> ``HUBBUB_SECRET_MY_FUNC_KEY``);
2. the secrets file: a JSON object ``{"<name>": "<value>", ...}`` (``--secrets-file PATH``, env
   ``HUBBUB_SECRETS_FILE``; default ``secrets.json`` in the ``--data-dir``, when it exists).

The vault host and the version are not used for the lookup (the local store holds one value per
name). A resolved value is kept for :data:`REFRESH_SECONDS` and forgotten when the upstream
settings change; a name that cannot be resolved is looked up again on the next call. Values are
never logged: callers log the URL with the reference, not the resolved one.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote

from hubbub.errors import BadRequest

__all__ = [
    "ENV_PREFIX",
    "REFERENCE",
    "REFRESH_SECONDS",
    "SecretError",
    "SecretResolver",
    "check_references",
    "env_name",
]

#: how long a resolved value is reused (as the service re-reads Key Vault)
REFRESH_SECONDS = 30 * 60
ENV_PREFIX = "HUBBUB_SECRET_"
#: Key Vault secret names: 1-127 alphanumerics and dashes
REFERENCE = re.compile(
    r"\{@Microsoft\.KeyVault\(SecretUri=https://(?P<host>[A-Za-z0-9.\-]+)/secrets/"
    r"(?P<name>[A-Za-z0-9\-]{1,127})(?:/(?P<version>[A-Za-z0-9]*))?/?\)\}",
    re.IGNORECASE,
)
_START = "{@"


class SecretError(Exception):
    """A reference whose secret is in none of the local stores (the message names it, never a value)."""


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper().replace("-", "_")


def check_references(template: str) -> None:
    """:class:`BadRequest` when ``{@`` starts anything but a well-formed Key Vault reference."""
    rest = REFERENCE.sub("", template)
    if _START in rest:
        bad = rest[rest.index(_START) :][:120]
        raise BadRequest(
            f"Invalid secret reference '{bad}': use "
            "{@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>/[<version>])}."
        )


class SecretResolver:
    def __init__(
        self,
        secrets_file: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secrets_file = secrets_file
        self._environ = environ if environ is not None else os.environ
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}

    def clear(self) -> None:
        """Forget every resolved value (the settings changed)."""
        self._cache.clear()

    def resolve(self, text: str) -> str:
        """``text`` with every reference replaced by its secret; :class:`SecretError` if one is missing."""
        if _START not in text:
            return text
        return REFERENCE.sub(lambda m: self.value(m.group("name")), text)

    def redact(self, text: str, template: str) -> str:
        """``text`` with the (cached) values of ``template``'s references replaced by ``***``, plain or
        percent-encoded (for error messages that quote a resolved URL)."""
        for match in REFERENCE.finditer(template):
            cached = self._cache.get(match.group("name").lower())
            if cached and cached[0]:
                for form in {cached[0], quote(cached[0], safe=""), quote(cached[0])}:
                    text = text.replace(form, "***")
        return text

    def value(self, name: str) -> str:
        now = self._clock()
        cached = self._cache.get(name.lower())
        if cached is not None and now - cached[1] < REFRESH_SECONDS:
            return cached[0]
        value = self._lookup(name)
        self._cache[name.lower()] = (value, now)
        return value

    def _lookup(self, name: str) -> str:
        value = self._environ.get(env_name(name))
        if value is not None:
            return value
        where = f"no environment variable {env_name(name)}"
        if self.secrets_file:
            try:
                with open(self.secrets_file, encoding="utf-8") as file:
                    document = json.load(file)
            except FileNotFoundError:
                where += f" and no secrets file {self.secrets_file}"
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not valid JSON"
                where += f" and the secrets file {self.secrets_file} is unusable ({reason})"
            else:
                found = document.get(name) if isinstance(document, dict) else None
                if isinstance(found, str):
                    return found
                where += f" and no string '{name}' in {self.secrets_file}"
        raise SecretError(f"secret '{name}' is not available: {where}")
