"""Run reports: a run as one self-contained HTML page (report), its DAG as inline SVG
(dag_svg), and the executed notebook (executed). May import cellpipe.core,
cellpipe.compiling and cellpipe.rundir.
"""
