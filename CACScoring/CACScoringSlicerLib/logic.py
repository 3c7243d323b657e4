"""MRML glue of the CACScoring module: no Qt, importable without the Slicer GUI (works on slicer-core).

Segments: one per artery, segment ID = artery key from the label contract. Scores follow edits through
CACScoringLib's IncrementalScorer: the segmentation's events mark the scores stale, `rescore()` exports
the labelmap, finds the slices that differ from the last scored labels and rescores only those.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import slicer
import vtk
from scipy import ndimage

from CACScoringLib.errors import InputError
from CACScoringLib.labels import ARTERIES, ARTERY_LABELS, LABEL_ID
from CACScoringLib.scoring import IncrementalScorer, ScoreResult, ScoringParams, check_contrast, preset
from CACScoringLib.scoring.params import STANDARD_THRESHOLD_HU

from . import geometry, report
from .inference_job import InferenceJob
from .terminology import terminology_tag

MODULE_NAME = "CACScoring"
INFERENCE_DIGEST_ATTRIBUTE = "CACScoring.InferenceLabelsDigest"
# Saved with the scene: what the segmentation run warned about (heart ROI fallback, unexpected input).
SEGMENTATION_WARNINGS_ATTRIBUTE = "CACScoring.SegmentationWarnings"
SCORE_TABLE_COLUMNS = ("Artery", "3D lesions", "Agatston", "Volume (mm³)", "Mass (mg)")
LESION_TABLE_COLUMNS = ("ID", "Artery", "Slices", "Agatston", "Volume (mm³)", "Peak HU")
_SEGMENTATION_EVENTS = ("SourceRepresentationModified", "SegmentAdded", "SegmentRemoved", "SegmentModified")
_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)
MASK_UPPER_HU = 10000.0  # above any CT value: the mask is a lower bound only


@dataclass
class ScoringOptions:
    """What `process` and the panel need besides the nodes."""

    model: str = ""  # registry id or model package folder; empty: the registry's default model
    device: str = "auto"
    preset: str = "standard"
    overwrite_edited: bool = False  # replace a segmentation the reader has edited (else: a new node)
    scoring_overrides: dict = field(default_factory=dict)  # ScoringParams fields to change in the preset

    def scoring_params(self) -> ScoringParams:
        return preset(self.preset).with_(**self.scoring_overrides)


def _bounding_box(labels: np.ndarray):
    """((z0, z1), (y0, y1), (x0, x1)) half-open around the labelled voxels; None when there are none."""
    box = []
    for axis in range(3):
        present = np.flatnonzero(labels.any(axis=tuple(a for a in range(3) if a != axis)))
        if present.size == 0:
            return None
        box.append((int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _union(a, b):
    if a is None or b is None:
        return a or b
    return tuple((min(p[0], q[0]), max(p[1], q[1])) for p, q in zip(a, b, strict=True))


def _artery_layers(segmentation_node, volume_node):
    """[(image, lookup)] for the binary-labelmap layers holding the artery segments, when each lies on the CT's
    own voxel grid (as the Segment Editor keeps them): the layer's image and a table from its label values to
    artery ids (other segments sharing the layer map to 0). None otherwise: the merged export then reads them."""
    segmentation = segmentation_node.GetSegmentation()
    labelmap = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    present = [key for key in ARTERIES if segmentation.GetSegment(key)]
    if segmentation.GetSourceRepresentationName() != labelmap:
        return None
    ijk_to_ras = geometry.ijk_to_ras(volume_node)
    dimensions = volume_node.GetImageData().GetDimensions()
    layers = {}
    for key in present:
        segment = segmentation.GetSegment(key)
        image = segment.GetRepresentation(labelmap)
        layer = segmentation.GetLayerIndex(key)
        if image is None:
            return None
        if layer not in layers:
            matrix = vtk.vtkMatrix4x4()
            image.GetImageToWorldMatrix(matrix)
            if not np.allclose(geometry.matrix_to_numpy(matrix), ijk_to_ras, rtol=0.0, atol=1e-6):
                return None
            extent = image.GetExtent()
            if not _empty(extent):
                scalars = image.GetPointData().GetScalars()
                if min(extent[::2]) < 0 or any(extent[2 * a + 1] >= dimensions[a] for a in range(3)):
                    return None
                if scalars is None or scalars.GetNumberOfComponents() != 1 or scalars.GetDataType() not in (
                    vtk.VTK_UNSIGNED_CHAR, vtk.VTK_UNSIGNED_SHORT):
                    return None
            layers[layer] = (image, np.zeros(65536, np.uint8))
        layers[layer][1][segment.GetLabelValue()] = LABEL_ID[key]
    return list(layers.values())


def _empty(extent) -> bool:
    return extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]


def labels_digest(labels: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(labels, dtype=np.uint8).tobytes()).hexdigest()


class CACScoringSceneLogic:
    """Everything the panel and scripts do with MRML nodes, on a given scene."""

    def __init__(self, scene):
        self.scene = scene
        self.volume_node = None
        self.segmentation_node = None
        self.scorer: IncrementalScorer | None = None
        self.ct = None
        self.stale = False  # the segmentation changed since the last rescore
        self.on_segmentation_changed = None  # callable(), e.g. the widget's throttle timer
        self._observed = []  # (object, tag)
        self._writing = False
        self._labelled_box = None  # ((z0, z1), (y0, y1), (x0, x1)) holding every label the scorer has; None: none

    # --- parameter node (same singleton node Slicer's ScriptedLoadableModuleLogic uses) ---

    def parameter_node(self):
        node = self.scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
            node.SetSingletonTag(MODULE_NAME)
            node.SetAttribute("ModuleName", MODULE_NAME)
            node.SetName(self.scene.GenerateUniqueName(MODULE_NAME))
        return node

    def remember(self, volume_node, segmentation_node) -> None:
        """Store the current nodes in the parameter node so a saved scene restores the session."""
        node = self.parameter_node()
        node.SetNodeReferenceID("inputVolume", volume_node.GetID() if volume_node else None)
        node.SetNodeReferenceID("outputSegmentation", segmentation_node.GetID() if segmentation_node else None)

    def restore(self, params: ScoringParams | None = None) -> ScoreResult | None:
        """Resume live scoring on the nodes a (re)loaded scene's parameter node refers to."""
        node = self.parameter_node()
        volume_node = node.GetNodeReference("inputVolume")
        segmentation_node = node.GetNodeReference("outputSegmentation")
        if volume_node is None or segmentation_node is None:
            return None
        return self.start_live_scoring(volume_node, segmentation_node, params)

    # --- Segment Editor ---

    def segment_editor_node(self):
        """The panel's Segment Editor node (a scene singleton, so its settings are saved with the scene)."""
        node = self.scene.GetSingletonNode(MODULE_NAME, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
            node.SetSingletonTag(MODULE_NAME)
        return node

    @staticmethod
    def apply_calcium_mask_preset(editor_node, threshold_hu: float = STANDARD_THRESHOLD_HU) -> None:
        """Painting takes only voxels >= threshold, and a stroke takes voxels from the other arteries."""
        editor_node.SetSourceVolumeIntensityMask(True)
        editor_node.SetSourceVolumeIntensityMaskRange(threshold_hu, MASK_UPPER_HU)
        editor_node.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteAllSegments)

    # --- segmentation node ---

    def create_segmentation_node(self, volume_node, name: str | None = None):
        node = self.scene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode", self.scene.GenerateUniqueName(name or f"{volume_node.GetName()} calcium")
        )
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        node.SetUndoEnabled(True)
        self.ensure_artery_segments(node)
        return node

    @staticmethod
    def ensure_artery_segments(segmentation_node) -> None:
        """One segment per artery, named, coloured and coded from the label contract."""
        segmentation = segmentation_node.GetSegmentation()
        for artery in ARTERY_LABELS:
            segment = segmentation.GetSegment(artery.key)
            if segment is None:
                segmentation.AddEmptySegment(artery.key, artery.key, [c / 255.0 for c in artery.color])
                segment = segmentation.GetSegment(artery.key)
            segment.SetTerminology(terminology_tag(artery))
            segment.SetTag("CACScoring.ArteryName", artery.name)

    def labels_from_segmentation(self, segmentation_node, volume_node) -> np.ndarray:
        """uint8 (z, y, x) label map on the CT grid (later segments win where segments overlap)."""
        present = [key for key in ARTERIES if segmentation_node.GetSegmentation().GetSegment(key)]
        if not present:
            return np.zeros(tuple(reversed(volume_node.GetImageData().GetDimensions())), np.uint8)
        ids, values = vtk.vtkStringArray(), vtk.vtkIntArray()
        for key in present:
            ids.InsertNextValue(key)
            values.InsertNextValue(LABEL_ID[key])
        merged = slicer.vtkOrientedImageData()
        ok = segmentation_node.GenerateMergedLabelmapForAllSegments(
            merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, geometry.grid_of(volume_node), ids, values
        )
        if not ok:
            raise InputError("could not read the segmentation on the CT grid: check that it belongs to this CT")
        return geometry.image_array(merged).astype(np.uint8)

    def write_labels(self, segmentation_node, volume_node, labels: np.ndarray, arteries=ARTERIES) -> None:
        """Replace the given arteries' segments with the label map (the way editor effects write), each as an
        image of the labels' bounding box only: what lies outside is background, and whole-CT masks would cost
        seconds at 300 slices."""
        self.ensure_artery_segments(segmentation_node)
        box = _bounding_box(labels) or ((0, 1), (0, 1), (0, 1))  # no labels: one background voxel clears them
        cropped = labels[tuple(slice(lo, hi) for lo, hi in box)]
        (z0, z1), (y0, y1), (x0, x1) = box
        self._writing = True
        try:
            for key in arteries:
                image = geometry.oriented_image((cropped == LABEL_ID[key]).astype(np.uint8), volume_node)
                image.SetExtent(x0, x1 - 1, y0, y1 - 1, z0, z1 - 1)
                slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                    image, segmentation_node, key, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
                )
        finally:
            self._writing = False
        self._mark_stale()

    def is_edited(self, segmentation_node, volume_node) -> bool:
        """True when the segments differ from what inference last wrote (or were never inferred)."""
        digest = segmentation_node.GetAttribute(INFERENCE_DIGEST_ATTRIBUTE)
        labels = self.labels_from_segmentation(segmentation_node, volume_node)
        return digest != labels_digest(labels) and bool(digest or labels.any())

    def apply_inference_labels(self, volume_node, labels: np.ndarray, segmentation_node=None,
                               overwrite_edited: bool = False):
        """Put inference output into a segmentation node; a reader-edited node is kept and a new one made
        unless `overwrite_edited`. Returns the node written."""
        if segmentation_node is not None and not overwrite_edited and self.is_edited(segmentation_node, volume_node):
            segmentation_node = None
        if segmentation_node is None:
            segmentation_node = self.create_segmentation_node(volume_node)
        self.write_labels(segmentation_node, volume_node, labels)
        segmentation_node.SetAttribute(INFERENCE_DIGEST_ATTRIBUTE, labels_digest(labels))
        return segmentation_node

    # --- live scoring ---

    def start_live_scoring(self, volume_node, segmentation_node, params: ScoringParams | None = None,
                           labels: np.ndarray | None = None, blood_pool_hu: float | None = None) -> ScoreResult:
        """Score the segmentation and follow its edits. `labels`: what was just written into it (saves reading
        it back); `blood_pool_hu`: what the segmentation run measured (saves finding the heart again)."""
        self.stop_live_scoring()
        self.volume_node, self.segmentation_node = volume_node, segmentation_node
        self.ct = geometry.ct_from_volume_node(volume_node)
        if labels is None:
            labels = self.labels_from_segmentation(segmentation_node, volume_node)
        params = params or ScoringParams()
        contrast = check_contrast(self.ct, params, blood_pool_hu=blood_pool_hu)
        self.scorer = IncrementalScorer(self.ct, labels, params, contrast)
        self._labelled_box = _bounding_box(labels)
        segmentation = segmentation_node.GetSegmentation()
        for event in _SEGMENTATION_EVENTS:
            tag = segmentation.AddObserver(getattr(slicer.vtkSegmentation, event), self._on_segmentation_event)
            self._observed.append((segmentation, tag))
        self.remember(volume_node, segmentation_node)
        self.stale = False
        self.update_tables()
        return self.scorer.result

    def stop_live_scoring(self) -> None:
        for observed, tag in self._observed:
            observed.RemoveObserver(tag)
        self._observed = []
        self.scorer = None

    def _on_segmentation_event(self, caller, event) -> None:
        if not self._writing:
            self._mark_stale()

    def _mark_stale(self) -> None:
        if self.scorer is None:
            return
        self.stale = True
        if self.on_segmentation_changed is not None:
            self.on_segmentation_changed()

    @property
    def result(self) -> ScoreResult | None:
        return self.scorer.result if self.scorer else None

    def warnings(self) -> list[str]:
        """What the reader should know about the scores: the CT's input warnings, the segmentation run's, the
        scoring's."""
        if self.result is None:
            return []
        from_segmentation = (self.segmentation_node.GetAttribute(SEGMENTATION_WARNINGS_ATTRIBUTE) or "").splitlines()
        return list(self.ct.info.warnings) + from_segmentation + list(self.result.warnings)

    def rescore(self) -> ScoreResult:
        """Rescore the slices that changed since the last call (equal to a full recompute)."""
        if self.scorer is None:
            raise InputError("no scoring session: run Apply or select a segmentation first")
        layers = _artery_layers(self.segmentation_node, self.volume_node)
        if layers is None:
            labels = self.labels_from_segmentation(self.segmentation_node, self.volume_node)
            changed = np.flatnonzero((labels != self.scorer.labels).any(axis=(1, 2)))
            result = self.scorer.update(labels, changed)
            self._labelled_box = _bounding_box(labels)
        else:
            changed, result = self._rescore_from_layers(layers)
        self.stale = False
        if changed.size:
            self.update_tables()
        return result

    def _rescore_from_layers(self, layers) -> tuple[np.ndarray, ScoreResult]:
        """Compare only the layers' extents and where labels were before (elsewhere both are background): a
        stroke on a 300-slice CT then costs the extents, not the whole label map (bench_slicer_rescore.py)."""
        boxes = []
        for image, _ in layers:
            x0, x1, y0, y1, z0, z1 = image.GetExtent()
            boxes.append(None if _empty((x0, x1, y0, y1, z0, z1)) else ((z0, z1 + 1), (y0, y1 + 1), (x0, x1 + 1)))
        layers_box = None
        for box in boxes:
            layers_box = _union(layers_box, box)
        region = _union(layers_box, self._labelled_box)
        if region is None:
            return np.zeros(0, np.int64), self.scorer.result
        new = np.zeros(tuple(hi - lo for lo, hi in region), np.uint8)
        for (image, lookup), box in zip(layers, boxes, strict=True):
            if box is not None:
                inside = tuple(slice(lo - r_lo, hi - r_lo) for (lo, hi), (r_lo, _) in zip(box, region, strict=True))
                # Where segments of several layers overlap the later artery wins, as in the merged export: ids
                # follow ARTERIES' order, so that is the largest id.
                np.maximum(new[inside], lookup[geometry.image_array(image)], out=new[inside])
        (rz0, _), (ry0, ry1), (rx0, rx1) = region
        old = self.scorer.labels[tuple(slice(lo, hi) for lo, hi in region)]
        in_region = np.flatnonzero((new != old).any(axis=(1, 2)))
        changed = in_region + rz0
        slices = self.scorer.labels[changed]  # a copy: fancy indexing
        slices[:, ry0:ry1, rx0:rx1] = new[in_region]
        result = self.scorer.update_slices(changed, slices)
        self._labelled_box = layers_box  # everything outside the layers is background now
        return changed, result

    # --- tables shown in the panel (MRML table nodes, saved with the scene) ---

    def _table_node(self, role: str, name: str):
        parameter_node = self.parameter_node()
        node = parameter_node.GetNodeReference(role)
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", self.scene.GenerateUniqueName(name))
            parameter_node.SetNodeReferenceID(role, node.GetID())
        return node

    @staticmethod
    def _fill_table(table_node, columns, rows) -> None:
        table = vtk.vtkTable()
        for column, name in enumerate(columns):
            array = vtk.vtkStringArray()
            array.SetName(name)
            for row in rows:
                array.InsertNextValue(row[column])
            table.AddColumn(array)
        table_node.SetAndObserveTable(table)
        for name in columns:
            table_node.SetColumnTitle(name, name)
        table_node.SetUseColumnTitleAsColumnHeader(True)
        table_node.SetLocked(True)

    def update_tables(self) -> None:
        result = self.result
        if result is None:
            return
        self._fill_table(self._table_node("scoreTable", "CAC scores"), SCORE_TABLE_COLUMNS,
                         [report.score_row(key, score) for key, score in report.score_rows(result)])
        self._fill_table(self._table_node("lesionTable", "CAC lesions"), LESION_TABLE_COLUMNS,
                         [report.lesion_row(lesion) for lesion in result.lesions])

    def summary(self) -> str:
        result = self.result
        return "" if result is None else f"Risk: {result.risk_category} · CAC-DRS: {result.cac_drs}"

    # --- lesions ---

    def lesion(self, lesion_id: int):
        for lesion in self.result.lesions if self.result else ():
            if lesion.id == lesion_id:
                return lesion
        raise InputError(f"no lesion {lesion_id}: rescore and pick a lesion from the table")

    def lesion_center_ras(self, lesion_id: int) -> tuple[float, float, float]:
        z, y, x = self.lesion(lesion_id).centroid_zyx
        return geometry.ras_from_ijk(self.volume_node, (x, y, z))

    def lesion_region(self, lesion_id: int) -> np.ndarray:
        """Voxels of the labelled region (26-connected, one artery) holding the lesion's calcium."""
        lesion = self.lesion(lesion_id)
        labels = self.scorer.labels
        regions, count = ndimage.label(labels == LABEL_ID[lesion.artery], structure=_STRUCTURE_26)
        calcium = self.ct.array >= self.result.effective_threshold_hu
        best, best_distance = 0, np.inf
        for region in range(1, count + 1):
            voxels = np.argwhere((regions == region) & calcium)
            if voxels.size == 0:
                continue
            distance = np.linalg.norm(voxels.mean(axis=0) - np.asarray(lesion.centroid_zyx))
            if distance < best_distance:
                best, best_distance = region, distance
        return regions == best

    def reassign_lesion(self, lesion_id: int, artery: str | None, save_state_for_undo=None) -> ScoreResult:
        """Move a lesion to another artery (`artery=None`: delete it) in one undoable step.

        `save_state_for_undo()` is called before the change (the panel passes the Segment Editor's);
        by default the scene's undo stack is used when it is on.
        """
        if artery is not None and artery not in LABEL_ID:
            raise InputError(f"unknown artery {artery!r}: choose one of {', '.join(ARTERIES)}")
        if self.stale:
            self.rescore()
        source = self.lesion(lesion_id).artery
        region = self.lesion_region(lesion_id)
        labels = self.scorer.labels.copy()
        labels[region] = LABEL_ID[artery] if artery else 0
        if save_state_for_undo is not None:
            save_state_for_undo()
        elif self.scene.GetUndoFlag():
            self.scene.SaveStateForUndo()
        changed = [source] + ([artery] if artery and artery != source else [])
        self.write_labels(self.segmentation_node, self.volume_node, labels, changed)
        return self.rescore()

    # --- files ---

    @staticmethod
    def save_segmentation(segmentation_node, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(path))
        if not storage.WriteData(segmentation_node):
            raise InputError(f"could not write {path}: choose a writable folder")
        return path

    def load_segmentation(self, path: str | Path, name: str | None = None):
        path = Path(path)
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or path.name.split(".")[0])
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(path))
        if not storage.ReadData(node):
            self.scene.RemoveNode(node)
            raise InputError(f"could not read segmentation {path}: give a .seg.nrrd file")
        node.CreateDefaultDisplayNodes()
        return node

    def export(self, folder: str | Path, case_name: str | None = None) -> dict[str, Path]:
        """Segmentation (.seg.nrrd) and report (CSV, JSON, HTML with a key image per artery) in `folder`."""
        if self.stale:
            self.rescore()
        if self.result is None:
            raise InputError("nothing to export: run Apply or select a segmentation first")
        folder = Path(folder)
        case_name = case_name or self.volume_node.GetName()
        result = replace(self.result, warnings=self.warnings())
        paths = report.write_report(folder, case_name, result, self.ct, self.scorer.labels)
        paths["segmentation"] = self.save_segmentation(self.segmentation_node, folder / f"{case_name}.seg.nrrd")
        return paths

    # --- inference ---

    @staticmethod
    def start_inference(volume_node, segmentation_node, options: ScoringOptions) -> InferenceJob:
        """Segment in the background; the job is bound to these nodes and options (see finish_inference)."""
        job = InferenceJob(geometry.ct_from_volume_node(volume_node), options.model, options.device)
        job.volume_id = volume_node.GetID()
        job.segmentation_id = segmentation_node.GetID() if segmentation_node is not None else None
        job.options = options
        return job.start()

    def finish_inference(self, job: InferenceJob):
        """After a successful job: labels into the nodes it was started on (see apply_inference_labels), live
        scoring on them. Whatever is selected meanwhile does not matter; if those nodes were deleted, the result
        is discarded with an InputError. Returns the segmentation node written."""
        import SimpleITK as sitk

        try:
            volume_node = self.scene.GetNodeByID(job.volume_id)
            segmentation_node = None if job.segmentation_id is None else self.scene.GetNodeByID(job.segmentation_id)
            if volume_node is None or (job.segmentation_id is not None and segmentation_node is None):
                deleted = "CT" if volume_node is None else "segmentation"
                raise InputError(f"the {deleted} this run was for was deleted while it ran: its result "
                                 "was discarded; select the nodes and run Apply again")
            labels = sitk.GetArrayFromImage(sitk.ReadImage(str(job.labels_path))).astype(np.uint8)
        finally:
            job.cleanup()
        shape = tuple(reversed(volume_node.GetImageData().GetDimensions()))
        if labels.shape != shape:
            raise InputError(f"segmentation has shape {labels.shape}, the CT {shape}: rerun the segmentation")
        segmentation_node = self.apply_inference_labels(volume_node, labels, segmentation_node,
                                                        job.options.overwrite_edited)
        segmentation_node.SetAttribute(SEGMENTATION_WARNINGS_ATTRIBUTE, "\n".join(job.status.warnings))
        self.start_live_scoring(volume_node, segmentation_node, job.options.scoring_params(), labels,
                                job.status.blood_pool_hu)
        return segmentation_node

    def process(self, input_volume_node, output_segmentation_node=None, options: ScoringOptions | None = None,
                progress=None):
        """Script entry point: segment (blocking, in a child process) and score.

        Returns (segmentation node, ScoreResult). `progress(JobStatus)` is called while segmenting.
        """
        options = options or ScoringOptions()
        job = self.start_inference(input_volume_node, output_segmentation_node, options)
        status = job.wait(progress=progress)
        if status.state != "done":
            job.cleanup()
            raise InputError(f"segmentation {status.state}: {status.message}")
        node = self.finish_inference(job)
        return node, self.result
