"""The run directory, the contract between the engine, the backends, the server and the
sidebar: the only code that knows the names and formats of the files inside a run.

layout (every name, as pure paths), status (events -> a typed status), data (a step's
manifest), runs (``RunDir``, the facade everyone else calls; ``CacheIndex``).
May import cellpipe.core and cellpipe.compiling.
"""
