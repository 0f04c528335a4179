"""The RTC paper's published policies in one flag: ``checkpoint=rtc-assets:<run>/<step>``.

``rtc-assets:bc/31`` with ``level=catapult`` names ``<base>/bc/31/policies/worlds_l_catapult.pkl``, where
``<base>`` is ``https://storage.googleapis.com/rtc-assets`` (the bucket the paper's code downloads from) or
the value of the environment variable ``RTC_SWEEP_ASSETS_URL`` (a mirror: any ``http(s)://`` or ``file://``
folder with the bucket's layout). These are ``model=default`` networks.

The file is downloaded once, with a progress bar, into the user cache
(``$XDG_CACHE_HOME/rtc_sweep/assets/<host>/<path>``, ``~/.cache/...`` when unset) and read from there on every
later run without a request. A download is written to a temporary file next to its place and moved there only
once it is complete (as many bytes as the server announced) and reads as a policy through the restricted
unpickler (``rtc_sweep.core.safe_pickle``): a truncated file, one that is not a policy, or one that tries to build
anything but data never enters the cache, and a cached file that fails the same check is removed. Every
failure is a ``ConfigError`` naming the URL, raised while the config is validated, before anything compiles.
"""

from __future__ import annotations

import http.client
import logging
import os
import pickle
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from rtc_sweep.core import safe_pickle
from rtc_sweep.errors import ConfigError

if TYPE_CHECKING:
    from rtc_sweep.core.policy import ModelConfig

log = logging.getLogger(__name__)

PREFIX = "rtc-assets:"
ENV_VAR = "RTC_SWEEP_ASSETS_URL"
DEFAULT_BASE_URL = "https://storage.googleapis.com/rtc-assets"
TIMEOUT_S = 60.0  # per socket operation (connect, each read), not for the whole download
_CHUNK = 1 << 20
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def is_asset_ref(value: object) -> bool:
    """Whether a checkpoint value names a published policy (``rtc-assets:<run>/<step>``)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def base_url(key: str = "checkpoint") -> str:
    base = (os.environ.get(ENV_VAR) or DEFAULT_BASE_URL).rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https", "file"):
        raise ConfigError(
            key, f"${ENV_VAR}={base!r}; allowed: an http://, https:// or file:// URL of the bucket's root"
        )
    return base


def asset_url(ref: str, level: str, key: str = "checkpoint") -> str:
    """``rtc-assets:<run>/<step>`` -> ``<base>/<run>/<step>/policies/worlds_l_<level>.pkl``."""
    rest = ref[len(PREFIX) :] if is_asset_ref(ref) else ref
    segments = rest.strip("/").split("/")
    if not rest.strip("/") or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise ConfigError(
            key,
            f"{ref!r}; allowed: {PREFIX}<run>/<step> such as {PREFIX}bc/31 (letters, digits, '_', '-', '.' per part)",
        )
    if not _SEGMENT.fullmatch(level):
        raise ConfigError(key, f"{ref}: level {level!r} has no published policy name (worlds_l_<level>.pkl)")
    return f"{base_url(key)}/{'/'.join(segments)}/policies/worlds_l_{level}.pkl"


def cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"  # the XDG rule: absolute only
    return root / "rtc_sweep" / "assets"


def cache_path(url: str) -> Path:
    """Where the file at ``url`` is cached: ``<cache_root>/<host[_port]>/<path>`` (one tree per mirror)."""
    parts = urllib.parse.urlsplit(url)
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", parts.netloc) or parts.scheme or "local"
    segments = [s for s in urllib.parse.unquote(parts.path).split("/") if s not in ("", ".", "..")]
    return cache_root().joinpath(host, *(re.sub(r"[^A-Za-z0-9_.-]", "_", s) for s in segments))


def _where_from() -> str:
    now = os.environ.get(ENV_VAR) or DEFAULT_BASE_URL
    return (
        f"the rtc-assets policies are downloaded from ${ENV_VAR} (now {now}); point it at a reachable mirror of "
        "the bucket (http(s):// or file://), or give checkpoint=<path to a policy .pkl>"
    )


def _problem(path: Path) -> tuple[str, bool] | None:
    """What is wrong with a downloaded file, and whether it was refused as unsafe; None when it is a policy."""
    from rtc_sweep.core.checkpoint import infer_dims

    try:
        tree = safe_pickle.load_file(path)
    except safe_pickle.UnsafePickleError as e:
        return str(e), True
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        return f"not a complete policy pickle ({type(e).__name__}: {e})", False
    try:
        infer_dims(tree)
    except (KeyError, TypeError, ValueError, IndexError):
        return "not a policy in the benchmark's layout (no in_proj/out_proj kernels)", False
    return None


def _download(url: str, target: Path, key: str, progress: bool | None) -> None:
    from rtc_sweep.io import atomic_path

    log.info("downloading %s -> %s", url, target)
    with atomic_path(target) as tmp:  # a temporary file next to the target; moved into place only on success
        try:
            response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as e:
            raise ConfigError(key, f"cannot download {url}: HTTP {e.code} {e.reason}; {_where_from()}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise ConfigError(key, f"cannot download {url}: {reason}; {_where_from()}") from None
        with response:
            announced = response.headers.get("Content-Length")
            expected = int(announced) if announced and announced.isdigit() else None
            got = 0
            try:
                with (
                    tmp.open("wb") as out,
                    tqdm(
                        total=expected,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=f"download {target.name}",
                        disable=None if progress is None else not progress,  # None: only on a terminal
                    ) as bar,
                ):
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
            except (http.client.IncompleteRead, OSError) as e:
                raise ConfigError(
                    key, f"download of {url} broke off after {got} bytes ({e}); nothing was cached, run again"
                ) from None
        if expected is not None and got != expected:
            raise ConfigError(
                key,
                f"download of {url} is truncated: {got} of the {expected} bytes announced arrived; nothing was "
                "cached, run again",
            )
        problem = _problem(tmp)
        if problem is not None:
            what, refused = problem
            more = "" if refused else f" (a truncated download, or not a policy file?); {_where_from()}"
            raise ConfigError(key, f"{url}: {what}; not cached{more}")


def cached_file(ref: str, level: str, key: str = "checkpoint") -> Path:
    """Where ``fetch`` keeps ``rtc-assets:<run>/<step>`` for ``level`` (no request, no check: after ``fetch``)."""
    return cache_path(asset_url(ref, level, key))


def fetch(ref: str, level: str, key: str = "checkpoint", progress: bool | None = None) -> Path:
    """The cached policy file for ``rtc-assets:<run>/<step>`` and ``level``, downloaded first if not cached yet.

    ``progress``: show the download's progress bar (None: only when stderr is a terminal).
    """
    url = asset_url(ref, level, key)
    target = cached_file(ref, level, key)
    if target.is_file():
        problem = _problem(target)
        if problem is not None:
            target.unlink(missing_ok=True)
            raise ConfigError(
                key,
                f"{ref}: the cached copy of {url} ({target}): {problem[0]}; it was removed from the cache, the next "
                "run downloads it again",
            )
        log.debug("%s: cached at %s", url, target)
        return target
    _download(url, target, key, progress)
    return target


def resolve_checkpoint(
    value: str | None,
    level: str,
    model: ModelConfig | None = None,
    key: str = "checkpoint",
    progress: bool | None = None,
) -> str | None:
    """A checkpoint value with ``rtc-assets:<run>/<step>`` replaced by its cached file; others pass unchanged.

    The file is fetched if needed and, with ``model`` given, checked to load for it (the published policies are
    ``model=default`` networks; a mismatch says so). Every problem raises ``ConfigError(key, ...)``.
    """
    if not is_asset_ref(value):
        return value
    assert value is not None
    path = fetch(value, level, key, progress)
    if model is not None:
        import dataclasses

        from rtc_sweep.core.checkpoint import load_policy
        from rtc_sweep.core.policy import MODEL_PRESETS

        try:
            load_policy(path, model)
        except ConfigError as e:
            plain = dataclasses.replace(model, simulated_delay=None)
            hint = "" if plain == MODEL_PRESETS["default"] else "; the rtc-assets policies are model=default networks"
            raise ConfigError(key, f"{value}: {e.message}{hint}") from e
    return str(path)
