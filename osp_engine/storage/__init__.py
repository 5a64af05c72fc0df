"""The run folder: its SQLite store, the writer lock, full-disk faults, the exported model, sweeps
read back from stores.
"""
