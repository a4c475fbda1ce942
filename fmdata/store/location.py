"""Where a store lives: a local path or an fsspec URL (``s3://``, ``gs://``, ``memory://``, ``file://``).

A :class:`Location` is resolved once, where a location enters the toolkit (a command-line
argument, or the first call of a library function given a path), and then travels as it is:
through the converter, to Dask workers, into readers. Its fsspec options come, in order of
precedence, from

1. ``storage_options`` given to :meth:`Location.parse` (library use);
2. the environment variable ``FMF_STORAGE_OPTIONS``: a JSON object handed to fsspec as is
   (e.g. ``{"anon": true}`` or ``{"profile": "lab"}``);
3. for ``s3://`` URLs, an endpoint from ``FMF_S3_ENDPOINT``, else ``AWS_ENDPOINT_URL_S3``, else
   ``AWS_ENDPOINT_URL`` (MinIO, Ceph, a test server). Credentials stay with the usual AWS
   variables and files; this module never reads or stores them.

Completion on object stores (the decision, and why)
----------------------------------------------------
Object stores have no rename: "rename" is copy-then-delete of every object, which doubles the
traffic of a conversion (hundreds of GB at 100x the public set) and is still not atomic. So a
store at a URL is written **in place** and made visible by the commit marker that the format
already has: ``StoreMeta.complete`` in the root ``zarr.json``. A writer writes the root
attributes with ``complete=False`` first, then every array and checksum, then ``complete=True``
LAST, as one PUT of the root ``zarr.json`` (atomic on S3 and its clones). ``open_store`` refuses
a store whose flag is false, so an interrupted remote conversion never looks complete, and
``--resume`` continues it in place. Replacing a store first flips the old store's flag to false
(:meth:`Location.mark_incomplete`), then deletes it (:meth:`Location.remove`).

Local paths keep the stronger scheme: build in a hidden temporary sibling, then ``os.replace``;
an old store is renamed aside before the new one takes its place and deleted last, and removing
a store (or a partial one) renames it aside first, so that a kill at any moment leaves either a
complete store at the path or a hidden ``.old-`` folder that nothing mistakes for one
(:mod:`fmdata.store.atomic`). :meth:`Location.staging` and :meth:`Location.publish` give the one
rule for both kinds.

``memory://`` lives inside one process: fine for tests and notebooks, invisible to Dask
workers in other processes.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import fsspec
import zarr
import zarr.storage

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.atomic import discard, place

ENV_STORAGE_OPTIONS = "FMF_STORAGE_OPTIONS"
ENV_S3_ENDPOINT = "FMF_S3_ENDPOINT"
_ENDPOINT_ENVS = (ENV_S3_ENDPOINT, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_S3_PROTOCOLS = ("s3", "s3a")
_LOCAL_PROTOCOLS = ("file", "local")
PARTIAL_MARK = ".partial-"  # staging siblings are named .<name>.partial-<id>


def is_url(location: str | os.PathLike[str]) -> bool:
    """Return True when ``location`` is an fsspec URL (``proto://...``) rather than a local path."""
    return "://" in os.fspath(location)


def _split(text: str) -> tuple[str, str]:
    if not is_url(text):
        return "file", text
    proto, _, rest = text.partition("://")
    return proto.lower(), rest


def _resolve_options(text: str, explicit: dict[str, Any] | None) -> dict[str, Any]:
    """The fsspec options of ``text`` in the module docstring's order of precedence."""
    proto, _ = _split(text)
    if proto in _LOCAL_PROTOCOLS:
        return dict(explicit or {})
    opts: dict[str, Any] = {}
    if proto in _S3_PROTOCOLS:
        endpoint = next((os.environ[k] for k in _ENDPOINT_ENVS if os.environ.get(k)), None)
        if endpoint:
            opts["endpoint_url"] = endpoint
    raw = os.environ.get(ENV_STORAGE_OPTIONS)
    if raw:
        try:
            env_opts = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise FmDataError(f"expected a JSON object, got unparsable text ({exc.msg})",
                              ENV_STORAGE_OPTIONS) from None
        if not isinstance(env_opts, dict):
            raise FmDataError(f"expected a JSON object, got {type(env_opts).__name__}", ENV_STORAGE_OPTIONS)
        opts.update(env_opts)
    opts.update(explicit or {})
    return opts


def backend_errors() -> tuple[type[BaseException], ...]:
    """Return the exception types remote filesystems raise for missing credentials, unreachable
    endpoints and refused requests (botocore, aiohttp), for turning them into one-line errors."""
    types: list[type[BaseException]] = [PermissionError]
    # Optional dependencies (they come with s3fs): imported only when asked about.
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


@dataclass(frozen=True)
class Location:
    """A local path or fsspec URL with the fsspec options to open it, resolved once.

    Build one with :meth:`parse`; ``str(location)`` is the text the user gave. Picklable (Dask
    workers receive it with every task).
    """

    text: str
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, location: Location | str | os.PathLike[str],
              storage_options: dict[str, Any] | None = None) -> Location:
        """Return ``location`` as a Location, resolving its fsspec options (see the module docstring).

        A Location passes through unchanged unless ``storage_options`` adds options to it. Raises
        FmDataError when ``FMF_STORAGE_OPTIONS`` is not a JSON object.
        """
        if isinstance(location, Location):
            if not storage_options:
                return location
            return cls(location.text, {**location.storage_options, **storage_options})
        text = os.fspath(location)
        return cls(text, _resolve_options(text, storage_options))

    def __str__(self) -> str:
        return self.text

    # ---- what it is --------------------------------------------------------------------------
    @property
    def protocol(self) -> str:
        """The fsspec protocol ("file" for plain paths)."""
        return _split(self.text)[0]

    @property
    def is_url(self) -> bool:
        """True for an fsspec URL (``file://`` included), False for a plain path."""
        return is_url(self.text)

    @property
    def in_process(self) -> bool:
        """True for ``memory://``: the store lives in this process, unseen by any other one."""
        return self.protocol == "memory"

    @property
    def local_path(self) -> str | None:
        """The local file-system path of a plain path or ``file://`` URL, else None."""
        proto, path = _split(self.text)
        return path if proto in _LOCAL_PROTOCOLS else None

    def absolute(self) -> Location:
        """This location with a plain local path made absolute (URLs unchanged), so that it names
        the same store from any working directory."""
        return self if self.is_url else Location(os.path.abspath(self.text), self.storage_options)

    @property
    def name(self) -> str:
        """The last component of the path (the store's folder or object prefix name)."""
        return _split(self.text)[1].rstrip("/").rstrip(os.sep).rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]

    def join(self, *parts: str) -> Location:
        """Return the location of ``parts`` below this one (same options)."""
        if not self.is_url:
            return Location(os.path.join(self.text, *parts), self.storage_options)
        return Location("/".join([self.text.rstrip("/"), *(p.strip("/") for p in parts)]), self.storage_options)

    # ---- file systems and zarr ---------------------------------------------------------------
    def filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """Return (fsspec filesystem, path inside it)."""
        path = self.local_path
        if path is not None:
            return fsspec.filesystem("file"), os.path.abspath(path)
        try:
            fs = fsspec.filesystem(self.protocol, **self.storage_options)
        except (ImportError, ValueError) as exc:
            raise FmDataError(f"expected a usable fsspec protocol, got {self.protocol!r} ({exc})", self.text) from None
        return fs, fs._strip_protocol(self.text)

    def unreachable(self, exc: BaseException) -> FmDataError:
        """Return the one-line error for a store that cannot be reached (``exc`` says why)."""
        return FmDataError(f"expected a reachable location, got {exc.__class__.__name__}: {exc}", self.text)

    def exists(self) -> bool:
        """Return True when anything (an object, a prefix with objects, a folder) is here."""
        fs, path = self.filesystem()
        fs.invalidate_cache()  # s3fs caches listings; another process may have written since
        try:
            return bool(fs.exists(path))
        except backend_errors() as exc:
            raise self.unreachable(exc) from None

    def zarr_store(self, mode: str = "r") -> zarr.abc.store.Store:
        """Return a zarr-python 3 store object; ``mode`` "r" opens it read-only."""
        read_only = mode == "r"
        path = self.local_path
        if path is not None:
            return zarr.storage.LocalStore(path, read_only=read_only)
        try:
            return zarr.storage.FsspecStore.from_url(self.text, storage_options=dict(self.storage_options),
                                                     read_only=read_only)
        except (ImportError, ValueError, TypeError) as exc:
            raise FmDataError(f"expected a usable fsspec URL, got {exc}", self.text) from None

    def open_group(self, mode: str = "r") -> zarr.Group:
        """Open the Zarr v3 group here (``mode`` "r", "r+", "w" or "w-"); FmDataError if there is none."""
        try:
            return zarr.open_group(store=self.zarr_store("r" if mode == "r" else "r+"), mode=mode, zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError) as exc:
            raise FmDataError(f"expected a Zarr v3 group, got none ({exc.__class__.__name__})", self.text) from None
        except backend_errors() as exc:  # no credentials, endpoint down, access denied
            raise FmDataError(f"expected a reachable store, got {exc.__class__.__name__}: {exc}", self.text) from None

    # ---- writing a store that appears complete or not at all ----------------------------------
    def check_writable_parent(self) -> None:
        """Raise FmDataError unless a new store can be created here.

        Local: the parent folder exists and is writable. S3-like: the bucket exists (object
        stores need no parent "folders"). Other protocols are accepted as they are.
        """
        path = self.local_path
        if path is not None:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise FmDataError("expected an existing parent folder, got none", self.text)
            if not os.access(parent, os.W_OK):
                raise FmDataError("expected a writable parent folder, got a read-only one", self.text)
            return
        if self.protocol in _S3_PROTOCOLS:
            bucket = _split(self.text)[1].split("/", 1)[0]
            fs, _ = self.filesystem()
            fs.invalidate_cache()
            try:
                ok = fs.exists(bucket)
            except PermissionError:
                ok = True  # listing may be forbidden while writing is allowed; let the write decide
            except backend_errors() as exc:
                raise self.unreachable(exc) from None
            if not ok:
                raise FmDataError(f"expected an existing bucket {bucket!r}, got none", self.text)

    def staging(self) -> Location:
        """Return where a writer builds the store that will appear here.

        Local paths: a new hidden sibling (``.<name>.partial-<id>``), renamed by :meth:`publish`.
        URLs: this location itself; completion is the ``complete`` flag, written last.
        """
        path = self.local_path
        if path is None:
            return self
        head, tail = os.path.split(os.path.abspath(path).rstrip(os.sep))
        return Location(os.path.join(head, f".{tail}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}"), self.storage_options)

    def partials(self) -> list[Location]:
        """Return the local staging siblings that earlier, unfinished writers left (oldest name first)."""
        path = self.local_path
        if path is None:
            return []
        head, tail = os.path.split(os.path.abspath(path).rstrip(os.sep))
        prefix = f".{tail}{PARTIAL_MARK}"
        try:
            names = sorted(f for f in os.listdir(head) if f.startswith(prefix))
        except OSError:
            return []
        return [Location(os.path.join(head, f), self.storage_options) for f in names]

    def publish(self, staging: Location) -> None:
        """Make the finished store at ``staging`` visible here (local: atomic rename; URL: nothing).

        The writer must already have set ``complete=True`` in ``staging``.
        """
        path = self.local_path
        if path is None:
            if staging.text != self.text:
                raise FmDataError(f"expected a URL store to be written in place, got staging {staging}", self.text)
            return
        place(str(staging), path)  # an old store here is moved aside first and deleted last

    def link_target(self) -> str | None:
        """Return where a local path that is itself a symbolic link points (its real path), else None."""
        path = self.local_path
        if path is None:
            return None
        path = path.rstrip(os.sep) or path
        return os.path.realpath(path) if os.path.islink(path) else None

    def mark_incomplete(self) -> bool:
        """Flip the ``complete`` flag of the store here to False; False when there is no FMF store."""
        try:
            root = zarr.open_group(store=self.zarr_store("r+"), mode="r+", zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError):
            return False
        if not isinstance(root.attrs.get(schema.ATTR_STORE), dict):
            return False
        set_complete(root, False)
        return True

    def remove(self) -> None:
        """Delete the store here; a partial delete never looks complete (local: renamed aside first;
        URL: the flag goes first)."""
        path = self.local_path
        if path is not None:
            discard(path)
            return
        if not self.exists():
            return
        self.mark_incomplete()
        fs, path = self.filesystem()
        fs.rm(path, recursive=True)
        fs.invalidate_cache()


def set_complete(root: zarr.Group, complete: bool) -> None:
    """Rewrite the root ``fmf_store`` attribute with ``complete`` set (one write of zarr.json)."""
    meta = dict(root.attrs.get(schema.ATTR_STORE) or {})
    if not meta:
        raise FmDataError(f"expected attribute {schema.ATTR_STORE!r} to mark, got none")
    meta["complete"] = bool(complete)
    root.attrs[schema.ATTR_STORE] = meta


LocationLike = Location | str | os.PathLike[str]
