"""The method's mathematics and the network it works on: the config, channel groups, the exact FLOPs
model and its checks, saliency, selection, the shrink, schedules, stability. Pure functions of tensors
and counts where they can be; nothing here writes a run.
"""
