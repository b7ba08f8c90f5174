"""Job-create fields and the list filter as OpenAI documents them, through the official SDK:
the limits on `metadata`, `suffix` and `seed`; the deprecated top-level `hyperparameters`;
`jobs.list(metadata=...)` (on SQLite and PostgreSQL); and a scheduler pass that never reads
the jobs' spec."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from sqlalchemy import event, text

from jobs.db import make_engine, make_session_factory, transaction
from jobs.ids import utcnow
from jobs.migrate import upgrade
from jobs.queue import admit, queue_view
from tests.job_rows import job_row
from tests.service_fixtures import (
    ApiClient,
    fast_settings,
    new_key,
    register_worker,
    sft_body,
    sft_lines,
)

JOBS = "/v1/fine_tuning/jobs"


def _sdk(api: ApiClient, key: str | None = None) -> OpenAI:
    """The official SDK, served in-process by the test client."""
    return OpenAI(
        base_url="http://testserver/v1",
        api_key=key or api.key,
        http_client=api.client,
        max_retries=0,
    )


def _file(api: ApiClient, key: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {key or api.key}"}
    return str(api.upload(sft_lines(), headers=headers).json()["id"])


def _bad_request(call: Any) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as info:
        call()
    assert info.value.status_code == 400
    return info.value


# -- OpenAI's limits on metadata, suffix and seed -------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metadata", {f"k{i}": "v" for i in range(17)}),  # at most 16 pairs
        ("metadata", {"k" * 65: "v"}),  # keys at most 64 characters
        ("metadata", {"k": "v" * 513}),  # values at most 512 characters
        ("suffix", "s" * 65),  # at most 64 characters
        ("suffix", "my:model"),  # ':' would split the model name
        ("seed", -1),  # 0 .. 2**31 - 1
        ("seed", 2**31),
    ],
)
def test_create_field_over_openai_limit_is_400_naming_it(
    api: ApiClient, field: str, value: Any
) -> None:
    client, file_id = _sdk(api), _file(api)
    err = _bad_request(
        lambda: client.fine_tuning.jobs.create(
            model="lco-tiny", training_file=file_id, **{field: value}
        )
    )
    assert err.param == field


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", "5"), ("seed", True), ("seed", 1.5), ("metadata", {"k": 5}), ("metadata", [])],
)
def test_create_field_of_wrong_type_is_400_naming_it(
    api: ApiClient, field: str, value: Any
) -> None:
    # OpenAI's seed is an integer (no "5" or true) and metadata maps strings to strings.
    response = api.post(JOBS, json={**sft_body(_file(api)), field: value})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field


def test_create_fields_at_openai_limits_are_accepted(api: ApiClient) -> None:
    client = _sdk(api)
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    job = client.fine_tuning.jobs.create(
        model="lco-tiny",
        training_file=_file(api),
        metadata=metadata,
        suffix="s" * 64,
        seed=2**31 - 1,
    )
    assert (job.metadata, job.user_provided_suffix, job.seed) == (metadata, "s" * 64, 2**31 - 1)
    assert (
        client.fine_tuning.jobs.create(model="lco-tiny", training_file=_file(api), seed=0).seed == 0
    )


# -- deprecated top-level hyperparameters ----------------------------------------------------
def test_top_level_hyperparameters_train_supervised_with_them(api: ApiClient) -> None:
    client = _sdk(api)
    hp = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}
    job = client.fine_tuning.jobs.create(
        model="lco-tiny", training_file=_file(api), hyperparameters=hp
    )
    assert job.method is not None and job.method.type == "supervised"
    assert job.method.supervised is not None
    given = job.method.supervised.hyperparameters
    assert given is not None
    assert (given.n_epochs, given.batch_size, given.learning_rate_multiplier) == (2, 4, 0.5)
    assert (
        job.hyperparameters.n_epochs,
        job.hyperparameters.batch_size,
        job.hyperparameters.learning_rate_multiplier,
    ) == (2, 4, 0.5)
    # Stored in the one shape the rest of the system reads.
    assert client.fine_tuning.jobs.retrieve(job.id).method == job.method


def test_top_level_hyperparameters_with_method_is_400(api: ApiClient) -> None:
    client, file_id = _sdk(api), _file(api)
    err = _bad_request(
        lambda: client.fine_tuning.jobs.create(
            model="lco-tiny",
            training_file=file_id,
            hyperparameters={"n_epochs": 2},
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
        )
    )
    assert err.param == "hyperparameters"


def test_bad_top_level_hyperparameter_names_it(api: ApiClient) -> None:
    client, file_id = _sdk(api), _file(api)
    err = _bad_request(
        lambda: client.fine_tuning.jobs.create(
            model="lco-tiny", training_file=file_id, hyperparameters={"n_epochs": 0}
        )
    )
    assert err.param == "hyperparameters.n_epochs"


# -- jobs.list(metadata=...) -----------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def db_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ApiClient]:
    """The `api` fixture's setup on either database (the filter is SQL per dialect)."""
    from api.app import create_app

    if request.param == "sqlite":
        settings = fast_settings(tmp_path / "data")
    else:
        pg_url = request.getfixturevalue("pg_url")
        settings = fast_settings(tmp_path / "data", database_url=pg_url)
    upgrade(settings)
    register_worker(settings, gpus=8, hours=24)
    key, other = new_key(settings, "team-a"), new_key(settings, "team-b")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield ApiClient(client, settings, key, other)


def _create(api: ApiClient, metadata: dict[str, str] | None, key: str | None = None) -> str:
    client = _sdk(api, key)
    return client.fine_tuning.jobs.create(
        model="lco-tiny", training_file=_file(api, key), metadata=metadata
    ).id


def test_list_filters_on_metadata(db_api: ApiClient) -> None:
    api = db_api
    client = _sdk(api)
    a = _create(api, {"experiment": "A", "run": "1"})
    b = _create(api, {"experiment": "B", "run": "1"})
    plain = _create(api, None)
    odd = _create(api, {'we"ird] key': "x&y=z", "empty": ""})
    _create(api, {"experiment": "A", "run": "1"}, key=api.other_key)  # another team's

    def ids(**kw: Any) -> list[str]:
        return [j.id for j in client.fine_tuning.jobs.list(**kw).data]

    assert ids(metadata={"experiment": "A"}) == [a]
    assert ids(metadata={"experiment": "B"}) == [b]
    assert ids(metadata={"run": "1"}) == [b, a]
    assert ids(metadata={"experiment": "A", "run": "1"}) == [a]  # every pair must hold
    assert ids(metadata={"experiment": "A", "run": "2"}) == []
    assert ids(metadata={"experiment": "C"}) == []
    assert ids(metadata={'we"ird] key': "x&y=z"}) == [odd]
    assert ids(metadata={"empty": ""}) == [odd]  # `metadata[k]=` asks for the empty value
    assert ids(metadata={}) == [odd, plain, b, a]  # an empty object: no filter
    # `metadata=null`: only jobs without metadata.
    null = api.get(JOBS, params={"metadata": "null"}).json()
    assert [j["id"] for j in null["data"]] == [plain]


def test_list_metadata_filter_pages(db_api: ApiClient) -> None:
    api = db_api
    client = _sdk(api)
    matching = []
    for i in range(3):
        matching.append(_create(api, {"experiment": "A"}))
        _create(api, {"experiment": "B", "i": str(i)})
    newest_first = matching[::-1]
    first = client.fine_tuning.jobs.list(metadata={"experiment": "A"}, limit=2)
    assert [j.id for j in first.data] == newest_first[:2] and first.has_more
    rest = client.fine_tuning.jobs.list(
        metadata={"experiment": "A"}, limit=2, after=first.data[-1].id
    )
    assert [j.id for j in rest.data] == newest_first[2:] and not rest.has_more
    # The SDK's auto-paging follows the cursor with the filter kept.
    every = client.fine_tuning.jobs.list(metadata={"experiment": "A"}, limit=1)
    assert [j.id for j in every] == newest_first


@pytest.mark.parametrize(
    "query",
    [
        "metadata=yes",  # only metadata=null is a bare form
        "metadata=null&metadata%5Bk%5D=v",  # the two forms do not combine
        "metadata%5Bk%5D=v&metadata%5Bk%5D=w",  # one key, two values
        "metadata%5Bk=v",
        "&".join(f"metadata%5Bk{i}%5D=v" for i in range(17)),  # more pairs than metadata holds
    ],
)
def test_bad_metadata_filter_is_400(api: ApiClient, query: str) -> None:
    response = api.get(f"{JOBS}?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith("metadata")


# -- the scheduler reads only the columns it needs ------------------------------------------
def test_scheduler_pass_never_reads_the_spec(api: ApiClient) -> None:
    settings = api.settings
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:
        team_id = session.execute(text("SELECT id FROM teams ORDER BY id LIMIT 1")).scalar_one()
        for _ in range(3):
            session.add(job_row(team_id, spec={"metadata": {"big": "x" * 512}}))
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    with transaction(sessions) as session:  # a pass: plan and admit
        admitted = admit(session, settings, utcnow())
    with sessions() as session:  # the pool view's read
        view = queue_view(session, settings)
        for job in view.jobs.values():
            assert (job.pool, job.gpus, job.priority, job.step) == ("default", 1, "normal", 0)
    assert len(admitted) == 3 and all(j.dispatch_count == 1 for j in admitted)
    job_reads = [s for s in statements if "FROM jobs" in s]
    assert job_reads and not [s for s in job_reads if "spec" in s or "error" in s]
