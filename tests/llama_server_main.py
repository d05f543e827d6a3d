"""Runs ``llama_cpp.server`` (same arguments) with the library's crash-safe ``Llama`` class.

llama.cpp's AMX kernels crash on some machines (see ``expertprompting._io.local.llama_class``);
the server builds its models with ``llama_cpp.Llama``, so that name is replaced in this
process only, before the server's own ``__main__`` runs.
"""

from __future__ import annotations

import runpy

import llama_cpp

from expertprompting._io.local import llama_class

if __name__ == "__main__":
    llama_cpp.Llama = llama_class(llama_cpp)  # type: ignore[misc]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
