"""Fixtures for the network tests: test hosts in network namespaces (``topology.py``), a Synapse with TLS and
TURN and Debian's coturn on the server host, the door as ``intercom run --simulate`` on the home network, and
matrix-js-sdk in headless Chromium on a phone's network (the interop harness, with every candidate signalled).

Root only: without root (or without iproute2/iptables/coturn) every test here is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from intercom_dev.testbed.door import SimulatedDoor, write_config
from intercom_dev.testbed.synapse import Homeserver

from ..interop.conftest import DEBIAN_CHROMIUM, SETUP, SETUP_TIMEOUT, serve_pages
from ..interop.harness import Installation
from ..support import register
from .servers import Certificates, Coturn, make_certificates
from .topology import CARRIER_LAN, HOME_LAN, SERVER, Host, Topology, missing_tools, write_netns_wrapper

TURN_SECRET = secrets.token_hex(16)


@dataclass
class Network:
    topology: Topology
    door_host: Host  # on the home LAN, behind the home router's NAT
    phone_away: Host  # on the carrier's LAN, behind its NAT
    phone_home: Host  # on the home LAN beside the door
    certificates: Certificates
    work: Path


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    why = missing_tools() or (None if shutil.which("turnserver") else "coturn is not installed (Debian: coturn)")
    if why:
        pytest.skip(f"network-namespace tests need root, iproute2, iptables and coturn: {why}")
    work = tmp_path_factory.mktemp("network")
    with Topology() as topology:
        door = topology.host("door", "home", HOME_LAN, 2)
        away = topology.host("phone", "carrier", CARRIER_LAN, 2)
        home = topology.host("homephone", "home", HOME_LAN, 3)
        yield Network(topology, door, away, home, make_certificates(work / "tls", SERVER), work)


@pytest.fixture(scope="session")
def coturn(network: Network) -> Iterator[Coturn]:
    server = Coturn(network.work / "coturn", SERVER, TURN_SECRET, network.certificates).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def homeserver_on_the_internet(network: Network, python: Path, name: str, turn_uris: list[str]):
    with Homeserver(network.work / name, synapse_python=python, host=SERVER,
                    tls=(network.certificates.cert, network.certificates.key, network.certificates.ca),
                    turn_uris=turn_uris, turn_shared_secret=TURN_SECRET if turn_uris else None) as hs:
        yield hs


@pytest.fixture(scope="session")
def turn_homeserver(synapse_python: Path, network: Network, coturn: Coturn) -> Iterator[Homeserver]:
    """A homeserver whose ``/voip/turnServer`` hands out the coturn's UDP, TCP and TLS URIs."""
    with homeserver_on_the_internet(network, synapse_python, "synapse-turn", coturn.uris()) as hs:
        yield hs


@pytest.fixture(scope="session")
def plain_homeserver(synapse_python: Path, network: Network) -> Iterator[Homeserver]:
    """A homeserver without TURN (``/voip/turnServer`` answers ``{}``), as many self-hosted ones are."""
    with homeserver_on_the_internet(network, synapse_python, "synapse-plain", []) as hs:
        yield hs


@pytest.fixture(scope="session")
def dead_turn_homeserver(synapse_python: Path, network: Network) -> Iterator[Homeserver]:
    """A homeserver that lists TURN on a port where nothing answers (its TURN server is down)."""
    uris = [f"turn:{SERVER}:3479?transport=udp", f"turn:{SERVER}:3479?transport=tcp"]
    with homeserver_on_the_internet(network, synapse_python, "synapse-dead-turn", uris) as hs:
        yield hs


@pytest.fixture(scope="session")
def page_server(pytestconfig: pytest.Config, network: Network) -> Iterator[str]:
    """The interop page, built by ``tests/interop/setup``, served from the server host; returns its URL."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        done = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=SETUP_TIMEOUT,
                              env=dict(os.environ, INTERCOM_TEST_PYTHON=sys.executable))
    if done.returncode != 0:
        pytest.fail(f"the interop harness could not be set up:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                    pytrace=False)
    with serve_pages(SERVER) as origin:
        yield origin


def phone_browser(network: Network, page_origin: str, host: Host, workdir: Path) -> Installation:
    """How to start Chromium on ``host``: a wrapper that enters its namespace, and the page on the server host."""
    chromium = DEBIAN_CHROMIUM if Path(DEBIAN_CHROMIUM).exists() else shutil.which("chromium")
    workdir.mkdir(parents=True, exist_ok=True)
    wrapper = write_netns_wrapper(workdir / f"chromium-{host.name}", host, str(chromium))
    return Installation(chromium=str(wrapper), page_url=f"{page_origin}/index.html",
                        # Chromium's TURN-over-TLS client checks the server's certificate against the system's
                        # store, which knows nothing of the tests' CA: trust exactly the test server's key.
                        extra_args=(f"--unsafely-treat-insecure-origin-as-secure={page_origin}",
                                    f"--ignore-certificate-errors-spki-list={network.certificates.spki_sha256()}"),
                        ignore_https_errors=True)


@dataclass
class DoorRig:
    """A door account, the owner and their room on ``hs``; :meth:`start` runs the door on the home network."""

    hs: Homeserver
    network: Network
    directory: Path
    extra: str = ""

    def __post_init__(self) -> None:
        self.door_user = register(self.hs, "door")
        self.owner = register(self.hs, "owner")
        self.room_id = self.hs.create_dm_room(self.owner.access_token, self.door_user.user_id)
        self.hs.join_room(self.door_user.access_token, self.room_id)
        self.config = write_config(self.directory, homeserver=self.hs.url, user_id=self.door_user.user_id,
                                   password=self.door_user.password, room_id=self.room_id,
                                   owner=self.owner.user_id, extra=self.extra, loopback=False)
        self.door = SimulatedDoor(self.config, self.directory)

    def start(self) -> SimulatedDoor:
        self.door.start(env={"SSL_CERT_FILE": str(self.network.certificates.bundle)},
                        wrapper=self.network.door_host.exec_prefix())
        return self.door


@pytest.fixture
def door_rig(network: Network, tmp_path: Path):
    rigs: list[DoorRig] = []

    def make(hs: Homeserver, extra: str = "") -> DoorRig:
        rig = DoorRig(hs, network, tmp_path / f"door{len(rigs)}", extra)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.door.stop()
