"""Running the method: the Pruner's epoch steps, osp's own training loop (Run), data, random states,
threads, torchrun, branches, resume, and the studio's background runs.
"""
