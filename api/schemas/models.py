"""Model objects as OpenAI's SDK parses them (`openai.types.Model`, `ModelDeleted`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from jobs.ids import epoch
from jobs.model_store import ModelEntry


class AdapterPublic(BaseModel):
    """Extension: the model is a LoRA adapter, served on top of `base_model`."""

    type: Literal["lora"] = "lora"
    base_model: str


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    # "system" for base models; a fine-tuned model's team (its job's `organization_id`).
    owned_by: str
    # Extension: set when the model is a LoRA adapter (null: a full model).
    adapter: AdapterPublic | None = None

    @classmethod
    def from_entry(cls, entry: ModelEntry) -> ModelPublic:
        adapter = AdapterPublic(base_model=entry.adapter_base) if entry.adapter_base else None
        return cls(
            id=entry.id,
            created=epoch(entry.created_at) or 0,
            owned_by=entry.owned_by,
            adapter=adapter,
        )


class ModelsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True
