"""A real Orthanc PACS with its DICOMweb plugin for the tests, started on free loopback ports with a
temporary storage folder and a config written here, and stopped afterwards.

Without the Debian packages `orthanc` and `orthanc-dicomweb` the tests that need it are skipped,
saying so (.ci/run installs both).
"""

from __future__ import annotations

import glob
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

PLUGIN_GLOBS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so*")
HOST = "127.0.0.1"


def _plugin() -> str | None:
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def _binary() -> str | None:
    """Orthanc's executable (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")


def skip_without_orthanc() -> tuple[str, str]:
    """(Orthanc's executable, its DICOMweb plugin), or skip the test saying what to install."""
    binary, plugin = _binary(), _plugin()
    if binary is None or plugin is None:
        pytest.skip("needs Orthanc and its DICOMweb plugin: apt-get install orthanc orthanc-dicomweb (.ci/run does)")
    return binary, plugin


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    """A running server: its REST root, DICOMweb root, and the one registered user (if any)."""

    url: str
    user: tuple[str, str] | None

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self, path: str) -> object:
        response = requests.get(f"{self.url}{path}", auth=self.user, timeout=10)
        response.raise_for_status()
        return response.json()

    def upload(self, files: list[Path]) -> None:
        for path in files:
            response = requests.post(f"{self.url}/instances", data=path.read_bytes(), auth=self.user, timeout=10)
            response.raise_for_status()


@contextmanager
def orthanc(folder: Path, user: tuple[str, str] | None = None, lua: str | None = None) -> Iterator[Orthanc]:
    """Start Orthanc with storage under `folder`; `user` turns authentication on with that one user;
    `lua` is a Lua script Orthanc runs (e.g. a filter that refuses every incoming instance)."""
    binary, plugin = skip_without_orthanc()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "kdsam-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "DicomPort": free_port(),
        "DicomServerEnabled": False,  # DICOM networking is not tested; no port open beyond HTTP
        "RemoteAccessAllowed": False,  # loopback clients only
        "AuthenticationEnabled": user is not None,
        "RegisteredUsers": dict([user]) if user else {},
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 1,
        "LuaScripts": [],
    }
    if lua:
        (folder / "filter.lua").write_text(lua)
        config["LuaScripts"] = [str(folder / "filter.lua")]
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(f"http://{HOST}:{port}", user)
    try:
        _wait_ready(server, process, folder / "orthanc.log")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(server: Orthanc, process: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(f"{server.url}/system", auth=server.user, timeout=1).ok:
                return
        except requests.exceptions.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Orthanc did not answer within {seconds} s:\n{log.read_text()[-2000:]}")
