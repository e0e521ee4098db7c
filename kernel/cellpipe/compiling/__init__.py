"""Compiling a notebook: cell tags and roles (notebook), per-cell names read and written
(analysis), steps, inputs, outputs and edges (dataflow), gate expressions (gates), and the
pipeline model with its step scripts (compiler). May import cellpipe.core only.
"""
