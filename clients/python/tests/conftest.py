"""A real secure 3-node cluster for the whole session, started with
scripts/cluster.sh on ports of its own (ORRERY_BIN: the directory holding
`orrery` and `orreryctl`, default target/debug)."""

import os
import random
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest

import orrery

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CLUSTER_SH = os.path.join(REPO, "scripts", "cluster.sh")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_base() -> int:
    for _ in range(200):
        # Below the kernel's ephemeral range (32768-60999), where no
        # outgoing connection can take a port between this check and the bind.
        base = random.randrange(20000, 32500, 10)
        if all(_free(base + i) for i in (1, 2, 3, 101, 102, 103)):
            return base
    raise RuntimeError("no free ports for a test cluster")


class Cluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="orrery-pytest-")
        self.base = _port_base()
        self.bin = os.path.abspath(os.environ.get("ORRERY_BIN") or os.path.join(REPO, "target", "debug"))
        # The nodes' --fs-root (datasets, test_embed_worker.py): one
        # directory every node sees, as a shared mount would be.
        self.fs_root = os.path.join(self.dir, "files")
        os.makedirs(self.fs_root)
        self.env = dict(os.environ, ORRERY_CLUSTER_DIR=self.dir, ORRERY_PORT_BASE=str(self.base),
                        ORRERY_BIN=self.bin, ORRERY_FS_ROOT=self.fs_root)
        self.env.pop("ORRERY_TOKEN", None)

    def sh(self, *args, check=True):
        return subprocess.run([CLUSTER_SH, *args], env=self.env, cwd=REPO, check=check,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def up(self):
        r = self.sh("up", "3", check=False)
        if r.returncode != 0:
            raise RuntimeError(f"cluster.sh up failed:\n{r.stdout}")

    def endpoint(self, i: int) -> str:
        return f"127.0.0.1:{self.base + i}"

    @property
    def endpoints(self):
        return [self.endpoint(i) for i in (1, 2, 3)]

    @property
    def ca(self) -> str:
        return os.path.join(self.dir, "ca", "ca.crt")

    @property
    def token(self) -> str:
        with open(os.path.join(self.dir, "root.token")) as f:
            return f.read().strip()

    def pid(self, i: int) -> int:
        with open(os.path.join(self.dir, f"n{i}.pid")) as f:
            return int(f.read())

    def stop_node(self, i: int):
        """SIGTERM node i and wait for it (as cluster.sh down does)."""
        pid = self.pid(i)
        os.kill(pid, 15)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if _zombie(pid):
                break
            __import__("time").sleep(0.1)
        os.remove(os.path.join(self.dir, f"n{i}.pid"))

    def down(self):
        self.sh("clean", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="session")
def cluster():
    c = Cluster()
    try:
        c.up()
        yield c
    finally:
        c.down()


@pytest.fixture
def client(cluster):
    with orrery.Client(cluster.endpoints, token=cluster.token, ca_cert=cluster.ca) as c:
        yield c


@pytest.fixture
def name():
    """A unique name for the queue/collection/policy/key of one test."""
    return "t" + uuid.uuid4().hex[:10]
