"""The base layer: the compiled pipeline's data model, every error cellpipe raises, and atomic
writes. Imports nothing else of cellpipe; everything may import it.
"""
