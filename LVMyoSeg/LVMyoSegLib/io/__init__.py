"""Reading and writing studies: DICOM folders and 4D volume files to ``Cine``, short-axis checks,
the Sunnybrook expert contours, the on-disk training dataset, and the synthetic phantom.
"""
