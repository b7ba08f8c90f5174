"""Operator commands on the database: teams with their fair-share policy, and API keys.

    lco team create NAME [--share S --max-gpus N --max-queued-jobs N (default 100)
                          --max-priority P --quota-policy queue|reject]
    lco team set NAME [the same options; `none` removes a limit]
    lco team list [--json]
    lco key create --team NAME [--name N] [--admin]   prints the new key as the last line
    lco key list [--team NAME] [--json]
    lco key revoke KEY_ID

They work on the database directly (no service needs to run), in one transaction each; the
same changes over HTTP are the admin routes (`/v1/admin/...`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.options import DATA_DIR, JSON, transaction_for

# Queued jobs a team made by `lco team create` may have unless told otherwise: a bound, so
# that one careless or hostile tenant cannot fill the queue (each queued job costs every
# scheduler pass and every queue view), and far above what a team queues in normal use.
# `--max-queued-jobs none` lifts it; `lco team set` changes it later.
DEFAULT_MAX_QUEUED_JOBS = 100


NO_LIMIT = "none"


def _limit(text: str) -> int | str:
    """A limit option's value: a whole number, or `none` (no limit). Anything else is a
    usage error (exit status 2), before the database is opened."""
    if text.lower() == NO_LIMIT:
        return NO_LIMIT
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a whole number nor `none`") from None


def _policy_args(args: argparse.Namespace) -> dict[str, Any]:
    """The policy options given on the command line (`none` removes a limit)."""
    policy: dict[str, Any] = {}
    if args.share is not None:
        policy["share"] = args.share
    for name in ("max_gpus", "max_queued_jobs"):
        value = getattr(args, name)
        if value is not None:
            policy[name] = None if value == NO_LIMIT else value
    for name in ("max_priority", "quota_policy"):
        if getattr(args, name) is not None:
            policy[name] = getattr(args, name)
    return policy


def _team_json(team: Any) -> dict[str, Any]:
    return {
        "id": team.id,
        "name": team.name,
        "share": team.share,
        "max_gpus": team.max_gpus,
        "max_queued_jobs": team.max_queued_jobs,
        "max_priority": team.max_priority,
        "quota_policy": team.quota_policy,
    }


def _show_team(team: Any) -> None:
    limits = f"max_gpus={team.max_gpus} max_queued_jobs={team.max_queued_jobs}"
    print(
        f"{team.name} ({team.id}) share={team.share:g} {limits} "
        f"max_priority={team.max_priority} quota_policy={team.quota_policy}"
    )


def cmd_team_create(args: argparse.Namespace) -> int:
    from jobs.auth import create_team
    from jobs.quotas import set_policy

    with transaction_for(args) as session:
        team = create_team(session, args.name)
        set_policy(team, **_policy_args(args))
    print(f"created team {team.name} ({team.id})")
    return 0


def cmd_team_set(args: argparse.Namespace) -> int:
    from jobs.auth import get_team_by_name
    from jobs.quotas import set_policy

    with transaction_for(args) as session:
        team = set_policy(get_team_by_name(session, args.name), **_policy_args(args))
        _show_team(team)
    return 0


def cmd_team_list(args: argparse.Namespace) -> int:
    from jobs.auth import list_teams

    with transaction_for(args) as session:
        teams = list_teams(session)
        if args.json:
            print(json.dumps([_team_json(team) for team in teams], indent=2))
            return 0
        for team in teams:
            _show_team(team)
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    from jobs.auth import get_team_by_name, list_api_keys

    with transaction_for(args) as session:
        team_id = get_team_by_name(session, args.team).id if args.team else None
        keys = list_api_keys(session, team_id)
        if args.json:  # never the key itself: only its hash is stored
            rows = [
                {
                    "id": key.id,
                    "prefix": key.prefix,
                    "team_id": key.team_id,
                    "name": key.name,
                    "is_admin": key.is_admin,
                    "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
                }
                for key in keys
            ]
            print(json.dumps(rows, indent=2))
            return 0
        for key in keys:
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            admin = " admin" if key.is_admin else ""
            print(
                f"{key.id}  {key.prefix}...  team {key.team_id}  {state}{admin}  {key.name or ''}"
            )
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    from jobs.auth import revoke_api_key

    with transaction_for(args) as session:
        revoke_api_key(session, args.key_id)
    print(f"revoked API key {args.key_id}")
    return 0


def cmd_key_create(args: argparse.Namespace) -> int:
    from jobs.auth import create_api_key, get_team_by_name

    with transaction_for(args) as session:
        team = get_team_by_name(session, args.team)
        row, key = create_api_key(session, team, name=args.name, is_admin=args.admin)
    kind = "admin API key" if args.admin else "API key"
    print(f"created {kind} {row.id} for team {team.name}; it is shown only once:")
    print(key)
    return 0


def add_parsers(sub: Any) -> None:
    """`team ...` and `key ...`, on the top-level subparsers."""
    team = sub.add_parser("team", help="manage teams").add_subparsers(dest="action", required=True)
    for action, func in (("create", cmd_team_create), ("set", cmd_team_set)):
        p = team.add_parser(action, parents=[DATA_DIR], help=f"{action} a team and its policy")
        p.add_argument("name")
        p.add_argument("--share", type=float, help="fair-share weight (default 1)")
        p.add_argument(
            "--max-gpus", type=_limit, help="GPUs its jobs may hold at once (`none`: no limit)"
        )
        if action == "create":  # a new team gets a bound; `set` changes only what it is given
            p.add_argument(
                "--max-queued-jobs",
                type=_limit,
                default=DEFAULT_MAX_QUEUED_JOBS,
                help=f"queued jobs it may have (default {DEFAULT_MAX_QUEUED_JOBS}; "
                "`none`: no limit)",
            )
        else:
            p.add_argument(
                "--max-queued-jobs", type=_limit, help="queued jobs it may have (`none`: no limit)"
            )
        p.add_argument("--max-priority", choices=["low", "normal", "high"])
        p.add_argument("--quota-policy", choices=["queue", "reject"])
        p.set_defaults(func=func)
    team.add_parser("list", parents=[DATA_DIR, JSON]).set_defaults(func=cmd_team_list)

    key = sub.add_parser("key", help="manage API keys").add_subparsers(dest="action", required=True)
    p = key.add_parser("create", parents=[DATA_DIR])
    p.add_argument("--team", required=True)
    p.add_argument("--name")
    p.add_argument("--admin", action="store_true", help="may manage teams, keys and quotas")
    p.set_defaults(func=cmd_key_create)
    p = key.add_parser("list", parents=[DATA_DIR, JSON])
    p.add_argument("--team")
    p.set_defaults(func=cmd_key_list)
    p = key.add_parser("revoke", parents=[DATA_DIR])
    p.add_argument("key_id")
    p.set_defaults(func=cmd_key_revoke)
