"""Fixtures for tests that need pdflatex or Chromium: skipped with the install command when the
binary is missing, except under CI (CI=true), whose .ci/run installs both, so a missing binary
there fails instead of hiding behind a skip."""
import os

import pytest

from bench.report.render_check import INSTALL_HINT, chromium_binary, pdflatex_binary


def _binary(path, name):
    if path is None:
        msg = f"{name} is not installed; install it with: {INSTALL_HINT}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{msg} (.ci/run should have)")
        pytest.skip(msg)
    return path


@pytest.fixture
def pdflatex():
    return _binary(pdflatex_binary(), "pdflatex")


@pytest.fixture
def chromium():
    return _binary(chromium_binary(), "chromium")
