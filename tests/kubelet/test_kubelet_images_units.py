"""The kubelet's image manager (images.py): pull-policy decisions, the pull back-off, and pulls
with a pod's imagePullSecrets from a REAL registry (Debian's docker-registry on a loopback port,
htpasswd auth) into a real image store; the API objects come from the in-memory transport."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from k3py.agent.kubelet.images import (
    BACK_OFF,
    NEVER_PULL,
    PULL,
    USE_PRESENT,
    ImageManager,
    PullBackOff,
    pull_action,
    pull_backoff,
)
from k3py.agent.kubelet.podinputs import SECRETS
from k3py.client.interface import Client
from k3py.client.memory import MemoryTransport
from k3py.runtime.archive import import_archive
from k3py.runtime.images import ImageStore
from k3py.runtime.spec import ContainerStatus
from tests.images import busybox_archive

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt for the registry's htpasswd file (Python 3.11 still ships it)

Obj = dict[str, Any]
USER, PASSWORD = "puller", "s3cret-pw"


@pytest.mark.parametrize(("policy", "present", "backing_off", "action"), [
    ("IfNotPresent", True, False, USE_PRESENT),
    ("IfNotPresent", True, True, USE_PRESENT),  # a present image is used whatever failed before
    ("IfNotPresent", False, False, PULL),
    ("IfNotPresent", False, True, BACK_OFF),
    ("", True, False, USE_PRESENT),  # unset: IfNotPresent
    ("", False, False, PULL),
    ("Always", True, False, PULL),  # the registry is asked at every start
    ("Always", False, False, PULL),
    ("Always", True, True, BACK_OFF),
    ("Never", True, False, USE_PRESENT),
    ("Never", False, False, NEVER_PULL),
    ("Never", False, True, NEVER_PULL),  # never pulls, so never backs off either
])
def test_pull_action_by_policy(policy: str, present: bool, backing_off: bool, action: str) -> None:
    assert pull_action(policy, present, backing_off) == action


def test_pull_back_off_doubles_from_ten_seconds_to_five_minutes() -> None:
    assert [pull_backoff(n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]
    backoff = PullBackOff()
    assert not backoff.waiting("main", 100.0)
    backoff.failed("main", 100.0)
    assert backoff.waiting("main", 109.9) and not backoff.waiting("main", 110.0)
    assert not backoff.waiting("sidecar", 100.0)  # per container
    backoff.failed("main", 110.0)
    assert backoff.retry_at["main"] == 130.0
    backoff.succeeded("main")
    backoff.failed("main", 200.0)
    assert backoff.retry_at["main"] == 210.0  # a success starts the back-off afresh


# ---- against a real registry ------------------------------------------------------------------


class Registry:
    """docker-registry on 127.0.0.1:<free port> with htpasswd auth (the same users for every one)."""

    def __init__(self, root: Path, htpasswd: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.host = f"127.0.0.1:{sock.getsockname()[1]}"
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.yml"
        config.write_text(json.dumps({
            "version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(root / "storage")}},
            "http": {"addr": self.host},
            "auth": {"htpasswd": {"realm": "k3py-test", "path": str(htpasswd)}},
        }))
        self.process = subprocess.Popen(["docker-registry", "serve", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # 401: it is up
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"docker-registry on {self.host} did not come up") from None
                time.sleep(0.05)

    def push(self, archive: Path, name: str) -> str:
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--retry-times", "0",
                        "--dest-creds", f"{USER}:{PASSWORD}", f"oci-archive:{archive}", f"docker://{self.host}/{name}"],
                       check=True, capture_output=True, timeout=120)
        return f"{self.host}/{name}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry]]:
    """Two registries with the same user: credentials for one must never reach the other."""
    base = tmp_path_factory.mktemp("registries")
    htpasswd = base / "htpasswd"
    htpasswd.write_text(f"{USER}:{crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n")
    started: list[Registry] = []
    try:
        for name in ("one", "two"):
            started.append(Registry(base / name, htpasswd))
        yield started[0], started[1]
    finally:
        for registry in started:
            registry.stop()


def pull_secret(name: str, registry_host: str, password: str = PASSWORD) -> Obj:
    config = {"auths": {registry_host: {"auth": base64.b64encode(f"{USER}:{password}".encode()).decode()}}}
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name},
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}}


def pod(namespace: str, image: str, policy: str, secrets: list[str]) -> tuple[Obj, Obj]:
    container = {"name": "main", "image": image, "imagePullPolicy": policy}
    body = {"metadata": {"name": "p", "namespace": namespace, "uid": f"uid-{namespace}"},
            "spec": {"containers": [container], "imagePullSecrets": [{"name": s} for s in secrets]}}
    return body, container


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self._once: set[str] = set()

    def __call__(self, pod: Obj, kind: str, reason: str, message: str, once: str = "") -> None:
        if once and once in self._once:
            return
        if once:
            self._once.add(once)
        self.seen.append((kind, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _kind, reason, _message in self.seen]


def manager(client: Client, store: ImageStore, events: Events, clock: Callable[[], float]) -> ImageManager:
    async def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    return ImageManager(client, store, run_blocking, events, clock=clock)


async def test_pulls_with_the_pods_own_pull_secret_and_backs_off_after_failures(
    registries: tuple[Registry, Registry], tmp_path: Path
) -> None:
    one, _two = registries
    image = one.push(busybox_archive(), "private/box:1")
    client = Client(MemoryTransport())
    await client.create(SECRETS, pull_secret("creds", one.host), "team")
    await client.create(SECRETS, pull_secret("stale", one.host, password="wrong"), "team")
    store = ImageStore(tmp_path / "store")
    now = [1000.0]
    events = Events()
    images = manager(client, store, events, lambda: now[0])

    # A wrong password: ErrImagePull, then ImagePullBackOff until the back-off is over.
    body, container = pod("team", image, "IfNotPresent", ["stale"])
    backoff = PullBackOff()
    check = await images.ensure(body, container, backoff)
    assert (check.ready, check.reason) == (False, "ErrImagePull")
    assert "credentials were refused" in check.message
    assert events.reasons() == ["Pulling", "Failed", "Failed"]
    assert events.seen[-1] == ("Warning", "Failed", "Error: ErrImagePull")
    now[0] += 5
    check = await images.ensure(body, container, backoff)
    assert (check.ready, check.reason, check.message) == (False, "ImagePullBackOff", f'Back-off pulling image "{image}"')
    assert check.retry_after == pytest.approx(5.0)
    assert events.seen[-2:] == [("Normal", "BackOff", f'Back-off pulling image "{image}"'),
                                ("Warning", "Failed", "Error: ImagePullBackOff")]
    assert not store.list()

    # The right secret, once the back-off is over: pulled, with upstream's Pulled message.
    now[0] += 6
    body, container = pod("team", image, "IfNotPresent", ["missing", "creds"])  # a missing one is skipped
    check = await images.ensure(body, container, backoff)
    assert check.ready, check
    assert events.seen[-1][1] == "Pulled" and events.seen[-1][2].startswith(f'Successfully pulled image "{image}" in ')
    assert store.get(image).names == [image]
    # Present now: IfNotPresent uses it without asking the registry ("already present", once).
    events.seen.clear()
    for _ in range(2):
        assert (await images.ensure(body, container, backoff)).ready
    assert events.seen == [("Normal", "Pulled", f'Container image "{image}" already present on machine')]

    # imageID: the repo digest of the image the container runs, as containerd reports it.
    stored = store.get(image)
    status = ContainerStatus(id="c1", name="main", image=image, image_id=stored.id, state="running")
    await images.resolve_ids([status])
    assert images.with_image_id(status).image_id == f"{one.host}/private/box@{stored.manifest_digest}"  # type: ignore[union-attr]


async def test_pull_secrets_stay_in_their_namespace_and_with_their_registry(
    registries: tuple[Registry, Registry], tmp_path: Path
) -> None:
    one, two = registries
    first = one.push(busybox_archive(), "private/box:2")
    second = two.push(busybox_archive(), "private/box:2")
    client = Client(MemoryTransport())
    await client.create(SECRETS, pull_secret("creds", one.host), "team")
    store = ImageStore(tmp_path / "store")
    events = Events()
    images = manager(client, store, events, time.monotonic)

    # Another namespace naming the team's secret gets nothing from it.
    body, container = pod("intruder", first, "IfNotPresent", ["creds"])
    check = await images.ensure(body, container, PullBackOff())
    assert (check.ready, check.reason) == (False, "ErrImagePull")
    assert "requires a username and password" in check.message
    # The team's secret is for registry one: pulling from registry two (same user and password
    # there) does not send it, so the pull is refused.
    body, container = pod("team", second, "IfNotPresent", ["creds"])
    check = await images.ensure(body, container, PullBackOff())
    assert (check.ready, check.reason) == (False, "ErrImagePull")
    assert "requires a username and password" in check.message
    assert not store.list()


async def test_never_and_always_policies(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    offline_image = f"{closed}/library/busybox:latest"
    store = ImageStore(tmp_path / "store")
    imported = import_archive(store, busybox_archive())[0]
    store.tag(offline_image, imported.manifest_digest)
    events = Events()
    images = manager(Client(MemoryTransport()), store, events, time.monotonic)

    body, container = pod("team", "busybox", "Never", [])
    assert (await images.ensure(body, container, PullBackOff())).ready
    body, container = pod("team", "not-here:1", "Never", [])
    check = await images.ensure(body, container, PullBackOff())
    assert (check.ready, check.reason) == (False, "ErrImageNeverPull")
    assert check.message == 'Container image "not-here:1" is not present with pull policy of Never'
    assert "Pulling" not in events.reasons()

    # The image is in the store under its registry's name: IfNotPresent uses it, Always asks
    # the registry at every start — which does not answer, so the start fails (as upstream).
    body, container = pod("team", offline_image, "IfNotPresent", [])
    assert (await images.ensure(body, container, PullBackOff())).ready
    body, container = pod("team", offline_image, "Always", [])
    check = await images.ensure(body, container, PullBackOff())
    assert (check.ready, check.reason) == (False, "ErrImagePull")
    assert "cannot reach registry" in check.message, check.message
    assert store.get(offline_image).id == imported.id  # nothing lost
