"""One module per wire protocol, each a sans-IO codec (or an in-process engine adapter).

Modules load lazily: the router imports a backend only when a URL names its scheme. How to add
one: ``ADDING_A_BACKEND.md`` beside this file.
"""
