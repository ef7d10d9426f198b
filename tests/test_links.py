"""vpcd framing, the emulator server, and the direct vpcd transport over loop:// and a pty."""

from __future__ import annotations

import os
import threading
import time

import pytest

from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.emulator import CardState, EmulatedCard, MemoryStore
from harness.errors import CardRemoved, StaleEmulator, TransportTimeout
from harness.links import vpcd
from harness.links.seriallink import LinkClosed, LinkTimeout, SerialLink
from harness.links.vicc import IDENTIFY, EmulatorServer
from harness.transport.identity import emulator_instance, require_emulator
from harness.transport.inprocess import InProcessTransport
from harness.transport.vpcd import VpcdHostTransport
from tests.support import FdPort


def test_decoder_handles_split_and_merged_messages() -> None:
    stream = vpcd.encode(b"\x02") + vpcd.encode(b"\x04") + vpcd.encode(bytes(300))
    one_by_one = [m for b in stream for m in vpcd.Decoder().feed(bytes((b,)))]
    assert one_by_one == []  # a new decoder per byte: nothing completes
    dec = vpcd.Decoder()
    got = [m for i in range(len(stream)) for m in dec.feed(stream[i : i + 1])]
    assert got == [b"\x02", b"\x04", bytes(300)] and dec.idle
    assert list(vpcd.Decoder().feed(bytes.fromhex("000102000104"))) == [b"\x02", b"\x04"]
    dec = vpcd.Decoder()
    assert dec.need() == 2 and list(dec.feed(b"\x00\x05\x01")) == [] and dec.need() == 4


def test_framing_refuses_what_would_hang_or_eject_the_card() -> None:
    with pytest.raises(vpcd.FramingError):
        vpcd.encode(b"")
    with pytest.raises(vpcd.FramingError):
        vpcd.encode(bytes(65536))
    with pytest.raises(vpcd.FramingError):
        list(vpcd.Decoder().feed(b"\x00\x00"))


@pytest.fixture
def server(fresh_state: CardState) -> EmulatorServer:
    return EmulatorServer(EmulatedCard(MemoryStore(fresh_state)), "loop://")


def test_server_control_codes(server: EmulatorServer) -> None:
    assert server.handle(b"\x04") == server.card.atr  # ATR even while unpowered
    assert not server.card.powered
    assert server.handle(b"\x00\xa4\x04\x0c\x01\xd3") == b"\x6f\x00"  # APDU unpowered
    assert server.handle(b"\x01") is None and server.card.powered
    assert server.handle(b"\x00\xa4\x04\x0c\x01\xd3") == b"\x90\x00"
    assert server.card.selected_app == "jpki"
    assert server.handle(b"\x02") is None and server.card.selected_app is None  # reset
    assert server.handle(b"\x00") is None and not server.card.powered
    assert server.handle(b"\x09") is None  # unknown control: logged, no answer


def test_server_identifies_itself_but_the_card_does_not(server: EmulatorServer) -> None:
    server.handle(b"\x01")
    assert server.handle(IDENTIFY.to_bytes()) == server.instance_id + b"\x90\x00"
    assert server.card.transmit(IDENTIFY.to_bytes()) == b"\x6d\x00"  # the card OS: unknown INS


def test_a_card_bug_never_kills_the_server(
    server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.handle(b"\x01")

    def boom(raw: bytes) -> bytes:
        raise RuntimeError("bug")

    monkeypatch.setattr(server.card, "transmit", boom)
    assert server.handle(b"\x00\x20\x00\x80") == b"\x6f\x00"


def loop_transport(state: CardState) -> tuple[VpcdHostTransport, EmulatorServer]:
    """Host and server share one loop:// port; the host hands the server its turns."""
    host_link = SerialLink.open("loop://")
    server_link = SerialLink(host_link._port, url="loop://")
    server = EmulatorServer(EmulatedCard(MemoryStore(state.copy())), "loop://")

    def pump() -> None:
        message = server_link.receive(time.monotonic() + 1)
        answer = server.handle(message)
        if answer is not None:
            server_link.send(answer)

    return VpcdHostTransport(host_link, pump=pump, name="loop://"), server


def pty_transport(state: CardState) -> tuple[VpcdHostTransport, EmulatorServer, threading.Thread]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    server = EmulatorServer(EmulatedCard(MemoryStore(state.copy())), path)
    link = SerialLink.open(path)
    os.close(slave)  # pyserial holds its own descriptor
    thread = threading.Thread(target=server.attach, args=(link,), daemon=True)
    thread.start()
    host = VpcdHostTransport(
        SerialLink(FdPort(master), url=f"pty master of {path}"),  # type: ignore[arg-type]
        deadline=2.0,
        name=f"pty {path}",
    )
    return host, server, thread


def test_identification_over_a_link(template_state: CardState) -> None:
    host, server = loop_transport(template_state)
    assert emulator_instance(host) == server.instance_id
    require_emulator(host, server.instance_id)
    with pytest.raises(StaleEmulator, match="stale emulator"):
        require_emulator(host, bytes(16))
    inproc = InProcessTransport(EmulatedCard(MemoryStore(template_state.copy())))
    assert emulator_instance(inproc) is None  # the bare card OS is no emulator server
    with pytest.raises(StaleEmulator, match="no pinloop emulator"):
        require_emulator(inproc, server.instance_id)


def test_pty_link_serves_and_reports_removal(template_state: CardState) -> None:
    host, server, thread = pty_transport(template_state)
    assert host.atr == server.card.atr
    assert host.transmit(C.select_df(bytes.fromhex("D392F000260100000001"))).sw == SW.OK
    server.stop()  # the emulator leaves: the link closes
    thread.join(2)
    with pytest.raises((CardRemoved, TransportTimeout)):
        host.transmit(C.pin_status())


def test_a_silent_card_times_out_within_the_deadline(template_state: CardState) -> None:
    host, server, _thread = pty_transport(template_state)
    host.deadline = 0.3
    server.handle = lambda message: None  # type: ignore[method-assign]  # answers nothing
    t = time.monotonic()
    with pytest.raises(TransportTimeout):
        host.transmit(C.pin_status())
    assert 0.25 < time.monotonic() - t < 1.0
    server.stop()


def test_opening_a_missing_device_is_a_clear_error() -> None:
    with pytest.raises(LinkClosed, match="cannot open"):
        SerialLink.open("/dev/does-not-exist")
    with pytest.raises(LinkClosed, match="cannot open"):
        SerialLink.open("socket://127.0.0.1:1")


def test_a_link_closed_by_another_thread_mid_call_is_link_closed() -> None:
    """Found by the timed power cuts: the relay drops the link while the server writes an
    answer; pyserial then raised ValueError (select on fd -1), which killed the server thread
    and the card never came back. The window is between the closed-flag check and the write;
    here it is held open on purpose."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    link = SerialLink.open(f"socket://127.0.0.1:{port}")
    peer, _ = listener.accept()
    assert link._sock is not None
    link._sock.close()  # close() from another thread, caught halfway: socket gone, port not
    with pytest.raises(LinkClosed):
        link.send(b"\x90\x00")
    with pytest.raises(LinkClosed):
        link.receive(time.monotonic() + 0.2)
    link.close()
    peer.close()
    listener.close()


def test_a_tcp_link_frames_what_arrives_split_merged_or_before_eof() -> None:
    """The socket:// path reads whatever arrived into one buffer: messages split anywhere,
    several in one segment, and the last one before the peer closes all come out whole."""
    import socket

    from harness.links.vpcd import FramingError

    listener = socket.create_server(("127.0.0.1", 0))
    link = SerialLink.open(f"socket://127.0.0.1:{listener.getsockname()[1]}")
    peer, _ = listener.accept()
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    big = bytes(range(256)) * 256  # 65,536 bytes: one byte over, cut to the maximum
    frames = [b"\x04", b"\x00\x20\x00\x80", big[:65535], b"\x90\x00"]
    stream = b"".join(vpcd.encode(f) for f in frames)
    deadline = time.monotonic() + 5
    peer.sendall(stream[:1])  # half a length
    with pytest.raises(LinkTimeout):
        link.receive(time.monotonic() + 0.1)
    peer.sendall(stream[1:9])  # the rest of it, a whole message and part of the next
    assert link.receive(deadline) == b"\x04"
    assert link.receive(deadline) == b"\x00\x20\x00\x80"
    peer.sendall(stream[9:])
    peer.close()  # EOF right behind the last message: nothing lost
    assert link.receive(deadline) == big[:65535]
    assert link.receive(deadline) == b"\x90\x00"
    with pytest.raises(LinkClosed):
        link.receive(deadline)
    link.close()

    link = SerialLink.open(f"socket://127.0.0.1:{listener.getsockname()[1]}")
    peer, _ = listener.accept()
    link.send(b"\x63\xc3")  # one write: length and payload together
    assert peer.recv(16) == b"\x00\x02\x63\xc3"
    peer.sendall(b"\x00\x00")
    with pytest.raises(FramingError):
        link.receive(deadline)
    link.close()
    peer.close()
    listener.close()


def test_what_vpcd_sends_the_moment_it_accepts_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """vpcd asks for the ATR as soon as it accepts a card and then waits for the answer with no
    timeout. pyserial's ``socket://`` open discards whatever arrived by the end of its open, so
    if vpcd's 400 ms poll accepted inside that window, its request was thrown away and reader
    and card waited on each other for ever (found by the soak: "waited 15 s for a card" about
    once in 100 runs, the link up, both socket queues empty). Here the window is held open: the
    connection returns only once the peer's request has arrived."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    real = socket.create_connection

    def connect_then_wait_for_the_request(*args: object, **kwargs: object) -> socket.socket:
        sock = real(*args, **kwargs)  # type: ignore[arg-type]
        peer, _ = listener.accept()
        peer.sendall(vpcd.encode(bytes([vpcd.CTRL_ATR])))
        accepted.append(peer)
        time.sleep(0.05)  # on loopback it is in the receive queue well before this ends
        return sock

    accepted: list[socket.socket] = []
    monkeypatch.setattr(socket, "create_connection", connect_then_wait_for_the_request)
    link = SerialLink.open(f"socket://127.0.0.1:{port}")
    monkeypatch.undo()
    try:
        assert link.receive(time.monotonic() + 1.0) == bytes([vpcd.CTRL_ATR])
    finally:
        link.close()
        for peer in accepted:
            peer.close()
        listener.close()
