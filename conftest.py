"""Pytest set-up shared by the tests and the docstring examples (``--doctest-modules calibkit``)."""

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctests_run_in_the_repository(request: pytest.FixtureRequest) -> None:
    """Docstring examples name the bundled files relative to the repository root."""
    if isinstance(request.node, DoctestItem):
        request.getfixturevalue("monkeypatch").chdir(request.config.rootpath)
