"""From a ``Cine`` to the network's input: the default grid, outlier suppression, resampling,
LV localisation and the invertible ``CropTransform``.
"""
