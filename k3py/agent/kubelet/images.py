"""The kubelet's image manager: a container's image is in the node's store before it starts.

Per ``imagePullPolicy`` (``pull_action``, pure): ``IfNotPresent`` pulls only when the store
lacks the image; ``Always`` asks the registry at every start, as the kubelet's CRI pull does —
the tag is resolved there and only what the store lacks is downloaded (nothing when the digest
is unchanged); a registry that cannot be reached fails the start with ErrImagePull even when an
image of that name is present, as upstream does (airgapped nodes use ``IfNotPresent``, or a tag
other than ``latest``, for their imported images); ``Never`` never pulls (ErrImageNeverPull
while the image is missing).

Pulls use the registry client of the runtime with the credentials of the pod's
``imagePullSecrets`` (``pullsecrets``). A failed pull is ErrImagePull; the container's next
pull waits 10 s, doubling up to 5 min (``PullBackOff``, kept per pod and container), and while
it waits the container is in ImagePullBackOff. The events are upstream's image manager's:
Pulling, Pulled (with the time taken and the size), ``Failed`` with the pull error and then
``Failed "Error: <reason>"``, BackOff.

It also answers what a container's status reports as its ``imageID``: the repo digest
containerd's CRI reports (``image_ref``), resolved once per (image, image id) pair.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from k3py.agent.kubelet.podinputs import SECRETS, fetch_optional
from k3py.agent.kubelet.pullsecrets import credentials_for
from k3py.client.interface import Client
from k3py.runtime.images import Image, ImageError, ImageStore
from k3py.runtime.reference import ReferenceError_, parse_reference
from k3py.runtime.registry import Credentials
from k3py.runtime.spec import ContainerStatus

Obj = dict[str, Any]

PULL_BACKOFF_INITIAL = 10.0
PULL_BACKOFF_MAX = 300.0
NEVER_PULL_RECHECK = 30.0  # an image imported by hand is noticed this soon
PULL_FAILED_RECHECK = 1.0  # then ImagePullBackOff for the rest of the back-off, as users see it

# What to do about a container's image (``pull_action``)
USE_PRESENT = "use-present"
PULL = "pull"
NEVER_PULL = "never-pull"  # missing, and the policy forbids pulling: ErrImageNeverPull
BACK_OFF = "back-off"  # a recent pull failed: ImagePullBackOff until the back-off is over


class EventSink(Protocol):
    def __call__(self, pod: Obj, kind: str, reason: str, message: str, once: str = "") -> None: ...


def pull_action(policy: str, present: bool, backing_off: bool) -> str:
    """What the image manager does for a container whose image is ``present`` in the store (or
    not) under ``imagePullPolicy`` ``policy`` (empty: IfNotPresent), while a failed pull of it
    is ``backing_off`` (or not)."""
    policy = policy or "IfNotPresent"
    if present and policy != "Always":
        return USE_PRESENT
    if policy == "Never":
        return NEVER_PULL
    if backing_off:
        return BACK_OFF
    return PULL


def pull_backoff(failures: int) -> float:
    """Seconds before the next pull after ``failures`` failed pulls in a row: 10 s doubling to 5 min."""
    return min(PULL_BACKOFF_MAX, PULL_BACKOFF_INITIAL * 2 ** max(0, failures - 1))


@dataclass
class PullBackOff:
    """The failed pulls of one pod's containers (by container name) and when each may try again."""

    failures: dict[str, int] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)  # monotonic seconds

    def waiting(self, container: str, now: float) -> bool:
        return now < self.retry_at.get(container, 0.0)

    def failed(self, container: str, now: float) -> None:
        failures = self.failures.get(container, 0) + 1
        self.failures[container] = failures
        self.retry_at[container] = now + pull_backoff(failures)

    def succeeded(self, container: str) -> None:
        self.failures.pop(container, None)


@dataclass(frozen=True)
class ImageCheck:
    """The outcome for one container: ``ready``, or why not (its waiting reason and message)
    and when to look again."""

    ready: bool
    reason: str = ""
    message: str = ""
    retry_after: float = 0.0


READY = ImageCheck(ready=True)


class ImageManager:
    """See the module docstring."""

    def __init__(
        self,
        client: Client,
        store: ImageStore,
        run_blocking: Callable[..., Awaitable[Any]],
        event: EventSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.store = store
        self.run_blocking = run_blocking
        self.event = event
        self.clock = clock
        self._refs: dict[tuple[str, str], str] = {}  # (requested image, image id) -> imageID

    async def ensure(self, pod: Obj, container: Obj, backoff: PullBackOff) -> ImageCheck:
        """Make sure the container's image is in the store (pulling it if the policy allows)."""
        image = container.get("image", "")
        name = container["name"]
        present = await self.run_blocking(self.has_image, image)
        action = pull_action(container.get("imagePullPolicy") or "", present, backoff.waiting(name, self.clock()))
        if action == USE_PRESENT:
            self.event(pod, "Normal", "Pulled", f'Container image "{image}" already present on machine',
                       once=f"pulled-{name}-{image}")
            backoff.succeeded(name)
            return READY
        if action == NEVER_PULL:
            message = f'Container image "{image}" is not present with pull policy of Never'
            self.event(pod, "Warning", "ErrImageNeverPull", message, once=f"never-{name}")
            return ImageCheck(False, "ErrImageNeverPull", message, NEVER_PULL_RECHECK)
        if action == BACK_OFF:
            message = f'Back-off pulling image "{image}"'
            self.event(pod, "Normal", "BackOff", message)
            self.event(pod, "Warning", "Failed", "Error: ImagePullBackOff")
            return ImageCheck(False, "ImagePullBackOff", message,
                              max(1.0, backoff.retry_at.get(name, 0.0) - self.clock()))
        self.event(pod, "Normal", "Pulling", f'Pulling image "{image}"')
        started = self.clock()
        credentials = credentials_for(image, await self._pull_secrets(pod))
        try:
            size = await self.run_blocking(self.pull, image, credentials)
        except (ImageError, OSError) as e:
            backoff.failed(name, self.clock())
            message = f'Failed to pull image "{image}": {e}'
            self.event(pod, "Warning", "Failed", message)
            self.event(pod, "Warning", "Failed", "Error: ErrImagePull")
            return ImageCheck(False, "ErrImagePull", message, PULL_FAILED_RECHECK)
        backoff.succeeded(name)
        took = go_duration(self.clock() - started)
        self.event(pod, "Normal", "Pulled", f'Successfully pulled image "{image}" in {took} '
                                            f"({took} including waiting). Image size: {size} bytes.")
        return READY

    async def _pull_secrets(self, pod: Obj) -> list[Obj | None]:
        """The pod's imagePullSecrets in its order (None for one that does not exist)."""
        names = [ref.get("name", "") for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []
                 if ref.get("name")]
        found = await fetch_optional(self.client, SECRETS, pod["metadata"]["namespace"], set(names))
        return [found.get(n) for n in names]

    # ---- blocking calls (run them on a worker thread) ---------------------------------------

    def has_image(self, image: str) -> bool:
        try:
            self.store.get(image)
        except ImageError:
            return False
        return True

    def pull(self, image: str, credentials: Credentials | None) -> int:
        """Pull the image; its size in bytes, for the Pulled event."""
        from k3py.runtime.registry import pull_image

        return pull_image(self.store, image, credentials=credentials).size

    def configured_user(self, image: str) -> str | None:
        """The image's configured ``User`` ("" for none); None when the store cannot say."""
        try:
            return str(self.store.get(image).exec_config.get("User") or "")
        except ImageError:
            return None

    def _resolve(self, wanted: list[tuple[str, str]]) -> None:
        try:
            images = self.store.list()
        except (ImageError, OSError):
            images = []
        for requested, image_id in wanted:
            self._refs[(requested, image_id)] = image_ref(image_id, requested, images)

    # ---- imageID ----------------------------------------------------------------------------

    async def resolve_ids(self, statuses: Iterable[ContainerStatus]) -> None:
        """Resolve (once) the imageID of every container in ``statuses``."""
        wanted = sorted({(s.image, s.image_id) for s in statuses
                         if s.image_id and (s.image, s.image_id) not in self._refs})
        if wanted:
            await self.run_blocking(self._resolve, wanted)

    def with_image_id(self, status: ContainerStatus | None) -> ContainerStatus | None:
        """``status`` with the imageID ``resolve_ids`` found for it."""
        if status is None:
            return None
        ref = self._refs.get((status.image, status.image_id))
        return dataclasses.replace(status, image_id=ref) if ref else status


def image_ref(image_id: str, requested: str, images: list[Image]) -> str:
    """A container's imageID as containerd's CRI reports it: a repo digest
    (``docker.io/library/busybox@sha256:<manifest digest>``) of the image it runs — the
    requested repository's when the image has that name, else its first name's — or the
    image ID (config digest) when the store knows no name for it."""
    image = next((i for i in images if i.id == image_id), None)
    if image is None:
        return image_id
    repositories: list[str] = []
    for name in image.names:
        with contextlib.suppress(ReferenceError_):
            repositories.append(parse_reference(name).name)
    if not repositories:
        return image_id
    try:
        wanted = parse_reference(requested).name
    except ReferenceError_:
        wanted = ""
    repository = wanted if wanted in repositories else sorted(repositories)[0]
    return f"{repository}@{image.manifest_digest}"


def go_duration(seconds: float) -> str:
    """A duration as Go prints it in the kubelet's events ("532.1ms", "1.204s")."""
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.3f}s"
