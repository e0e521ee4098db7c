module cellpipe.invalid/cluster-tools

go 1.24
