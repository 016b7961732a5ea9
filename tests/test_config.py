"""Configs: the sa-nca geometry check (can the digit reach the far side?) and value coercion."""

from __future__ import annotations

import warnings

import pytest

from nca_widgets import NCAWidgetsWarning
from nca_widgets.config import ConfigError
from nca_widgets.registry import make_config


@pytest.mark.parametrize(("dims", "path"), [((28, 28, 8), 28), ((28, 28, 42), 41),
                                             ((14, 14, 4), 14), ((15, 15, 5), 14)])
def test_path_length_through_the_open_cell(dims, path):
    assert make_config("sa-nca", "tiny", spatial_dims=dims).path_length == path


def test_a_rollout_that_cannot_reach_the_far_side_is_refused_with_the_minimum():
    # The old cpu preset: 16 steps at 28x28x8, whose path is 28 steps.
    with pytest.raises(ConfigError, match=r"path through the open cell is 28 steps, so "
                                          r"num_steps must be at least 29"):
        make_config("sa-nca", "seed", spatial_dims=(28, 28, 8), num_steps=16)
    with pytest.raises(ConfigError, match="num_steps must be at least 29"):
        make_config("sa-nca", "seed", spatial_dims=(28, 28, 8), num_steps=28)


def test_early_scored_steps_out_of_reach_are_warned_about():
    with pytest.warns(NCAWidgetsWarning, match=r"needs 28 steps .* num_steps >= 56"):
        make_config("sa-nca", "seed", spatial_dims=(28, 28, 8), num_steps=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_config("sa-nca", "seed", spatial_dims=(28, 28, 8), num_steps=56)
        for preset in ("seed", "cpu", "tiny"):  # the presets pass (tiny opts out)
            make_config("sa-nca", preset)


def test_the_check_can_be_turned_off_explicitly_and_parses_from_the_cli():
    assert make_config("sa-nca", "tiny").check_reach is False
    config = make_config("sa-nca", "seed", num_steps=8, check_reach="False")
    assert config.num_steps == 8 and config.check_reach is False
    with pytest.raises(ConfigError, match="check_reach must be true or false"):
        make_config("sa-nca", "seed", check_reach="maybe")
