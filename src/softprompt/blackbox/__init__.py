"""Gradient-free prompt tuning (BBT, BBTv2, gradient-free ULPT) with CMA-ES over a seeded random projection."""
