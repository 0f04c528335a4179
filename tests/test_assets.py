"""``checkpoint=rtc-assets:<run>/<step>`` through a real HTTP server on loopback, and the restricted unpickler.

The server (``http.server`` in a thread, port 0) serves the benchmark's own jax pickle of a small policy
(``tests/data/conformance/small/policy.pkl``) at the bucket's layout and counts the requests it gets; the cache
is a temporary folder given through ``XDG_CACHE_HOME``. Nothing here compiles the Kinetix environment.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import optax
import pytest

from rtc_sweep.core import assets, safe_pickle
from rtc_sweep.core.checkpoint import load_policy
from rtc_sweep.core.policy import MODEL_PRESETS, ModelConfig
from rtc_sweep.core.run_config import RunConfig
from rtc_sweep.errors import ConfigError
from rtc_sweep.sweep.evaluate import validate

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "tests" / "data" / "conformance" / "small" / "policy.pkl"  # the benchmark's pickle, jax leaves
SMALL = MODEL_PRESETS["small"]
TINY = ModelConfig(channel_dim=16, channel_hidden_dim=32, token_hidden_dim=8, num_layers=2)
REF = "rtc-assets:bc/31"
FILE = "/rtc-assets/bc/31/policies/worlds_l_grasp_easy.pkl"


class Bucket:
    """What the loopback server serves: path -> (bytes, how), and every path it was asked for."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        self.port = 0
        self.base = ""

    def put(self, path: str, body: bytes, how: str = "whole") -> None:
        """how: whole; truncated (announces every byte, sends half); unannounced_half (no Content-Length)."""
        self.files[path] = (body, how)


def _handler(bucket: Bucket) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            bucket.requests.append(self.path)
            if self.path not in bucket.files:
                self.send_error(404)
                return
            body, how = bucket.files[self.path]
            self.send_response(200)
            if how != "unannounced_half":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if how == "whole" else body[: len(body) // 2])

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(b := Bucket()))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    b.port = int(httpd.server_address[1])
    b.base = f"http://127.0.0.1:{b.port}/rtc-assets"
    _environment(monkeypatch, tmp_path, b.base)
    yield b
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, base: str) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(assets.ENV_VAR, base)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _cached_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "cache" / "rtc_sweep").rglob("*") if p.is_file())


class _RunsCode:
    """A pickle that, loaded by plain ``pickle``, runs ``exec`` (or ``os.system``) and creates ``marker``."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self) -> tuple[Any, ...]:
        if self.how == "os.system":
            return os.system, (f"touch {self.marker}",)
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _policy_running_code(marker: Path, how: str) -> bytes:
    """The benchmark layout with one leaf replaced by code (what a tampered mirror could serve)."""
    params = safe_pickle.load_file(POLICY)
    params["out_proj"]["bias"] = _RunsCode(marker, how)
    return pickle.dumps(params)


# --- the fetch ----------------------------------------------------------------------------------------------


def test_first_download_lands_in_the_cache_and_is_reused_without_a_request(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put(FILE, POLICY.read_bytes())
    path = assets.resolve_checkpoint(REF, "grasp_easy", SMALL)
    assert path is not None
    assert bucket.requests == [FILE]
    assert Path(path) == tmp_path / "cache" / "rtc_sweep" / "assets" / f"127.0.0.1_{bucket.port}" / FILE.lstrip("/")
    assert Path(path).read_bytes() == POLICY.read_bytes()
    assert _cached_files(tmp_path) == [Path(path)]  # no temporary file left next to it

    assert assets.resolve_checkpoint(REF, "grasp_easy", SMALL) == path  # the cached file, no request
    params = load_policy(assets.fetch(REF, "grasp_easy"), SMALL, obs_dim=679, action_dim=6)  # what the app's load does
    assert params["in_proj"]["kernel"].shape == (685, 64)
    assert bucket.requests == [FILE]


def test_validate_fetches_and_checks_the_file_for_the_configured_model(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put(FILE, POLICY.read_bytes())
    validate(RunConfig(checkpoint=REF, model=SMALL))
    assert bucket.requests == [FILE]
    with pytest.raises(ConfigError, match=r"checkpoint: rtc-assets:bc/31: .*does not fit model.*model=default") as e:
        validate(RunConfig(checkpoint=REF, model=TINY))
    assert e.value.key == "checkpoint"
    assert bucket.requests == [FILE]  # a model mismatch keeps the (good) cached file
    assert len(_cached_files(tmp_path)) == 1


@pytest.mark.parametrize("how", ["truncated", "unannounced_half"])
def test_a_truncated_download_is_rejected_and_not_cached(bucket: Bucket, tmp_path: Path, how: str) -> None:
    bucket.put(FILE, POLICY.read_bytes(), how)
    expected = "truncated: 290193 of the 580387 bytes" if how == "truncated" else "not a complete policy pickle"
    with pytest.raises(ConfigError, match=expected) as e:
        assets.resolve_checkpoint(REF, "grasp_easy", SMALL)
    assert bucket.base + FILE.removeprefix("/rtc-assets") in str(e.value)
    assert "not cached" in str(e.value) or "nothing was cached" in str(e.value)
    assert _cached_files(tmp_path) == []
    bucket.put(FILE, POLICY.read_bytes())  # the next run downloads it again, whole
    assert assets.resolve_checkpoint(REF, "grasp_easy", SMALL) is not None
    assert len(bucket.requests) == 2


@pytest.mark.parametrize("how", ["exec", "os.system"])
def test_a_pickle_that_would_run_code_is_refused_and_its_code_not_run(bucket: Bucket, tmp_path: Path, how: str) -> None:
    control = tmp_path / "plain_pickle_ran_it"
    pickle.loads(_policy_running_code(control, how))  # the payload does run code when loaded by plain pickle
    assert control.exists()

    marker = tmp_path / "ran"
    bucket.put(FILE, _policy_running_code(marker, how))
    name = "builtins.exec" if how == "exec" else f"{os.name}.system"
    with pytest.raises(ConfigError, match=rf"refused to build {name}.*nothing in the file was run.*not cached"):
        assets.resolve_checkpoint(REF, "grasp_easy", SMALL)
    assert not marker.exists()
    assert _cached_files(tmp_path) == []


def test_a_cached_file_that_would_run_code_is_removed(bucket: Bucket, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    target = assets.cache_path(bucket.base + FILE.removeprefix("/rtc-assets"))
    target.parent.mkdir(parents=True)
    target.write_bytes(_policy_running_code(marker, "exec"))  # put there by hand (or by an older version)
    with pytest.raises(ConfigError, match=r"refused to build builtins\.exec.*removed from the cache"):
        assets.resolve_checkpoint(REF, "grasp_easy", SMALL)
    assert not marker.exists() and not target.exists()
    assert bucket.requests == []


def test_a_missing_file_names_the_url_and_the_variable(bucket: Bucket, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"HTTP 404") as e:
        assets.resolve_checkpoint("rtc-assets:bc/999", "grasp_easy", SMALL)
    message = str(e.value)
    assert f"{bucket.base}/bc/999/policies/worlds_l_grasp_easy.pkl" in message and assets.ENV_VAR in message
    assert _cached_files(tmp_path) == []


def _dead_base() -> str:
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/rtc-assets"


def test_no_server_names_the_url_and_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _dead_base()
    _environment(monkeypatch, tmp_path, base)
    with pytest.raises(ConfigError, match="cannot download") as e:
        validate(RunConfig(checkpoint=REF, model=SMALL))
    assert e.value.key == "checkpoint"
    assert f"{base}/bc/31/policies/worlds_l_grasp_easy.pkl" in str(e.value) and assets.ENV_VAR in str(e.value)
    assert _cached_files(tmp_path) == []


def test_the_command_line_exits_2_before_any_compile_when_offline(tmp_path: Path) -> None:
    base = _dead_base()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update({"XDG_CACHE_HOME": str(tmp_path / "cache"), assets.ENV_VAR: base, "JAX_PLATFORMS": "cpu"})
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "rtc_sweep", f"checkpoint={REF}", "model=default", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert f"invalid config: checkpoint: cannot download {base}/bc/31/policies/worlds_l_grasp_easy.pkl" in text
    assert assets.ENV_VAR in text and "evaluating" not in text
    assert time.perf_counter() - start < 120  # imports only; a compile would take minutes on CPU


def test_the_reference_must_be_run_and_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _environment(monkeypatch, tmp_path, _dead_base())
    for bad in ("rtc-assets:", "rtc-assets:../etc", "rtc-assets:bc/31?x=1"):
        with pytest.raises(ConfigError, match=r"allowed: rtc-assets:<run>/<step>"):
            assets.resolve_checkpoint(bad, "grasp_easy", SMALL)
    monkeypatch.setenv(assets.ENV_VAR, "ftp://example.org/rtc-assets")
    with pytest.raises(ConfigError, match=assets.ENV_VAR):
        assets.resolve_checkpoint(REF, "grasp_easy", SMALL)
    monkeypatch.delenv(assets.ENV_VAR)
    assert assets.asset_url(REF, "catapult") == (
        "https://storage.googleapis.com/rtc-assets/bc/31/policies/worlds_l_catapult.pkl"
    )


# --- the restricted unpickler, for every pickle the package reads -------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(eval, id="builtins.eval"),
        pytest.param(os.system, id="os.system"),
        pytest.param(Path("x"), id="a class"),
        pytest.param(np.array([1, "a"], dtype=object), id="an object array"),
        pytest.param({1, 2}, id="a set"),
    ],
)
def test_anything_but_pure_data_is_refused(obj: Any) -> None:
    with pytest.raises(safe_pickle.UnsafePickleError, match="refused to build"):
        safe_pickle.loads(pickle.dumps({"in_proj": {"kernel": obj}}))


def test_pure_data_loads() -> None:
    tree = {0: [np.float32(1.5), np.arange(3, dtype=np.int64)], "x": (None, True, 2, 3.0, "s"), "y": np.zeros((2, 0))}
    for protocol in (2, 4, 5):
        back = safe_pickle.loads(pickle.dumps(tree, protocol=protocol))
        assert back[0][0] == np.float32(1.5) and back[0][1].tolist() == [0, 1, 2] and back["x"] == tree["x"]
    assert safe_pickle.load_file(POLICY)["in_proj"]["kernel"].shape == (685, 64)  # jax 0.4 leaves, as numpy


def test_trainer_resume_files_are_pure_data_and_restore_their_types(tmp_path: Path) -> None:
    from rtc_sweep.train.io import load_pickle, save_pickle

    params = {"w": np.ones((3, 2), np.float32), "b": None}
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    state = {"opt": optimizer.init(params), "next": 4}
    path = tmp_path / "state.pkl"
    save_pickle(path, state)
    assert isinstance(safe_pickle.load_file(path), dict)  # no optax classes in the file
    back = load_pickle(path, {"opt": optimizer.init(params), "next": 0})
    assert type(back["opt"][1][0]) is type(state["opt"][1][0]) and int(back["next"]) == 4
    with pytest.raises(ValueError, match=r"has shape \(3, 2\), this run's state \(4, 2\)"):
        load_pickle(path, {"opt": optimizer.init({"w": np.ones((4, 2)), "b": None}), "next": 0})
    path.write_bytes(pickle.dumps(state))  # the old format, optax namedtuples pickled as classes
    with pytest.raises(ValueError, match=r"refused to build optax.*delete it"):
        load_pickle(path, state)


def test_collect_reads_expert_checkpoints_through_the_restricted_unpickler(tmp_path: Path) -> None:
    from rtc_sweep.train.collect import _load_expert

    marker = tmp_path / "ran"
    evil = tmp_path / "worlds_l_grasp_easy.pkl"
    evil.write_bytes(_policy_running_code(marker, "exec"))
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"builtins\.exec"):
        _load_expert(evil)
    assert not marker.exists()
    assert _load_expert(POLICY)["in_proj"]["kernel"].shape == (685, 64)
