"""tools/kernel_polling.py: a kernel reply whose wake-up was missed is read within one slice,
and a timeout still ends in Empty at its deadline (nbclient's signal for a cell timeout)."""
import asyncio
from queue import Empty

import kernel_polling
import pytest
from jupyter_client.channels import AsyncZMQSocketChannel


class MissedWakeUpSocket:
    """A socket whose message is already there but whose first ``wake_ups_missed`` polls do not
    see it, as when pyzmq's edge-triggered wake-up is lost; records every poll's timeout."""

    def __init__(self, wake_ups_missed: int | None):
        self.missed, self.polls = wake_ups_missed, []

    async def poll(self, timeout_ms):
        self.polls.append(timeout_ms)
        if self.missed is not None and len(self.polls) > self.missed:
            return True
        await asyncio.sleep(timeout_ms / 1000)
        return False


class Channel:
    def __init__(self, socket):
        self.socket = socket

    async def _recv(self):
        return {"msg_type": "execute_reply"}


def test_the_patch_is_installed_for_the_notebook_runs():
    assert getattr(AsyncZMQSocketChannel.get_msg, "sliced", False)


def test_a_missed_wake_up_costs_one_slice_not_the_whole_timeout():
    socket = MissedWakeUpSocket(wake_ups_missed=1)
    reply = asyncio.run(AsyncZMQSocketChannel.get_msg(Channel(socket), timeout=300))
    assert reply == {"msg_type": "execute_reply"}
    # unpatched, the first poll would have been asked to wait all 300 s
    assert len(socket.polls) == 2 and max(socket.polls) <= kernel_polling.SLICE * 1000


def test_no_timeout_keeps_waiting_in_slices():
    socket = MissedWakeUpSocket(wake_ups_missed=3)
    asyncio.run(AsyncZMQSocketChannel.get_msg(Channel(socket), timeout=None))
    assert socket.polls == [int(kernel_polling.SLICE * 1000)] * 4


def test_a_real_timeout_still_raises_empty_at_its_deadline():
    socket = MissedWakeUpSocket(wake_ups_missed=None)  # nothing ever arrives
    with pytest.raises(Empty):
        asyncio.run(AsyncZMQSocketChannel.get_msg(Channel(socket), timeout=1.2))
    assert max(socket.polls) <= kernel_polling.SLICE * 1000
    assert 1150 <= sum(socket.polls) <= 1300  # the slices add up to the timeout asked for
    with pytest.raises(Empty):
        asyncio.run(AsyncZMQSocketChannel.get_msg(Channel(MissedWakeUpSocket(None)), timeout=0))


def test_the_command_line_refuses_an_unknown_tool():
    with pytest.raises(SystemExit, match="no console script"):
        kernel_polling.main(["no-such-tool-here"])
