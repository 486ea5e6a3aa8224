"""The ``mmc`` command line: the Typer app, assembled from a module per command group.

=====================  ==========================================================================
module                 commands
=====================  ==========================================================================
``stack``              ``stack``: the embedded broker and Redis
``service``            ``topics``, ``worker``, ``rebuild``, ``web``: the deployment's processes
``season``             ``simulate``, ``replay``, ``demo``: a season's events, made, sent, streamed
``reading``            ``tail``, ``report``, ``whatif``: what the service published
``startup``            the wait for Kafka and Redis before the service's processes start
``console``            what every command shares: settings, stderr, exit statuses
=====================  ==========================================================================

Every command reads its configuration from the ``MMC_*`` environment through
:class:`streams.settings.Settings`. Machine-readable output goes to stdout, everything for
a person (progress, errors) to stderr, so ``mmc stack > env.sh`` works; ``mmc stack --env-file``
writes the same lines to a file once the stack is up, for a stack run in the background.

``mmc worker``, ``topics``, ``rebuild`` and ``web`` first wait for the services they use
(Kafka; Redis too except for ``topics``), one log line per attempt, for up to
``MMC_STARTUP_TIMEOUT_SECONDS``. Exit status: 0 done, 1 failed, 2 invalid settings or
arguments, 3 Kafka or Redis did not answer in time (one ``error:`` line names which, where and why).
"""

from __future__ import annotations

import typer

from streams.cli import reading, season, service, stack

app = typer.Typer(
    name="mmc",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help, as click lays it out: flags without type tags, paragraphs rewrapped to the
    # terminal, nothing split mid-word at 80 columns, and no markup to escape. Help texts are
    # plain text: no RST double backquotes (tests/streams/cli/test_cli.py checks every command).
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"mmc-stream {version('mmc-stream')}")
        raise typer.Exit()


@app.callback()
def _main(
    _show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Streaming CORR/MMC scorer for a stake-weighted tournament (Kafka + Redis).

    Every command reads its configuration from MMC_* environment variables (.env.example
    lists them all); each command's --help names the ones it reads.
    """


for _command in (
    stack.stack,
    service.topics,
    service.worker,
    service.rebuild,
    service.web,
    season.simulate,
    season.replay,
    reading.tail,
    reading.report,
    season.demo,
    reading.whatif,
):
    app.command()(_command)


def main() -> None:
    """Entry point of the ``mmc`` console script (and of ``python -m streams``)."""
    app()
