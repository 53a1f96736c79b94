"""Test hosts in network namespaces: a home network and a mobile carrier's, each behind a symmetric NAT, and the
"internet" between them, where this process (the root namespace) is the server host (Synapse, coturn, the page).

    door 10.77.1.2 --+                                                    +-- phone 10.77.2.2
    (home phone      |-- home router 10.77.1.1 | 198.18.0.2 --+           |
     10.77.1.3) -----+   MASQUERADE --random-fully            |           |
                                                   internet 198.18.0.0/24 +-- carrier router 10.77.2.1 | 198.18.0.3
                                            server 198.18.0.1 (this process's namespace)

Both routers forward only from their LAN to the internet and replies to that (conntrack ESTABLISHED), and map every
destination to a new random port: a symmetric NAT with endpoint-dependent filtering, as mobile carriers and many
home routers are. Nothing leaves the topology: the routers have no default route, and the server host routes the
LAN ranges to a dead end on the internet bridge rather than to the machine's own network.

Needs root, iproute2 and iptables; everything made here is removed by :meth:`Topology.close`, even after a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SERVER = "198.18.0.1"
HOME_WAN, CARRIER_WAN = "198.18.0.2", "198.18.0.3"
DEAD_END = "198.18.0.254"  # on the internet bridge, answered by nobody
HOME_LAN, CARRIER_LAN = "10.77.1", "10.77.2"
LANS = "10.77.0.0/16"


class TopologyError(RuntimeError):
    pass


def missing_tools() -> str | None:
    """Why this machine cannot build the topology, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root)"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: {package})"
    return None


def enter(ns: str) -> list[str]:
    """The command prefix that runs a program in network namespace ``ns``.

    nsenter enters only the network namespace. ``ip netns exec`` also makes a mount namespace and remounts /sys,
    which fails where / is not a mount point (a chroot, some containers); nothing here needs that.
    """
    return ["nsenter", f"--net=/run/netns/{ns}"]


def run(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = (enter(ns) if ns else []) + list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise TopologyError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


@dataclass
class Host:
    name: str  # the namespace
    address: str

    def exec_prefix(self) -> list[str]:
        return enter(self.name)


@dataclass
class Topology:
    prefix: str = field(default_factory=lambda: f"ic{os.getpid() % 10000}")
    namespaces: list[str] = field(default_factory=list)
    root_links: list[str] = field(default_factory=list)
    root_routes: list[str] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    # -- building ---------------------------------------------------------------------------------------------

    def _add_ns(self, role: str) -> str:
        name = self.ns(role)
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "link", "set", "lo", "up", ns=name)
        run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=name, check=False)
        return name

    def _veth(self, a_ns: str | None, a_name: str, b_ns: str, b_name: str) -> None:
        """A veth pair; ``a_ns=None`` keeps that end in this (the server's) namespace."""
        tmp_a, tmp_b = f"{self.prefix}{a_name}"[:15], f"{self.prefix}{b_name}"[:15]
        run("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        if a_ns is None:
            self.root_links.append(tmp_a)
        else:
            run("ip", "link", "set", tmp_a, "netns", a_ns)
            run("ip", "link", "set", tmp_a, "name", a_name, ns=a_ns)
        run("ip", "link", "set", tmp_b, "netns", b_ns)
        run("ip", "link", "set", tmp_b, "name", b_name, ns=b_ns)

    def _bridge(self, ns: str, name: str, ports: list[str], address: str | None = None) -> None:
        run("ip", "link", "add", name, "type", "bridge", ns=ns)
        for port in ports:
            run("ip", "link", "set", port, "master", name, ns=ns)
            run("ip", "link", "set", port, "up", ns=ns)
        if address:
            run("ip", "addr", "add", address, "dev", name, ns=ns)
        run("ip", "link", "set", name, "up", ns=ns)

    def _up(self, ns: str | None, link: str, address: str | None = None) -> None:
        if address:
            run("ip", "addr", "add", address, "dev", link, ns=ns)
        run("ip", "link", "set", link, "up", ns=ns)

    def _router(self, role: str, wan_address: str, lan: str) -> str:
        """A NAT router: ``wan`` on the internet bridge, ``lan`` a bridge for its hosts."""
        router = self._add_ns(role)
        inet = self.ns("inet")
        self._veth(router, "wan", inet, f"{role}-up")
        self._up(router, "wan", f"{wan_address}/24")
        run("ip", "link", "set", f"{role}-up", "master", "br0", ns=inet)
        run("ip", "link", "set", f"{role}-up", "up", ns=inet)
        self._bridge(router, "lan", [], f"{lan}.1/24")
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=router)
        for rule in (["-P", "FORWARD", "DROP"],
                     ["-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT"],
                     ["-A", "FORWARD", "-i", "lan", "-o", "lan", "-j", "ACCEPT"],
                     ["-A", "FORWARD", "-i", "wan", "-o", "lan", "-m", "conntrack", "--ctstate",
                      "ESTABLISHED,RELATED", "-j", "ACCEPT"]):
            run("iptables", *rule, ns=router)
        run("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE", "--random-fully",
            ns=router)
        return router

    def host(self, role: str, router_role: str, lan: str, number: int) -> Host:
        """A host on ``router_role``'s LAN at ``lan.number``, its default route via the router."""
        name = self._add_ns(role)
        router = self.ns(router_role)
        self._veth(name, "eth0", router, f"{role}")
        run("ip", "link", "set", role, "master", "lan", ns=router)
        run("ip", "link", "set", role, "up", ns=router)
        address = f"{lan}.{number}"
        self._up(name, "eth0", f"{address}/24")
        run("ip", "route", "add", "default", "via", f"{lan}.1", ns=name)
        return Host(name, address)

    def build(self) -> Topology:
        try:
            inet = self._add_ns("inet")
            self._bridge(inet, "br0", [])
            self._veth(None, "srv", inet, "srv-up")
            run("ip", "link", "set", "srv-up", "master", "br0", ns=inet)
            run("ip", "link", "set", "srv-up", "up", ns=inet)
            self._up(None, self.root_links[-1], f"{SERVER}/24")
            # Anything this host sends to the LAN ranges stays on the internet bridge and dies there.
            route = f"{LANS} via {DEAD_END} dev {self.root_links[-1]}"
            run("ip", "route", "replace", *route.split())  # replace: a crashed earlier run may have left it
            self.root_routes.append(route)
            self._router("home", HOME_WAN, HOME_LAN)
            self._router("carrier", CARRIER_WAN, CARRIER_LAN)
        except Exception:
            self.close()
            raise
        return self

    def renumber(self, host: Host, lan: str, number: int) -> None:
        """The host gets a new address on its LAN (a phone moving to another access point): the old one goes, and
        with it every socket bound to it. Linux alone leaves such sockets waiting for their timeouts (a browser's
        long-poll sync would hang for minutes); a phone's OS destroys them when the address goes (Android's netd
        does, with SOCK_DESTROY), which is what ``ss -K`` does here."""
        new = f"{lan}.{number}"
        run("ip", "addr", "del", f"{host.address}/24", "dev", "eth0", ns=host.name)  # takes the routes with it
        run("ss", "-K", "src", host.address, ns=host.name)
        run("ip", "addr", "add", f"{new}/24", "dev", "eth0", ns=host.name)
        run("ip", "route", "replace", "default", "via", f"{lan}.1", ns=host.name)
        host.address = new

    def block_udp(self, router_role: str) -> contextlib.AbstractContextManager[None]:
        """While inside: ``router_role`` forwards no UDP from its LAN (a hotel's or an office's firewall)."""
        return self.block(router_role, "-p", "udp")

    @contextlib.contextmanager
    def block(self, router_role: str, *match: str):
        """While inside: ``router_role`` drops what its LAN sends out that matches (iptables match arguments)."""
        router = self.ns(router_role)
        rule = ["FORWARD", "-i", "lan", "-o", "wan", *match, "-j", "DROP"]
        run("iptables", "-I", *rule, ns=router)
        try:
            yield
        finally:
            run("iptables", "-D", *rule, ns=router, check=False)

    # -- cleaning up ------------------------------------------------------------------------------------------

    def close(self) -> None:
        for route in self.root_routes:
            run("ip", "route", "del", *route.split(), check=False)
        for link in self.root_links:
            run("ip", "link", "del", link, check=False)
        for ns in reversed(self.namespaces):
            for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", ns, check=False)
        self.root_routes.clear()
        self.root_links.clear()
        self.namespaces.clear()

    def __enter__(self) -> Topology:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_netns_wrapper(path: Path, host: Host, program: str) -> Path:
    """An executable that runs ``program`` with its arguments on ``host`` (for playwright's executable_path)."""
    path.write_text(f'#!/bin/sh\nexec {" ".join(host.exec_prefix())} {program} "$@"\n')
    path.chmod(0o755)
    return path
