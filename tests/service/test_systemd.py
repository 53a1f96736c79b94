"""sd_notify messages over a real Unix datagram socket, as systemd receives them."""

import os
import socket

import pytest

from intercom.service.systemd import Notifier


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_ready_status_and_watchdog_arrive_as_systemd_expects(notify_socket):
    path, sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.enabled and notifier.watchdog_interval == 10.0
    notifier.ready("homeserver reached")
    notifier.watchdog()
    notifier.stopping()
    notifier.close()
    assert [sock.recv(1024) for _ in range(3)] == [b"READY=1\nSTATUS=homeserver reached", b"WATCHDOG=1", b"STOPPING=1"]


def test_without_systemd_everything_is_a_no_op():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.ready()
    notifier.watchdog()


def test_watchdog_meant_for_another_process_is_not_ours():
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_a_vanished_socket_is_not_fatal(tmp_path):
    Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready()
