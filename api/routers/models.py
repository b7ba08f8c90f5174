"""`/v1/models`: OpenAI's Models API over the model registry (`jobs.model_store`).

The list holds every base model (the built-in lco-tiny and those imported with
`lco models import`: every team sees them) and the team's own fine-tuned models. A
fine-tuned model's id has colons (`ft:lco-tiny:team-a::ftjob-...`), which one path
segment carries as they are. A team deletes its own fine-tuned models; base models are
the operators' (`lco models remove`), so deleting one here is 403.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ScopeDep, SessionDep
from api.schemas.models import ModelDeleted, ModelPublic, ModelsPublic
from jobs.model_store import delete_fine_tuned_model, team_model, team_models

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelsPublic)
def list_models(scope: ScopeDep) -> ModelsPublic:
    return ModelsPublic(data=[ModelPublic.from_entry(m) for m in team_models(scope)])


@router.get("/{model}", response_model=ModelPublic)
def retrieve_model(scope: ScopeDep, model: str) -> ModelPublic:
    return ModelPublic.from_entry(team_model(scope, model))


@router.delete("/{model}", response_model=ModelDeleted)
def delete_model(session: SessionDep, scope: ScopeDep, model: str) -> ModelDeleted:
    delete_fine_tuned_model(scope, model)
    session.commit()
    return ModelDeleted(id=model)
