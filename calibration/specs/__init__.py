"""The vocabulary: what can be measured and how it is counted, with no torch.

Operation and fusion-pattern names, their parameters and shape grids, and their FLOP and
byte models live here, so that reading, comparing and querying a profile never imports
torch. The torch kernels that run these specs are in :mod:`calibration.measure`.
"""
