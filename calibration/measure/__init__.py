"""Measuring: the torch kernels behind each spec, the timing harness, and folding timings
into a profile. Torch is imported by the modules that run kernels, not by this package."""
