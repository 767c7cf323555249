"""HTTP API (FastAPI): ask, OpenAI-compatible chat completions, live document updates, a chat page."""

from .app import create_app

__all__ = ["create_app"]
