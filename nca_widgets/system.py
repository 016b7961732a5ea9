"""The system contract: what a trainable NCA gives the trainer and the widgets.

A system is a small object with a frozen `config` and pure functions. Training uses
`build_model`, `init_pool`, `make_batch`, `loss` and `write_back` inside one jitted step;
the widgets never see the system itself, only pictures made by `seed`, `render` and `target`
(a probe rollout), `pool_pictures` (the pool view) and, optionally, `live_eval` and `evaluate`.
Pictures reach the widgets as one of two kinds, chosen by `picture_kind`:

- "frame": the state is `(H, W, C)`; a rollout shows as `render` frames `(T, H, W)` beside the
  input and the target (FrameScrubber);
- "volume": the state is `(H, W, D, C)`; a rollout shows as one channel `(T, D, H, W)` at a time,
  with `picture_channel` in [0, 1] and `depth_labels` naming depths (VolumeScrubber).

Subclass `System`, fill in its abstract methods, and `LiveTrainer(MySystem(...), examples=...)`
trains it with the whole dashboard; `nca_widgets.registry` gives it a name for the CLI. The
built-in plug-ins are `nca_widgets.systems.sa_nca`, `.rrcnn` and `.growing`.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

PICTURE_KINDS = ("frame", "volume")
POOL_VIEW_SIZE = 32  # samples a pool view shows


class Examples(NamedTuple):
    """What a system trains and is tested on: arrays whose first axis counts examples."""

    train: Any  # (N, ...) e.g. digits (N, H, W) float32 in [0, 1]
    test: Any  # (M, ...) examples never trained on; may be `train` itself
    source: str = ""  # where they came from, for messages ("bundled MNIST subset ...")


class PoolPictures(NamedTuple):
    """What the pool view shows: samples beside their targets, as floats in [0, 1]."""

    targets: jax.Array  # (P, H, W): what each sample should become
    renders: jax.Array  # (P, H, W): what it shows now
    losses: jax.Array  # (P,): its loss (the view sorts worst first)
    indices: jax.Array  # (P,) int32: its example, an index into `System.pool_split`
    inputs: jax.Array | None = None  # (P, H, W): the picture each sample started from, if shown
    levels: jax.Array | None = None  # (P,): each sample's level (see `System.level_name`)


EDIT_MODES = ("erase", "draw", "noise")  # what a brush stroke does to the cells under it
INJECT_COUNT = 8  # pool samples an injected edit damages, by default


class Edit(NamedTuple):
    """Brush strokes on a state: bool masks over its cells, `state.shape[:-1]` each."""

    erase: jax.Array  # set every channel to 0
    draw: jax.Array  # set the picture channel to 1
    noise: jax.Array  # add N(0, 0.5^2) to every channel


class System(abc.ABC):  # noqa: B024 - check_examples is optional, not abstract
    """A trainable NCA: the five training functions, pictures for the widgets, metrics.

    Class attributes to set: `name`, `picture_kind`, and where they differ from the defaults
    `trainable`, `pool_split`, `picture_channel`, `live_eval_names`, `frame_labels`. The
    instance holds `config`, a frozen dataclass with at least `num_train_steps` and `num_steps`
    (NCA steps per rollout); the default learning-rate schedule also reads `learning_rate`,
    `lr_end_factor` and `lr_transition_steps` when the config has them.
    """

    name: ClassVar[str]  # shown in titles and checkpoints
    picture_kind: ClassVar[str]  # 'frame' (state (H, W, C)) or 'volume' (state (H, W, D, C))
    trainable: ClassVar[Any] = nnx.Param  # nnx filter of the trained parameters; others frozen
    pool_split: ClassVar[str] = "train"  # the examples a pool's indices point into (no pool: test)
    picture_channel: ClassVar[int] = -1  # the state channel `render` shows (volume kind)
    live_eval_names: ClassVar[tuple[str, str] | None] = None  # (error, baseline) of live_eval
    frame_labels: ClassVar[tuple[str, str, str]] = ("input", "state", "target")  # frame kind
    # A level sets how a rollout starts (e.g. how much noise); a system that names one takes it
    # as a third argument, `seed(example, key, level)`, and probes start at `probe_level`.
    level_name: ClassVar[str] = ""  # e.g. 'noise level'; '' for a system without levels
    probe_level: ClassVar[float] = 0.0  # the level of the first probe

    def __init__(self, config: Any):
        self.config = config

    # --- data ------------------------------------------------------------------------------

    def load_examples(self, source: str = "auto") -> Examples:
        """The examples to train on, from a named source (e.g. 'auto', 'bundled', 'mnist')."""
        raise ValueError(f"{type(self).__name__} loads no examples by name; pass "
                         "examples=nca_widgets.Examples(train, test) to LiveTrainer")

    def check_examples(self, examples: Examples) -> None:  # noqa: B027 - optional check
        """Raise ValueError, saying what fits, if `examples` cannot be trained on."""

    # --- training: pure functions, traced once into the train step -----------------------

    @abc.abstractmethod
    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        """A freshly initialised model; `model(state, key)` is one NCA step of one sample."""

    @abc.abstractmethod
    def init_pool(self, key: jax.Array, train: jax.Array) -> Any:
        """The sample pool at step 0 (a pytree; `()` for a system without one).

        A pool with fields `state (P, *state)` and `index (P,)` (the example each sample
        carries) gets the default `pool_pictures`.
        """

    @abc.abstractmethod
    def make_batch(self, pool: Any, train: jax.Array, key: jax.Array) -> Any:
        """The batch of one train step (a pytree), drawn from the pool and/or the examples."""

    @abc.abstractmethod
    def loss(self, model: nnx.Module, batch: Any, train: jax.Array,
             key: jax.Array) -> tuple[jax.Array, Any]:
        """`(scalar loss, aux)`; aux goes to `write_back` (e.g. the final states)."""

    @abc.abstractmethod
    def write_back(self, pool: Any, batch: Any, aux: Any) -> Any:
        """The pool after a train step (return `pool` unchanged for a system without one)."""

    # --- pictures: what the widgets show ---------------------------------------------------

    @abc.abstractmethod
    def seed(self, example: jax.Array, key: jax.Array) -> jax.Array:
        """The state a rollout starts from, for one example (a probe, an evaluation).

        A system with a `level_name` also takes `level`, a () float: `seed(example, key, level)`.
        """

    @abc.abstractmethod
    def render(self, state: jax.Array) -> jax.Array:
        """What a state shows: `(H, W)` float, [0, 1] is black to white."""

    @abc.abstractmethod
    def target(self, example: jax.Array) -> jax.Array:
        """What `render` should become for this example: `(H, W)` in [0, 1]."""

    def input_picture(self, state: jax.Array) -> jax.Array:
        """The picture of a rollout's first state, shown beside it (frame kind)."""
        return self.render(state)

    @property
    def depth_labels(self) -> tuple[str, ...]:
        """A name per depth of a volume ('' for none), e.g. ('input', '', 'bottleneck', ...)."""
        return ()

    def probe_note(self, level: float | None) -> str:
        """A few words about how a probe rollout starts: by default its level, if any."""
        return f"{self.level_name} {level:.2f}" if self.level_name and level is not None else ""

    def seed_at(self, example: jax.Array, key: jax.Array, level: jax.Array | None) -> jax.Array:
        """`seed`, at `level` for a system with a `level_name`."""
        if self.level_name:
            return self.seed(example, key, self.probe_level if level is None else level)
        return self.seed(example, key)

    def pool_pictures(self, model: nnx.Module, pool: Any, examples: Examples,
                      key: jax.Array) -> PoolPictures:
        """What the pool view shows: samples beside their targets, losses as the MSE of the two.

        A pool with `state` and `index` fields: its first POOL_VIEW_SIZE samples as they are.
        No pool (`()`): the first test examples, seeded and rolled out for num_steps, beside
        the picture each started from (indices then point into the test examples).
        """
        if jax.tree.leaves(pool):
            n = min(POOL_VIEW_SIZE, pool.index.shape[0])
            index = pool.index[:n].astype(jnp.int32)
            renders = jax.vmap(self.render)(pool.state[:n])
            inputs = None
            examples_of_index = examples.train[index]
        else:
            n = min(POOL_VIEW_SIZE, examples.test.shape[0])
            index = jnp.arange(n, dtype=jnp.int32)
            examples_of_index = examples.test[:n]

            def grown(example, key):
                seed_key, key = jax.random.split(key)
                start = self.seed_at(example, seed_key, None)
                end = final_state(model, start, key, self.config.num_steps)
                return self.input_picture(start), self.render(end)

            inputs, renders = jax.vmap(grown)(examples_of_index, jax.random.split(key, n))
        targets = jax.vmap(self.target)(examples_of_index)
        losses = jnp.mean(jnp.square(renders - targets), axis=(1, 2))
        return PoolPictures(targets, renders, losses, index, inputs=inputs)

    # --- editing: what a brush does to a state (optional) ------------------------------------

    def edit(self, state: jax.Array, edit: Edit, key: jax.Array) -> jax.Array:
        """One state with the strokes of `edit` applied: noise, then erase, then draw.

        The default erases every channel, draws 1 into the picture channel (`picture_channel`)
        and adds noise to every channel. Override for other meanings (e.g. alive masks).
        """
        noisy = state + 0.5 * jax.random.normal(key, state.shape, state.dtype)
        state = jnp.where(edit.noise[..., None], noisy, state)
        state = jnp.where(edit.erase[..., None], 0.0, state)
        channel = jnp.arange(state.shape[-1]) == self.picture_channel % state.shape[-1]
        return jnp.where(edit.draw[..., None] & channel, 1.0, state)

    def target_after_edit(self, edited: jax.Array, target: jax.Array) -> jax.Array:
        """What `render` should become after an edit made `edited` (default: the same target)."""
        return target

    def inject(self, pool: Any, edit: Edit, key: jax.Array, count: int) -> Any:
        """The pool with `edit` applied to its first `count` samples ("into the pool").

        The default handles pools with a `state` field; a system without a pool has nothing to
        teach this way (`can_inject` is False).
        """
        keys = jax.random.split(key, count)
        edited = jax.vmap(self.edit, in_axes=(0, None, 0))(pool.state[:count], edit, keys)
        return pool._replace(state=pool.state.at[:count].set(edited))

    def can_inject(self, pool: Any) -> bool:
        """Whether `inject` applies to this pool (default: a pool with a `state` field)."""
        return hasattr(pool, "state")

    # --- metrics (optional) ----------------------------------------------------------------

    def live_eval(self, model: nnx.Module, examples: Examples,
                  key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(error, baseline)` on a few fixed test examples, plotted live beside the loss.

        Only called when `live_eval_names` is set; the baseline is what a model that learned
        nothing would score (e.g. drawing the mean example).
        """
        raise NotImplementedError

    def evaluate(self, model: nnx.Module, examples: Examples, key: jax.Array) -> dict[str, Any]:
        """Test metrics over all of `examples.test` (JSON-ready values)."""
        return {}


def rollout(step_fn, state: jax.Array, key: jax.Array, num_steps: int) -> jax.Array:
    """Every state of a rollout, the initial one first: `(num_steps + 1, *state.shape)`."""
    return rollout_with_keys(step_fn, state, jax.random.split(key, num_steps))


def rollout_with_keys(step_fn, state: jax.Array, keys: jax.Array) -> jax.Array:
    """`rollout` with one given key per step: `(len(keys) + 1, *state.shape)`."""
    _, states = jax.lax.scan(lambda s, k: (step_fn(s, k),) * 2, state, keys)
    return jnp.concatenate([state[None], states])


def final_state(step_fn, state: jax.Array, key: jax.Array, num_steps: int) -> jax.Array:
    """The state after `num_steps`, keeping no intermediate states."""
    keys = jax.random.split(key, num_steps)
    return jax.lax.scan(lambda s, k: (step_fn(s, k), None), state, keys)[0]


def psnr(estimate: jax.Array, target: jax.Array) -> jax.Array:
    """PSNR in dB of `estimate` clipped to [0, 1] against `target`, over the last two axes."""
    mse = jnp.mean(jnp.square(jnp.clip(estimate, 0.0, 1.0) - target), axis=(-2, -1))
    return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


def check_system(system: Any) -> System:
    """`system` if it implements the contract, else a TypeError that says what is missing."""
    if not isinstance(system, System):
        raise TypeError(
            f"a system must subclass nca_widgets.System (see nca_widgets/system.py); got "
            f"{type(system).__name__}. For a built-in one pass its name (one of "
            "nca_widgets.registry.names())."
        )
    if system.picture_kind not in PICTURE_KINDS:
        raise TypeError(f"{type(system).__name__}.picture_kind must be one of "
                        f"{', '.join(PICTURE_KINDS)}; got {system.picture_kind!r}")
    for field in ("num_train_steps", "num_steps"):
        if not isinstance(getattr(system.config, field, None), int):
            raise TypeError(f"{type(system).__name__}.config needs an integer {field}")
    return system
