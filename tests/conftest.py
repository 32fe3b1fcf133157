"""Suite-wide rules.

In CI (CI set in the environment) a skipped test is a failure: tests that need
root, network namespaces or OVS must run there.
"""
import os

import pytest




@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: F811
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI={os.environ['CI']}), which counts as a failure: {reason}"


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
