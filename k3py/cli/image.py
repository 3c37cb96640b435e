"""``k3py image``: manage the node's image store (import, ls, pull, rm, prune).

The commands work on the store under ``--data-dir`` (the runtime's data dir; images live in its
``images`` folder), the same store the kubelet's runtime uses, so an imported or pulled image is
immediately usable by pods (airgap installs import tarballs this way). Errors are printed as one
line on stderr with exit code 1; no tracebacks for bad input.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

DEFAULT_DATA_DIR = Path("/var/lib/k3py/agent/runtime")

image_app = typer.Typer(
    name="image",
    help="Import, list, pull and remove container images on this node.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDir = typer.Option(
    DEFAULT_DATA_DIR, "--data-dir", "-d", envvar="K3PY_RUNTIME_DIR", help="The runtime's data dir."
)


MaxLayerSize = typer.Option(
    "",
    "--max-layer-size",
    envvar="K3PY_IMAGE_MAX_LAYER_SIZE",
    help="Largest a layer may decompress to (e.g. 512Mi, 8Gi; default 8Gi).",
)
MaxImageSize = typer.Option(
    "",
    "--max-image-size",
    envvar="K3PY_IMAGE_MAX_SIZE",
    help="Largest an image's new layers may decompress to together (default 16Gi).",
)


def _store(data_dir: Path, max_layer_size: str = "", max_image_size: str = ""):  # -> ImageStore
    from k3py.runtime.images import ImageStore, ImportBudget, parse_size

    budget = None
    if max_layer_size or max_image_size:
        defaults = ImportBudget.from_env()
        try:
            budget = ImportBudget(
                parse_size(max_layer_size) if max_layer_size else defaults.max_layer_bytes,
                parse_size(max_image_size) if max_image_size else defaults.max_image_bytes,
            )
        except ValueError as exc:
            _fail(str(exc))
    try:
        return ImageStore(data_dir / "images", budget=budget)
    except ValueError as exc:  # a malformed size in the environment
        _fail(str(exc))


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{size}B"


@image_app.command("import")
def import_(
    archives: list[Path] = typer.Argument(
        ..., help="docker save or OCI archive tarballs (.tar, .tar.gz, .tar.zst)."
    ),
    name: list[str] = typer.Option(
        [], "--name", help="Name the image (replaces the archive's names)."
    ),
    max_layer_size: str = MaxLayerSize,
    max_image_size: str = MaxImageSize,
    data_dir: Path = DataDir,
) -> None:
    """Import images from docker-archive or OCI-archive tarballs."""
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageError

    store = _store(data_dir, max_layer_size, max_image_size)
    for archive in archives:
        if not archive.is_file():
            _fail(f"{archive}: no such file")
        try:
            images = import_archive(store, archive, names=list(name) or None)
        except ImageError as exc:
            _fail(f"{archive}: {exc}")
        for image in images:
            label = ", ".join(image.names) or "(untagged)"
            typer.echo(f"imported {label} {image.id}")


@image_app.command("ls")
def ls(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print image IDs."),
    data_dir: Path = DataDir,
) -> None:
    """List images: repository, tag, image ID and size, like crictl images."""
    from k3py.runtime.reference import parse_reference

    images = _store(data_dir).list()
    if quiet:
        for image in images:
            typer.echo(image.id)
        return
    rows = [("IMAGE", "TAG", "IMAGE ID", "SIZE")]
    for image in images:
        size = _human_size(image.size)
        short_id = image.id.split(":", 1)[1][:13]
        if not image.names:
            rows.append(("<none>", "<none>", short_id, size))
        for name in image.names:
            ref = parse_reference(name)
            rows.append((ref.name, ref.tag or "<none>", short_id, size))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


class _PullReport:
    """Collects per-blob progress from the download threads; draws rich bars when asked to."""

    def __init__(self, show_bars: bool) -> None:
        import threading
        import time

        self.started = time.monotonic()
        self.sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._bars = None
        self._tasks: dict[str, int] = {}
        if show_bars:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self._bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(stderr=True),
                transient=False,
            )

    def __enter__(self) -> _PullReport:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def __call__(self, digest: str, done: int, total: int | None) -> None:
        with self._lock:
            self.sizes[digest] = done
            if self._bars is None:
                return
            task = self._tasks.get(digest)
            if task is None:
                task = self._bars.add_task(digest.split(":")[-1][:12], total=total)
                self._tasks[digest] = task
        self._bars.update(task, completed=done, total=total)

    def summary(self, name: str) -> str:
        import time

        elapsed = time.monotonic() - self.started
        total = sum(self.sizes.values())
        return f"{name}: {len(self.sizes)} blobs, {_human_size(total)} in {elapsed:.1f}s"


@image_app.command()
def pull(
    reference: str = typer.Argument(
        ..., help="Image reference, e.g. busybox:1.36 or localhost:5000/app:v1."
    ),
    username: str = typer.Option("", "--username", "-u", help="Registry username."),
    password: str = typer.Option(
        "", "--password", "-p", envvar="K3PY_REGISTRY_PASSWORD", help="Registry password."
    ),
    plain_http: bool = typer.Option(
        False, "--plain-http", help="Talk HTTP, not HTTPS, to the registry."
    ),
    registries_config: Path | None = typer.Option(
        None,
        "--registries-config",
        envvar="K3PY_REGISTRIES_CONFIG",
        help="Mirrors and registry credentials (default /etc/k3py/registries.yaml, if present).",
    ),
    max_layer_size: str = MaxLayerSize,
    max_image_size: str = MaxImageSize,
    data_dir: Path = DataDir,
) -> None:
    """Pull an image from a registry (or its mirrors); progress bars on a terminal."""
    import sys

    from k3py.runtime.images import ImageError
    from k3py.runtime.registries import load_registries
    from k3py.runtime.registry import Credentials, pull_image

    if bool(username) != bool(password):
        _fail("--username and --password go together")
    credentials = Credentials(username, password) if username else None
    try:
        config = load_registries(registries_config)
    except ImageError as exc:
        _fail(str(exc))
    report = _PullReport(show_bars=sys.stderr.isatty())
    try:
        with report:
            image = pull_image(
                _store(data_dir, max_layer_size, max_image_size),
                reference,
                credentials=credentials,
                plain_http=plain_http or None,
                registries=config,
                progress=report,
            )
    except ImageError as exc:
        _fail(str(exc))
    if not sys.stderr.isatty():
        typer.echo(report.summary(image.names[0]), err=True)
    typer.echo(f"pulled {image.names[0]} {image.id}")


@image_app.command()
def rm(
    references: list[str] = typer.Argument(..., help="Image names, IDs or ID prefixes."),
    data_dir: Path = DataDir,
) -> None:
    """Remove image names (an ID removes every name of that image); prune frees the space."""
    from k3py.runtime.images import ImageError

    store = _store(data_dir)
    for reference in references:
        try:
            image = store.get(reference)
            users = _containers_using(data_dir, image.id)
            if users:
                _fail(
                    f"image {reference} is used by container(s) {', '.join(u[:12] for u in users)}"
                )
            for removed in store.remove(reference):
                typer.echo(f"untagged {removed}")
        except ImageError as exc:
            _fail(str(exc))


def _containers_using(data_dir: Path, image_id: str) -> list[str]:
    import json

    users = []
    containers = data_dir / "containers"
    if containers.is_dir():
        for entry in sorted(os.listdir(containers)):
            try:
                meta = json.loads((containers / entry / "meta.json").read_text())
            except (OSError, ValueError):
                continue
            if meta.get("image_id") == image_id:
                users.append(entry)
    return users


@image_app.command()
def prune(data_dir: Path = DataDir) -> None:
    """Delete blobs and unpacked layers that no named image and no container needs."""
    import json

    def layers_in_use() -> set[str]:
        # Asked by prune under its lock, so a container created meanwhile is seen.
        in_use: set[str] = set()
        containers = data_dir / "containers"
        if containers.is_dir():
            for entry in os.listdir(containers):
                try:
                    meta = json.loads((containers / entry / "meta.json").read_text())
                except (OSError, ValueError):
                    continue
                in_use.update(meta.get("layers", []))
        return in_use

    removed, freed = _store(data_dir).prune(layers_in_use)
    typer.echo(f"removed {removed} files, freed {_human_size(freed)}")
