"""Where a store lives: local paths and fsspec URLs (``s3://``, ``gs://``, ``memory://``, ``file://``).

Every command that takes a store passes the location through here, so a URL works wherever a
path does. Options for the remote filesystem come from, in order of precedence:

1. ``storage_options`` given by the caller (library use);
2. the environment variable ``FMF_STORAGE_OPTIONS``: a JSON object handed to fsspec as is
   (e.g. ``{"anon": true}`` or ``{"profile": "lab"}``);
3. for ``s3://`` URLs, an endpoint from ``FMF_S3_ENDPOINT``, else ``AWS_ENDPOINT_URL_S3``, else
   ``AWS_ENDPOINT_URL`` (MinIO, Ceph, a test server). Credentials stay with the usual AWS
   variables and files; this module never reads or stores them.

Completion on object stores (the decision, and why)
----------------------------------------------------
Object stores have no rename: "rename" is copy-then-delete of every object, which doubles the
traffic of a conversion (hundreds of GB at 100x the public set) and is still not atomic. So a
store at a URL is written **in place** and made visible by the commit marker that format v1
already has: ``StoreMeta.complete`` in the root ``zarr.json``. A writer

* writes the root attributes with ``complete=False`` first (or none at all),
* writes every array and checksum,
* writes ``complete=True`` LAST, as one PUT of the root ``zarr.json``. A single-object PUT is
  atomic on S3 and its clones, so a reader sees either the old or the new document.

``open_store`` refuses a store whose flag is false, so an interrupted remote conversion never
looks complete, and ``--resume`` continues it in place. Replacing a store (``--overwrite``)
first flips the old store's flag to false (:func:`mark_incomplete`), then deletes it
(:func:`remove_store`): a half-finished delete never leaves a complete-looking husk.

Local paths keep the stronger scheme: build in a temporary sibling folder, then ``os.replace``.
:func:`staging_location` and :func:`publish` give the one rule for both kinds of location.

``memory://`` lives inside one process: fine for tests and notebooks, invisible to Dask
workers in other processes. URLs that cluster workers use must name storage every worker
reaches (s3://, gs://, a shared file system).
"""
from __future__ import annotations

import json
import os
import uuid
from typing import Any

import fsspec
import zarr

from fmdata import schema
from fmdata.errors import FmDataError

ENV_STORAGE_OPTIONS = "FMF_STORAGE_OPTIONS"
ENV_S3_ENDPOINT = "FMF_S3_ENDPOINT"
_ENDPOINT_ENVS = (ENV_S3_ENDPOINT, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_S3_PROTOCOLS = ("s3", "s3a")


def is_url(location: str | os.PathLike[str]) -> bool:
    """Return True when ``location`` is an fsspec URL (``proto://...``) rather than a local path."""
    return "://" in os.fspath(location)


def split_url(location: str | os.PathLike[str]) -> tuple[str, str]:
    """Return (protocol, path) of a location; a plain local path gives ("file", path)."""
    loc = os.fspath(location)
    if not is_url(loc):
        return "file", loc
    proto, _, rest = loc.partition("://")
    return proto.lower(), rest


def local_path(location: str | os.PathLike[str]) -> str | None:
    """Return the local file-system path of a plain path or ``file://`` URL, else None."""
    proto, path = split_url(location)
    return path if proto in ("file", "local") else None


def storage_options_for(location: str | os.PathLike[str],
                        storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the fsspec options to open ``location`` with (see the module docstring for order).

    Raises FmDataError when ``FMF_STORAGE_OPTIONS`` is not a JSON object.
    """
    proto, _ = split_url(location)
    opts: dict[str, Any] = {}
    if proto in _S3_PROTOCOLS:
        endpoint = next((os.environ[k] for k in _ENDPOINT_ENVS if os.environ.get(k)), None)
        if endpoint:
            opts["endpoint_url"] = endpoint
    raw = os.environ.get(ENV_STORAGE_OPTIONS)
    if raw and local_path(location) is None:
        try:
            env_opts = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise FmDataError(f"expected a JSON object, got unparsable text ({exc.msg})",
                              ENV_STORAGE_OPTIONS) from None
        if not isinstance(env_opts, dict):
            raise FmDataError(f"expected a JSON object, got {type(env_opts).__name__}", ENV_STORAGE_OPTIONS)
        opts.update(env_opts)
    opts.update(storage_options or {})
    return opts


def backend_errors() -> tuple[type[BaseException], ...]:
    """Return the exception types remote filesystems raise for missing credentials, unreachable
    endpoints and refused requests (botocore, aiohttp), for turning them into one-line errors."""
    types: list[type[BaseException]] = []
    try:
        import botocore.exceptions as boto_errors

        types += [boto_errors.BotoCoreError, boto_errors.ClientError]
    except ImportError:
        pass
    try:
        import aiohttp

        types.append(aiohttp.ClientError)
    except ImportError:
        pass
    return tuple(types)


def _unreachable(location: str | os.PathLike[str], exc: BaseException) -> FmDataError:
    return FmDataError(f"expected a reachable location, got {exc.__class__.__name__}: {exc}", os.fspath(location))


def filesystem(location: str | os.PathLike[str],
               storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return (fsspec filesystem, path inside it) for ``location``, options resolved as above."""
    proto, path = split_url(location)
    if proto in ("file", "local"):
        return fsspec.filesystem("file"), os.path.abspath(path)
    try:
        fs = fsspec.filesystem(proto, **storage_options_for(location, storage_options))
    except (ImportError, ValueError) as exc:
        raise FmDataError(f"expected a usable fsspec protocol, got {proto!r} ({exc})", os.fspath(location)) from None
    return fs, fs._strip_protocol(os.fspath(location))


def join(location: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a path or URL with '/' (URLs) or the OS separator (paths)."""
    loc = os.fspath(location)
    if not is_url(loc):
        return os.path.join(loc, *parts)
    return "/".join([loc.rstrip("/"), *(p.strip("/") for p in parts)])


def exists(location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> bool:
    """Return True when anything (an object, a prefix with objects, a folder) is at ``location``."""
    fs, path = filesystem(location, storage_options)
    fs.invalidate_cache()  # s3fs caches listings; another process may have written since
    try:
        return bool(fs.exists(path))
    except (PermissionError, *backend_errors()) as exc:
        raise _unreachable(location, exc) from None


def zarr_store(location: str | os.PathLike[str], mode: str = "r",
               storage_options: dict[str, Any] | None = None) -> zarr.abc.store.Store:
    """Return a zarr-python 3 store object for a path or URL; ``mode`` "r" opens read-only."""
    read_only = mode == "r"
    path = local_path(location)
    if path is not None:
        return zarr.storage.LocalStore(path, read_only=read_only)
    opts = storage_options_for(location, storage_options)
    try:
        return zarr.storage.FsspecStore.from_url(os.fspath(location), storage_options=opts, read_only=read_only)
    except (ImportError, ValueError, TypeError) as exc:
        raise FmDataError(f"expected a usable fsspec URL, got {exc}", os.fspath(location)) from None


def check_writable_parent(location: str | os.PathLike[str],
                          storage_options: dict[str, Any] | None = None) -> None:
    """Raise FmDataError unless a new store can be created at ``location``.

    Local: the parent folder exists and is writable. S3-like: the bucket exists (object stores
    need no parent "folders"). Other protocols are accepted as they are.
    """
    loc = os.fspath(location)
    path = local_path(loc)
    if path is not None:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise FmDataError("expected an existing parent folder, got none", loc)
        if not os.access(parent, os.W_OK):
            raise FmDataError("expected a writable parent folder, got a read-only one", loc)
        return
    proto, rest = split_url(loc)
    if proto in _S3_PROTOCOLS:
        bucket = rest.split("/", 1)[0]
        fs, _ = filesystem(loc, storage_options)
        fs.invalidate_cache()
        try:
            ok = fs.exists(bucket)
        except PermissionError:
            ok = True  # listing may be forbidden while writing is allowed; let the write decide
        except backend_errors() as exc:
            raise _unreachable(loc, exc) from None
        if not ok:
            raise FmDataError(f"expected an existing bucket {bucket!r}, got none", loc)


def staging_location(final: str | os.PathLike[str]) -> str:
    """Return where a writer should build the store that will appear at ``final``.

    Local paths: a hidden temporary sibling (``.<name>.partial-<id>``), renamed by
    :func:`publish`. URLs: ``final`` itself; completion is the ``complete`` flag, written last.
    """
    loc = os.fspath(final)
    path = local_path(loc)
    if path is None:
        return loc
    path = os.path.abspath(path)
    head, tail = os.path.split(path.rstrip(os.sep))
    return os.path.join(head, f".{tail}.partial-{uuid.uuid4().hex[:8]}")


def publish(staging: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Make a finished store visible at ``final`` (local: atomic rename; URL: nothing to do).

    The writer must already have set ``complete=True`` in ``staging``.
    """
    s, f = os.fspath(staging), os.fspath(final)
    path = local_path(f)
    if path is None:
        if s != f:
            raise FmDataError(f"expected a URL store to be written in place, got staging {s}", f)
        return
    os.replace(s, path)


def set_complete(root: zarr.Group, complete: bool) -> None:
    """Rewrite the root ``fmf_store`` attribute with ``complete`` set (one write of zarr.json)."""
    meta = dict(root.attrs.get(schema.ATTR_STORE) or {})
    if not meta:
        raise FmDataError(f"expected attribute {schema.ATTR_STORE!r} to mark, got none")
    meta["complete"] = bool(complete)
    root.attrs[schema.ATTR_STORE] = meta


def mark_incomplete(location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> bool:
    """Flip an existing store's ``complete`` flag to False; return False when it is no FMF store."""
    try:
        root = zarr.open_group(store=zarr_store(location, "r+", storage_options), mode="r+", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError):
        return False
    if not isinstance(root.attrs.get(schema.ATTR_STORE), dict):
        return False
    set_complete(root, False)
    return True


def remove_store(location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> None:
    """Delete the store at ``location`` (path or URL); a partial delete never looks complete."""
    if not exists(location, storage_options):
        return
    mark_incomplete(location, storage_options)
    fs, path = filesystem(location, storage_options)
    fs.rm(path, recursive=True)
    fs.invalidate_cache()
