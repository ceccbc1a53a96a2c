"""Flags generated from a config dataclass's fields, and the namespace read back into field values."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from kdserve.core.data import DatasetSpec
from kdserve.core.defaults import DEFAULT_DATA
from kdserve.core.errors import ConfigError
from kdserve.core.options import add_options, build_from_args, option, option_values


@dataclass(frozen=True)
class Inner:
    path: str = option(flag="--in-path", help="where")
    depth: int = option(3, help="how deep")


@dataclass
class Demo:
    name: str = option(help="a required string")
    count: int = option(4, help="an int (default {default})")
    ratio: float = option(0.5)
    fast: bool = option(True, help="a --fast/--no-fast pair")
    force: bool = option(False, switch=True, help="one --force flag")
    plots: bool = option(True, flag="--no-plots", negate=True, help="one --no-plots flag")
    mode: Literal["a", "b"] = option("a")
    level: str = option("x", choices=("x", "y"))
    sizes: list[int] = option(default_factory=lambda: [1, 2], help="sizes (default {default})")
    ops: tuple[str, ...] = option(("MatMul",))
    limit: int | None = option(None, metavar="N")
    extra: dict[str, Any] = option(default_factory=dict, flag="--set")
    output_dir: str = option("out", flag="--output")
    preset: str = option("quick", cli_default="quick", choices=("quick", "full"))
    inner: Inner | None = option(None, title="inner things")
    hidden: int = 7  # a plain field: not on the command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo", exit_on_error=False)
    add_options(parser, Demo)
    return parser


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[0]: a for a in parser._actions if a.option_strings and a.dest != "help"}


def test_one_flag_per_option_field_with_its_type() -> None:
    actions = _actions(_parser())
    assert list(actions) == [
        "--name",
        "--count",
        "--ratio",
        "--fast",
        "--force",
        "--no-plots",
        "--mode",
        "--level",
        "--sizes",
        "--ops",
        "--limit",
        "--set",
        "--output",
        "--preset",
        "--in-path",
        "--depth",
    ]
    assert actions["--name"].required and not actions["--count"].required
    assert actions["--count"].type is int and actions["--ratio"].type is float
    assert actions["--fast"].option_strings == ["--fast", "--no-fast"]
    assert isinstance(actions["--force"], argparse._StoreTrueAction)
    assert isinstance(actions["--no-plots"], argparse._StoreFalseAction)
    assert actions["--mode"].choices == ["a", "b"] and actions["--level"].choices == ["x", "y"]
    assert actions["--limit"].metavar == "N" and actions["--set"].metavar == "KEY=VALUE"
    assert actions["--output"].dest == "output" and actions["--no-plots"].dest == "no_plots"
    # an optional nested dataclass: its required field is not a required flag
    assert not actions["--in-path"].required
    # {default} in a help text is the field's default
    assert actions["--count"].help == "an int (default 4)"
    assert actions["--sizes"].help == "sizes (default 1,2)"


def test_unset_flags_are_none_so_presets_and_defaults_win() -> None:
    values = option_values(Demo, _parser().parse_args(["--name", "n"]))
    assert values == {
        "name": "n",
        "count": None,
        "ratio": None,
        "fast": None,
        "force": None,
        "plots": None,
        "mode": None,
        "level": None,
        "sizes": None,
        "ops": None,
        "limit": None,
        "extra": None,
        "output_dir": None,
        "preset": "quick",  # its cli_default
        "inner": None,  # no --in-path, no --depth: no Inner at all
    }
    assert build_from_args(Demo, _parser().parse_args(["--name", "n"])) == Demo(name="n")


def test_given_flags_are_parsed_by_type() -> None:
    argv = [
        "--name=n",
        "--count=9",
        "--ratio=0.25",
        "--no-fast",
        "--force",
        "--no-plots",
        "--mode=b",
        "--sizes=8, 16,,32",
        "--ops=MatMul,LSTM",
        "--limit=5",
        "--set",
        "hidden_size=150",
        "--set",
        "name=wide",
        "--set",
        "shape=[1, 2]",
        "--output=o",
        "--in-path=p",
    ]
    config = build_from_args(Demo, _parser().parse_args(argv))
    assert config == Demo(
        name="n",
        count=9,
        ratio=0.25,
        fast=False,
        force=True,
        plots=False,
        mode="b",
        sizes=[8, 16, 32],
        ops=("MatMul", "LSTM"),
        limit=5,
        extra={"hidden_size": 150, "name": "wide", "shape": [1, 2]},
        output_dir="o",
        inner=Inner(path="p", depth=3),
    )


def test_bad_values_are_refused() -> None:
    parser = _parser()
    with pytest.raises(ConfigError, match="--sizes wants comma-separated int values, got '1,x'"):
        option_values(Demo, parser.parse_args(["--name=n", "--sizes=1,x"]))
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--name=n", "--mode=c"])
    with pytest.raises(ConfigError, match="--set wants KEY=VALUE, got 'novalue'"):
        option_values(Demo, parser.parse_args(["--name=n", "--set", "novalue"]))
    # part of an optional group without its required flag: an error, not silently ignored
    with pytest.raises(ConfigError, match="--in-path is required with --depth"):
        option_values(Demo, parser.parse_args(["--name=n", "--depth=2"]))


def test_dataset_flags_come_from_dataset_spec() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, DatasetSpec, title="data")
    help_text = parser.format_help()
    assert f"(default: {DEFAULT_DATA})" in help_text
    assert build_from_args(DatasetSpec, parser.parse_args([])) == DatasetSpec(DEFAULT_DATA)
    spec = build_from_args(
        DatasetSpec,
        parser.parse_args(
            ["--data=d.csv", "--validation-data=v.csv", "--text-column=t", "--label-column=l", "--data-seed=5"]
        ),
    )
    assert spec == DatasetSpec("d.csv", validation="v.csv", text_column="t", label_column="l", seed=5)
    # validation stays in DatasetSpec itself
    with pytest.raises(ConfigError, match="validation_fraction must be between 0 and 1"):
        build_from_args(DatasetSpec, parser.parse_args(["--validation-fraction=1.5"]))


def test_overrides_change_a_flag_for_one_parser() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, DatasetSpec, overrides={"source": {"cli_default": None, "help": "checks data"}})
    assert _actions(parser)["--data"].help == "checks data"
    assert _actions(parser)["--data"].default is None


def test_a_non_dataclass_is_refused() -> None:
    with pytest.raises(TypeError, match="not a dataclass"):
        add_options(argparse.ArgumentParser(), dict)


@dataclass
class Bench:
    bundles: list[str] = option(positional=True, help="folders")
    long_data: str | None = option("package:imdb", none_word="none", help="long texts, or 'none'")
    limit: int | None = option(1000, none_word="0", help="examples, 0 for all")
    server_args: list[str] = option(default_factory=list, parse=lambda raw, flag: shlex.split(raw))


def test_positional_none_word_and_parse_hook() -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_options(parser, Bench)
    assert "bundles" in parser.format_usage() and "--bundles" not in parser.format_usage()
    assert build_from_args(Bench, parser.parse_args(["a", "b"])) == Bench(bundles=["a", "b"])
    given = parser.parse_args(["a", "--long-data", "none", "--limit", "0", "--server-args", "--port 9 --x 'a b'"])
    assert build_from_args(Bench, given) == Bench(
        bundles=["a"], long_data=None, limit=None, server_args=["--port", "9", "--x", "a b"]
    )
    # for from_preset, an explicit 'none' and an unset flag both read None; build_from_args tells them apart
    assert option_values(Bench, given)["long_data"] is None
    assert build_from_args(Bench, parser.parse_args(["a", "--limit", "5"])).limit == 5
    with pytest.raises(ConfigError, match="--limit wants int or '0', got 'all'"):
        build_from_args(Bench, parser.parse_args(["a", "--limit", "all"]))
