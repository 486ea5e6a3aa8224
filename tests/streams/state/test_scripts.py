"""The Lua scripts the state store runs: only the module's own sources, keys and values as arguments."""

from __future__ import annotations

import pytest
import redis.asyncio

from streams.state.scripts import SOURCES, Script, Scripts


def test_every_registered_script_is_one_of_the_module_sources() -> None:
    client = redis.asyncio.Redis()  # registering a script opens no connection
    scripts = Scripts(client)
    used = {s.source for s in vars(scripts).values() if isinstance(s, Script)}
    assert used == set(SOURCES)


def test_a_script_text_from_elsewhere_is_refused() -> None:
    """Nothing built at run time (an input, a key) can become Lua the server evaluates."""
    with pytest.raises(ValueError, match="own Lua sources"):
        Script(redis.asyncio.Redis(), "return redis.call('FLUSHALL')")
