"""Click helpers shared by commands: options that take several values after one flag."""

from __future__ import annotations

from collections.abc import Sequence

import click


def spread_greedy(args: Sequence[str], greedy: Sequence[str]) -> list[str]:
    """``-i a b --x`` -> ``-i a -i b --x`` for the options in ``greedy``: each takes every following
    value up to the next token that starts with '-' (what a shell glob or a BIDS-app call such as
    ``--participant-label 01 02`` gives). ``--`` ends option parsing and is kept."""
    out: list[str] = []
    current: str | None = None
    taken = 0
    for i, tok in enumerate(args):
        if tok == "--":
            out += list(args[i:])
            return out
        if tok.startswith("-") and tok != "-":
            if current is not None and not taken:  # Click would take the next flag as the value
                raise click.UsageError(f"{current} needs a value before {tok}")
            current, taken = (tok if tok in greedy else None), 0
            out.append(tok)
            continue
        if current is not None:
            if taken:
                out.append(current)
            taken += 1
        out.append(tok)
    return out


class GreedyCommand(click.Command):
    """A command whose options named in ``greedy_options`` accept several values after one flag
    (they must be declared ``multiple=True``)."""

    greedy_options: tuple[str, ...] = ()

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_greedy(args, self.greedy_options))


def greedy_command(*greedy: str, **kwargs):  # noqa: ANN201 - a click decorator
    """``@greedy_command("-i", "--input", ...)``: like ``@click.command`` with :class:`GreedyCommand`."""
    cls = type("Greedy", (GreedyCommand,), {"greedy_options": tuple(greedy)})
    return click.command(cls=cls, **kwargs)
