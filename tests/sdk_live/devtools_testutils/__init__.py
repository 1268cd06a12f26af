"""Stand-in for Microsoft's internal ``devtools_testutils`` (azure-sdk-tools), live mode only.

The official SDK test suites import this package for their harness: decorators that would route
traffic through the recording test proxy, a test-case base class with client helpers, and
preparers that hand environment values to the tests as keyword arguments. This stand-in keeps the
behaviour those suites rely on in *live* mode (the real package's ``AZURE_TEST_RUN_LIVE=true`` plus
``AZURE_SKIP_LIVE_RECORDING=true``): the decorators simply call the test, the preparers read real
values from the environment, credentials are real ``azure-identity`` credentials. It has no
recordings, no playback, no fake credentials and no assertions of its own.
"""

from .helpers import AzureTestError, is_live, is_live_and_not_recording, trim_kwargs_from_test_function
from .preparers import EnvironmentVariableLoader, PowerShellPreparer
from .proxy import (
    add_body_key_sanitizer,
    add_general_regex_sanitizer,
    add_general_string_sanitizer,
    add_header_regex_sanitizer,
    add_oauth_response_sanitizer,
    add_uri_regex_sanitizer,
    recorded_by_proxy,
    set_bodiless_matcher,
    set_custom_default_matcher,
    test_proxy,
)
from .testcase import AzureRecordedTestCase

__all__ = [
    "AzureRecordedTestCase",
    "AzureTestError",
    "EnvironmentVariableLoader",
    "PowerShellPreparer",
    "add_body_key_sanitizer",
    "add_general_regex_sanitizer",
    "add_general_string_sanitizer",
    "add_header_regex_sanitizer",
    "add_oauth_response_sanitizer",
    "add_uri_regex_sanitizer",
    "is_live",
    "is_live_and_not_recording",
    "recorded_by_proxy",
    "set_bodiless_matcher",
    "set_custom_default_matcher",
    "test_proxy",
    "trim_kwargs_from_test_function",
]
