"""llmrouter backend for llama.cpp's text-completion API (``llamacpp-native://host:8080``).

Installed, it is found by entry point: ``llmrouter.Client("llamacpp-native://127.0.0.1:8080")``
needs no import of this package. The codec is :mod:`llmrouter_llamacpp_native.backend`; a
loopback fake of the server and its conformance adapter are in
:mod:`llmrouter_llamacpp_native.fake`.
"""

__version__ = "0.1.0"
