"""One rule for queue names, wherever a name comes in: Job, the app, a worker, the CLI."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import guild
from guild._job import check_queue_name

# Letters, digits and the punctuation people put in queue names: always accepted.
plain = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_.:/{}é漢"),
    min_size=1,
    max_size=30,
)
inner_spaces = st.lists(plain, min_size=2, max_size=4).map(" ".join)
padding = st.text(alphabet=" \t\n\r\u00a0\u2003", min_size=1, max_size=3)
# Control, format and line/paragraph separators: C0, DEL, C1, zero-width, bidi, U+2028/9.
forbidden = st.sampled_from("\x00\x07\n\x1b\x7f\x85\u200b\u202e\u2028\u2029\ufeff")


class TestTheRule:
    @given(st.one_of(plain, inner_spaces))
    def test_plain_names_are_accepted(self, name: str) -> None:
        assert check_queue_name(name) == name
        assert guild.Job(queue=name).queue == name

    @given(plain, padding, st.booleans())
    def test_padded_names_are_refused(self, name: str, pad: str, before: bool) -> None:
        padded = pad + name if before else name + pad
        with pytest.raises(guild.InvalidQueueName, match="whitespace") as caught:
            guild.Job(queue=padded)
        assert caught.value.name == padded

    @given(padding)
    def test_blank_names_are_refused(self, blank: str) -> None:
        for name in ("", blank):
            with pytest.raises(guild.InvalidQueueName, match="empty or only whitespace"):
                check_queue_name(name)

    @given(plain, forbidden, plain)
    def test_control_characters_are_refused(self, head: str, bad: str, tail: str) -> None:
        with pytest.raises(guild.InvalidQueueName, match="control or line-breaking"):
            check_queue_name(head + bad + tail)

    def test_not_a_string(self) -> None:
        with pytest.raises(guild.InvalidQueueName, match="must be a string, not int"):
            check_queue_name(7)

    def test_it_is_a_value_error_and_a_guild_error(self) -> None:
        assert issubclass(guild.InvalidQueueName, ValueError)
        assert issubclass(guild.InvalidQueueName, guild.GuildError)


class TestEveryDoor:
    """The app's own entry points refuse the same names, before anything is stored."""

    async def test_enqueue(self) -> None:
        app = guild.Guild("doors", broker=guild.MemoryBroker())
        async with app.open():
            with pytest.raises(guild.InvalidQueueName):
                await app.enqueue("  ", {"n": 1})
            with pytest.raises(guild.InvalidQueueName):
                await app.enqueue_many("", [1, 2])
            assert await app.broker.stats() == {}

    def test_worker_and_periodic(self) -> None:
        app = guild.Guild("doors")

        async def handler(job: guild.Job) -> None:
            return None

        with pytest.raises(guild.InvalidQueueName):
            app.worker(" emails")(handler)
        with pytest.raises(guild.InvalidQueueName):
            app.periodic(60, "tick\n")
        assert app.specs == {} and app.schedules == {}
