"""The pip extras (pyproject's optional-dependencies) as error lines name them: one wording everywhere."""

from __future__ import annotations


def pip_install(extra: str) -> str:
    """pip install 'autoencoded[EXTRA]': what brings an optional library."""
    return f"pip install 'autoencoded[{extra}]'"
