"""`lco`: one console script for the service, the workers, admin tasks and clients.

    lco serve [--host H] [--port P] [--data-dir D]   API + one worker + scheduler (embedded)
    lco worker [--pools default] [--gpus 1]           a Celery worker (production)
    lco scheduler                                     reaper, reconciler, admissions (production)
    lco migrate [--data-dir D]                        create or upgrade the database
    lco team create NAME [--share S --max-gpus N --max-queued-jobs N --max-priority P
                          --quota-policy queue|reject]
    lco team set NAME [same options; `none` removes a limit] | list
    lco key create --team NAME [--admin]              prints the new key as the last line
    lco key list [--team NAME] | revoke KEY_ID
    lco models import SOURCE --name NAME [--dtype float32|bfloat16]
                                                      a HF model dir or GGUF file as a base model
    lco models list [--json] | remove NAME            the base models every team may train
    lco files upload PATH                             client commands (LCO_BASE_URL, LCO_API_KEY)
    lco jobs submit [--config] JOB.json|yaml | list | get ID | watch ID | cancel ID
    lco pools [NAME]                                  capacity, running and queued jobs
    lco admin jobs list [--team T --status S] | cancel ID | pause ID | resume ID
                                                      any team's jobs (an admin key)
    lco train --config job.yaml --output DIR          train locally, no service
    lco tasks list                                    built-in tasks and reasoning-gym datasets
    lco tasks export NAME --out DIR                   write a built-in task's datasets
    lco tasks export rg:DATASET --size N --seed S --out DIR   the same from reasoning-gym
                     [--config JSON --instruction TEXT --extract last_number | --preset NAME]
    lco experiment stability [--preset quick]         LCO vs baselines: report and plots

Commands that open the database name it on stderr (`database: URL`). Only `serve` and
`migrate` create it; the others refuse a database that is not there. Each subcommand
imports what it needs when it runs, so `lco serve` never loads torch into the API process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from cli import client


def _settings(args: argparse.Namespace) -> Any:
    from jobs.settings import Settings

    if getattr(args, "data_dir", None):
        os.environ["LCO_DATA_DIR"] = str(Path(args.data_dir).resolve())
    return Settings()


def _database(args: argparse.Namespace, *, create: bool = False) -> Any:
    """The settings of a command that opens the database, which it names on stderr. Only
    `lco serve` and `lco migrate` create (and upgrade) it; the others refuse a database that
    is not there, rather than start an empty one wherever they happen to run."""
    from jobs.migrate import require_schema, shown_url, upgrade

    settings = _settings(args)
    print(f"database: {shown_url(settings)}", file=sys.stderr, flush=True)
    if create:
        upgrade(settings)
    else:
        require_schema(settings)
    return settings


# -- service ---------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """In the worker child of `lco serve`: get SIGTERM (a warm shutdown) when serve exits,
    however it exits (uvicorn re-raises SIGTERM, skipping our cleanup). Linux only."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.guards import server_header_bound
    from jobs.db import make_engine, make_session_factory
    from jobs.dispatch import Dispatcher, make_producer
    from jobs.reconcile import run_forever

    settings = _database(args, create=True)
    settings.ensure_dirs()
    worker: subprocess.Popen[bytes] | None = None
    if not args.no_worker:
        # Same code path as production: a real Celery worker process on the same broker.
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--concurrency", "1"],
            env=dict(os.environ),
            cwd=str(Path(__file__).resolve().parent.parent),
            preexec_fn=_die_with_parent,
        )
    stop = threading.Event()
    sessions = make_session_factory(make_engine(settings))
    threading.Thread(
        target=run_forever,
        args=(sessions, Dispatcher(make_producer(settings)), settings, stop),
        daemon=True,
    ).start()
    print(
        f"lco: serving on http://{args.host}:{args.port}/v1 (data in {settings.data_dir})",
        flush=True,
    )
    try:
        # h11, not httptools: h11 bounds how much of a request head it buffers, so one huge
        # header cannot stall the loop (httptools reads it whole); api.guards answers 431.
        uvicorn.run(
            create_app(settings),
            host=args.host,
            port=args.port,
            log_level="warning",
            http="h11",
            h11_max_incomplete_event_size=server_header_bound(settings.max_header_bytes),
        )
    finally:
        stop.set()
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.app import create_worker_app

    settings = _database(args)
    pools = args.pools or settings.default_pool
    # Its heartbeats give the pools their capacity: `gpus` for one job at a time.
    app = create_worker_app(
        settings, pools=pools.split(","), gpus=args.gpus or settings.worker_gpus
    )
    # One job per process (see worker.app): solo unless more slots are asked for.
    pool = ["--pool", "solo"] if args.concurrency == 1 else ["--concurrency", str(args.concurrency)]
    argv = [
        "worker",
        "-Q",
        pools,
        *pool,
        "--loglevel",
        args.loglevel,
        "--without-gossip",
        "--without-mingle",
        "--hostname",
        f"lco-{pools}@%h-{os.getpid()}",
    ]
    app.worker_main(argv)
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from jobs.db import make_engine, make_session_factory
    from jobs.dispatch import Dispatcher, make_producer
    from jobs.reconcile import run_forever

    settings = _database(args)
    stop = threading.Event()
    # The reaper locks job rows: frozen inside a transaction, it must not hold them from the
    # workers' heartbeats for longer than a lease lasts.
    engine = make_engine(settings, idle_in_transaction_s=settings.lease_ttl_s / 2)
    try:
        run_forever(
            make_session_factory(engine),
            Dispatcher(make_producer(settings)),
            settings,
            stop,
        )
    except KeyboardInterrupt:
        stop.set()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    _database(args, create=True)
    print("database is at the latest migration")
    return 0


# -- admin -----------------------------------------------------------------------------------
def _policy_args(args: argparse.Namespace) -> dict[str, Any]:
    """The policy options given on the command line (`none` removes a limit)."""
    policy: dict[str, Any] = {}
    if args.share is not None:
        policy["share"] = args.share
    for name in ("max_gpus", "max_queued_jobs"):
        value = getattr(args, name)
        if value is not None:
            policy[name] = None if value.lower() == "none" else int(value)
    for name in ("max_priority", "quota_policy"):
        if getattr(args, name) is not None:
            policy[name] = getattr(args, name)
    return policy


def _show_team(team: Any) -> None:
    limits = f"max_gpus={team.max_gpus} max_queued_jobs={team.max_queued_jobs}"
    print(
        f"{team.name} ({team.id}) share={team.share:g} {limits} "
        f"max_priority={team.max_priority} quota_policy={team.quota_policy}"
    )


def cmd_team_create(args: argparse.Namespace) -> int:
    from jobs.auth import create_team
    from jobs.db import make_engine, make_session_factory, transaction
    from jobs.quotas import set_policy

    settings = _database(args)
    with transaction(make_session_factory(make_engine(settings))) as session:
        team = create_team(session, args.name)
        set_policy(team, **_policy_args(args))
    print(f"created team {team.name} ({team.id})")
    return 0


def cmd_team_set(args: argparse.Namespace) -> int:
    from jobs.auth import get_team_by_name
    from jobs.db import make_engine, make_session_factory, transaction
    from jobs.quotas import set_policy

    settings = _database(args)
    with transaction(make_session_factory(make_engine(settings))) as session:
        team = set_policy(get_team_by_name(session, args.name), **_policy_args(args))
        _show_team(team)
    return 0


def cmd_team_list(args: argparse.Namespace) -> int:
    from jobs.auth import list_teams
    from jobs.db import make_engine, make_session_factory, transaction

    settings = _database(args)
    with transaction(make_session_factory(make_engine(settings))) as session:
        for team in list_teams(session):
            _show_team(team)
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    from jobs.auth import get_team_by_name, list_api_keys
    from jobs.db import make_engine, make_session_factory, transaction

    settings = _database(args)
    with transaction(make_session_factory(make_engine(settings))) as session:
        team_id = get_team_by_name(session, args.team).id if args.team else None
        for key in list_api_keys(session, team_id):
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            admin = " admin" if key.is_admin else ""
            print(
                f"{key.id}  {key.prefix}...  team {key.team_id}  {state}{admin}  {key.name or ''}"
            )
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    from jobs.auth import revoke_api_key
    from jobs.db import make_engine, make_session_factory, transaction

    settings = _database(args)
    with transaction(make_session_factory(make_engine(settings))) as session:
        revoke_api_key(session, args.key_id)
    print(f"revoked API key {args.key_id}")
    return 0


def cmd_key_create(args: argparse.Namespace) -> int:
    from jobs.auth import create_api_key, get_team_by_name
    from jobs.db import make_engine, make_session_factory, transaction

    settings = _database(args)
    with transaction(make_session_factory(make_engine(settings))) as session:
        team = get_team_by_name(session, args.team)
        row, key = create_api_key(session, team, name=args.name, is_admin=args.admin)
    kind = "admin API key" if args.admin else "API key"
    print(f"created {kind} {row.id} for team {team.name}; it is shown only once:")
    print(key)
    return 0


# -- base models (the model registry) --------------------------------------------------------
def cmd_models_import(args: argparse.Namespace) -> int:
    from jobs.db import make_engine, make_session_factory
    from jobs.model_store import import_into_store

    # The converter loads torch and transformers when it runs: only in this command's process.
    from lco_core.model_import import ModelImportError, import_model

    settings = _database(args)
    # Our stages are the progress report: transformers' bars and load reports would bury them
    # (both read at its import, which the conversion does).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        row = import_into_store(
            make_session_factory(make_engine(settings)),
            settings,
            Path(args.source),
            args.name,
            importer=import_model,
            dtype=args.dtype,
            progress=lambda line: print(line, flush=True),
        )
    except (ModelImportError, OSError) as exc:
        # One line: a loader's message can span several.
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(
        f"imported {row.id}: {row.architecture}, {row.parameters:,} parameters "
        f"({row.dtype}, from {row.source_format})"
    )
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from jobs.db import make_engine, make_session_factory, transaction
    from jobs.model_store import BUILTIN_MODELS, SYSTEM_OWNER, ModelStore, registered_models

    settings = _database(args)
    with transaction(make_session_factory(make_engine(settings))) as session:
        rows = registered_models(session)
    store = ModelStore(settings)
    models: list[dict[str, Any]] = [
        {"id": name, "created_at": created.isoformat(), "owned_by": SYSTEM_OWNER, "builtin": True}
        for name, created in BUILTIN_MODELS.items()
    ]
    models += [
        {
            "id": row.id,
            "created_at": row.created_at.isoformat(),
            "owned_by": row.owned_by,
            "builtin": False,
            "path": str(store.path_of(row)),
            "source": row.source,
            "source_format": row.source_format,
            "architecture": row.architecture,
            "model_type": row.model_type,
            "parameters": row.parameters,
            "dtype": row.dtype,
        }
        for row in rows
    ]
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    for model in models:
        if model["builtin"]:
            print(f"{model['id']:<24} built in")
        else:
            print(
                f"{model['id']:<24} {model['architecture']}, {model['parameters']:,} parameters "
                f"({model['dtype']}, from {model['source_format']}), imported "
                f"{model['created_at'][:16].replace('T', ' ')}  {model['path']}"
            )
    return 0


def cmd_models_remove(args: argparse.Namespace) -> int:
    from jobs.db import make_engine, make_session_factory
    from jobs.model_store import remove_from_store

    settings = _database(args)
    try:
        remove_from_store(make_session_factory(make_engine(settings)), settings, args.name)
    except OSError as exc:  # after the row went: the files could not be deleted
        print(f"error: {args.name} is no longer registered, but: {exc}", file=sys.stderr)
        return 1
    print(f"removed base model {args.name}")
    return 0


# -- local training and built-in tasks -------------------------------------------------------
def cmd_train(argv: list[str]) -> int:
    from lco_core.cli_train import main as train_main

    return train_main(argv)


RG_PREFIX = "rg:"


def _rg_setting(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """`export_rg`'s config, instruction and extract: the preset's, or the options'."""
    from lco_core.rg_tasks import preset

    chosen = {"config": args.config, "instruction": args.instruction, "extract": args.extract}
    if args.preset:
        if any(value is not None for value in chosen.values()):
            raise ValueError("--preset sets the config, instruction and extract: give none")
        return preset(dataset, args.preset)
    if args.config is None:
        return chosen
    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(
            "--config must be a JSON object of the dataset's config fields, "
            """e.g. '{"min_terms": 2}'"""
        )
    return chosen | {"config": config}


def cmd_tasks_export(args: argparse.Namespace) -> int:
    from lco_core.tasks import get_task, split_examples, write_jsonl

    out = Path(args.out)
    files: dict[str, list[dict[str, Any]] | None]
    try:
        if args.name.startswith(RG_PREFIX):
            from lco_core.rg_tasks import export_rg

            dataset = args.name.removeprefix(RG_PREFIX)
            setting = _rg_setting(args, dataset)
            train, val, sft_train, sft_val, grader = export_rg(
                dataset, args.n_train, args.n_val, args.seed, **setting
            )
            files = {"sft_train.jsonl": sft_train, "sft_val.jsonl": sft_val}
            config = setting["config"]
            described = f"config {json.dumps(config)}" if config else "default config"
            if args.preset:
                described = f"preset {args.preset}: {described}"
            title = f"{args.name}: reasoning-gym's {dataset} ({described}, seed {args.seed})"
        else:
            rg_only = (args.config, args.instruction, args.extract, args.preset)
            if any(value is not None for value in rg_only):
                raise ValueError("--config, --instruction, --extract and --preset are for rg:")
            try:
                task = get_task(args.name)
            except ValueError as exc:
                raise ValueError(
                    f"{exc}; or rg:DATASET for a reasoning-gym dataset (`lco tasks list`)"
                ) from None
            train, val = split_examples(task, args.n_train, args.n_val, seed=args.seed)
            files = dict(
                zip(
                    ("sft_train.jsonl", "sft_val.jsonl"),
                    split_examples(task, args.n_train, args.n_val, seed=args.seed, supervised=True),
                    strict=True,
                )
            )
            grader, title = task.grader(), f"{task.name}: {task.description}"
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files |= {"rl_train.jsonl": train, "rl_val.jsonl": val}
    out.mkdir(parents=True, exist_ok=True)
    print(f"{title}: {len(train)} train, {len(val)} validation items")
    for name, items in files.items():
        if items is None:
            # A file left by an earlier export would not match the new RL items.
            (out / name).unlink(missing_ok=True)
            print(f"  (no {name}: the dataset has no single answer to train on)")
        else:
            print(f"  {write_jsonl(items, out / name)}")
    (out / "grader.json").write_text(json.dumps(grader, indent=2) + "\n")
    print(f"  {out / 'grader.json'}")
    return 0


def cmd_tasks_list(args: argparse.Namespace) -> int:
    from lco_core.tasks import list_tasks
    from lco_spec.graders import reasoning_gym_datasets

    print("built-in tasks (lco tasks export NAME --out DIR):")
    for task in list_tasks():
        print(f"  {task.name:<28}{task.description}")
    try:
        names = reasoning_gym_datasets()
    except ValueError as exc:
        print(f"reasoning-gym datasets: none ({exc})")
        return 0
    from reasoning_gym.factory import DATASETS

    from lco_core.rg_tasks import PRESETS

    print("reasoning-gym datasets (lco tasks export rg:NAME --size N --out DIR):")
    for name in names:
        # reasoning_gym.<category>.<module>: the category groups similar tasks.
        category = DATASETS[name][0].__module__.split(".")[1]
        presets = f" (--preset {', '.join(PRESETS[name])})" if name in PRESETS else ""
        print(f"  {RG_PREFIX + name:<28}{category}{presets}")
    return 0


def cmd_experiment_stability(args: argparse.Namespace) -> int:
    from lco_core.experiments.report import write_report
    from lco_core.experiments.stability import preset, run_study

    cfg = preset(args.preset, steps=args.steps, seeds=tuple(args.seeds) if args.seeds else None)
    # The report quotes the command that makes it, every option spelled out.
    command = (
        f"lco experiment stability --preset {args.preset} --work {args.work} --out {args.out}"
        + (f" --steps {args.steps}" if args.steps else "")
        + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "")
        + (f" --workers {args.workers}" if args.workers != 1 else "")
        + (" --fresh" if args.fresh else "")
        + (" --report-only" if args.report_only else "")
    )

    def progress(name: str, record: dict[str, Any], done: int, total: int) -> None:
        print(
            f"[{done}/{total}] {name}: {record['wall_s']:.0f} s, greedy reward "
            f"{record.get('initial_eval_reward', float('nan')):.3f} -> "
            f"{record.get('final_eval_reward', float('nan')):.3f}",
            flush=True,
        )

    result = run_study(
        cfg,
        Path(args.work),
        workers=args.workers,
        fresh=args.fresh,
        train=not args.report_only,
        on_run=progress,
    )
    for path in write_report(result, out_dir=Path(args.out), command=command):
        print(f"wrote {path}")
    return 0


# -- argument parsing ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lco", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="API + one worker + scheduler on this machine")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir")
    p.add_argument("--no-worker", action="store_true", help="API and scheduler only")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="a Celery worker consuming the given pool queues")
    p.add_argument("--pools", help="comma-separated queues (default: LCO_DEFAULT_POOL)")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--gpus", type=int, help="GPUs one job may use (default: LCO_WORKER_GPUS)")
    p.add_argument("--loglevel", default="info")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("scheduler", help="reaper and reconciler loop")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_scheduler)

    p = sub.add_parser("migrate", help="alembic upgrade head")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_migrate)

    team = sub.add_parser("team", help="manage teams").add_subparsers(dest="action", required=True)
    for action, func in (("create", cmd_team_create), ("set", cmd_team_set)):
        p = team.add_parser(action, help=f"{action} a team and its policy")
        p.add_argument("name")
        p.add_argument("--share", type=float, help="fair-share weight (default 1)")
        p.add_argument("--max-gpus", help="GPUs its jobs may hold at once (`none`: no limit)")
        p.add_argument("--max-queued-jobs", help="queued jobs it may have (`none`: no limit)")
        p.add_argument("--max-priority", choices=["low", "normal", "high"])
        p.add_argument("--quota-policy", choices=["queue", "reject"])
        p.add_argument("--data-dir")
        p.set_defaults(func=func)
    p = team.add_parser("list")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_team_list)

    key = sub.add_parser("key", help="manage API keys").add_subparsers(dest="action", required=True)
    p = key.add_parser("create")
    p.add_argument("--team", required=True)
    p.add_argument("--name")
    p.add_argument("--admin", action="store_true", help="may manage teams, keys and quotas")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_key_create)
    p = key.add_parser("list")
    p.add_argument("--team")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_key_list)
    p = key.add_parser("revoke")
    p.add_argument("key_id")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_key_revoke)

    models = sub.add_parser("models", help="manage base models").add_subparsers(
        dest="action", required=True
    )
    p = models.add_parser("import", help="a Hugging Face model dir or a GGUF file as a base model")
    p.add_argument("source", help="a local Hugging Face model dir or .gguf file")
    p.add_argument("--name", required=True, help="what jobs call it (their `model`)")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="of the weights a GGUF file is dequantized to (a dir's are copied as they are)",
    )
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_models_import)
    p = models.add_parser("list", help="the base models every team may train")
    p.add_argument("--json", action="store_true")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_models_list)
    p = models.add_parser("remove", help="unregister a base model and delete its files")
    p.add_argument("name")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_models_remove)

    client.add_commands(sub)

    tasks = sub.add_parser("tasks", help="built-in and reasoning-gym tasks").add_subparsers(
        dest="action", required=True
    )
    p = tasks.add_parser("list", help="the built-in tasks and the reasoning-gym datasets")
    p.set_defaults(func=cmd_tasks_list)
    p = tasks.add_parser("export", help="write a task's SFT/RL datasets and grader")
    p.add_argument("name", help="a built-in task, or rg:DATASET for reasoning-gym's DATASET")
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", "--size", type=int, default=1000, help="training items")
    p.add_argument(
        "--n-val",
        "--val-size",
        type=int,
        default=100,
        help="validation items (default 100): drawn after the training items from the same "
        "seed, never repeating a training prompt",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same files")
    p.add_argument(
        "--config",
        metavar="JSON",
        help="rg: only. Fields of the dataset's config (the rest keep reasoning-gym's "
        """defaults), e.g. '{"min_terms": 2, "max_terms": 2, "max_digits": 2}'""",
    )
    p.add_argument(
        "--instruction",
        metavar="TEXT",
        help="rg: only. Appended to each question on a new line, e.g. 'Answer with the "
        "number only.' (default: none)",
    )
    p.add_argument(
        "--extract",
        choices=("answer_tag", "last_number"),
        help="rg: only. The answer in an output without <answer> tags: the whole output "
        "(answer_tag, the default) or its last number (a chatty but right answer counts)",
    )
    p.add_argument(
        "--preset",
        metavar="NAME",
        help="rg: only. A named config, instruction and extract (`lco tasks list` shows them)",
    )
    p.set_defaults(func=cmd_tasks_export)

    experiment = sub.add_parser("experiment", help="studies over many runs").add_subparsers(
        dest="action", required=True
    )
    p = experiment.add_parser(
        "stability", help="LCO vs PPO/GRPO/REINFORCE over seeds: docs/results/stability.md"
    )
    p.add_argument("--preset", choices=["full", "quick"], default="full")
    p.add_argument("--work", default="data/stability", help="run directories (resumable)")
    p.add_argument("--out", default="docs/results", help="where the report and plots go")
    p.add_argument("--steps", type=int, help="override the preset's steps per run")
    p.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (1 thread each)")
    p.add_argument("--fresh", action="store_true", help="retrain runs already finished")
    p.add_argument("--report-only", action="store_true", help="report on finished runs only")
    p.set_defaults(func=cmd_experiment_stability)

    sub.add_parser(
        "train", help="train locally: lco train --config job.yaml --output DIR", add_help=False
    )
    return parser


def _run(argv: list[str]) -> int:
    if argv[:1] == ["train"]:
        return cmd_train(argv[1:])  # its own parser, in lco_core
    args = build_parser().parse_args(argv)
    from jobs.errors import ControlError

    try:
        result: int = args.func(args)
    except ControlError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except client.ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"error: {client.transport_error_message(args, exc)}", file=sys.stderr)
        return 1
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
