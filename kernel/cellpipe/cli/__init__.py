"""The ``cellpipe`` command: shared options and the one error translation point (common),
the group and the pipeline commands (app), and one module per further command. Imports the
engine; nothing in the engine imports it.
"""
