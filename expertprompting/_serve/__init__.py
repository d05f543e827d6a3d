"""The OpenAI-compatible server (``expertprompting serve``); its public face is
:mod:`expertprompting.server`."""
