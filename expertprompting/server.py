"""The OpenAI-compatible server: expert answers for any app that speaks the OpenAI API.

``expertprompting serve`` on the command line, or from Python::

    from expertprompting.server import ServerSettings, serve

    serve(ServerSettings(models=["gpt-4o-mini"], port=8000))

:func:`create_app` gives the ASGI application alone, to run under any ASGI server or to test.
Needs the ``serve`` extra: ``pip install "expertprompting[serve]"`` (FastAPI and uvicorn).
See the "Serve" page of the documentation for the routes, the security settings and what
``usage`` means.
"""

from __future__ import annotations

from ._serve.app import create_app
from ._serve.run import serve
from ._serve.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "serve"]
