"""The help and acknowledgement texts of the two Slicer modules (shown in Slicer's module panel).

This file must stay importable on Python 3.9: an unsupported Slicer shows these texts too.
"""

CONTRIBUTORS = ["LVMyoSeg developers (LVMyoSeg project)"]

SEGMENTATION_HELP = """
Segments the left-ventricle myocardium (and the LV blood pool) on every frame of a short-axis
cine MRI with an ensemble of CNN + multi-level ConvLSTM networks: a fully convolutional
ResNet-56 extracts features of each frame, convolutional LSTMs at two resolutions carry them
along the cardiac cycle (with a circular connection, since the cycle is periodic), and the
probabilities of the ensemble members are averaged and thresholded.<br><br>
Select the cine (a volume sequence, e.g. loaded with the DICOM module) and press <b>Apply</b>.
The result is a probability-map sequence and a segmentation sequence ("LV myocardium",
"LV blood pool") synchronised with the cine's sequence browser, a table of the LV cavity and
myocardium volumes per frame, and EDV, ESV, SV, EF and LV mass. The <b>Threshold</b> slider
re-derives the masks from the probabilities without running the network again (it asks first
when you edited slices). A slices table says which slices count in the volumes per frame and
why (base, outflow tract and atrium left out); set its <b>counted</b> column to 0 or 1 and press
<b>Recompute</b>. The <b>Review first</b> list names the frames and slices quality control
doubts; a click shows that phase and slice. Values that would be meaningless are withheld, with
the reason. Correct mistakes with the Segment Editor, then <b>Export for
training</b> to improve the model with the LV Myocardium Trainer module.<br><br>
The network runs in a separate Python process; on first use the module offers to install the
Python packages it needs into Slicer. Slicer's NumPy and SimpleITK are never replaced.
Needs 3D Slicer 5.10 or later.
"""

SEGMENTATION_ACKNOWLEDGEMENT = """
The method follows "multi-level convolutional LSTM" LV myocardium segmentation of cine MRI
(CNN + ConvLSTM ensemble). The bundled model and sample use the Sunnybrook Cardiac Data
(CC0): Radau P, Lu Y, Connelly K, Paul G, Dick AJ, Wright GA. "Evaluation Framework for
Algorithms Segmenting Short Axis Cardiac MRI." The MIDAS Journal - Cardiac MR Left Ventricle
Segmentation Challenge, <a href="http://hdl.handle.net/10380/3070">http://hdl.handle.net/10380/3070</a>.
The module structure follows the 3D Slicer scripted module template and KitwareMedical's
SlicerNNUnet extension.
"""

TRAINER_HELP = """
Improves the LV myocardium segmentation model with cases you corrected, for example studies of
a kind the bundled model has not seen (porcine infarct hearts, another scanner).<br><br>
(1) Segment a cine with <b>LV Myocardium Segmentation</b>; (2) correct it with the Segment Editor;
(3) here, pick a dataset folder and <b>Add to dataset</b> (or <b>Add cases from folder</b>);
(4) <b>Run leave-one-out</b>: for each case the model is fine-tuned on the other cases and scored
on it, before and after (DSC, HD, APD of the myocardium, in a table and a plot);
(5) <b>Train and register</b>: train on all selected cases; the new model version appears in the
model list of LV Myocardium Segmentation.<br><br>
Training runs in a background process and can take hours on a CPU. Cancel keeps the finished
epochs: starting the same job again resumes it. The bundled model is never overwritten.
Needs 3D Slicer 5.10 or later; TensorFlow is installed (after asking) on the first training.
"""

TRAINER_ACKNOWLEDGEMENT = """
Sample data: Sunnybrook Cardiac Data (CC0). Radau P, Lu Y, Connelly K, Paul G, Dick AJ,
Wright GA. "Evaluation Framework for Algorithms Segmenting Short Axis Cardiac MRI." The MIDAS
Journal - Cardiac MR Left Ventricle Segmentation Challenge,
<a href="http://hdl.handle.net/10380/3070">http://hdl.handle.net/10380/3070</a>.
The module structure follows the 3D Slicer scripted module template and KitwareMedical's
SlicerNNUnet extension.
"""
