"""`lco`: one console script for the service, the workers, admin tasks and clients.

    lco serve [--host H] [--port P] [--data-dir D]   API + one worker + scheduler (embedded)
    lco worker [--pools default] [--gpus 1]           a Celery worker (production)
    lco scheduler                                     reaper, reconciler, admissions (production)
    lco migrate [--data-dir D]                        create or upgrade the database
    lco team create NAME [--share S --max-gpus N --max-queued-jobs N (default 100)
                          --max-priority P --quota-policy queue|reject]
    lco team set NAME [same options; `none` removes a limit] | list
    lco key create --team NAME [--admin]              prints the new key as the last line
    lco key list [--team NAME] | revoke KEY_ID
    lco models import SOURCE --name NAME [--dtype float32|bfloat16]
                                                      a HF model dir or GGUF file as a base model
    lco models list | remove NAME                     the base models every team may train
    lco files upload PATH | list | get ID | delete ID | content ID [--out PATH|-]
                                                      client commands (LCO_BASE_URL, LCO_API_KEY)
    lco jobs submit [--config] JOB.json|yaml [--watch]
    lco jobs list | get ID | cancel ID | pause ID | resume ID
    lco jobs events ID | checkpoints ID               newest first (--limit N --after ID)
    lco jobs download ID [CHECKPOINT] [--out PATH|-]  a checkpoint as a tar (default: newest)
    lco jobs watch ID                                 progress from the job's event stream
    lco pools [NAME]                                  capacity, running and queued jobs
    lco admin jobs list [--team T --status S] | cancel ID | pause ID | resume ID
                                                      any team's jobs (an admin key)
    lco train --config job.yaml --output DIR [--nproc N]  train locally (N ranks: FSDP2)
    lco tasks list                                    built-in tasks and reasoning-gym datasets
    lco tasks export NAME --out DIR                   write a built-in task's datasets
    lco tasks export rg:DATASET --size N --seed S --out DIR   the same from reasoning-gym
                     [--config JSON --instruction TEXT --extract last_number | --preset NAME]
    lco experiment stability [--preset quick]         LCO vs baselines: report and plots

Every list and get command takes `--json` (lists print a line per item without it; the
client commands that show one object print its JSON either way). Errors are one line on
stderr, `error: ...`, never a traceback. Exit status: 0 done; 1 an error (the service
refused or could not be reached, a job that `watch` followed failed or was cancelled, a
file could not be read or written); 2 a usage error (bad arguments, no API key); 130
interrupted (Ctrl-C); 141 the reader of stdout went away (`| head`).

Commands that open the database name it on stderr (`database: URL`). Only `serve` and
`migrate` create it; the others refuse a database that is not there. Each subcommand
imports what it needs when it runs, so `lco serve` never loads torch into the API process.

This module only assembles the parser and turns errors into one line. The commands are in
`cli.service` (serve, worker, scheduler, migrate), `cli.admin` (team, key),
`cli.base_models` (models), `cli.fine_tuning` (files, jobs, pools, admin jobs: over HTTP,
with `cli.client`) and `cli.local` (train, tasks, experiment); `cli.options` holds the
options they share and the one way they open the database.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import httpx

from cli import admin, base_models, client, fine_tuning, local, service


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; each module adds its own commands, in `lco --help` order."""
    parser = argparse.ArgumentParser(prog="lco", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (service, admin, base_models, fine_tuning, local):
        module.add_parsers(sub)
    return parser


# The exit statuses (see the docstring); argparse exits with 2 itself.
EXIT_ERROR = 1
EXIT_USAGE = 2


def _fail(message: str, status: int = EXIT_ERROR) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _run(argv: list[str]) -> int:
    if argv[:1] == ["train"]:
        return local.cmd_train(argv[1:])  # its own parser, in lco_core
    args = build_parser().parse_args(argv)
    from sqlalchemy.exc import SQLAlchemyError

    from jobs.errors import ControlError

    try:
        result: int = args.func(args)
    except ControlError as exc:
        return _fail(exc.message)
    except SQLAlchemyError as exc:
        # The database went away or refused mid-command: its driver's message, on one line
        # (SQLAlchemy's own adds the statement and a link).
        return _fail(f"database: {' '.join(str(getattr(exc, 'orig', None) or exc).split())}")
    except client.UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except client.ClientError as exc:
        return _fail(str(exc))
    except httpx.TransportError as exc:
        return _fail(client.transport_error_message(args, exc))
    except httpx.InvalidURL as exc:
        return _fail(f"bad service URL {client.base_url(args)!r}: {exc}", EXIT_USAGE)
    except httpx.HTTPError as exc:  # the rest: a bad answer (encoding, redirects)
        return _fail(f"{type(exc).__name__}: {exc}")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        result = _run(argv)
        # Flush here, not at exit, so a reader that went away surfaces below.
        sys.stdout.flush()
    except KeyboardInterrupt:
        # Ctrl-C: the user knows; a traceback through httpx or torch would say nothing more.
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # `lco jobs get ID | head`: the reader left. As Python's docs recommend (signal
        # module, "Note on SIGPIPE"), point stdout at devnull so the flush at exit cannot
        # fail again, and exit as a process killed by SIGPIPE would (128 + 13).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return result


if __name__ == "__main__":
    sys.exit(main())
