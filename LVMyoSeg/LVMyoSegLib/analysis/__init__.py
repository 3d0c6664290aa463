"""What a label map means: slice-wise metrics, which slices count, cardiac function, wall
thickness, quality control, and scoring against expert labels.
"""
