"""Voxels: numpy ``[k, j, i]`` <-> vtkImageData, vtkOrientedImageData and scalar volume nodes."""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..errors import InputError
from .geometry import to_vtk_matrix


def image_array(image, what: str) -> np.ndarray:
    """Copy of a single-component vtkImageData as numpy ``[k, j, i]``."""
    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None:
        raise InputError(f"{what} holds no image data; load the image again.")
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(f"{what} has {scalars.GetNumberOfComponents()} components per voxel; LVMyoSeg "
                         "needs a grey-level (single-component) cine.")
    nx, ny, nz = image.GetDimensions()
    return numpy_support.vtk_to_numpy(scalars).reshape(nz, ny, nx).copy()


def _image_data(array: np.ndarray, image=None):
    """vtkImageData (or the given subclass instance) holding ``array`` ``[k, j, i]``."""
    array = np.ascontiguousarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = image if image is not None else vtk.vtkImageData()
    nz, ny, nx = array.shape
    image.SetDimensions(nx, ny, nz)
    vtk_array = numpy_support.numpy_to_vtk(array.ravel(), deep=True,
                                           array_type=numpy_support.get_vtk_array_type(array.dtype))
    image.GetPointData().SetScalars(vtk_array)
    return image


def oriented_image(array: np.ndarray, matrix_ijk_to_ras: np.ndarray):
    """vtkOrientedImageData holding ``array`` ``[k, j, i]`` with the given image-to-world matrix."""
    image = _image_data(array, slicer.vtkOrientedImageData())
    image.SetImageToWorldMatrix(to_vtk_matrix(matrix_ijk_to_ras))
    return image


def volume_array(volume_node) -> np.ndarray:
    """Voxels of a scalar volume node as numpy ``[k, j, i]`` (a copy)."""
    return image_array(volume_node.GetImageData(), f"Volume node '{volume_node.GetName()}'")


def new_volume_node(array: np.ndarray, matrix_ijk_to_ras: np.ndarray, name: str = ""):
    """A vtkMRMLScalarVolumeNode (not in any scene) holding ``array`` ``[k, j, i]``."""
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    node.SetIJKToRASMatrix(to_vtk_matrix(matrix_ijk_to_ras))
    node.SetAndObserveImageData(_image_data(array))
    return node
