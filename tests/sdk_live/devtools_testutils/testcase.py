"""``AzureRecordedTestCase``: the base class of the SDK test classes (live mode only)."""

from __future__ import annotations

import os
import time
from typing import Any

from .helpers import AzureTestError, is_live


class AzureRecordedTestCase:
    @property
    def is_live(self) -> bool:
        return is_live()

    @property
    def in_recording(self) -> bool:
        return False

    def is_playback(self) -> bool:
        return not self.is_live

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def get_credential(self, client_class: type, **kwargs: Any) -> Any:
        """A real Azure AD (Entra ID) token credential, as the real package builds in live mode.

        Service principal from ``AZURE_TENANT_ID``/``AZURE_CLIENT_ID``/``AZURE_CLIENT_SECRET`` when
        all are set, otherwise ``DefaultAzureCredential``. Nothing here fakes a token.
        """
        is_async = kwargs.pop("is_async", False)
        try:
            if is_async:
                from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential
            else:
                from azure.identity import ClientSecretCredential, DefaultAzureCredential
        except ImportError as exc:
            raise AzureTestError("get_credential needs the azure-identity package") from exc
        tenant_id = os.environ.get("AZURE_TENANT_ID")
        client_id = os.environ.get("AZURE_CLIENT_ID")
        secret = os.environ.get("AZURE_CLIENT_SECRET")
        if tenant_id and client_id and secret:
            return ClientSecretCredential(tenant_id=tenant_id, client_id=client_id, client_secret=secret)
        return DefaultAzureCredential()

    def create_client_from_credential(self, client_class: type, credential: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("logging_enable", True)
        return client_class(credential=credential, **kwargs)
