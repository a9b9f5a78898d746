"""chatlane's shared core: settings, Redis key names, the Lua scripts and their typed callers,
the message, job and stream codecs, the turn contract, and the errors.

Both sides build on it: ``producer`` (the Python client and the HTTP API) and ``worker`` (the arq
worker). It imports neither of them.
"""
