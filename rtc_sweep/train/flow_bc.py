"""Flow-matching behaviour cloning of action chunks: the trainer both training routes share.

Data is one env-major stream of transitions (``obs [N, O]``, ``action [N, A]``, ``done [N]``), each
environment's (or kept episode's) steps contiguous, as the benchmark rearranges its datasets (§4.2). A
sample is ``(obs[i], action[i : i + H])`` with every action from the first ``done`` in the window on
zeroed, exactly the benchmark's masking (which zeroes the episode's last action too). The loss is
``rtc_sweep.core.policy.flow_loss``: plain BC, or training-time RTC when ``model.simulated_delay`` is set.

Optimiser (§4.3): ``clip_by_global_norm`` then AdamW with a linear warm-up to a constant learning rate,
weight decay on every parameter. ``optim.final_lr_fraction`` < 1 (task=flow only) replaces the constant with a
cosine decay from the peak to that fraction of it at the run's last step: a constant rate leaves the weights
moving, so the solve rate of consecutive epochs can differ by more than their loss suggests.

Every start writes ``<run_dir>/config.json``: the settings that decide the weights (data, model, optimiser,
schedule, seed). A run resumed with different settings says so in a warning naming each changed key, and the
record lists the change under ``resumed_with_changes`` with the epoch it took effect, since the epochs already
done ran under the old ones (a longer ``num_epochs`` stretches a cosine schedule mid-run, for example).

``val_fraction`` > 0 holds out that share of the episodes (whole episodes, drawn with ``seed``, never trained on)
and every epoch's ``stats.json`` gets ``val_loss``: the loss on the same held-out windows, flow times and noise
each epoch, so consecutive epochs compare and a training loss that falls while ``val_loss`` rises says the
network memorises its episodes rather than lacking steps.

``normalize_obs`` trains on standardised observations (each dimension's mean removed and divided by its std, the std
floored at ``OBS_SCALE_FLOOR`` so that a dimension that barely moves is not blown up) and folds the standardisation
into the network's input projection when it writes a checkpoint: ``in_proj`` is linear in the observation, so
``W (o - m) / s + b = (W / s) o + (b - W m / s)`` and the checkpoint keeps the benchmark's layout and reads raw
observations. The optimiser is not invariant to that change of coordinates: on raw observations each dimension's
offset and spread set how fast the network learns to use it; standardised, every dimension starts alike.
``<run_dir>/obs_norm.npz`` holds the mean and scale; ``train_state.pkl`` holds the unfolded weights (a resume
recomputes the same statistics). Measured on the lander (MODEL_CARD.md, session 24): a lower loss at every epoch
(0.061 against 0.070 after 8) and a tenth less first-action error, but the same solve rate.

``obs_gain`` multiplies the standardised observation (the scale written and folded is ``std / obs_gain``) and
divides a fresh network's ``in_proj`` observation rows by it (``initial_params``), so training starts from the same
function; Adam's steps are of a size relative to each weight, so the input weights then move ``obs_gain`` times
faster for the same rate. Demonstrations of one feedback controller vary along one nominal trajectory far more than
between episodes at one tick, and the controller reacts to those small deviations: a plain MLP regressing the
lander's first action (MSE, 6,000 steps) has a held-out error of 0.028 / 0.040 / 0.041 over ticks 0-7 / 8-15 /
16-23 on standardised observations and 0.0085 / 0.018 / 0.024 on ten times those (0.0095 / 0.020 / 0.026 with the
first layer's start divided by ten, as here). Scaling by each dimension's spread between episodes at one tick
instead helped that MLP less (0.010 / 0.020 / 0.025) and the flow network not at all (MODEL_CARD.md, session 25).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.core import network
from rtc_sweep.core.checkpoint import load_policy, save_policy
from rtc_sweep.core.policy import MODEL_PRESETS, Params, flow_loss
from rtc_sweep.train.io import completed_steps, load_pickle, record_settings, save_npz, save_pickle, write_json


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 3e-4  # peak (constant after warm-up) AdamW learning rate
    grad_norm_clip: float = 10.0  # global gradient-norm clip applied before AdamW
    weight_decay: float = 1e-2  # AdamW decoupled weight decay, on all params (biases included, as the benchmark)
    warmup_steps: int = 1000  # linear warm-up from 0 to learning_rate, in gradient steps
    batch_size: int = 512  # samples (obs, H-action chunk) per gradient step
    final_lr_fraction: float = 1.0  # task=flow: 1 keeps the rate constant; < 1 decays it (cosine) to this fraction


def learning_rate_schedule(cfg: OptimConfig, total_steps: int | None = None) -> optax.Schedule:
    """Linear warm-up to ``learning_rate``; then constant, or (``final_lr_fraction`` < 1 and ``total_steps``
    given) a cosine decay reaching ``final_lr_fraction * learning_rate`` at step ``total_steps``."""
    warmup = max(cfg.warmup_steps, 1)
    if not 0.0 < cfg.final_lr_fraction <= 1.0:
        raise ValueError(f"task.optim.final_lr_fraction: {cfg.final_lr_fraction} is not in (0, 1]")
    if cfg.final_lr_fraction == 1.0:
        return optax.warmup_constant_schedule(0.0, cfg.learning_rate, warmup)
    if total_steps is None:
        raise ValueError(
            "task.optim.final_lr_fraction: a decaying rate is for task=flow (a run of known length); "
            "this task keeps the rate constant, so leave it at 1.0"
        )
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, warmup, max(total_steps, warmup + 1), cfg.learning_rate * cfg.final_lr_fraction
    )


def make_optimizer(cfg: OptimConfig, schedule: optax.Schedule | None = None) -> optax.GradientTransformation:
    """``schedule``: the rate per step (default: ``learning_rate_schedule(cfg)``, warm-up then constant)."""
    schedule = learning_rate_schedule(cfg) if schedule is None else schedule
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_norm_clip),
        optax.adamw(schedule, weight_decay=cfg.weight_decay),
    )


class Stream(NamedTuple):
    """An env-major transition stream on the host or device."""

    obs: jax.Array | np.ndarray  # [N, O] float16 or float32
    action: jax.Array | np.ndarray  # [N, A] float32
    done: jax.Array | np.ndarray  # [N] bool


def stream_capacity(n: int) -> int:
    """The padded length a growing stream of ``n`` transitions is stored at: the next power of two, at least 4096,
    so that ``make_fit``'s program (traced ``n``) recompiles only when the data doubles."""
    return max(4096, 1 << (n - 1).bit_length())


def padded_stream(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[Stream, int]:
    """The ``(obs, action, done)`` parts joined into one device stream padded to ``stream_capacity``, and the number
    of real transitions ``n`` (the padding is ``done``, so no window reaches into it unmasked)."""
    n = int(sum(done.shape[0] for _, _, done in parts))
    cap = stream_capacity(n)
    obs_dim, action_dim = parts[0][0].shape[1], parts[0][1].shape[1]
    obs = np.zeros((cap, obs_dim), np.result_type(np.float16, *(p[0].dtype for p in parts)))  # float32 kept as such
    act = np.zeros((cap, action_dim), np.float32)
    done = np.ones(cap, bool)
    obs[:n] = np.concatenate([p[0] for p in parts])
    act[:n] = np.concatenate([p[1] for p in parts])
    done[:n] = np.concatenate([p[2] for p in parts])
    return Stream(jnp.asarray(obs), jnp.asarray(act), jnp.asarray(done)), n


def chunk_at(stream: Stream, start: jax.Array, H: int) -> tuple[jax.Array, jax.Array]:
    """obs [B, O] float32 and masked action chunks [B, H, A] for window starts ``start`` [B].

    Positions at or after the window's first ``done`` are zeroed (the benchmark's masking):

        done:    0 0 1 0 0 0 0 0
        kept:    1 1 0 0 0 0 0 0
    """
    idx = start[:, None] + jnp.arange(H)[None, :]  # [B, H]
    actions = stream.action[idx]  # [B, H, A]
    done = stream.done[idx]  # [B, H]
    kept = jnp.cumsum(done, axis=1) == 0
    return stream.obs[start].astype(jnp.float32), jnp.where(kept[:, :, None], actions, 0.0)


class TrainState(NamedTuple):
    params: Params
    opt_state: Any
    step: jax.Array  # [] int32, gradient steps taken


def init_train_state(params: Params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(params, optimizer.init(params), jnp.int32(0))


def train_state_like(
    obs_dim: int, action_dim: int, model: network.ModelSpec, optimizer: optax.GradientTransformation
) -> TrainState:
    """The structure and shapes of a fresh train state (no arrays made): what ``io.load_pickle`` restores into."""
    return jax.eval_shape(
        lambda: init_train_state(network.init(model, jax.random.key(0), obs_dim, action_dim), optimizer)
    )


def position_weights(H: int, decay: float) -> jax.Array | None:
    """[H] weights ``decay ** i`` scaled to mean 1, or None for decay 1 (the benchmark's equal weights)."""
    if decay == 1.0:
        return None
    w = np.float32(decay) ** np.arange(H, dtype=np.float32)
    return jnp.asarray(w * (H / w.sum()))


def make_fit(
    model: network.ModelSpec,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    num_steps: int,
    position_decay: float = 1.0,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Build jitted ``fit(state, key, stream, n=None) -> (state, metrics)``: ``num_steps`` gradient steps on random
    windows.

    Windows start in ``[0, n - H]``: ``n`` is the stream's length, or, given (traced), the length of the data in a
    stream padded past it, so that data that grows (DAgger) recompiles only when its padded size grows.
    ``metrics`` hold per-step ``loss`` and ``grad_norm`` arrays ([num_steps]). ``position_decay`` < 1 weights
    chunk position i by ``position_decay ** i`` (``position_weights``).
    """
    H = model.action_chunk_size
    weight = position_weights(H, position_decay)

    def loss_fn(params: Params, key: jax.Array, obs: jax.Array, actions: jax.Array) -> jax.Array:
        return flow_loss(params, model, key, obs, actions, position_weight=weight)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def fit(
        state: TrainState, key: jax.Array, stream: Stream, n: jax.Array | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        length: int | jax.Array = stream.action.shape[0] if n is None else n
        if n is None:
            assert length >= H, f"a stream of {length} transitions holds no {H}-action window"

        def step(state: TrainState, k: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
            k_idx, k_loss = jax.random.split(k)
            start = jax.random.randint(k_idx, (batch_size,), 0, length - H + 1)
            obs, actions = chunk_at(stream, start, H)
            loss, grads = jax.value_and_grad(loss_fn)(state.params, k_loss, obs, actions)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            return TrainState(params, opt_state, state.step + 1), {"loss": loss, "grad_norm": optax.tree.norm(grads)}

        return jax.lax.scan(step, state, jax.random.split(key, num_steps))

    return fit


# -------------------------------------------------------------------------------------------------------------
# Route 1: BC on a collected dataset, epoch by epoch (the benchmark's train_flow, one level)


@dataclasses.dataclass(frozen=True)
class FlowBCConfig:
    data_path: str  # the dataset, <run>/data/<level>.npz (benchmark keys), or a glob of several
    run_dir: str  # checkpoints go to <run_dir>/<epoch>/policies/worlds_l_<level>.pkl
    level: str = "grasp_easy"
    model: network.ModelSpec = MODEL_PRESETS["small"]  # the flow network (the app: model=<option>)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    num_epochs: int = 32  # passes over the data (an epoch = floor((N - H + 1) / batch) gradient steps)
    seed: int = 0
    load_dir: str | None = None  # initialise from <load_dir>/policies/worlds_l_<level>.pkl (fresh optimiser)
    max_steps_per_epoch: int | None = None  # cap on gradient steps per epoch (quick runs and tests)
    val_fraction: float = 0.0  # share of whole episodes held out; each epoch then logs their loss (val_loss)
    val_windows: int = 4096  # held-out windows the validation loss averages over (evenly spaced; fewer if short)
    normalize_obs: bool = False  # train on standardised observations, folded into in_proj in every checkpoint
    obs_gain: float = 1.0  # normalize_obs multiplies the standardised observation by it and a fresh network's
    #                        in_proj observation rows are divided by it: the same function at the start, input
    #                        weights that Adam moves obs_gain times faster relative to their size
    position_decay: float = 1.0  # in (0, 1]: the loss weights chunk position i by position_decay ** i (mean 1);
    #                               1: equal weights (the benchmark's)


def run_settings(cfg: FlowBCConfig, steps_per_epoch: int) -> dict[str, Any]:
    """What decides a run's weights, flat (``optim.<key>``), as ``<run_dir>/config.json`` records it."""
    held_out = {"val_fraction": cfg.val_fraction} if cfg.val_fraction > 0 else {}  # absent: nothing held out
    normalized: dict[str, Any] = {"normalize_obs": True} if cfg.normalize_obs else {}  # absent: raw observations
    if cfg.normalize_obs and cfg.obs_gain != 1.0:
        normalized["obs_gain"] = cfg.obs_gain  # absent: 1
    if cfg.position_decay != 1.0:
        normalized["position_decay"] = cfg.position_decay  # absent: 1
    return {
        **held_out,
        **normalized,
        "data_path": cfg.data_path,
        "level": cfg.level,
        "model": repr(cfg.model),
        **{f"optim.{k}": v for k, v in dataclasses.asdict(cfg.optim).items()},
        "num_epochs": cfg.num_epochs,
        "steps_per_epoch": steps_per_epoch,
        "seed": cfg.seed,
        "load_dir": cfg.load_dir,
    }


def policy_file(level: str) -> str:
    return f"worlds_l_{ke.level_name(level)}.pkl"


def load_stream(pattern: str | Path) -> Stream:
    """Datasets as one env-major stream [N, ...] on the host.

    ``pattern`` is a file or a glob (files concatenated in sorted order). A benchmark dataset is time-major
    [T, E, ...] and is rearranged env-major; self-imitation data is already a stream.
    """
    paths = sorted(glob.glob(str(pattern))) if glob.has_magic(str(pattern)) else [str(pattern)]
    if not paths:
        raise FileNotFoundError(f"no dataset matches {pattern}")
    parts = []
    for path in paths:
        with np.load(path) as data:
            obs, action, done = data["obs"], data["action"], data["done"]
        if obs.ndim == 3:  # time-major [T, E, ...] -> env-major
            obs, action, done = (np.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:]) for x in (obs, action, done))
        parts.append((obs, action.astype(np.float32), done.astype(bool)))
    return Stream(*(np.concatenate(xs) for xs in zip(*parts, strict=True)))


def split_episodes(stream: Stream, fraction: float, seed: int) -> tuple[Stream, Stream | None]:
    """(train, held out): ``fraction`` of the stream's whole episodes, drawn with ``seed``, moved to the second.

    An episode ends at its ``done``; steps after the stream's last ``done`` (an unfinished episode) stay in
    training. ``fraction`` 0 holds nothing out (``None``). Raises ``ValueError`` naming ``task.val_fraction`` when
    the share leaves either side without an episode.
    """
    if fraction <= 0.0:
        return stream, None
    done = np.asarray(stream.done, bool)
    episode = np.concatenate([[0], np.cumsum(done)[:-1]])  # the episode index of every step
    n_done = int(done.sum())
    n_val = round(fraction * n_done)
    if not 1 <= n_val < n_done:
        raise ValueError(
            f"task.val_fraction: {fraction} of {n_done} finished episodes holds out {n_val}; allowed: a share that "
            "leaves at least one episode on each side"
        )
    held = np.zeros(n_done + 1, bool)
    held[np.random.default_rng(seed).choice(n_done, n_val, replace=False)] = True
    val_rows = held[episode]
    train, val = (Stream(*(np.asarray(x)[rows] for x in stream)) for rows in (~val_rows, val_rows))
    return train, val


OBS_SCALE_FLOOR = 0.1  # normalize_obs divides by max(std, this)


def obs_normalizer(obs: np.ndarray | jax.Array, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(mean [O], scale [O]) float32 of an observation stream [N, O]: per-dimension mean and std (float64, in
    blocks, so a float16 stream is not copied whole), the std floored at ``OBS_SCALE_FLOOR``."""
    total, sq = np.zeros(obs.shape[1]), np.zeros(obs.shape[1])
    for i in range(0, obs.shape[0], block):
        x = np.nan_to_num(np.asarray(obs[i : i + block], np.float64), posinf=0.0, neginf=0.0)
        total += x.sum(0)
        sq += (x**2).sum(0)
    mean = total / obs.shape[0]
    std = np.sqrt(np.maximum(sq / obs.shape[0] - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, OBS_SCALE_FLOOR).astype(np.float32)


def _in_proj(params: Params, obs_dim: int, action_dim: int) -> tuple[np.ndarray, np.ndarray]:
    layer = params.get("in_proj") if isinstance(params, dict) else None
    kernel = layer.get("kernel") if isinstance(layer, dict) else None
    bias = layer.get("bias") if isinstance(layer, dict) else None
    if kernel is None or bias is None or tuple(np.shape(kernel))[:1] != (action_dim + obs_dim,):
        raise ValueError(
            "task.normalize_obs: folding the standardisation needs a network whose in_proj (kernel and bias) reads "
            f"[x_t, obs] ({action_dim} + {obs_dim} rows), as the benchmark's MixerPolicy; allowed: false for this model"
        )
    return np.asarray(kernel, np.float32), np.asarray(bias, np.float32)


def fold_obs_norm(params: Params, mean: np.ndarray, scale: np.ndarray, action_dim: int) -> Params:
    """Weights trained on ``(obs - mean) / scale`` as weights that read the raw observation (same outputs)."""
    kernel, bias = _in_proj(params, mean.shape[0], action_dim)
    w = kernel[action_dim:] / scale[:, None]
    folded = {"kernel": np.concatenate([kernel[:action_dim], w]), "bias": bias - mean @ w}
    return {**params, "in_proj": {**params["in_proj"], **folded}}


def unfold_obs_norm(params: Params, mean: np.ndarray, scale: np.ndarray, action_dim: int) -> Params:
    """The inverse of ``fold_obs_norm``: a raw-observation checkpoint as weights on ``(obs - mean) / scale``."""
    kernel, bias = _in_proj(params, mean.shape[0], action_dim)
    w = kernel[action_dim:]
    unfolded = {"kernel": np.concatenate([kernel[:action_dim], w * scale[:, None]]), "bias": bias + mean @ w}
    return {**params, "in_proj": {**params["in_proj"], **jax.tree.map(jnp.asarray, unfolded)}}


def initial_params(cfg: FlowBCConfig, key: jax.Array, obs_dim: int, action_dim: int) -> Params:
    """A fresh network for ``cfg``: ``network.init``'s, its in_proj observation rows divided by ``obs_gain`` when
    ``normalize_obs`` (so on observations ``obs_gain`` times larger it computes what gain 1's computes)."""
    params = network.init(cfg.model, key, obs_dim, action_dim)
    if not cfg.normalize_obs or cfg.obs_gain == 1.0:
        return params
    gain = np.full(obs_dim, cfg.obs_gain, np.float32)
    return jax.tree.map(jnp.asarray, fold_obs_norm(params, np.zeros(obs_dim, np.float32), gain, action_dim))


def _normalized(stream: Stream, mean: np.ndarray, scale: np.ndarray, block: int = 65536) -> Stream:
    out = np.empty(stream.obs.shape, np.float32)
    for i in range(0, out.shape[0], block):
        x = np.nan_to_num(np.asarray(stream.obs[i : i + block], np.float32), posinf=0.0, neginf=0.0)
        out[i : i + block] = (x - mean) / scale
    return stream._replace(obs=out)


def make_val_loss(
    model: network.ModelSpec, stream: Stream, windows: int, batch_size: int, position_decay: float = 1.0
) -> Callable[..., float]:
    """``val_loss(params) -> float``: the flow loss (training's position weights) on up to ``windows`` evenly
    spaced held-out windows, in batches of ``batch_size``, with one fixed key (the same flow times and noise on
    every call)."""
    H = model.action_chunk_size
    weight = position_weights(H, position_decay)
    count = stream.action.shape[0] - H + 1
    if count < 1:
        raise ValueError(
            f"task.val_fraction: the held-out episodes hold {stream.action.shape[0]} steps, fewer than one "
            f"{H}-action window"
        )
    size = min(batch_size, count, windows)
    batches = min(windows, count) // size  # >= 1: size is at most min(windows, count)
    starts = np.linspace(0, count - 1, batches * size).round().astype(np.int32).reshape(batches, size)
    device = Stream(*(jnp.asarray(x) for x in stream))
    keys = jax.random.split(jax.random.key(7), batches)

    @jax.jit
    def mean_loss(params: Params) -> jax.Array:
        def one(args: tuple[jax.Array, jax.Array]) -> jax.Array:
            start, k = args
            obs, actions = chunk_at(device, start, H)
            return flow_loss(params, model, k, obs, actions, position_weight=weight)

        return jax.lax.map(one, (jnp.asarray(starts), keys)).mean()

    return lambda params: float(mean_loss(params))


def train_flow(cfg: FlowBCConfig, progress: bool = True) -> list[dict[str, float]]:
    """Train (or resume) epoch by epoch; returns the per-epoch stats (mean loss, grad norm, wall time)."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stream, held_out = split_episodes(load_stream(cfg.data_path), cfg.val_fraction, cfg.seed)
    n, obs_dim = stream.obs.shape
    action_dim = stream.action.shape[1]
    norm: tuple[np.ndarray, np.ndarray] | None = None
    if cfg.normalize_obs:
        mean, scale = obs_normalizer(stream.obs)
        norm = mean, scale / np.float32(cfg.obs_gain)
        save_npz(run_dir / "obs_norm.npz", {"mean": norm[0], "scale": norm[1]})
        stream = _normalized(stream, *norm)
        held_out = None if held_out is None else _normalized(held_out, *norm)
    H = cfg.model.action_chunk_size
    steps = (n - H + 1) // cfg.optim.batch_size
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    if steps < 1:
        raise ValueError(f"{cfg.data_path}: {n} transitions are fewer than one batch of {cfg.optim.batch_size}")

    schedule = learning_rate_schedule(cfg.optim, total_steps=steps * cfg.num_epochs)
    optimizer = make_optimizer(cfg.optim, schedule)
    fit = make_fit(cfg.model, optimizer, cfg.optim.batch_size, steps, cfg.position_decay)
    key = jax.random.key(cfg.seed)
    done_epochs = completed_steps(run_dir)
    name = policy_file(cfg.level)
    resume = run_dir / "train_state.pkl"
    if done_epochs and resume.is_file():
        state = load_pickle(resume, train_state_like(obs_dim, action_dim, cfg.model, optimizer))
        start_epoch = done_epochs[-1] + 1
    else:
        if cfg.load_dir is not None:
            params = load_policy(Path(cfg.load_dir) / "policies" / name, cfg.model, obs_dim, action_dim)
            if norm is not None:
                params = unfold_obs_norm(params, *norm, action_dim)
        else:
            params = initial_params(cfg, jax.random.fold_in(key, 1), obs_dim, action_dim)
        if norm is not None:
            _in_proj(params, obs_dim, action_dim)  # a model it cannot fold into: the error now, before any compile
        state = init_train_state(params, optimizer)
        start_epoch = 0
    record_settings(
        run_dir, run_settings(cfg, steps), resuming=start_epoch > 0, at=("epoch", start_epoch), what="flow BC"
    )
    device_stream = Stream(*(jnp.asarray(x) for x in stream))
    val_loss = (
        None
        if held_out is None
        else make_val_loss(cfg.model, held_out, cfg.val_windows, cfg.optim.batch_size, cfg.position_decay)
    )
    history = [json.loads((run_dir / str(e) / "stats.json").read_text()) for e in done_epochs if e < start_epoch]
    bar = tqdm(range(start_epoch, cfg.num_epochs), desc="flow BC", unit="epoch", disable=not progress)
    for epoch in bar:
        t0 = time.time()
        state, metrics = fit(state, jax.random.fold_in(key, 1000 + epoch), device_stream)
        loss = np.asarray(metrics["loss"])
        stats = {
            "epoch": epoch,
            "loss": float(loss.mean()),
            "loss_first": float(loss[: max(1, len(loss) // 10)].mean()),
            "loss_last": float(loss[-max(1, len(loss) // 10) :].mean()),
            "grad_norm": float(np.asarray(metrics["grad_norm"]).mean()),
            "grad_steps": int(state.step),
            "learning_rate": float(schedule(state.step)),
            "wall_s": time.time() - t0,
        }
        if val_loss is not None:
            stats["val_loss"] = val_loss(state.params)
        if not math.isfinite(stats["loss"]):
            raise FloatingPointError(f"flow BC: non-finite loss at epoch {epoch}")
        params = state.params if norm is None else fold_obs_norm(state.params, *norm, action_dim)
        save_policy(run_dir / str(epoch) / "policies" / name, params)
        save_pickle(resume, state)
        write_json(run_dir / str(epoch) / "stats.json", stats)
        history.append(stats)
        bar.set_postfix(loss=f"{stats['loss']:.4f}")
    return history
