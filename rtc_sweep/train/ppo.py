"""Expert PPO, as the benchmark trains its experts (route 1; reference-benchmark.md §1.4, §2).

purejaxrl style: ``make_update(cfg, env, level)`` builds one pure, jitted block of ``log_interval`` updates
over all seeds; the Python loop outside writes stats and checkpoints. Seeds are vmapped and sharded over
the host devices (the benchmark shards seeds too, so ``num_seeds`` must be a multiple of the device count).

Observation (2722 = 4 × 679 + 6): the last 4 frames, oldest first, then the last commanded (pre-noise)
action; on reset the first frame is repeated and the action is zero (ObsHistory(4) + ActionHistory inside
the auto-reset). Reward: the benchmark's DenseRewardWrapper over the sparse reward,

    p = 0 if r > 0 else distance / 6 / T,     r' = r - p  (non-terminal),   r' = r - (T - t)·p  (terminal),

with T = 256 and t the number of steps the episode has taken including this one.

Layout (the benchmark's): ``<run_dir>/seed_<s>/<u>/stats/worlds_l_<level>.json`` (means over the block of
updates that starts at ``u``) and ``.../policies/worlds_l_<level>.pkl`` (``{'actor': {'layers': {0, 2, 4}},
'critic': {...}, 'logstd'}``, numpy leaves), plus ``<run_dir>/ppo_state.pkl`` for resuming.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.core.checkpoint import save_policy
from rtc_sweep.train.io import load_pickle, record_settings, save_pickle, write_json
from rtc_sweep.train.rollout import host_mesh

NUM_FRAMES = 4
LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0
MEAN_MAX_MAGNITUDE = 5.0
MAX_ACTION = 0.99999
NUM_MOTORS = 4  # action dims squashed with tanh; the rest (thrusters) with a sigmoid


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    run_dir: str  # <logs-expert>/<run>: seed_<s>/<update>/{stats,policies}/worlds_l_<level>.{json,pkl}
    level: str = "grasp_easy"
    seed: int = 0  # the whole run is a function of it (the benchmark's experts: seed 32)
    num_seeds: int = 2  # independent experts, a multiple of the device count (the benchmark: 8, on GPUs)
    num_updates: int = 1000
    log_interval: int = 20  # updates per jitted block; stats and checkpoints after each block
    num_steps: int = 256  # rollout length per update
    num_envs: int = 256  # environments per seed
    num_minibatches: int = 8
    num_epochs: int = 4
    gamma: float = 0.995
    gae_lambda: float = 0.9
    clip_eps: float = 0.2
    v_loss_coef: float = 0.5
    rpo_alpha: float = 0.3  # the mean is perturbed by U(-α, α) at loss time
    layer_width: int = 256
    grad_norm_clip: float = 1.0
    lr: float = 3e-4
    action_noise_std: float = 0.1  # the env's action noise


# -------------------------------------------------------------------------------------------------------------
# Network: separate actor and critic MLPs, params in the benchmark's pure-dict layout


def _orthogonal(key: jax.Array, n_in: int, n_out: int, gain: float) -> dict[str, jax.Array]:
    return {
        "kernel": jax.nn.initializers.orthogonal(gain)(key, (n_in, n_out), jnp.float32),
        "bias": jnp.zeros((n_out,), jnp.float32),
    }


def init_agent(key: jax.Array, obs_dim: int, action_dim: int, width: int) -> dict[str, Any]:
    ka, kc = jax.random.split(key)
    ka0, ka2, ka4 = jax.random.split(ka, 3)
    kc0, kc2, kc4 = jax.random.split(kc, 3)
    s2 = math.sqrt(2.0)
    return {
        "actor": {
            "layers": {
                0: _orthogonal(ka0, obs_dim, width, s2),
                2: _orthogonal(ka2, width, width, s2),
                4: _orthogonal(ka4, width, action_dim, 0.01),
            }
        },
        "critic": {
            "layers": {
                0: _orthogonal(kc0, obs_dim, width, s2),
                2: _orthogonal(kc2, width, width, s2),
                4: _orthogonal(kc4, width, 1, 1.0),
            }
        },
        "logstd": jnp.zeros((action_dim,), jnp.float32),
    }


def _mlp(p: dict[int, dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    x = jnp.tanh(x @ p[0]["kernel"] + p[0]["bias"])
    x = jnp.tanh(x @ p[2]["kernel"] + p[2]["bias"])
    return x @ p[4]["kernel"] + p[4]["bias"]


def actor_dist(params: dict[str, Any], obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pre-squash Gaussian (mean, std), [..., A] each."""
    mean = jnp.clip(_mlp(params["actor"]["layers"], obs), -MEAN_MAX_MAGNITUDE, MEAN_MAX_MAGNITUDE)
    std = jnp.exp(jnp.clip(params["logstd"], LOG_STD_MIN, LOG_STD_MAX))
    return mean, jnp.broadcast_to(std, mean.shape)


def value(params: dict[str, Any], obs: jax.Array) -> jax.Array:
    return _mlp(params["critic"]["layers"], obs)[..., 0]


def squash(u: jax.Array) -> jax.Array:
    """tanh on the motor dims, sigmoid on the thruster dims."""
    motor = jnp.arange(u.shape[-1]) < NUM_MOTORS
    return jnp.where(motor, jnp.tanh(u), jax.nn.sigmoid(u))


def log_prob(mean: jax.Array, std: jax.Array, action: jax.Array) -> jax.Array:
    """log-density of the squashed Gaussian at ``action`` [..., A] (summed over A)."""
    motor = jnp.arange(action.shape[-1]) < NUM_MOTORS
    u = jnp.where(motor, jnp.arctanh(action), jnp.log(action) - jnp.log1p(-action))
    log_det = jnp.where(motor, jnp.log1p(-jnp.square(action)), jnp.log(action) + jnp.log1p(-action))
    normal = -0.5 * jnp.square((u - mean) / std) - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi)
    return jnp.sum(normal - log_det, axis=-1)


def sample_action(key: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    return squash(mean + std * jax.random.normal(key, mean.shape))


# -------------------------------------------------------------------------------------------------------------
# Expert observation wrapper (shared with collection)


class ExpertEnvState(NamedTuple):
    env: Any  # the Kinetix EnvState
    frames: jax.Array  # [NUM_FRAMES, O], oldest first
    last_action: jax.Array  # [A]
    episode_step: jax.Array  # [] int32
    episode_return: jax.Array  # [] float32, shaped return so far


def expert_obs(s: ExpertEnvState) -> jax.Array:
    return jnp.concatenate([s.frames.reshape(-1), s.last_action])


def expert_reset(env: ke.Env, level: ke.Level) -> ExpertEnvState:
    obs, state = env.reset(level)
    return ExpertEnvState(
        state, jnp.tile(obs[None], (NUM_FRAMES, 1)), jnp.zeros(env.action_dim), jnp.int32(0), jnp.float32(0)
    )


def expert_step(
    env: ke.Env, level: ke.Level, env_params: Any, key: jax.Array, s: ExpertEnvState, action: jax.Array, dense: bool
) -> tuple[ExpertEnvState, jax.Array, ke.StepInfo, jax.Array]:
    """One step: (next state, reward (shaped if ``dense``), the raw step info, the episode's return so far)."""
    obs, state, info = env.step(key, s.env, action, level, env_params)
    t = s.episode_step + 1
    T = ke.MAX_TIMESTEPS
    penalty = jnp.where(info.reward > 0, 0.0, info.distance / 6.0 / T)
    shaped = info.reward - jnp.where(info.done, (T - t) * penalty, penalty)
    reward = shaped if dense else info.reward
    frames = jnp.where(info.done, jnp.tile(obs[None], (NUM_FRAMES, 1)), jnp.concatenate([s.frames[1:], obs[None]]))
    nxt = ExpertEnvState(
        state,
        frames,
        jnp.where(info.done, 0.0, action),
        jnp.where(info.done, 0, t),
        jnp.where(info.done, 0.0, s.episode_return + reward),
    )
    return nxt, reward, info, s.episode_return + reward


# -------------------------------------------------------------------------------------------------------------
# Training


class Runner(NamedTuple):
    params: dict[str, Any]
    opt_state: Any
    env_state: ExpertEnvState  # [E, ...]
    key: jax.Array


class Transition(NamedTuple):
    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    episode_return: jax.Array  # the finished episode's shaped return, on done steps
    episode_length: jax.Array
    solved: jax.Array


def make_optimizer(cfg: PPOConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_norm_clip), optax.adam(cfg.lr))


def make_init(cfg: PPOConfig, env: ke.Env, level: ke.Level) -> Any:
    obs_dim = NUM_FRAMES * env.obs_dim(level.params) + env.action_dim
    optimizer = make_optimizer(cfg)

    def init(key: jax.Array) -> Runner:
        k_params, k_run = jax.random.split(key)
        params = init_agent(k_params, obs_dim, env.action_dim, cfg.layer_width)
        s0 = expert_reset(env, level)
        env_state = jax.tree.map(lambda x: jnp.broadcast_to(x, (cfg.num_envs, *x.shape)), s0)
        return Runner(params, optimizer.init(params), env_state, k_run)

    return init


def make_update(cfg: PPOConfig, env: ke.Env, level: ke.Level) -> Any:
    """``update_block(runners [S, ...], env_params) -> (runners, metrics [S, log_interval])``, sharded over seeds."""
    optimizer = make_optimizer(cfg)
    batch = cfg.num_steps * cfg.num_envs
    assert batch % cfg.num_minibatches == 0, (batch, cfg.num_minibatches)

    def one_update(runner: Runner, env_params: Any) -> tuple[Runner, dict[str, jax.Array]]:
        step = jax.vmap(lambda k, s, a: expert_step(env, level, env_params, k, s, a, dense=True))

        def env_step(carry: tuple[ExpertEnvState, jax.Array], _: None) -> Any:
            s, key = carry
            key, k_act, k_env = jax.random.split(key, 3)
            obs = jax.vmap(expert_obs)(s)
            mean, std = actor_dist(runner.params, obs)
            action = jnp.clip(sample_action(k_act, mean, std), -MAX_ACTION, MAX_ACTION)
            lp = log_prob(mean, std, action)
            v = value(runner.params, obs)
            s, reward, info, episode_return = step(jax.random.split(k_env, cfg.num_envs), s, action)
            length = jnp.where(info.done, carry[0].episode_step + 1, 0)
            tr = Transition(obs, action, lp, v, reward, info.done, episode_return, length, info.solved)
            return (s, key), tr

        (env_state, key), traj = jax.lax.scan(env_step, (runner.env_state, runner.key), None, cfg.num_steps)
        last_value = value(runner.params, jax.vmap(expert_obs)(env_state))

        def gae(carry: tuple[jax.Array, jax.Array], tr: Transition) -> Any:
            adv, next_value = carry
            not_done = 1.0 - tr.done.astype(jnp.float32)
            delta = tr.reward + cfg.gamma * next_value * not_done - tr.value
            adv = delta + cfg.gamma * cfg.gae_lambda * not_done * adv
            return (adv, tr.value), adv

        _, advantages = jax.lax.scan(gae, (jnp.zeros_like(last_value), last_value), traj, reverse=True, unroll=16)
        targets = advantages + traj.value

        def loss_fn(params: dict[str, Any], key: jax.Array, mb: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
            tr, adv, tgt = mb
            mean, std = actor_dist(params, tr.obs)
            mean = mean + jax.random.uniform(key, mean.shape, minval=-cfg.rpo_alpha, maxval=cfg.rpo_alpha)
            lp = log_prob(mean, std, tr.action)
            v = value(params, tr.obs)
            v_clipped = tr.value + jnp.clip(v - tr.value, -cfg.clip_eps, cfg.clip_eps)
            v_loss = 0.5 * jnp.mean(jnp.maximum(jnp.square(v - tgt), jnp.square(v_clipped - tgt)))
            ratio = jnp.exp(lp - tr.log_prob)
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            pg_loss = -jnp.mean(jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv))
            loss = pg_loss + cfg.v_loss_coef * v_loss
            aux = {
                "pg_loss": pg_loss,
                "v_loss": v_loss,
                "clipfrac": jnp.mean(jnp.abs(ratio - 1) > cfg.clip_eps),
                "approx_kl": jnp.mean((ratio - 1) - jnp.log(ratio)),
                "loss": loss,
            }
            return loss, aux

        def epoch(carry: tuple[Any, Any, jax.Array], _: None) -> Any:
            params, opt_state, key = carry
            key, k_perm, k_rpo = jax.random.split(key, 3)
            perm = jax.random.permutation(k_perm, batch)
            flat = jax.tree.map(lambda x: x.reshape(batch, *x.shape[2:])[perm], (traj, advantages, targets))
            mbs = jax.tree.map(lambda x: x.reshape(cfg.num_minibatches, -1, *x.shape[1:]), flat)

            def minibatch(carry: tuple[Any, Any], x: Any) -> Any:
                params, opt_state = carry
                mb, k = x
                (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, k, mb)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                aux["grad_norm"] = optax.tree.norm(grads)
                return (optax.apply_updates(params, updates), opt_state), aux

            keys = jax.random.split(k_rpo, cfg.num_minibatches)
            (params, opt_state), aux = jax.lax.scan(minibatch, (params, opt_state), (mbs, keys))
            return (params, opt_state, key), aux

        (params, opt_state, key), aux = jax.lax.scan(
            epoch, (runner.params, runner.opt_state, key), None, cfg.num_epochs
        )
        n_done = jnp.maximum(traj.done.sum(), 1)

        def per_done(x: jax.Array) -> jax.Array:
            return jnp.sum(x * traj.done) / n_done

        metrics = {k: v.mean() for k, v in aux.items()}
        # The value loss on the first vs the last pass over the same rollout: the critic must fit it better.
        metrics |= {"v_loss_first_epoch": aux["v_loss"][0].mean(), "v_loss_last_epoch": aux["v_loss"][-1].mean()}
        metrics |= {
            "returned_episode_returns": per_done(traj.episode_return),
            "returned_episode_lengths": per_done(traj.episode_length),
            "returned_episode_solved": per_done(traj.solved),
            "reward": traj.reward.mean(),
            "episodes": traj.done.sum().astype(jnp.float32),
        }
        return Runner(params, opt_state, env_state, key), metrics

    def block(runner: Runner, env_params: Any) -> tuple[Runner, dict[str, jax.Array]]:
        return jax.lax.scan(lambda r, _: one_update(r, env_params), runner, None, cfg.log_interval)

    mesh = host_mesh()
    sharded = jax.shard_map(
        jax.vmap(block, in_axes=(0, None)),
        mesh=mesh,
        in_specs=(P("env"), P()),
        out_specs=(P("env"), P("env")),
        check_vma=False,
    )
    return jax.jit(sharded, donate_argnums=(0,))


def _masked_mean(values: np.ndarray, episodes: np.ndarray) -> float:
    # Updates without a finished episode carry no episode statistics.
    w = episodes > 0
    return float(values[w].mean()) if w.any() else 0.0


@functools.lru_cache(maxsize=2)
def _programs(cfg: PPOConfig) -> tuple[Any, ...]:
    # Keyed on the fields that shape the programs: a resume in the same process (the tests') reuses them
    # instead of tracing Kinetix again.
    level = ke.load_level(cfg.level)
    env = ke.make_env(level.static_params, action_noise_std=cfg.action_noise_std)
    init = jax.jit(jax.vmap(make_init(cfg, env, level)))
    return level, ke.env_params(level), init, make_update(cfg, env, level)


def train_ppo(cfg: PPOConfig, progress: bool = True) -> list[dict[str, float]]:
    """Train (or resume) the experts; returns the per-seed stats of the last block."""
    n_dev = jax.device_count()
    if cfg.num_seeds % n_dev:
        raise ValueError(f"num_seeds={cfg.num_seeds} must be a multiple of the device count {n_dev}")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    level, env_params, init, update = _programs(dataclasses.replace(cfg, run_dir="", seed=0, num_updates=0))
    name = f"worlds_l_{level.name}"
    state_file = run_dir / "ppo_state.pkl"
    keys = jax.random.split(jax.random.key(cfg.seed), cfg.num_seeds)
    if state_file.is_file():
        fresh = jax.eval_shape(init, keys)  # the saved state's structure and shapes, traced but not compiled
        like = {"runners": tuple(fresh)[:3], "key_data": jax.random.key_data(keys), "next_update": 0}
        saved = load_pickle(state_file, like)
        params, opt_state, env_state = saved["runners"][:3]
        runners = Runner(params, opt_state, env_state, jax.random.wrap_key_data(saved["key_data"]))
        start = int(saved["next_update"])
    else:
        runners = init(keys)
        start = 0
    record_settings(run_dir, dataclasses.asdict(cfg), resuming=state_file.is_file(), at=("update", start), what="PPO",
                    quiet=frozenset({"num_updates", "run_dir"}))  # fmt: skip
    last: list[dict[str, float]] = []
    blocks = range(start, cfg.num_updates, cfg.log_interval)
    bar = tqdm(blocks, desc="PPO", unit="block", disable=not progress)
    for u in bar:
        t0 = time.time()
        runners, metrics = update(runners, env_params)
        metrics = jax.device_get(metrics)
        wall = time.time() - t0
        last = []
        for s in range(cfg.num_seeds):
            m = {k: np.asarray(v[s]) for k, v in metrics.items()}
            stats = {k: float(v.mean()) for k, v in m.items() if not k.startswith("returned_episode")}
            for k in ("returned_episode_returns", "returned_episode_lengths", "returned_episode_solved"):
                stats[k] = _masked_mean(m[k], m["episodes"])
            stats["num_env_steps"] = float((u + cfg.log_interval) * cfg.num_steps * cfg.num_envs)
            stats["wall_s"] = wall
            if not all(math.isfinite(v) for v in stats.values()):
                raise FloatingPointError(f"PPO: non-finite stats for seed {s} at update {u}: {stats}")
            out = run_dir / f"seed_{s}" / str(u)
            write_json(out / "stats" / f"{name}.json", stats)
            save_policy(out / "policies" / f"{name}.pkl", jax.tree.map(lambda x, s=s: x[s], runners.params))
            last.append(stats)
        saved_runners = (runners.params, runners.opt_state, runners.env_state)
        key_data = jax.random.key_data(runners.key)
        save_pickle(state_file, {"runners": saved_runners, "key_data": key_data, "next_update": u + cfg.log_interval})
        solved = np.mean([s["returned_episode_solved"] for s in last])
        steps_per_s = cfg.num_seeds * cfg.log_interval * cfg.num_steps * cfg.num_envs / wall
        bar.set_postfix(solved=f"{solved:.3f}", steps_per_s=f"{steps_per_s:.0f}")
    return last
