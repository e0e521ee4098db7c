"""The Docker backend (backend), the images it builds offline (build) and ``cellpipe image``
(cli). Never imports another backend.
"""
