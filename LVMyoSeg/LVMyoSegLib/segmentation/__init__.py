"""Segmenting studies: one cine to probabilities and a label map, the files ``segment`` writes,
and cohorts on Dask.
"""
