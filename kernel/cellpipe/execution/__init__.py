"""Running steps: the runner that executes one step (runner, shell, marshal, hidden_state),
the warm process steps fork from (warm_ahead, forkserver), the DAG scheduler the local and
Docker backends share (scheduling), limits, the skip-unchanged cache and lineage.
May import cellpipe.core, cellpipe.compiling, cellpipe.rundir and cellpipe.reports, and the
pod side of the Argo result protocol (cellpipe.backends.argo.trailer, which imports only
cellpipe.core and cellpipe.compiling).
"""
