"""`GET /v1/fine_tuning/jobs/{id}/tensorboard`: the job's TensorBoard event files as a tar
(empty before the first step), and another team's job is a 404 like a missing one."""

from __future__ import annotations

import io
import tarfile

from jobs.storage import Storage
from tests.service_fixtures import STRING_CHECK, ApiClient, rl_lines


def test_tensorboard_files_download_as_a_tar(api: ApiClient) -> None:
    file_id = api.upload(rl_lines()).json()["id"]
    body = {
        "model": "lco-tiny",
        "training_file": file_id,
        "method": {"type": "lco", "lco": {"grader": STRING_CHECK}},
    }
    job = api.post("/v1/fine_tuning/jobs", json=body).json()
    path = f"/v1/fine_tuning/jobs/{job['id']}/tensorboard"
    empty = api.get(path)
    assert empty.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(empty.content)) as tar:
        assert tar.getnames() == []

    # What the training process's SummaryWriter leaves (lco_core.metric_sinks).
    tb = Storage(api.settings).job_dir(job["organization_id"], job["id"]) / "tensorboard"
    tb.mkdir(parents=True)
    (tb / "events.out.tfevents.1.host").write_bytes(b"\x00events")
    response = api.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        member = tar.getmember(f"{job['id']}-tensorboard/events.out.tfevents.1.host")
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == b"\x00events"

    assert api.get(path, headers=api.other_headers).status_code == 404
