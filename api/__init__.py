"""The HTTP layer: an OpenAI-compatible fine-tuning API (FastAPI). Build it with
`api.app.create_app(settings)`; it never imports torch, transformers or lco_core."""
