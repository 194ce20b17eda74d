"""The allocator settings app.py applies at start-up."""

import sys

import pytest

from captioner.memory import tune_malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists only on Linux")
def test_glibc_accepts_the_allocator_settings():
    assert tune_malloc() is True
