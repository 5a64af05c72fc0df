"""The ways in: the Python API, the command line, the named presets.
"""
