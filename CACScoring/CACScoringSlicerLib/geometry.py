"""Volume node <-> CTVolume, with Slicer's RAS world and ITK's LPS world kept apart.

Slicer stores a volume's geometry as one IJK-to-RAS matrix; ITK (and CTVolume) as spacing, origin and
direction in LPS. LPS = diag(-1, -1, 1) * RAS, and the voxel array is (k, j, i) = (z, y, x) in both.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from CACScoringLib.errors import InputError
from CACScoringLib.volume import CTVolume, ScanInfo

SCAN_INFO_ATTRIBUTE = "CACScoring.ScanInfo"
_RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, col) for col in range(4)] for row in range(4)])


def numpy_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            matrix.SetElement(row, col, float(array[row, col]))
    return matrix


def ijk_to_ras(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix_to_numpy(matrix)


def ct_ijk_to_ras(ct: CTVolume) -> np.ndarray:
    direction = np.asarray(ct.direction, dtype=float).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * np.asarray(ct.spacing, dtype=float)  # column j = axis j * spacing j
    ijk_to_lps[:3, 3] = ct.origin
    return _RAS_LPS @ ijk_to_lps


def image_array(image: vtk.vtkImageData) -> np.ndarray:
    """The (z, y, x) voxel array of single-component image data (a view; copy before keeping it)."""
    scalars = image.GetPointData().GetScalars()
    return numpy_support.vtk_to_numpy(scalars).reshape(tuple(reversed(image.GetDimensions())))


def image_from_array(array: np.ndarray, image: vtk.vtkImageData | None = None) -> vtk.vtkImageData:
    image = image or vtk.vtkImageData()
    array = np.ascontiguousarray(array)
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True))
    return image


def scan_info(volume_node) -> ScanInfo:
    """Acquisition facts (kVp, slice thickness, reader warnings) of the volume, cached on the node.

    Known for volumes made by `add_volume_node` and, inside Slicer, for volumes loaded from the DICOM
    database (read from the database); otherwise unknown, and scoring says so.
    """
    stored = volume_node.GetAttribute(SCAN_INFO_ATTRIBUTE)
    if stored:
        return ScanInfo(**json.loads(stored))
    info = _dicom_scan_info(volume_node) or ScanInfo(source=volume_node.GetName())
    volume_node.SetAttribute(SCAN_INFO_ATTRIBUTE, json.dumps(asdict(info)))
    return info


# DICOM tags read from Slicer's DICOM database (ctkDICOMDatabase.fileValue takes "gggg,eeee").
DICOM_TAGS = {
    "slice_thickness": "0018,0050", "kvp": "0018,0060", "manufacturer": "0008,0070", "modality": "0008,0060",
    "series_instance_uid": "0020,000E", "patient_id": "0010,0020",
}  # fmt: skip


def _dicom_scan_info(volume_node) -> ScanInfo | None:
    """The acquisition tags of a volume Slicer loaded from its DICOM database, from that database (indexed
    when the series was imported: no file is read again)."""
    instance_uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    database = getattr(slicer, "dicomDatabase", None)  # only in the Slicer application
    if not instance_uids or database is None:
        return None
    files = [database.fileForInstance(uid) for uid in instance_uids]
    if not files or not files[0]:
        return None

    def value(tag: str, file: str = files[0]) -> str | None:
        return (database.fileValue(file, DICOM_TAGS[tag]) or "").strip() or None

    kvp = value("kvp")
    thickness = value("slice_thickness")
    increment = float(volume_node.GetSpacing()[2])
    thicknesses = [value("slice_thickness", file) if file else None for file in files]
    from CACScoringLib.io.dicom import acquisition_warnings

    return ScanInfo(
        slice_thickness_mm=float(thickness) if thickness else None,
        slice_increment_mm=increment,
        kvp=float(kvp) if kvp else None,
        manufacturer=value("manufacturer"),
        modality=value("modality") or "CT",
        series_instance_uid=value("series_instance_uid"),
        patient_id=value("patient_id"),
        source=volume_node.GetName(),
        warnings=acquisition_warnings(thicknesses, float(kvp) if kvp else None, value("modality"), increment),
    )


def ct_from_volume_node(volume_node) -> CTVolume:
    if volume_node is None or volume_node.GetImageData() is None:
        raise InputError("no CT volume selected: load a CT and select it as input")
    name = volume_node.GetName()
    if volume_node.GetParentTransformNode() is not None:
        raise InputError(f"volume '{name}' is under a transform: harden the transform (Data module) and retry")
    image = volume_node.GetImageData()
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"volume '{name}' is not a single-channel CT: select a grayscale CT volume")
    ijk_to_lps = _RAS_LPS @ ijk_to_ras(volume_node)
    axes = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    return CTVolume(
        array=image_array(image).astype(np.float32),
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(o) for o in ijk_to_lps[:3, 3]),
        direction=tuple(float(d) for d in (axes / spacing).ravel()),
        info=scan_info(volume_node),
    )


def add_volume_node(scene, ct: CTVolume, name: str):
    """A scalar volume node holding the CT, its geometry and its ScanInfo (as a node attribute)."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(numpy_to_matrix(ct_ijk_to_ras(ct)))
    node.SetAndObserveImageData(image_from_array(ct.array.astype(np.float32, copy=False)))
    node.SetAttribute(SCAN_INFO_ATTRIBUTE, json.dumps(asdict(ct.info)))
    node.CreateDefaultDisplayNodes()
    return node


def oriented_image(array: np.ndarray, volume_node) -> slicer.vtkOrientedImageData:
    """Image data on the volume's voxel grid, as segmentation labelmaps are stored."""
    image = slicer.vtkOrientedImageData()
    image_from_array(array, image)
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    return image


def grid_of(volume_node) -> slicer.vtkOrientedImageData:
    """The volume's voxel grid (extent and IJK-to-RAS) without voxel data."""
    grid = slicer.vtkOrientedImageData()
    grid.SetExtent(volume_node.GetImageData().GetExtent())
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    grid.SetImageToWorldMatrix(matrix)
    return grid


def ras_from_ijk(volume_node, ijk) -> tuple[float, float, float]:
    ras = ijk_to_ras(volume_node) @ np.array([*ijk, 1.0])
    return tuple(float(v) for v in ras[:3])
