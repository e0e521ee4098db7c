"""The run directory, the contract between the engine, the backends, the server and the
sidebar: the only code that knows the names and formats of the files inside a run.
May import cellpipe.core and cellpipe.compiling.
"""
