"""The Atari100k benchmark's games and its reference data files (jedi_jax/data/, sources in data/SOURCES.md)."""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Sequence


def read_data(name: str) -> str:
  """The text of the package data file jedi_jax/data/<name>."""
  return importlib.resources.files("jedi_jax").joinpath("data", name).read_text(encoding="utf-8")


# The 26 Atari100k games, in the data file's (alphabetical) order, e.g. "Breakout", "MsPacman".
GAMES: tuple[str, ...] = tuple(line.strip() for line in read_data("atari100k_games.txt").splitlines()
                               if line.strip())


def did_you_mean(name: str, known: Sequence[str]) -> str:
  """"; did you mean 'Breakout'?" for the closest name in `known`, or "": the hint of an unknown-name error."""
  close = difflib.get_close_matches(name, known, n=1)
  return f"; did you mean {close[0]!r}?" if close else ""
