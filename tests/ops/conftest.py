"""Test hosts: network namespaces on one switch, each with an address of its own, for the multi-host test.

The switch is a bridge in a namespace of its own, and every host's cable (a veth pair) runs from the
host's namespace to the switch's: the test addresses (TEST_NET) exist inside those namespaces alone,
never on this machine's own interfaces, so no traffic of the test can leave them. Needs root and
iproute2; the tests skip, saying why, where namespaces cannot be made. All of it is torn down after.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TEST_NET = "10.77.0"  # /24, inside the test's namespaces only
ROLES = ("proxy", "worker1", "worker2", "client")


@dataclass
class Hosts:
    """The test hosts: a namespace and an address per role, plus the switch between them."""

    prefix: str
    logs: Path
    addresses: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.prefix}-switch"

    def namespace(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def build(self) -> None:
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for number, role in enumerate(ROLES, start=1):
            host, port = self.namespace(role), f"port{number}"
            ip("netns", "add", host)
            ip("link", "add", "eth0", "netns", host, "type", "veth", "peer", "name", port, "netns", self.switch)
            ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            self.addresses[role] = f"{TEST_NET}.{number}"
            ip("-n", host, "addr", "add", f"{self.addresses[role]}/24", "dev", "eth0")
            ip("-n", host, "link", "set", "eth0", "up")
            ip("-n", host, "link", "set", "lo", "up")

    def cut(self, role: str) -> None:
        """Pull the host's cable out of the switch: its packets go nowhere, nobody is told."""
        ip("-n", self.switch, "link", "set", f"port{ROLES.index(role) + 1}", "down")

    def restore(self, role: str) -> None:
        ip("-n", self.switch, "link", "set", f"port{ROLES.index(role) + 1}", "up")

    def run(self, role: str, *command: str, name: str) -> subprocess.Popen[bytes]:
        """Start a command on a host, its output in logs/<name>.log; stopped at the end of the test."""
        with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(["ip", "netns", "exec", self.namespace(role), *command], stdout=log, stderr=log)
        self.processes.append(process)
        return process

    def python(self, role: str, *args: str, name: str) -> subprocess.Popen[bytes]:
        return self.run(role, sys.executable, *args, name=name)

    def output(self, role: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run python with ``args`` on a host, to the end; its output."""
        command = ["ip", "netns", "exec", self.namespace(role), sys.executable, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def log(self, name: str) -> str:
        """The end of a process's log, without the one-line-per-request lines."""
        path = self.logs / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join([line for line in lines if ".requests: " not in line][-40:])

    def tear_down(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for namespace in [*(self.namespace(role) for role in ROLES), self.switch]:
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=30)


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def why_no_namespaces() -> str | None:
    """Why test hosts cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if not shutil.which("ip"):
        return "iproute2's ip is not installed (apt-get install iproute2)"
    probe = f"vp{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, timeout=30)
    return None


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    """Four test hosts on one switch: proxy, worker1, worker2 and client; all gone after the test."""
    reason = why_no_namespaces()
    if reason:
        pytest.skip(f"no test hosts here: {reason}")
    made = Hosts(f"vp{os.getpid()}", tmp_path)
    try:
        made.build()
        yield made
    finally:
        made.tear_down()
