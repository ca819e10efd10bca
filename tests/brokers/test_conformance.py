"""Every broker passes every check of guild.testing's conformance suite."""

from __future__ import annotations

import pytest

from guild.testing import CHECKS, CheckSkipped

from .conftest import MakeBroker


@pytest.mark.parametrize("check", sorted(CHECKS))
async def test_conformance(check: str, make_broker: MakeBroker) -> None:
    try:
        await CHECKS[check](make_broker)
    except CheckSkipped as skipped:
        pytest.skip(str(skipped))
